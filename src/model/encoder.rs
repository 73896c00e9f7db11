//! The encoder: PyTorch `nn.TransformerEncoderLayer` stack (post-LN, ReLU FFN, 4x width) plus a final LayerNorm.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::config::ModelConfig;
use super::matmul::{broadcast_matmul, feed_forward, linear, matmul, Act};

const LN_EPS: f64 = 1e-5;
/// Attention scores computed at once, at most (64M floats = 256 MB).
const ATTN_BLOCK_ELEMS: usize = 64 << 20;

pub(crate) fn layer_norm(dim: usize, vb: VarBuilder) -> Result<LayerNorm> {
    candle_nn::layer_norm(dim, LN_EPS, vb)
}

/// LayerNorm; `differentiable` takes candle's composite path, which autograd follows (the fused
/// kernel used for inference has no backward pass).
/// In mixed-precision training (half-precision activations) the statistics are taken in f32.
pub(crate) fn norm(ln: &LayerNorm, x: &Tensor, differentiable: bool) -> Result<Tensor> {
    if ln.weight().dtype() != x.dtype() {
        // Half-precision weights on the f32 stream (mixed precision): the affine part in f32.
        let f = |t: &Tensor| t.to_dtype(x.dtype());
        let bias = ln
            .bias()
            .ok_or_else(|| candle_core::Error::Msg("LayerNorm without bias".into()))?;
        let cast = LayerNorm::new(f(ln.weight())?, f(bias)?, LN_EPS);
        return norm(&cast, x, differentiable);
    }
    match (differentiable, ln.bias()) {
        (true, Some(b)) => in_f32(x, |x| {
            let f = |t: &Tensor| t.to_dtype(x.dtype());
            candle_nn::ops::layer_norm_slow(x, &f(ln.weight())?, &f(b)?, LN_EPS as f32)
        }),
        _ => ln.forward(x),
    }
}

/// Softmax over the last dimension; `differentiable` as for [`norm`] (in f32 for half inputs).
pub(crate) fn softmax(x: &Tensor, differentiable: bool) -> Result<Tensor> {
    if differentiable {
        in_f32(x, |x| candle_nn::ops::softmax(x, D::Minus1))
    } else if super::kernels::fusable(x) {
        super::kernels::softmax_last_dim(x)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// `f` applied in f32 when `x` is bf16/f16 (result cast back; the casts are differentiable), else as is.
pub(crate) fn in_f32(x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    match x.dtype() {
        DType::BF16 | DType::F16 => f(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype()),
        _ => f(x),
    }
}

struct SelfAttention {
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: Linear,
    heads: usize,
    dim: usize,
    /// Most attention scores held at once (see `ATTN_BLOCK_ELEMS`).
    block_elems: usize,
    differentiable: bool,
}

impl SelfAttention {
    fn load(vb: VarBuilder, dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            in_proj_weight: vb.get((3 * dim, dim), "in_proj_weight")?,
            in_proj_bias: vb.get(3 * dim, "in_proj_bias")?,
            out_proj: candle_nn::linear(dim, dim, vb.pp("out_proj"))?,
            heads,
            dim,
            block_elems: ATTN_BLOCK_ELEMS,
            differentiable: false,
        })
    }

    /// `mask`: additive [B, 1, 1, L] (0 or -inf) for padded keys.
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let hd = self.dim / self.heads;
        // Mixed precision: products in the weights' dtype, softmax in f32, result back on the stream.
        let stream = x.dtype();
        let x = &x.to_dtype(self.in_proj_weight.dtype())?;
        let qkv =
            broadcast_matmul(x, &self.in_proj_weight.t()?)?.broadcast_add(&self.in_proj_bias)?;
        #[cfg(feature = "openblas")]
        if super::kernels::fusable(&qkv) && super::matmul::use_blas(&qkv, &qkv) {
            let scale = (hd as f64).powf(-0.5) as f32;
            let o = super::matmul::fused_attention(&qkv, self.heads, scale, mask)?;
            return linear(&self.out_proj, &o)?.to_dtype(stream);
        }
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(D::Minus1, i * self.dim, self.dim)?
                .reshape((b, l, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let q = (q * (hd as f64).powf(-0.5))?;
        let kt = k.t()?;
        // Score rows are independent, so long sequences are done in query blocks to bound memory
        // (a 6,000-gene cell would otherwise need B x heads x 36M floats at once).
        let rows = (self.block_elems / (b * self.heads * l).max(1)).max(1);
        let mut outs = Vec::with_capacity(l.div_ceil(rows));
        let mut start = 0;
        while start < l {
            let n = rows.min(l - start);
            let qb = if n == l {
                q.clone()
            } else {
                q.narrow(2, start, n)?
            };
            let mut scores = matmul(&qb, &kt)?;
            if let Some(m) = mask {
                scores = scores.broadcast_add(&m.to_dtype(scores.dtype())?)?;
            }
            let p = match scores.dtype() {
                // candle's CUDA softmax sums in f32 whatever the element type, so the half-precision
                // scores need no f32 copy there.
                DType::BF16 | DType::F16 if !self.differentiable && scores.device().is_cuda() => {
                    candle_nn::ops::softmax_last_dim(&scores)?
                }
                DType::BF16 | DType::F16 if !self.differentiable => {
                    softmax(&scores.to_dtype(DType::F32)?, false)?.to_dtype(scores.dtype())?
                }
                _ => softmax(&scores, self.differentiable)?,
            };
            outs.push(matmul(&p, &v)?);
            start += n;
        }
        let o = if outs.len() == 1 {
            outs.pop().expect("one block")
        } else {
            Tensor::cat(&outs, 2)?
        };
        let o = o.transpose(1, 2)?.reshape((b, l, self.dim))?;
        linear(&self.out_proj, &o)?.to_dtype(stream)
    }
}

struct EncoderLayer {
    attn: SelfAttention,
    linear1: Linear,
    linear2: Linear,
    norm1: LayerNorm,
    norm2: LayerNorm,
}

impl EncoderLayer {
    fn load(vb: VarBuilder, dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            attn: SelfAttention::load(vb.pp("self_attn"), dim, heads)?,
            linear1: candle_nn::linear(dim, 4 * dim, vb.pp("linear1"))?,
            linear2: candle_nn::linear(4 * dim, dim, vb.pp("linear2"))?,
            norm1: layer_norm(dim, vb.pp("norm1"))?,
            norm2: layer_norm(dim, vb.pp("norm2"))?,
        })
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let diff = self.attn.differentiable;
        let x = norm(&self.norm1, &(x + self.attn.forward(x, mask)?)?, diff)?;
        let ff = feed_forward(&self.linear1, &self.linear2, &x, Act::Relu)?;
        norm(&self.norm2, &(x + ff)?, diff)
    }
}

