//! Inputs of annotation: labels from an obs column, cells read and preprocessed exactly as `embed`
//! does, pooled embeddings (computed, or reused from `obsm['X_scfoundation']`), head logits.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::CellEmbedding;
use crate::data::preprocess;
use crate::data::{CellStream, DatasetStats, GeneVocab, PreNormalized};
use crate::io::h5ad::frame::Column;
use crate::io::h5ad::{elem::Block, Frame};
use crate::io::Input;
use crate::model::heads::CellInput;
use crate::model::{CellClassifier, MaeAutobin};
use crate::progress::Progress;
use crate::steps::embed::{Batching, Workload};
use crate::weights::ModelRef;

/// A cell's encoder input: gathered values and their positions.
pub type Tokens = (Vec<f32>, Vec<u32>);

/// Cells of one file, preprocessed.
pub struct Cells {
    pub ids: Vec<String>,
    pub tokens: Vec<Tokens>,
    pub obs: Option<Frame>,
    pub n_input_genes: usize,
    pub n_genes_mapped: usize,
}

/// Reads every cell of `path` and turns it into encoder tokens (`embed`'s preprocessing).
pub fn read_cells(path: &Path, opts: &CellEmbedding) -> Result<Cells> {
    let vocab = GeneVocab::builtin();
    let input = Input::open(path, &opts.matrix)?;
    let total_last = opts.preprocess.pre_normalized == PreNormalized::A;
    let mut stream = CellStream::new(input, &vocab, total_last, opts.min_mapped)?;
    let stats = if DatasetStats::needs_pass(&opts.preprocess) {
        crate::steps::embed::dataset_stats(&mut stream)?
    } else {
        DatasetStats::default()
    };
    let file = path.display().to_string();
    let mut tokens = Vec::with_capacity(stream.n_cells());
    loop {
        let cells = stream.next_cells(1024)?;
        if cells.is_empty() {
            break;
        }
        for (i, c) in &cells {
            let what = format!("{file}: cell '{}' (row {})", stream.cell_id(*i), i + 1);
            tokens.push(preprocess::preprocess(c, &opts.preprocess, &stats, &what)?.gathered());
        }
    }
    Ok(Cells {
        ids: stream.input.cell_ids().to_vec(),
        obs: stream.input.obs()?,
        n_input_genes: stream.alignment.n_input,
        n_genes_mapped: stream.alignment.n_genes_covered,
        tokens,
    })
}

/// Whether a label string means "no label".
fn missing(s: &str) -> bool {
    let t = s.trim();
    t.is_empty() || t.eq_ignore_ascii_case("nan") || t.eq_ignore_ascii_case("none")
}

fn number_label(v: f64) -> Option<String> {
    if v.is_nan() {
        None
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        Some(format!("{}", v as i64))
    } else {
        Some(format!("{v}"))
    }
}

fn block_labels(b: &Block) -> Result<Vec<Option<String>>> {
    if b.ndim() != 1 {
        bail!("is not a 1-D column (shape {:?})", b.shape());
    }
    Ok(match b.strings() {
        Some(s) => s.into_iter().map(|x| (!missing(&x)).then_some(x)).collect(),
        None => b.to_f64()?.into_iter().map(number_label).collect(),
    })
}

/// Labels of obs column `key` of an h5ad (categorical, strings, numbers or nullable); `None` for a
/// missing value: a categorical code -1, a masked nullable entry, NaN, or an empty, "nan" or "none"
/// string.
pub fn read_labels(path: &Path, key: &str) -> Result<Vec<Option<String>>> {
    if crate::io::Format::of_input(path)? != crate::io::Format::H5ad {
        bail!(
            "{}: labels come from an obs column, so the input must be .h5ad",
            path.display()
        );
    }
    let file = crate::io::h5ad::open_file(path)?;
    let obs =
        Frame::read(&file, "obs").with_context(|| format!("{}: reading obs", path.display()))?;
    let col = obs.column(key).map_err(|e| {
        anyhow!(
            "{}: label column --label-key '{key}' not found in obs: {e}",
            path.display()
        )
    })?;
    let labels = match col {
        Column::Array(b) => block_labels(b),
        Column::Categorical {
            codes, categories, ..
        } => {
            let cats = block_labels(categories)?;
            Ok(codes
                .iter()
                .map(|&c| {
                    if c < 0 {
                        None
                    } else {
                        cats.get(c as usize).cloned().flatten()
                    }
                })
                .collect())
        }
        Column::Nullable { values, mask, .. } => {
            let v = block_labels(values)?;
            let m = mask.to_f64()?;
            Ok(v.into_iter()
                .zip(m)
                .map(|(v, m)| if m != 0.0 { None } else { v })
                .collect())
        }
    }
    .map_err(|e: anyhow::Error| anyhow!("{}: obs column '{key}' {e:#}", path.display()))?;
    Ok(labels)
}

