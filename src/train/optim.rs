//! AdamW, gradient clipping by global norm and the learning-rate schedule.
//!
//! candle_nn ships an AdamW, but its first and second moments are private, so a checkpoint could not
//! hold them and `--resume` could not continue exactly. This one applies the same update as
//! `torch.optim.AdamW` (decoupled weight decay, bias-corrected moments, `eps` added after the square
//! root) and exposes its moments for saving and loading.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor, Var};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// torch's betas and eps; weight decay 0 as in the released training config
    /// (`model/training_hyperparameter.txt`: `weight_decay=0`).
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Moments for one parameter; `None` until the parameter first receives a gradient (torch creates its
/// state lazily too, and skips parameters without a gradient).
#[derive(Clone)]
pub struct Moments {
    pub m: Tensor,
    pub v: Tensor,
    /// Updates this parameter has received (torch keeps the step per parameter).
    pub step: u64,
}

pub struct AdamW {
    pub config: AdamWConfig,
    /// One slot per parameter, in the parameter set's (sorted) order.
    pub state: Vec<Option<Moments>>,
}

impl AdamW {
    pub fn new(config: AdamWConfig, n_params: usize) -> Self {
        Self {
            config,
            state: vec![None; n_params],
        }
    }

    /// One update with learning rate `lr`. `grads[i]` belongs to `params[i]`; `None` skips the parameter.
    pub fn step(&mut self, params: &[Var], grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        if params.len() != self.state.len() || grads.len() != params.len() {
            bail!(
                "optimizer holds {} parameters, got {}",
                self.state.len(),
                params.len()
            );
        }
        let c = self.config;
        for ((p, g), st) in params.iter().zip(grads).zip(self.state.iter_mut()) {
            let Some(g) = g else { continue };
            let g = g.to_dtype(p.dtype())?;
            let prev = match st.take() {
                Some(s) => s,
                None => Moments {
                    m: g.zeros_like()?,
                    v: g.zeros_like()?,
                    step: 0,
                },
            };
            let step = prev.step + 1;
            // Decoupled weight decay first, on the current weights.
            let mut w = p.as_tensor().clone();
            if c.weight_decay != 0.0 {
                w = (w * (1.0 - lr * c.weight_decay))?;
            }
            let m = ((&prev.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&prev.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let bc1 = 1.0 - c.beta1.powi(step as i32);
            let bc2 = 1.0 - c.beta2.powi(step as i32);
            let denom = ((v.sqrt()? / bc2.sqrt())? + c.eps)?;
            let w = (w - (m.div(&denom)? * (lr / bc1))?)?;
            p.set(&w)?;
            *st = Some(Moments { m, v, step });
        }
        Ok(())
    }
}

/// Global L2 norm over all gradients, accumulated in f64 in parameter order (deterministic).
pub fn global_norm(grads: &[Option<Tensor>]) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.iter().flatten() {
        sq += g
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    Ok(sq.sqrt())
}

/// Scales gradients so their global norm is at most `max_norm`, as `torch.nn.utils.clip_grad_norm_`
/// (factor `max_norm / (norm + 1e-6)` when below 1). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut().flatten() {
            *g = (&*g * coef)?;
        }
    }
    Ok(norm)
}

/// Linear warm-up to `peak` over `warmup` steps (update k of the warm-up uses `peak * k / warmup`),
/// then cosine decay towards `min`, reached just after update `total`, so every update up to `total`
/// has a positive rate even when `min` is 0; `min` afterwards. Steps count from 1 (the first update).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub peak: f64,
    pub min: f64,
    pub warmup: u64,
    pub total: u64,
}

impl LrSchedule {
    pub fn at(&self, step: u64) -> f64 {
        if self.warmup > 0 && step <= self.warmup {
            return self.peak * step as f64 / self.warmup as f64;
        }
        if step > self.total {
            return self.min;
        }
        let progress = (step - self.warmup - 1) as f64 / (self.total - self.warmup) as f64;
        self.min + 0.5 * (self.peak - self.min) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays() {
        let s = LrSchedule {
            peak: 1e-3,
            min: 1e-5,
            warmup: 10,
            total: 110,
        };
        assert!((s.at(1) - 1e-4).abs() < 1e-12);
        assert!((s.at(10) - 1e-3).abs() < 1e-12);
        assert!((s.at(11) - 1e-3).abs() < 1e-12);
        assert!((s.at(61) - (1e-5 + 0.5 * (1e-3 - 1e-5))).abs() < 1e-12);
        assert!(s.at(110) > 1e-5 && s.at(110) < 1.05e-5);
        assert_eq!(s.at(111), 1e-5);
        assert_eq!(s.at(500), 1e-5);
        for k in 11..120 {
            assert!(s.at(k + 1) <= s.at(k));
        }
        // No warm-up, one step: the update still has the peak rate.
        let one = LrSchedule {
            peak: 1.0,
            min: 0.0,
            warmup: 0,
            total: 1,
        };
        assert_eq!(one.at(1), 1.0);
        assert_eq!(one.at(2), 0.0);
    }

    /// The update of torch.optim.AdamW, written out in f64 for two steps on one scalar.
    #[test]
    fn adamw_matches_the_torch_update_rule() {
        let dev = Device::Cpu;
        let p = Var::from_tensor(&Tensor::new(&[0.5f64, -1.0], &dev).unwrap()).unwrap();
        let c = AdamWConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::new(c, 1);
        let (lr, grads) = (0.01, [[0.2f64, -0.4], [0.1, 0.3]]);
        let (mut w, mut m, mut v) = ([0.5f64, -1.0], [0.0f64; 2], [0.0f64; 2]);
        for (t, g) in grads.iter().enumerate() {
            let gt = Tensor::new(g, &dev).unwrap();
            opt.step(std::slice::from_ref(&p), &[Some(gt)], lr).unwrap();
            let t = t as i32 + 1;
            for i in 0..2 {
                w[i] *= 1.0 - lr * c.weight_decay;
                m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
                v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
                let denom = (v[i].sqrt() / (1.0 - c.beta2.powi(t)).sqrt()) + c.eps;
                w[i] -= lr / (1.0 - c.beta1.powi(t)) * m[i] / denom;
            }
        }
        let got = p.as_tensor().to_vec1::<f64>().unwrap();
        for i in 0..2 {
            assert!((got[i] - w[i]).abs() < 1e-15, "{got:?} vs {w:?}");
        }
        assert_eq!(opt.state[0].as_ref().unwrap().step, 2);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let dev = Device::Cpu;
        let mut g = vec![
            Some(Tensor::new(&[3f32, 0.0], &dev).unwrap()),
            None,
            Some(Tensor::new(&[4f32], &dev).unwrap()),
        ];
        let n = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-9);
        assert!((global_norm(&g).unwrap() - 1.0).abs() < 1e-5);
        let n2 = clip_grad_norm(&mut g, 10.0).unwrap();
        assert!((n2 - 1.0).abs() < 1e-5);
        assert!(
            (global_norm(&g).unwrap() - n2).abs() < 1e-12,
            "no clipping below the max"
        );
    }
}
