//! The scFoundation network (`MaeAutobin`) as plain candle structs; no file formats here except the
//! checkpoint readers in `checkpoint`.

pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod embedding;
pub mod encoder;
pub mod heads;
pub mod kernels;
pub mod mae;
pub mod matmul;
pub mod memory;
pub mod performer;

pub use checkpoint::{load_entry, CheckpointEntry};
pub use classifier::{CellClassifier, ClassifierConfig};
pub use config::ModelConfig;
pub use mae::{encoder_batch, EncoderBatch, MaeAutobin};
