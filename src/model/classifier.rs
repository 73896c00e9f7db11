//! The cell-type classifier head: a 2-layer MLP with ReLU on a cell embedding (the paper's annotation
//! head: "a 2-layer MLP with ReLU"), after a fixed per-feature standardisation of the embedding (mean
//! and standard deviation over the training cells; pooled embeddings of a model carry their signal
//! in small differences on top of large shared offsets, which a plain MLP learns slowly). Tensors are
//! named `head.fc1.{weight,bias}`, `head.fc2.{weight,bias}` (as `torch.nn.Linear` stores them) and
//! `head.input_mean`, `head.input_std` (not trained).

use candle_core::{Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::matmul::linear;
use serde::{Deserialize, Serialize};

/// Tensor-name prefix of the head.
pub const HEAD_PREFIX: &str = "head";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Width of the cell embedding (4 x encoder width for pooling `all`).
    pub in_dim: usize,
    pub hidden: usize,
    pub n_classes: usize,
    /// Whether the head holds `input_mean`/`input_std` and standardises its input.
    #[serde(default)]
    pub standardize: bool,
}

pub struct CellClassifier {
    fc1: Linear,
    fc2: Linear,
    /// Per-feature mean and standard deviation, `[in_dim]` each.
    norm: Option<(Tensor, Tensor)>,
    cfg: ClassifierConfig,
}

impl CellClassifier {
    /// Loads `fc1` and `fc2` under `vb` (callers pass `vb.pp(HEAD_PREFIX)`).
    pub fn load(vb: VarBuilder, cfg: &ClassifierConfig) -> Result<Self> {
        let norm = if cfg.standardize {
            Some((
                vb.get(cfg.in_dim, "input_mean")?,
                vb.get(cfg.in_dim, "input_std")?,
            ))
        } else {
            None
        };
        Self::with_norm(vb, cfg, norm)
    }

    /// The linear layers from `vb`, the standardisation given (training: fixed tensors that are not
    /// variables).
    pub fn with_norm(
        vb: VarBuilder,
        cfg: &ClassifierConfig,
        norm: Option<(Tensor, Tensor)>,
    ) -> Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(cfg.in_dim, cfg.hidden, vb.pp("fc1"))?,
            fc2: candle_nn::linear(cfg.hidden, cfg.n_classes, vb.pp("fc2"))?,
            cfg: ClassifierConfig {
                standardize: norm.is_some(),
                ..*cfg
            },
            norm,
        })
    }

    pub fn config(&self) -> &ClassifierConfig {
        &self.cfg
    }

    /// Logits `[B, n_classes]` from embeddings `[B, in_dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = match &self.norm {
            Some((mean, std)) => x.broadcast_sub(mean)?.broadcast_div(std)?,
            None => x.clone(),
        };
        linear(&self.fc2, &linear(&self.fc1, &x)?.relu()?)
    }

    /// The standardisation tensors, if any.
    pub fn norm(&self) -> Option<&(Tensor, Tensor)> {
        self.norm.as_ref()
    }
}

/// Per-feature mean and standard deviation (population, floored at 1e-6) of `rows`, in f64.
pub fn feature_stats(rows: &[&[f32]], width: usize) -> (Vec<f32>, Vec<f32>) {
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0f64; width];
    for r in rows {
        for (m, v) in mean.iter_mut().zip(r.iter()) {
            *m += *v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0f64; width];
    for r in rows {
        for ((s, v), m) in var.iter_mut().zip(r.iter()).zip(&mean) {
            *s += (*v as f64 - m).powi(2);
        }
    }
    (
        mean.iter().map(|m| *m as f32).collect(),
        var.iter()
            .map(|s| ((s / n).sqrt().max(1e-6)) as f32)
            .collect(),
    )
}
