//! Workflow steps as library functions; the CLI calls exactly these.

pub mod convert;
pub mod embed;
pub mod merge;
pub mod split;
