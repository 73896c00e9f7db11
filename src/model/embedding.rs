//! Auto-discretization value embedding: a scalar expression value becomes a soft mixture of learned bins.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use super::config::ModelConfig;
use super::matmul::linear;

pub struct AutoDiscretizationEmbedding {
    mlp: Linear,
    mlp2: Linear,
    emb: Tensor,
    emb_mask: Tensor,
    emb_pad: Tensor,
    bin_alpha: f64,
    mask_value: f64,
    pad_value: f64,
    /// Autograd-friendly ops (training); off for inference, whose numerics are pinned by the parity tests.
    pub(crate) differentiable: bool,
}

impl AutoDiscretizationEmbedding {
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let bins = cfg.bin_num;
        let dim = cfg.encoder.hidden_dim;
        Ok(Self {
            mlp: candle_nn::linear(1, bins, vb.pp("mlp"))?,
            mlp2: candle_nn::linear(bins, bins, vb.pp("mlp2"))?,
            emb: vb.pp("emb").get((bins, dim), "weight")?,
            emb_mask: vb.pp("emb_mask").get((1, dim), "weight")?,
            emb_pad: vb.pp("emb_pad").get((1, dim), "weight")?,
            bin_alpha: cfg.bin_alpha,
            mask_value: cfg.mask_token_id as f64,
            pad_value: cfg.pad_token_id as f64,
            differentiable: false,
        })
    }

    /// `values`: [B, N] → [B, N, D] in the weights' dtype, or f32 with half-precision weights (mixed
    /// precision: the activation stream is f32, and bf16 would round expression values and the T/S
    /// totals to 8 bits before the bin weights are taken).
    pub fn forward(&self, values: &Tensor) -> Result<Tensor> {
        let dt = self.emb.dtype();
        if matches!(dt, DType::BF16 | DType::F16) {
            let f = |t: &Tensor| t.to_dtype(DType::F32);
            let lin = |l: &Linear| -> Result<Linear> {
                Ok(Linear::new(f(l.weight())?, l.bias().map(f).transpose()?))
            };
            let e = self.embed(
                &f(values)?,
                (&lin(&self.mlp)?, &lin(&self.mlp2)?),
                (&f(&self.emb)?, &f(&self.emb_mask)?, &f(&self.emb_pad)?),
            )?;
            return Ok(e); // f32: the activation stream of mixed precision
        }
        self.embed(
            &values.to_dtype(dt)?,
            (&self.mlp, &self.mlp2),
            (&self.emb, &self.emb_mask, &self.emb_pad),
        )
    }

    fn embed(
        &self,
        values: &Tensor,
        (mlp, mlp2): (&Linear, &Linear),
        (emb, emb_mask, emb_pad): (&Tensor, &Tensor, &Tensor),
    ) -> Result<Tensor> {
        let v = values.unsqueeze(D::Minus1)?;
        let h = candle_nn::ops::leaky_relu(&linear(mlp, &v)?, 0.1)?;
        let z = ((&h * self.bin_alpha)? + linear(mlp2, &h)?)?;
        let w = super::encoder::softmax(&z, self.differentiable)?;
        let e = super::matmul::broadcast_matmul(&w, emb)?;
        // The reference overwrites positions holding the literal mask/pad token values.
        let e = replace_where(&e, values, self.mask_value, emb_mask)?;
        replace_where(&e, values, self.pad_value, emb_pad)
    }
}

fn replace_where(e: &Tensor, values: &Tensor, token: f64, row: &Tensor) -> Result<Tensor> {
    let hit = values.eq(token)?;
    if hit.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? == 0.0 {
        return Ok(e.clone());
    }
    let hit = hit.unsqueeze(D::Minus1)?.broadcast_as(e.shape())?;
    let row = row.reshape((1, 1, ()))?.broadcast_as(e.shape())?;
    hit.where_cond(&row, e)
}
