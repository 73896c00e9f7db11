//! The decoder: a pre-LN Performer with FAVOR+ softmax-kernel attention using the checkpoint's stored
//! random-feature projection, exactly the reference's stabilisers, and an exact-erf GELU FFN.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::config::ModelConfig;
use super::encoder::{layer_norm, norm};
use super::matmul::{broadcast_matmul, feed_forward, linear, matmul, Act};

const KERNEL_EPS: f64 = 1e-4;

struct FastSelfAttention {
    norm: LayerNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    /// [m, dim_head] random features, loaded (never redrawn).
    projection: Tensor,
    heads: usize,
    dim_head: usize,
    differentiable: bool,
}

impl FastSelfAttention {
    fn load(vb: VarBuilder, dim: usize, heads: usize, dim_head: usize) -> Result<Self> {
        let inner = heads * dim_head;
        let f = vb.pp("fn");
        let projection = f.pp("fast_attention").get_unchecked("projection_matrix")?;
        let (_, pd) = projection.dims2()?;
        if pd != dim_head {
            candle_core::bail!("projection_matrix has {pd} columns, expected dim_head {dim_head}");
        }
        Ok(Self {
            norm: layer_norm(dim, vb.pp("norm"))?,
            to_q: candle_nn::linear(dim, inner, f.pp("to_q"))?,
            to_k: candle_nn::linear(dim, inner, f.pp("to_k"))?,
            to_v: candle_nn::linear(dim, inner, f.pp("to_v"))?,
            to_out: candle_nn::linear(inner, dim, f.pp("to_out"))?,
            projection,
            heads,
            dim_head,
            differentiable: false,
        })
    }

    /// FAVOR+ positive random features. Queries are stabilised per row; keys by one max over everything
    /// belonging to a cell (the reference takes it over the whole batch, which couples cells; per cell equals
    /// its batch-1 behaviour).
    fn feature_map(&self, x: &Tensor, is_query: bool) -> Result<Tensor> {
        let (b, _, _, _) = x.dims4()?;
        let c = (self.dim_head as f64).powf(-0.25);
        let m = self.projection.dim(0)?;
        let ratio = (m as f64).powf(-0.5);
        let dash = broadcast_matmul(&(x * c)?, &self.projection.to_dtype(x.dtype())?.t()?)?;
        let diag = (x.sqr()?.sum_keepdim(D::Minus1)? * (c * c / 2.0))?;
        if super::kernels::fusable(&dash) && super::kernels::fusable(&diag) {
            let keys_stab = if is_query {
                None // each row's maximum, taken inside the kernel
            } else {
                Some(dash.flatten_from(1)?.max_keepdim(1)?)
            };
            return super::kernels::favor_features(
                &dash,
                &diag,
                keys_stab.as_ref(),
                KERNEL_EPS,
                ratio,
            );
        }
        let stab = if is_query {
            dash.max_keepdim(D::Minus1)?
        } else {
            dash.flatten_from(1)?
                .max_keepdim(1)?
                .reshape((b, 1, 1, 1))?
        };
        let e = dash.broadcast_sub(&diag)?.broadcast_sub(&stab)?.exp()?;
        (e + KERNEL_EPS)? * ratio
    }

    /// Non-causal FAVOR+ attention of per-head q, k, v ([b,h,n,e]).
    fn linear_attention(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let q = self.feature_map(q, true)?;
        let k = self.feature_map(k, false)?;
        let k_sum = k.sum_keepdim(2)?; // [b,h,1,m]
        let denom = q.broadcast_mul(&k_sum)?.sum_keepdim(D::Minus1)?; // [b,h,n,1]
        let context = matmul(&k.t()?, v)?; // [b,h,m,e]
        matmul(&q, &context)?.broadcast_div(&denom)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        let h = norm(&self.norm, x, self.differentiable)?;
        let heads = |t: Tensor| -> Result<Tensor> {
            let t = t
                .reshape((b, n, self.heads, self.dim_head))?
                .transpose(1, 2)?;
            // OpenBLAS products and the CPU kernels read the strided per-head views in place.
            if super::kernels::fusable(&t) && super::matmul::use_blas(&t, &t) {
                Ok(t)
            } else {
                t.contiguous()
            }
        };
        let q = heads(linear(&self.to_q, &h)?)?;
        let k = heads(linear(&self.to_k, &h)?)?;
        let v = heads(linear(&self.to_v, &h)?)?;
        let out = match q.dtype() {
            // Mixed precision: the kernel's exponentials and its sums over all 19,266 positions in
            // f32 (bf16 would lose the small features and the sums' precision).
            DType::BF16 | DType::F16 => {
                let f = |t: &Tensor| t.to_dtype(DType::F32);
                self.linear_attention(&f(&q)?, &f(&k)?, &f(&v)?)?
                    .to_dtype(q.dtype())?
            }
            _ => self.linear_attention(&q, &k, &v)?,
        };
        let out = out
            .transpose(1, 2)?
            .reshape((b, n, self.heads * self.dim_head))?;
        linear(&self.to_out, &out)
    }
}

struct FeedForward {
    norm: LayerNorm,
    w1: Linear,
    w2: Linear,
    differentiable: bool,
}

impl FeedForward {
    fn load(vb: VarBuilder, dim: usize) -> Result<Self> {
        let f = vb.pp("fn").pp("fn");
        Ok(Self {
            norm: layer_norm(dim, vb.pp("norm"))?,
            w1: candle_nn::linear(dim, 4 * dim, f.pp("w1"))?,
            w2: candle_nn::linear(4 * dim, dim, f.pp("w2"))?,
            differentiable: false,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = norm(&self.norm, x, self.differentiable)?;
        feed_forward(&self.w1, &self.w2, &h, Act::GeluErf)
    }
}

pub struct PerformerDecoder {
    layers: Vec<(FastSelfAttention, FeedForward)>,
    norm: LayerNorm,
    differentiable: bool,
}

impl PerformerDecoder {
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let dim = cfg.decoder.hidden_dim;
        let net = vb.pp("performer").pp("net").pp("layers");
        let layers = (0..cfg.decoder.depth)
            .map(|i| {
                let l = net.pp(i);
                Ok((
                    FastSelfAttention::load(
                        l.pp(0),
                        dim,
                        cfg.decoder.heads,
                        cfg.decoder_dim_head(),
                    )?,
                    FeedForward::load(l.pp(1), dim)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            norm: layer_norm(dim, vb.pp("norm"))?,
            differentiable: false,
        })
    }

    /// Autograd-friendly LayerNorm for training; inference leaves this off.
    pub fn set_differentiable(&mut self, on: bool) {
        self.differentiable = on;
        for (a, f) in &mut self.layers {
            a.differentiable = on;
            f.differentiable = on;
        }
    }

    /// FAVOR+ random features per head (rows of the stored projection).
    pub fn nb_features(&self) -> usize {
        self.layers
            .first()
            .map_or(0, |(a, _)| a.projection.dim(0).unwrap_or(0))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (attn, ff) in &self.layers {
            x = (&x + attn.forward(&x)?)?;
            x = (&x + ff.forward(&x)?)?;
        }
        norm(&self.norm, &x, self.differentiable)
    }
}
