//! Training core shared by every training step (pretraining now; fine-tuning heads later): the model's
//! own structs trained through candle's autograd, parameter groups, AdamW with saveable moments,
//! warm-up + cosine schedule, gradient clipping and accumulation, deterministic data order and random
//! streams, atomic checkpoints with exact resume, a JSON-lines log and a PNG loss curve.
//!
//! Precision: master weights, gradients, moments and the loss are f32. Mixed precision
//! ([`params::TrainModel::set_compute_dtype`], bf16 on CUDA): the model is rebuilt each step from
//! bf16 casts of the f32 master `Var`s (a differentiable op, so gradients arrive in f32), with
//! LayerNorm, softmax and the FAVOR+ exponentials computed in f32.

pub mod checkpoint;
pub mod data;
pub mod dist;
pub mod init;
pub mod log;
pub mod optim;
pub mod params;
pub mod plot;
pub mod rda;
pub mod rng;

use anyhow::{bail, Result};
use candle_core::Tensor;

use crate::model::MaeAutobin;
use optim::{AdamW, AdamWConfig, LrSchedule};
use params::TrainModel;

/// A micro-batch and the number of units its loss is a sum over (masked positions for pretraining,
/// cells for a classifier): a step's loss is the sum over its micro-batches divided by their total
/// units, so accumulating K micro-batches equals one batch K times larger.
pub struct MicroBatch<B> {
    pub data: B,
    pub units: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainerConfig {
    pub schedule: LrSchedule,
    /// Clip gradients to this global L2 norm; `None` leaves them.
    pub clip_norm: Option<f64>,
    pub adamw: AdamWConfig,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The step just completed (1 for the first update).
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

pub struct Trainer {
    pub model: TrainModel,
    pub opt: AdamW,
    pub cfg: TrainerConfig,
    /// Optimiser steps completed.
    pub step: u64,
    /// Data-parallel training: averages gradients and loss over ranks before each update (`None`:
    /// one process).
    pub reducer: Option<Box<dyn dist::GradReduce>>,
}

impl Trainer {
    pub fn new(model: TrainModel, cfg: TrainerConfig) -> Self {
        let n = model.params.len();
        Self {
            model,
            opt: AdamW::new(cfg.adamw, n),
            cfg,
            step: 0,
            reducer: None,
        }
    }

    /// Loss and gradients (per trainable parameter, in order) over a set of micro-batches.
    /// `loss_fn` returns a micro-batch's summed loss, or `None` when it has nothing to score.
    pub fn gradients<B>(
        &self,
        micro: &[MicroBatch<B>],
        loss_fn: impl Fn(&MaeAutobin, &B) -> Result<Option<Tensor>>,
    ) -> Result<(f64, Vec<Option<Tensor>>)> {
        let total: usize = micro.iter().map(|m| m.units).sum();
        let mut grads: Vec<Option<Tensor>> = vec![None; self.model.params.len()];
        let mut loss = 0f64;
        if total == 0 {
            return Ok((0.0, grads));
        }
        let fresh = self.model.compute_model()?;
        let model = fresh.as_ref().unwrap_or(&self.model.model);
        for mb in micro {
            let Some(sum) = loss_fn(model, &mb.data)? else {
                continue;
            };
            let scaled = (sum / total as f64)?;
            loss += scaled
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            let g = scaled.backward()?;
            for ((_, var), acc) in self.model.params.iter().zip(grads.iter_mut()) {
                if let Some(gv) = g.get(var.as_tensor()) {
                    *acc = Some(match acc.take() {
                        Some(a) => (a + gv)?,
                        None => gv.clone(),
                    });
                }
            }
        }
        Ok((loss, grads))
    }

    /// One optimiser step: gradients over the micro-batches, clipping, the scheduled learning rate,
    /// AdamW.
    pub fn step<B>(
        &mut self,
        micro: &[MicroBatch<B>],
        loss_fn: impl Fn(&MaeAutobin, &B) -> Result<Option<Tensor>>,
    ) -> Result<StepStats> {
        let (mut loss, mut grads) = self.gradients(micro, loss_fn)?;
        if let Some(r) = &self.reducer {
            loss = r.all_reduce_mean(&mut grads, &self.model.params, loss)?;
        }
        if !loss.is_finite() {
            bail!("loss is {loss} at step {}", self.step + 1);
        }
        let grad_norm = match self.cfg.clip_norm {
            Some(max) => optim::clip_grad_norm(&mut grads, max)?,
            None => optim::global_norm(&grads)?,
        };
        let lr = self.cfg.schedule.at(self.step + 1);
        self.opt.step(&self.model.vars(), &grads, lr)?;
        self.step += 1;
        Ok(StepStats {
            step: self.step,
            loss,
            lr,
            grad_norm,
        })
    }

    /// Mean loss over micro-batches without updating anything.
    pub fn evaluate<B>(
        &self,
        micro: &[MicroBatch<B>],
        loss_fn: impl Fn(&MaeAutobin, &B) -> Result<Option<Tensor>>,
    ) -> Result<f64> {
        let total: usize = micro.iter().map(|m| m.units).sum();
        let mut sum = 0f64;
        let fresh = self.model.compute_model()?;
        let model = fresh.as_ref().unwrap_or(&self.model.model);
        for mb in micro {
            if let Some(s) = loss_fn(model, &mb.data)? {
                sum += s
                    .detach()
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
            }
        }
        Ok(if total == 0 {
            f64::NAN
        } else {
            sum / total as f64
        })
    }
}
