//! The decoder: a pre-LN Performer with FAVOR+ softmax-kernel attention using the checkpoint's stored
//! random-feature projection, exactly the reference's stabilisers, and an exact-erf GELU FFN.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::config::ModelConfig;
use super::encoder::{layer_norm, norm};

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
        let dash = (x * c)?.broadcast_matmul(&self.projection.to_dtype(x.dtype())?.t()?)?;
        let diag = (x.sqr()?.sum_keepdim(D::Minus1)? * (c * c / 2.0))?;
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
        let context = k.t()?.matmul(v)?; // [b,h,m,e]
        q.matmul(&context)?.broadcast_div(&denom)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        let h = norm(&self.norm, x, self.differentiable)?;
        let heads = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, n, self.heads, self.dim_head))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(self.to_q.forward(&h)?)?;
        let k = heads(self.to_k.forward(&h)?)?;
        let v = heads(self.to_v.forward(&h)?)?;
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
        self.to_out.forward(&out)
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
        self.w2.forward(&self.w1.forward(&h)?.gelu_erf()?)
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

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (attn, ff) in &self.layers {
            x = (&x + attn.forward(&x)?)?;
            x = (&x + ff.forward(&x)?)?;
        }
        norm(&self.norm, &x, self.differentiable)
    }
}