/// Pooled embeddings (inference numerics, as `embed`), rows in the order of `tokens`; cells are
/// bucketed by length so little padding is computed.
pub fn embed_rows(
    model: &MaeAutobin,
    tokens: &[&Tokens],
    opts: &CellEmbedding,
    device: &Device,
    progress: Option<&mut Progress>,
) -> Result<Vec<Vec<f32>>> {
    let lens: Vec<usize> = tokens.iter().map(|t| t.0.len()).collect();
    let mut out = vec![vec![]; tokens.len()];
    let mut progress = progress;
    let mut batching = Batching::new(opts.batch_size, Workload::Encoder, model, device)?;
    let run = |ids: &[usize]| -> Result<Vec<Vec<f32>>> {
        let cells: Vec<CellInput> = ids
            .iter()
            .map(|&k| CellInput {
                values: &tokens[k].0,
                positions: &tokens[k].1,
                full: &[],
            })
            .collect();
        model.cell_embeddings(&cells, opts.pool, device)
    };
    batching.run(&lens, device, run, |ids, rows| {
        for (&k, r) in ids.iter().zip(rows) {
            out[k] = r;
        }
        if let Some(p) = progress.as_deref_mut() {
            p.inc(ids.len() as u64);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Row-major rows as a `[n, width]` f32 tensor.
pub fn rows_tensor(rows: &[&[f32]], width: usize, device: &Device) -> Result<Tensor> {
    let mut flat = Vec::with_capacity(rows.len() * width);
    for r in rows {
        if r.len() != width {
            bail!("embedding of width {} where {width} was expected", r.len());
        }
        flat.extend_from_slice(r);
    }
    Ok(Tensor::from_vec(flat, (rows.len(), width), device)?)
}

/// Class probabilities `[n][k]` of the head on embedding rows, in chunks.
pub fn probabilities(
    head: &CellClassifier,
    rows: &[&[f32]],
    width: usize,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(256) {
        let x = rows_tensor(chunk, width, device)?.to_dtype(DType::F32)?;
        let logits = head.forward(&x)?.detach();
        let p = candle_nn::ops::softmax_last_dim(&logits)?;
        out.extend(p.to_device(&Device::Cpu)?.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// Index of the largest value (the first on ties).
pub fn argmax(p: &[f32]) -> usize {
    let mut best = 0;
    for (k, &v) in p.iter().enumerate() {
        if v > p[best] {
            best = k;
        }
    }
    best
}

/// `obsm['X_scfoundation']` of `path` when its provenance (`uns['scfoundation']`) shows it was made by
/// `embed --mode cell` with these weights (sha256) and these embedding options; `None` otherwise.
pub fn reusable_embeddings(
    path: &Path,
    model: &ModelRef,
    opts: &CellEmbedding,
    n_cells: usize,
    width: usize,
) -> Result<Option<Vec<Vec<f32>>>> {
    let file = crate::io::h5ad::open_file(path)?;
    let Some(prov) = crate::io::h5ad::read_uns_strings(&file, "scfoundation")? else {
        return Ok(None);
    };
    let get = |k: &str| prov.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let want = [
        ("step", Some("embed")),
        ("mode", Some("cell")),
        ("model_sha256", Some(model.sha256.as_str())),
        ("checkpoint_key", Some(opts.key.as_str())),
        ("pool", Some(super::pool_name(opts.pool))),
    ];
    let tgt = opts.preprocess.tgthighres.to_string();
    let pre = format!("{:?}", opts.preprocess.pre_normalized);
    let it = format!("{:?}", opts.preprocess.input_type).to_lowercase();
    let more = [
        ("tgthighres", Some(tgt.as_str())),
        ("pre_normalized", Some(pre.as_str())),
        ("input_type", Some(it.as_str())),
        ("layer", opts.matrix.layer.as_deref()),
        ("use_raw", opts.matrix.use_raw.then_some("true")),
        ("gene_column", opts.matrix.gene_column.as_deref()),
    ];
    for (k, v) in want.iter().chain(more.iter()) {
        if get(k) != *v {
            log::info!(
                "{}: obsm['X_scfoundation'] not reused: its provenance has {k} = {:?}, this run {:?}",
                path.display(),
                get(k),
                v
            );
            return Ok(None);
        }
    }
    let Ok(ds) = file.dataset("obsm/X_scfoundation") else {
        return Ok(None);
    };
    if ds.shape() != [n_cells, width] {
        log::info!(
            "{}: obsm['X_scfoundation'] has shape {:?}, expected [{n_cells}, {width}]; not reused",
            path.display(),
            ds.shape()
        );
        return Ok(None);
    }
    let v = crate::io::h5ad::elem::read_rows(&ds, None)?.to_f64()?;
    if v.iter().any(|x| !x.is_finite()) {
        bail!(
            "{}: obsm['X_scfoundation'] holds non-finite values",
            path.display()
        );
    }
    Ok(Some(
        v.chunks(width)
            .map(|r| r.iter().map(|&x| x as f32).collect())
            .collect(),
    ))
}
