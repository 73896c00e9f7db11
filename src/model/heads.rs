//! What the workflow steps ask of the network, per batch of cells: pooled cell embeddings from the
//! encoder, or per-gene decoder states / predicted expression over the full input vector.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

use super::mae::{encoder_batch, MaeAutobin};

/// How encoder tokens become one cell vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// [S token, T token, max over genes, mean over genes]: 4 x encoder width.
    All,
    /// Max over all encoder positions: 1 x encoder width.
    Max,
}

/// Per-gene output of the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeneHead {
    /// Decoder hidden state of every gene (gene context embeddings).
    Hidden,
    /// The pretraining head's predicted expression of every gene.
    Expression,
}

/// One cell's model input: the encoder tokens (strictly positive values with their positions, in
/// position order) and, for the decoder, the full input vector (zeros included).
pub struct CellInput<'a> {
    pub values: &'a [f32],
    pub positions: &'a [u32],
    pub full: &'a [f32],
}

impl MaeAutobin {
    /// Pooled cell embeddings, one row per cell; each cell is pooled over its own tokens only.
    pub fn cell_embeddings(
        &self,
        cells: &[CellInput],
        pool: Pool,
        device: &Device,
    ) -> Result<Vec<Vec<f32>>> {
        let refs: Vec<(&[f32], &[u32])> = cells.iter().map(|c| (c.values, c.positions)).collect();
        let mut batch = encoder_batch(&refs, self.config(), device)?;
        // Values stay f32 (the value embedding works in f32, see AutoDiscretizationEmbedding);
        // the additive mask takes the model's dtype.
        batch.key_mask = batch
            .key_mask
            .map(|m| m.to_dtype(self.dtype()))
            .transpose()?;
        let encoded = self.encode(&batch)?;
        let lens: Vec<usize> = cells.iter().map(|c| c.values.len()).collect();
        pool_cells(&encoded, &lens, pool)
    }

    /// Pooled cell embeddings as one tensor `[B, width]` on `device`, part of the autograd graph when
    /// the model is differentiable (fine-tuning); the same pooling as [`MaeAutobin::cell_embeddings`].
    pub fn cell_embedding_tensor(
        &self,
        cells: &[CellInput],
        pool: Pool,
        device: &Device,
    ) -> Result<Tensor> {
        let refs: Vec<(&[f32], &[u32])> = cells.iter().map(|c| (c.values, c.positions)).collect();
        let mut batch = encoder_batch(&refs, self.config(), device)?;
        let dtype = self.dtype();
        batch.key_mask = batch.key_mask.map(|m| m.to_dtype(dtype)).transpose()?;
        let encoded = self.encode(&batch)?;
        let lens: Vec<usize> = cells.iter().map(|c| c.values.len()).collect();
        pool_tensor(&encoded, &lens, pool)
    }

