//! Gene vocabulary, alignment and the reference's preprocessing.

pub mod batch;
pub mod genes;
pub mod genestats;
pub mod preprocess;

pub use batch::CellStream;
pub use genes::{GeneAlignment, GeneVocab, N_GENES};
pub use preprocess::{
    AlignedCell, CellTokens, DatasetStats, InputType, PreNormalized, PreprocessOptions,
    TargetResolution,
};
