//! scfoundation: the scFoundation single-cell foundation model in Rust, as reproducible workflow steps.

pub mod cli;
pub mod cluster;
pub mod cpu;
pub mod data;
pub mod device;
pub mod fsutil;
pub mod io;
pub mod metrics;
pub mod model;
pub mod progress;
pub mod provenance;
pub mod steps;
pub mod train;
pub mod weights;