    /// Per-gene rows for the first `n_genes` positions: `[n_genes * width]` hidden states or
    /// `[n_genes]` predicted values per cell. Genes the encoder saw take its output; the others enter
    /// the decoder as value embeddings, exactly as the reference scatters them.
    pub fn gene_outputs(
        &self,
        cells: &[CellInput],
        head: GeneHead,
        n_genes: usize,
        device: &Device,
    ) -> Result<Vec<Vec<f32>>> {
        if n_genes > self.config().seq_len {
            bail!(
                "decoder input must have {} positions per cell",
                self.config().seq_len
            );
        }
        let hidden = self.decoder_states(cells, device)?;
        let out = match head {
            GeneHead::Expression => self.expression(&hidden)?.narrow(1, 0, n_genes)?,
            GeneHead::Hidden => hidden.narrow(1, 0, n_genes)?,
        };
        let out = out.flatten_from(1)?.to_device(&Device::Cpu)?;
        log::debug!(
            "decoder batch: {} cells, output {:?}",
            cells.len(),
            out.dims()
        );
        Ok(out.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }

    /// Decoder hidden states of the given gene positions only, `[genes.len() * width]` per cell
    /// (gene-major): the subset is taken on the device, so only these rows reach host memory.
    pub fn gene_hidden_subset(
        &self,
        cells: &[CellInput],
        genes: &[u32],
        device: &Device,
    ) -> Result<Vec<Vec<f32>>> {
        let seq_len = self.config().seq_len;
        if let Some(&g) = genes.iter().find(|&&g| g as usize >= seq_len) {
            bail!("gene position {g} outside the decoder's {seq_len} positions");
        }
        let hidden = self.decoder_states(cells, device)?;
        let idx = Tensor::from_vec(genes.to_vec(), genes.len(), device)?;
        let out = hidden
            .index_select(&idx, 1)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_from(1)?
            .to_device(&Device::Cpu)?;
        Ok(out.to_vec2::<f32>()?)
    }

    /// Decoder states after the last LayerNorm, `[B, seq_len, D_dec]`, as a tensor on `device` (part of
    /// the autograd graph when the model is differentiable, see [`MaeAutobin::set_differentiable`]).
    /// Inputs are cast to the model's element type.
    pub fn decoder_states(&self, cells: &[CellInput], device: &Device) -> Result<Tensor> {
        let seq_len = self.config().seq_len;
        if cells.iter().any(|c| c.full.len() != seq_len) {
            bail!("decoder input must have {seq_len} positions per cell");
        }
        let refs: Vec<(&[f32], &[u32])> = cells.iter().map(|c| (c.values, c.positions)).collect();
        let mut batch = encoder_batch(&refs, self.config(), device)?;
        let dtype = self.dtype();
        batch.key_mask = batch.key_mask.map(|m| m.to_dtype(dtype)).transpose()?;
        let encoded = self.encode(&batch)?;
        let b = cells.len();
        let l = encoded.dim(1)?;
        if self.is_differentiable() {
            return self.decoder_states_deduplicated(cells, &encoded, device);
        }
        let mut full = Vec::with_capacity(b * seq_len);
        let mut scatter = Vec::with_capacity(b * seq_len);
        for (i, c) in cells.iter().enumerate() {
            full.extend_from_slice(c.full);
            // Index into [encoded tokens of all cells ; value embeddings of all positions].
            let base = (b * l + i * seq_len) as u32;
            let mut row: Vec<u32> = (0..seq_len as u32).map(|p| base + p).collect();
            for (j, &p) in c.positions.iter().enumerate() {
                row[p as usize] = (i * l + j) as u32;
            }
            scatter.extend(row);
        }
        let full = Tensor::from_vec(full, (b, seq_len), device)?;
        let scatter = Tensor::from_vec(scatter, b * seq_len, device)?;
        log::debug!("decoder batch: {b} cells, {l} encoder tokens");
        Ok(self.decode_hidden(&encoded, &full, &scatter)?)
    }

    /// Training form of the decoder input: positions the encoder did not see hold few distinct values
    /// (0, the mask value, ...), so each distinct value is embedded once and shared by index instead
    /// of embedding all B x seq_len positions; the result is the same, forward and backward, at a
    /// fraction of the cost.
    fn decoder_states_deduplicated(
        &self,
        cells: &[CellInput],
        encoded: &Tensor,
        device: &Device,
    ) -> Result<Tensor> {
        let seq_len = self.config().seq_len;
        let (b, l) = (cells.len(), encoded.dim(1)?);
        let mut distinct: Vec<f32> = vec![];
        let mut slot: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
        let mut scatter = Vec::with_capacity(b * seq_len);
        let mut from_encoder = vec![u32::MAX; seq_len];
        for (i, c) in cells.iter().enumerate() {
            for (j, &p) in c.positions.iter().enumerate() {
                from_encoder[p as usize] = (i * l + j) as u32;
            }
            for (p, &v) in c.full.iter().enumerate() {
                let k = if from_encoder[p] != u32::MAX {
                    from_encoder[p]
                } else {
                    let next = distinct.len() as u32;
                    let s = *slot.entry(v.to_bits()).or_insert(next);
                    if s == next {
                        distinct.push(v);
                    }
                    (b * l) as u32 + s
                };
                scatter.push(k);
            }
            for &p in c.positions {
                from_encoder[p as usize] = u32::MAX;
            }
        }
        let r = distinct.len();
        let extra = if r == 0 {
            Tensor::zeros((0, self.config().encoder.hidden_dim), self.dtype(), device)?
        } else {
            let vals = Tensor::from_vec(distinct, (1, r), device)?;
            self.token_embedding(&vals)?.squeeze(0)?
        };
        let scatter = Tensor::from_vec(scatter, b * seq_len, device)?;
        Ok(self.decode_rows(encoded, &extra, &scatter, (b, seq_len))?)
    }

    /// Predicted expression at every position, `[B, seq_len]` (T and S last), as a tensor; see
    /// [`MaeAutobin::decoder_states`].
    pub fn predict_expression(&self, cells: &[CellInput], device: &Device) -> Result<Tensor> {
        let hidden = self.decoder_states(cells, device)?;
        Ok(self.expression(&hidden)?)
    }
}

/// Pools each cell over its own tokens only (never over padding). `encoded` is `[B, L, D]`; cell `i`
/// has `lens[i]` real tokens, the last two being T and S.
pub fn pool_cells(encoded: &Tensor, lens: &[usize], pool: Pool) -> Result<Vec<Vec<f32>>> {
    let enc = encoded
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .to_vec3::<f32>()?;
    let mut out = Vec::with_capacity(lens.len());
    for (e, &n) in enc.iter().zip(lens) {
        if n > e.len() {
            bail!("cell has {n} tokens but the batch holds {}", e.len());
        }
        let d = e.first().map(Vec::len).unwrap_or(0);
        let e = &e[..n];
        let row = match pool {
            Pool::Max => max_over(e, d),
            Pool::All => {
                if n < 3 {
                    bail!("a cell has only {n} encoder tokens; pooling 'all' needs at least one gene plus T and S");
                }
                let genes = &e[..n - 2];
                let mut r = Vec::with_capacity(4 * d);
                r.extend_from_slice(&e[n - 1]);
                r.extend_from_slice(&e[n - 2]);
                r.extend(max_over(genes, d));
                let mut mean = vec![0f64; d];
                for tok in genes {
                    for (m, v) in mean.iter_mut().zip(tok) {
                        *m += *v as f64;
                    }
                }
                r.extend(mean.iter().map(|m| (m / genes.len() as f64) as f32));
                r
            }
        };
        out.push(row);
    }
    Ok(out)
}

/// [`pool_cells`] as tensor operations (differentiable): `[B, L, D]` → `[B, width]`.
pub fn pool_tensor(encoded: &Tensor, lens: &[usize], pool: Pool) -> Result<Tensor> {
    let l = encoded.dim(1)?;
    let mut rows = Vec::with_capacity(lens.len());
    for (i, &n) in lens.iter().enumerate() {
        if n > l {
            bail!("cell has {n} tokens but the batch holds {l}");
        }
        let e = encoded.get(i)?.narrow(0, 0, n)?;
        let row = match pool {
            Pool::Max => e.max(0)?,
            Pool::All => {
                if n < 3 {
                    bail!("a cell has only {n} encoder tokens; pooling 'all' needs at least one gene plus T and S");
                }
                let genes = e.narrow(0, 0, n - 2)?;
                Tensor::cat(
                    &[
                        &e.get(n - 1)?,
                        &e.get(n - 2)?,
                        &genes.max(0)?,
                        &genes.mean(0)?,
                    ],
                    0,
                )?
            }
        };
        rows.push(row);
    }
    Ok(Tensor::stack(&rows, 0)?)
}

fn max_over(rows: &[Vec<f32>], d: usize) -> Vec<f32> {
    let mut m = vec![f32::NEG_INFINITY; d];
    for r in rows {
        for (a, v) in m.iter_mut().zip(r) {
            if *v > *a {
                *a = *v;
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_ignores_padding() {
        // Two cells, width 2: cell 0 has 3 tokens (gene, T, S), cell 1 has 4 (two genes, T, S); the
        // padding rows hold huge values that must never show up.
        let pad = 1e9f32;
        let data = vec![
            1.0, 2.0, 10.0, 20.0, 30.0, 40.0, pad, pad, //
            5.0, -1.0, 3.0, 7.0, 11.0, 12.0, 13.0, 14.0,
        ];
        let t = Tensor::from_vec(data, (2, 4, 2), &Device::Cpu).unwrap();
        let all = pool_cells(&t, &[3, 4], Pool::All).unwrap();
        // [S, T, max genes, mean genes]
        assert_eq!(all[0], vec![30.0, 40.0, 10.0, 20.0, 1.0, 2.0, 1.0, 2.0]);
        assert_eq!(all[1], vec![13.0, 14.0, 11.0, 12.0, 5.0, 7.0, 4.0, 3.0]);
        let max = pool_cells(&t, &[3, 4], Pool::Max).unwrap();
        assert_eq!(max[0], vec![30.0, 40.0]);
        assert_eq!(max[1], vec![13.0, 14.0]);
    }

    #[test]
    fn tensor_pooling_matches_row_pooling() {
        let t = Tensor::randn(0f32, 1.0, (2, 5, 3), &Device::Cpu).unwrap();
        for pool in [Pool::All, Pool::Max] {
            let rows = pool_cells(&t, &[4, 5], pool).unwrap();
            let got = pool_tensor(&t, &[4, 5], pool)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for (a, b) in rows.iter().flatten().zip(got.iter().flatten()) {
                assert!((a - b).abs() < 1e-6, "{pool:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn pooling_all_needs_a_gene() {
        let t = Tensor::zeros((1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(pool_cells(&t, &[2], Pool::All).is_err());
        assert!(
            pool_cells(&t, &[3], Pool::Max).is_err(),
            "more tokens than the batch holds"
        );
    }
}
