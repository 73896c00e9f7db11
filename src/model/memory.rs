//! Upper estimates of the device memory one inference batch needs, from the model's shape: what
//! `embed --batch-size auto` sizes GPU batches with. They count the tensors alive at once at the
//! widest point of a layer (candle frees each intermediate when its last use drops it) and then
//! double that, for allocator rounding and the transient copies a cast or a reshape makes.

use candle_core::DType;

use super::MaeAutobin;

/// Safety factor over the counted live tensors.
const SLACK: u64 = 2;
/// The activation stream is f32 whatever the weights' dtype (mixed precision keeps it there).
const STREAM: u64 = 4;

fn width(dtype: DType) -> u64 {
    dtype.size_in_bytes() as u64
}

impl MaeAutobin {
    /// Bytes per encoder token (one position of one cell, padding included) inside an encoder layer,
    /// excluding the attention scores, whose block size is bounded separately
    /// ([`MaeAutobin::attention_block_bytes`]).
    pub fn encoder_bytes_per_token(&self) -> u64 {
        let d = self.config().encoder.hidden_dim as u64;
        let w = width(self.dtype());
        // Stream input, residual sum and normed output (f32); the input cast to the weights' dtype,
        // q/k/v, attention output and out_proj product (1 + 3 + 1 + 1 widths); FFN hidden and its
        // activation (2 x 4 widths).
        SLACK * (3 * STREAM * d + (6 + 8) * w * d)
    }

    /// Bytes of one block of attention scores: the products, their f32 softmax and its probabilities.
    pub fn attention_block_bytes(&self) -> u64 {
        let w = width(self.dtype());
        self.encoder_attention_block() as u64 * (2 * w + STREAM)
    }

    /// Bytes per cell in the decoder paths: every cell runs the decoder over all `seq_len` positions,
    /// each first value-embedded at the encoder's width.
    pub fn decoder_bytes_per_cell(&self) -> u64 {
        let cfg = self.config();
        let (e, d) = (cfg.encoder.hidden_dim as u64, cfg.decoder.hidden_dim as u64);
        let inner = (cfg.decoder.heads * cfg.decoder_dim_head()) as u64;
        let features = (cfg.decoder.heads * self.decoder_features()) as u64;
        let w = width(self.dtype());
        let per_position =
            // value embedding: bin weights and their softmax (f32), the embedded row and its projection
            3 * STREAM * cfg.bin_num as u64 + (STREAM + w) * e + w * d
            // layer: stream, normed input and residual sum (f32); q/k/v in the weights' dtype and in
            // f32 for the FAVOR+ kernel; the attention output
            + 3 * STREAM * d + 3 * (w + STREAM) * inner + STREAM * inner
            // FAVOR+ projections and query/key features (f32)
            + 3 * STREAM * features
            // FFN hidden and its activation
            + 2 * 4 * w * d;
        SLACK * per_position * cfg.seq_len as u64
    }
}

#[cfg(test)]
mod tests {
    use crate::model::config::{BlockConfig, ModelConfig};
    use crate::model::MaeAutobin;
    use crate::train::init::random_tensors;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;
    use std::collections::HashMap;

    fn model(dtype: DType, enc: usize, dec: usize) -> MaeAutobin {
        let block = |d, h, dh| BlockConfig {
            hidden_dim: d,
            depth: 1,
            heads: h,
            dim_head: dh,
            module_type: None,
        };
        let cfg = ModelConfig {
            encoder: block(enc, 4, None),
            decoder: block(dec, 2, Some(dec / 2)),
            seq_len: 130,
            bin_num: 10,
            bin_alpha: 1.0,
            pad_token_id: 103,
            mask_token_id: 102,
        };
        let tensors: HashMap<String, Tensor> =
            random_tensors(&cfg, 1).unwrap().into_iter().collect();
        MaeAutobin::load(VarBuilder::from_tensors(tensors, dtype, &Device::Cpu), &cfg).unwrap()
    }

    #[test]
    fn estimates_scale_with_width_and_precision() {
        let f32_small = model(DType::F32, 16, 8);
        let f32_wide = model(DType::F32, 32, 16);
        let bf16_small = model(DType::BF16, 16, 8);
        // Linear in the width (every term is per channel)...
        assert_eq!(
            f32_wide.encoder_bytes_per_token(),
            2 * f32_small.encoder_bytes_per_token()
        );
        assert!(f32_wide.decoder_bytes_per_cell() > f32_small.decoder_bytes_per_cell());
        // ...and half-precision weights need less than f32, but not half (the stream stays f32).
        let (a, b) = (
            bf16_small.encoder_bytes_per_token(),
            f32_small.encoder_bytes_per_token(),
        );
        assert!(a < b && 2 * a > b, "{a} {b}");
        // At least the f32 stream itself: one D-wide row per token, twice over.
        assert!(f32_small.encoder_bytes_per_token() >= 2 * 4 * 16);
        assert!(f32_small.decoder_bytes_per_cell() >= 2 * 4 * 8 * 130);
    }
}