pub struct TransformerEncoder {
    layers: Vec<EncoderLayer>,
    norm: LayerNorm,
    differentiable: bool,
}

impl TransformerEncoder {
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let dim = cfg.encoder.hidden_dim;
        let layers = (0..cfg.encoder.depth)
            .map(|i| EncoderLayer::load(vb.pp("transformer_encoder").pp(i), dim, cfg.encoder.heads))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            norm: layer_norm(dim, vb.pp("norm"))?,
            differentiable: false,
        })
    }

    /// Autograd-friendly ops for training (see [`norm`]); inference leaves this off.
    pub fn set_differentiable(&mut self, on: bool) {
        self.differentiable = on;
        for l in &mut self.layers {
            l.attn.differentiable = on;
        }
    }

    /// Caps the attention scores computed at once (memory vs. speed); results do not change.
    pub fn set_attention_block(&mut self, elems: usize) {
        for l in &mut self.layers {
            l.attn.block_elems = elems.max(1);
        }
    }

    /// Most attention scores computed at once (see [`TransformerEncoder::set_attention_block`]).
    pub fn attention_block(&self) -> usize {
        self.layers
            .first()
            .map_or(ATTN_BLOCK_ELEMS, |l| l.attn.block_elems)
    }

    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x, mask)?;
        }
        norm(&self.norm, &x, self.differentiable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{BlockConfig, ModelConfig};
    use candle_core::{DType, Device};

    fn cfg() -> ModelConfig {
        let block = |d, h| BlockConfig {
            hidden_dim: d,
            depth: 2,
            heads: h,
            dim_head: None,
            module_type: None,
        };
        ModelConfig {
            encoder: block(16, 4),
            decoder: block(8, 2),
            seq_len: 19266,
            bin_num: 10,
            bin_alpha: 1.0,
            pad_token_id: 103,
            mask_token_id: 102,
        }
    }

    #[test]
    fn query_blocking_does_not_change_results() {
        let dev = Device::Cpu;
        let map = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let mut enc = TransformerEncoder::load(vb, &cfg()).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 37, 16), &dev).unwrap();
        let mut mask = vec![0f32; 2 * 37];
        for m in &mut mask[37 + 30..] {
            *m = f32::NEG_INFINITY;
        }
        let mask = Tensor::from_vec(mask, (2, 1, 1, 37), &dev).unwrap();
        let whole = enc.forward(&x, Some(&mask)).unwrap();
        enc.set_attention_block(2 * 4 * 37 * 5);
        let blocked = enc.forward(&x, Some(&mask)).unwrap();
        let d = (whole - blocked)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-6, "{d}");
    }
}
