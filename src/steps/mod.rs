//! Workflow steps as library functions; the CLI calls exactly these.

pub mod annotate;
pub mod bench;
pub mod convert;
pub mod embed;
pub mod gene_modules;
pub mod init;
pub mod merge;
pub mod pretrain;
pub mod split;
