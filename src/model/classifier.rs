//! The cell-type classifier head: a 2-layer MLP with ReLU on a cell embedding (the paper's annotation
//! head: "a 2-layer MLP with ReLU"). Tensors are named `head.fc1.{weight,bias}` and
//! `head.fc2.{weight,bias}`, as `torch.nn.Linear` stores them.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// Tensor-name prefix of the head.
pub const HEAD_PREFIX: &str = "head";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Width of the cell embedding (4 x encoder width for pooling `all`).
    pub in_dim: usize,
    pub hidden: usize,
    pub n_classes: usize,
}

pub struct CellClassifier {
    fc1: Linear,
    fc2: Linear,
    cfg: ClassifierConfig,
}

impl CellClassifier {
    /// Loads `fc1` and `fc2` under `vb` (callers pass `vb.pp(HEAD_PREFIX)`).
    pub fn load(vb: VarBuilder, cfg: &ClassifierConfig) -> Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(cfg.in_dim, cfg.hidden, vb.pp("fc1"))?,
            fc2: candle_nn::linear(cfg.hidden, cfg.n_classes, vb.pp("fc2"))?,
            cfg: *cfg,
        })
    }

    pub fn config(&self) -> &ClassifierConfig {
        &self.cfg
    }

    /// Logits `[B, n_classes]` from embeddings `[B, in_dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
}
