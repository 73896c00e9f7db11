//! `MaeAutobin`: value embedding + gene position embedding → transformer encoder over expressed genes →
//! performer decoder over all positions → expression head.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use super::config::ModelConfig;
use super::embedding::AutoDiscretizationEmbedding;
use super::encoder::{layer_norm, norm, TransformerEncoder};
use super::matmul::linear;
use super::performer::PerformerDecoder;

/// Encoder input for a batch: gathered (strictly positive) values and their position ids,
/// right-padded with the pad token and the padding position id.
pub struct EncoderBatch {
    /// [B, L] f32.
    pub values: Tensor,
    /// [B, L] u32.
    pub positions: Tensor,
    /// Additive key mask [B, 1, 1, L] (0 or -inf), `None` when nothing is padded.
    pub key_mask: Option<Tensor>,
}

pub struct MaeAutobin {
    token_emb: AutoDiscretizationEmbedding,
    pos_emb: Embedding,
    encoder: TransformerEncoder,
    decoder_embed: Linear,
    decoder: PerformerDecoder,
    norm: LayerNorm,
    to_final: Linear,
    cfg: ModelConfig,
    differentiable: bool,
}

impl MaeAutobin {
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let enc = cfg.encoder.hidden_dim;
        let dec = cfg.decoder.hidden_dim;
        Ok(Self {
            token_emb: AutoDiscretizationEmbedding::load(vb.pp("token_emb"), cfg)?,
            pos_emb: candle_nn::embedding(cfg.seq_len + 1, enc, vb.pp("pos_emb"))?,
            encoder: TransformerEncoder::load(vb.pp("encoder"), cfg)?,
            decoder_embed: candle_nn::linear(enc, dec, vb.pp("decoder_embed"))?,
            decoder: PerformerDecoder::load(vb.pp("decoder"), cfg)?,
            norm: layer_norm(dec, vb.pp("norm"))?,
            to_final: candle_nn::linear(dec, 1, vb.pp("to_final"))?,
            cfg: cfg.clone(),
            differentiable: false,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Switches to ops that candle's autograd can follow (composite softmax and LayerNorm instead of
    /// the fused inference kernels, which have no backward pass). Training turns this on; inference
    /// leaves it off, so its numerics stay those the parity tests pin.
    pub fn set_differentiable(&mut self, on: bool) {
        self.differentiable = on;
        self.token_emb.differentiable = on;
        self.encoder.set_differentiable(on);
        self.decoder.set_differentiable(on);
    }

    pub fn is_differentiable(&self) -> bool {
        self.differentiable
    }

    /// Most encoder attention scores computed at once (memory estimates, `model::memory`).
    pub(crate) fn encoder_attention_block(&self) -> usize {
        self.encoder.attention_block()
    }

    /// FAVOR+ random features per decoder head.
    pub(crate) fn decoder_features(&self) -> usize {
        self.decoder.nb_features()
    }

    /// Element type of the weights (f32 for inference; training tests also build f64 models).
    pub fn dtype(&self) -> candle_core::DType {
        self.to_final.weight().dtype()
    }

    /// Value embedding alone, [B, L] → [B, L, D].
    pub fn token_embedding(&self, values: &Tensor) -> Result<Tensor> {
        self.token_emb.forward(values)
    }

    /// Encoder input: value embedding plus gene position embedding.
    pub fn encoder_input(&self, batch: &EncoderBatch) -> Result<Tensor> {
        let e = self.token_emb.forward(&batch.values)?;
        &e + self
            .pos_emb
            .forward(&batch.positions)?
            .to_dtype(e.dtype())?
    }

    /// Encoder output after its final LayerNorm, [B, L, D_enc].
    pub fn encode(&self, batch: &EncoderBatch) -> Result<Tensor> {
        let x = self.encoder_input(batch)?;
        self.encoder.forward(&x, batch.key_mask.as_ref())
    }

    /// Full forward up to the last LayerNorm: [B, seq_len, D_dec].
    ///
    /// `full_values` [B, seq_len] is the whole input vector (zeros included); `scatter` [B*seq_len] u32
    /// says for every decoder position which row of `[encoded (B*L rows); embedded full values]` to take.
    /// Encoded tokens then get the position embedding added a second time, as in the reference.
    pub fn decode_hidden(
        &self,
        encoded: &Tensor,
        full_values: &Tensor,
        scatter: &Tensor,
    ) -> Result<Tensor> {
        let (b, n) = full_values.dims2()?;
        let d = self.cfg.encoder.hidden_dim;
        let embedded = self.token_emb.forward(full_values)?.reshape((b * n, d))?;
        self.decode_rows(encoded, &embedded, scatter, (b, n))
    }

    /// The decoder given its input rows by index: `scatter` [B*N] u32 picks for every decoder position a
    /// row of `[encoded (B*L rows); extra]`, where `extra` [R, D_enc] holds value embeddings. Returns
    /// the states after the last LayerNorm, [B, N, D_dec].
    pub fn decode_rows(
        &self,
        encoded: &Tensor,
        extra: &Tensor,
        scatter: &Tensor,
        (b, n): (usize, usize),
    ) -> Result<Tensor> {
        let d = self.cfg.encoder.hidden_dim;
        let table = Tensor::cat(&[&encoded.flatten_to(1)?, extra], 0)?;
        let x = table.index_select(scatter, 0)?.reshape((b, n, d))?;
        let positions = Tensor::arange(0u32, n as u32, encoded.device())?;
        let x = x.broadcast_add(&self.pos_emb.forward(&positions)?.to_dtype(x.dtype())?)?;
        let x = linear(&self.decoder_embed, &x)?;
        let x = self.decoder.forward(&x)?;
        norm(&self.norm, &x, self.differentiable)
    }

    /// Expression head on decoder hidden states: [B, N, D] → [B, N].
    pub fn expression(&self, hidden: &Tensor) -> Result<Tensor> {
        linear(&self.to_final, hidden)?.squeeze(2)
    }
}

/// Builds the encoder batch tensors from per-cell gathered tokens.
pub fn encoder_batch(
    cells: &[(&[f32], &[u32])],
    cfg: &ModelConfig,
    device: &Device,
) -> Result<EncoderBatch> {
    let b = cells.len();
    let l = cells.iter().map(|(v, _)| v.len()).max().unwrap_or(0);
    let pad_value = cfg.pad_token_id as f32;
    let pad_pos = cfg.seq_len as u32;
    let mut values = vec![pad_value; b * l];
    let mut positions = vec![pad_pos; b * l];
    let mut mask = vec![0f32; b * l];
    let mut padded = false;
    for (i, (v, p)) in cells.iter().enumerate() {
        values[i * l..i * l + v.len()].copy_from_slice(v);
        positions[i * l..i * l + p.len()].copy_from_slice(p);
        for j in 0..l {
            // The reference marks any token equal to the pad value as padding, real or not.
            if j >= v.len() || values[i * l + j] == pad_value {
                mask[i * l + j] = f32::NEG_INFINITY;
                padded = true;
            }
        }
    }
    let key_mask = if padded {
        Some(Tensor::from_vec(mask, (b, 1, 1, l), device)?)
    } else {
        None
    };
    Ok(EncoderBatch {
        values: Tensor::from_vec(values, (b, l), device)?,
        positions: Tensor::from_vec(positions, (b, l), device)?,
        key_mask,
    })
}
