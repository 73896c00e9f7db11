//! `annotate train` / `annotate predict`: cell-type annotation with a classifier head on scFoundation
//! cell embeddings, following the paper's protocol (a 2-layer ReLU MLP head, class-weighted
//! cross-entropy with weights capped at 50, lr 1e-3, batch 64, gradient accumulation 5, the last
//! encoder layer fine-tuned with the head, model selection on validation macro-F1).
//!
//! - `data`: labels from obs, cells read and preprocessed as `embed` does, pooled embeddings;
//! - `train`: stratified split, training through `crate::train` (the head's parameters join the
//!   model's trainable ones in one optimiser), the head directory;
//! - `predict`: labels, confidences and class probabilities for a query file.

pub mod data;
pub mod predict;
pub mod train;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use crate::data::batch::BatchSize;
use crate::data::{InputType, PreNormalized, PreprocessOptions, TargetResolution};
use crate::io::MatrixChoice;
use crate::model::heads::Pool;

pub use predict::{predict, PredictOptions, PredictSummary};
pub use train::{train, TrainOptions, TrainSummary};

/// The head directory's description of itself.
pub const HEAD_JSON: &str = "annotate.json";
/// Classifier tensors (`head.fc1.*`, `head.fc2.*`).
pub const HEAD_TENSORS: &str = "head.safetensors";
/// Fine-tuned encoder layers (model tensor names), present when `finetune_layers` > 0.
pub const ENCODER_TENSORS: &str = "encoder.safetensors";
pub const METRICS_JSON: &str = "metrics.json";
pub const LOG_FILE: &str = "train_log.jsonl";
pub const CURVE_PNG: &str = "training.png";
pub const CONFUSION_PNG: &str = "confusion.png";
pub const HEAD_FORMAT: &str = "scfoundation-annotation-head/1";

/// How cells become embeddings: the options of `embed --mode cell`, with its defaults.
#[derive(Debug, Clone)]
pub struct CellEmbedding {
    pub pool: Pool,
    pub preprocess: PreprocessOptions,
    /// Checkpoint entry (default `cell`, as `embed --mode cell`).
    pub key: String,
    pub min_mapped: f64,
    /// Which matrix of the h5ad to read (per file; recorded, not imposed on queries).
    pub matrix: MatrixChoice,
    /// Cells per inference forward pass (results do not depend on it beyond float rounding).
    pub batch_size: BatchSize,
}

impl Default for CellEmbedding {
    fn default() -> Self {
        Self {
            pool: Pool::All,
            preprocess: PreprocessOptions {
                input_type: InputType::SingleCell,
                pre_normalized: PreNormalized::F,
                tgthighres: TargetResolution::Fixed(4.0),
            },
            key: "cell".to_string(),
            min_mapped: 0.2,
            matrix: MatrixChoice::default(),
            batch_size: BatchSize::Auto,
        }
    }
}

pub(crate) fn pool_name(p: Pool) -> &'static str {
    match p {
        Pool::All => "all",
        Pool::Max => "max",
    }
}

impl CellEmbedding {
    /// The options that define the embedding (what a head depends on).
    pub fn to_json(&self) -> Value {
        json!({
            "pool": pool_name(self.pool),
            "tgthighres": self.preprocess.tgthighres.to_string(),
            "pre_normalized": format!("{:?}", self.preprocess.pre_normalized),
            "input_type": format!("{:?}", self.preprocess.input_type).to_lowercase(),
            "checkpoint_key": self.key,
            "min_mapped": self.min_mapped,
            "layer": self.matrix.layer,
            "use_raw": self.matrix.use_raw,
            "gene_column": self.matrix.gene_column,
        })
    }

    /// Reads the embedding-defining options back (matrix choice and batch size stay defaults).
    pub fn from_json(v: &Value) -> Result<Self> {
        let s = |k: &str| {
            v[k].as_str()
                .ok_or_else(|| anyhow!("cell_embedding lacks '{k}'"))
        };
        let pool = match s("pool")? {
            "all" => Pool::All,
            "max" => Pool::Max,
            other => bail!("unknown pool '{other}'"),
        };
        let pre_normalized = match s("pre_normalized")? {
            "F" => PreNormalized::F,
            "T" => PreNormalized::T,
            "A" => PreNormalized::A,
            other => bail!("unknown pre_normalized '{other}'"),
        };
        let input_type = match s("input_type")? {
            "singlecell" => InputType::SingleCell,
            "bulk" => InputType::Bulk,
            other => bail!("unknown input_type '{other}'"),
        };
        Ok(Self {
            pool,
            preprocess: PreprocessOptions {
                input_type,
                pre_normalized,
                tgthighres: s("tgthighres")?.parse()?,
            },
            key: s("checkpoint_key")?.to_string(),
            min_mapped: v["min_mapped"].as_f64().unwrap_or(0.2),
            ..Default::default()
        })
    }
}
