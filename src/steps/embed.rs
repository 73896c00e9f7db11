//! `embed`: cell embeddings, gene context embeddings or predicted expression for every cell of an input.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};

use crate::data::preprocess::{self, CellTokens, FULL_LEN};
use crate::data::{CellStream, DatasetStats, GeneVocab, PreNormalized, PreprocessOptions, N_GENES};
use crate::fsutil::PendingFile;
use crate::io::h5ad::{ArrayOut, H5adWriter, ObsSource};
use crate::io::npy::NpyWriter;
use crate::io::{Format, Input, MatrixChoice};
use crate::model::{encoder_batch, load_entry, MaeAutobin};
use crate::provenance::Provenance;
use crate::weights::ModelRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One vector per cell from the encoder (pooled).
    Cell,
    /// Per-cell context embeddings of all 19,264 genes from the decoder.
    Gene,
    /// Predicted expression of all 19,264 genes (the pretraining head).
    Expression,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// [S token, T token, max over genes, mean over genes]: 4 x encoder width.
    All,
    /// Max over all encoder positions: 1 x encoder width.
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeneEmbedding {
    /// Cells x genes x width.
    Full,
    /// Mean over cells: genes x width (into varm for h5ad).
    Mean,
}

#[derive(Debug, Clone)]
pub struct EmbedOptions {
    pub mode: Mode,
    pub pool: Pool,
    pub gene_embedding: GeneEmbedding,
    pub preprocess: PreprocessOptions,
    pub key: String,
    pub batch_size: usize,
    pub min_mapped: f64,
    pub matrix: MatrixChoice,
}

impl EmbedOptions {
    /// The reference's default checkpoint entry per mode.
    pub fn default_key(mode: Mode) -> &'static str {
        match mode {
            Mode::Cell => "cell",
            Mode::Gene | Mode::Expression => "gene",
        }
    }
}

#[derive(Debug, Clone)]
pub struct EmbedSummary {
    pub n_cells: usize,
    pub output_shape: Vec<usize>,
    pub provenance: Provenance,
}

/// Where result rows go.
enum Sink {
    Npy(NpyWriter),
    H5ad(H5adWriter, ArrayOut),
    /// Mean gene embedding: summed here, written at the end.
    Mean(Vec<f64>, usize),
}

pub fn embed(
    input_path: &Path,
    model_ref: &ModelRef,
    output: &Path,
    opts: &EmbedOptions,
    device: &Device,
) -> Result<EmbedSummary> {
    let out_format = Format::of_output(output)?;
    crate::fsutil::refuse_input_as_output(output, &[input_path])?;
    if opts.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let vocab = GeneVocab::builtin();
    let input = Input::open(input_path, &opts.matrix)?;
    let total_last = opts.preprocess.pre_normalized == PreNormalized::A;
    let mut stream = CellStream::new(input, &vocab, total_last, opts.min_mapped)?;
    let file = input_path.display().to_string();
    let stats = if DatasetStats::needs_pass(&opts.preprocess) {
        dataset_stats(&stream, &vocab, opts)?
    } else {
        DatasetStats::default()
    };

    let entry = load_entry(&model_ref.path, &opts.key)?;
    let model = MaeAutobin::load(entry.var_builder(device), &entry.config).map_err(|e| {
        anyhow!(
            "{}: entry '{}' does not fit its own config: {e}",
            model_ref.path.display(),
            opts.key
        )
    })?;
    if entry.config.n_genes() != N_GENES {
        bail!(
            "{}: model expects {} genes, this engine's gene list has {N_GENES}",
            model_ref.path.display(),
            entry.config.n_genes()
        );
    }
    drop(entry);
    let cfg = model.config().clone();

    let n = stream.n_cells();
    let enc_dim = cfg.encoder.hidden_dim;
    let dec_dim = cfg.decoder.hidden_dim;
    let row_len = match opts.mode {
        Mode::Cell => match opts.pool {
            Pool::All => 4 * enc_dim,
            Pool::Max => enc_dim,
        },
        Mode::Gene => N_GENES * dec_dim,
        Mode::Expression => N_GENES,
    };
    let shape: Vec<usize> = match opts.mode {
        Mode::Cell => vec![n, row_len],
        Mode::Gene => match opts.gene_embedding {
            GeneEmbedding::Full => vec![n, N_GENES, dec_dim],
            GeneEmbedding::Mean => vec![N_GENES, dec_dim],
        },
        Mode::Expression => vec![n, N_GENES],
    };

    let mut prov = provenance(opts, model_ref, input_path, &stream, &stats);
    // CPU and GPU arithmetic differ slightly, so the device is part of the record.
    prov.set("device", device_name(device));

    let pending = PendingFile::new(output)?;
    let mut sink = match (out_format, opts.mode, opts.gene_embedding) {
        (_, Mode::Gene, GeneEmbedding::Mean) => Sink::Mean(vec![0.0; N_GENES * dec_dim], 0),
        (Format::Npy, ..) => Sink::Npy(NpyWriter::create(pending.path(), &shape)?),
        _ => {
            let w = H5adWriter::create(pending.path())?;
            write_frames(&w, &stream.input, &vocab, opts.mode)?;
            let arr = w.create_array(result_path(opts.mode), &shape)?;
            Sink::H5ad(w, arr)
        }
    };

    let progress = crate::progress::bar(n as u64, "cells");
    let chunk = opts.batch_size * 16;
    loop {
        let cells = stream.next_cells(chunk)?;
        if cells.is_empty() {
            break;
        }
        let tokens = cells
            .iter()
            .map(|(i, c)| {
                let what = format!("{file}: cell '{}' (row {})", stream.cell_id(*i), i + 1);
                preprocess::preprocess(c, &opts.preprocess, &stats, &what)
            })
            .collect::<Result<Vec<_>>>()?;
        // Similar lengths share a batch, so little padding is computed.
        let mut order: Vec<usize> = (0..tokens.len()).collect();
        order.sort_by_key(|&k| tokens[k].n_gathered());
        let mut results: Vec<Vec<f32>> = vec![vec![]; tokens.len()];
        for batch in length_buckets(&order, &tokens, opts.batch_size) {
            let toks: Vec<&CellTokens> = batch.iter().map(|&k| &tokens[k]).collect();
            let rows = run_batch(&model, &toks, opts, device)
                .with_context(|| format!("running the model on {file}"))?;
            for (&k, r) in batch.iter().zip(rows) {
                results[k] = r;
            }
            progress.inc(batch.len() as u64);
        }
        for r in &results {
            match &mut sink {
                Sink::Npy(w) => w.write(r)?,
                Sink::H5ad(_, a) => a.append_rows(r)?,
                Sink::Mean(acc, count) => {
                    for (a, v) in acc.iter_mut().zip(r) {
                        *a += *v as f64;
                    }
                    *count += 1;
                }
            }
        }
    }
    progress.finish_and_clear();

    match sink {
        Sink::Npy(w) => w.finish()?,
        Sink::H5ad(w, _) => {
            w.write_uns_strings("scfoundation", prov.entries())?;
            w.close()?;
        }
        Sink::Mean(acc, count) => {
            let mean: Vec<f32> = acc.iter().map(|s| (s / count as f64) as f32).collect();
            match out_format {
                Format::Npy => {
                    let mut w = NpyWriter::create(pending.path(), &shape)?;
                    w.write(&mean)?;
                    w.finish()?;
                }
                _ => {
                    let w = H5adWriter::create(pending.path())?;
                    write_frames(&w, &stream.input, &vocab, opts.mode)?;
                    w.create_array("varm/X_scfoundation", &shape)?
                        .append_rows(&mean)?;
                    w.write_uns_strings("scfoundation", prov.entries())?;
                    w.close()?;
                }
            }
        }
    }
    // The sidecar is committed together with the main file, after it: never one without the other.
    let mut outputs = vec![pending];
    if out_format == Format::Npy {
        let side = output.with_extension("npy.provenance.json");
        crate::fsutil::refuse_input_as_output(&side, &[input_path])?;
        let json: serde_json::Map<String, serde_json::Value> = prov
            .entries()
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let p = PendingFile::new(&side)?;
        std::fs::write(p.path(), serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", side.display()))?;
        outputs.push(p);
    }
    PendingFile::commit_all(outputs)?;
    Ok(EmbedSummary {
        n_cells: n,
        output_shape: shape,
        provenance: prov,
    })
}

fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => "cuda".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}

/// Everything needed to re-run this embedding: engine, weights digest, input, options, gene mapping.
fn provenance(
    opts: &EmbedOptions,
    model_ref: &ModelRef,
    input_path: &Path,
    stream: &CellStream,
    stats: &DatasetStats,
) -> Provenance {
    let mut prov = Provenance::new("embed").with_model(model_ref, &opts.key);
    prov.set("mode", format!("{:?}", opts.mode).to_lowercase());
    if opts.mode == Mode::Cell {
        prov.set("pool", format!("{:?}", opts.pool).to_lowercase());
    }
    if opts.mode == Mode::Gene {
        prov.set(
            "gene_embedding",
            format!("{:?}", opts.gene_embedding).to_lowercase(),
        );
    }
    prov.set(
        "input",
        input_path
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default(),
    );
    prov.set(
        "input_type",
        format!("{:?}", opts.preprocess.input_type).to_lowercase(),
    );
    prov.set(
        "pre_normalized",
        format!("{:?}", opts.preprocess.pre_normalized),
    );
    prov.set("tgthighres", opts.preprocess.tgthighres);
    prov.set("batch_size", opts.batch_size);
    prov.set("min_mapped", opts.min_mapped);
    if let Some(l) = &opts.matrix.layer {
        prov.set("layer", l);
    }
    if opts.matrix.use_raw {
        prov.set("use_raw", "true");
    }
    if let Some(c) = &opts.matrix.gene_column {
        prov.set("gene_column", c);
    }
    prov.set("n_cells", stream.n_cells());
    prov.set("n_input_genes", stream.alignment.n_input);
    prov.set("n_genes_mapped", stream.alignment.n_genes_covered);
    prov.set("gene_index_sha256", crate::data::genes::GENE_INDEX_SHA256);
    if let Some(m) = stats.median_total {
        prov.set("bulk_median_total", m);
    }
    prov
}

/// obs (copied from an h5ad input), var and the standard AnnData groups.
fn write_frames(w: &H5adWriter, input: &Input, vocab: &GeneVocab, mode: Mode) -> Result<()> {
    match input.format {
        Format::H5ad => w.write_obs(ObsSource::CopyFrom(&input.path))?,
        _ => w.write_obs(ObsSource::Names(&input.cell_ids))?,
    }
    match mode {
        Mode::Cell => w.write_var(&[])?,
        Mode::Gene | Mode::Expression => w.write_var(vocab.names())?,
    }
    w.ensure_dicts()
}

/// Where the per-cell result goes in an h5ad output.
fn result_path(mode: Mode) -> &'static str {
    match mode {
        Mode::Cell => "obsm/X_scfoundation",
        Mode::Gene => "obsm/X_scfoundation_gene",
        Mode::Expression => "X",
    }
}

fn dataset_stats(
    stream: &CellStream,
    vocab: &GeneVocab,
    opts: &EmbedOptions,
) -> Result<DatasetStats> {
    let total_last = opts.preprocess.pre_normalized == PreNormalized::A;
    let mut s = CellStream::new(stream.input.reopen()?, vocab, total_last, 0.0)?;
    let mut totals = Vec::with_capacity(s.n_cells());
    loop {
        let cells = s.next_cells(4096)?;
        if cells.is_empty() {
            break;
        }
        for (i, c) in &cells {
            preprocess::validate(
                c,
                &format!("{}: cell '{}'", stream.input.path.display(), s.cell_id(*i)),
            )?;
            totals.push(c.sum());
        }
    }
    Ok(DatasetStats::from_totals(totals))
}

/// Runs one batch and returns one flat result row per cell.
fn run_batch(
    model: &MaeAutobin,
    toks: &[&CellTokens],
    opts: &EmbedOptions,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let gathered: Vec<(Vec<f32>, Vec<u32>)> = toks.iter().map(|t| t.gathered()).collect();
    let refs: Vec<(&[f32], &[u32])> = gathered
        .iter()
        .map(|(v, p)| (v.as_slice(), p.as_slice()))
        .collect();
    let batch = encoder_batch(&refs, model.config(), device)?;
    let encoded = model.encode(&batch)?;
    match opts.mode {
        Mode::Cell => {
            let lens: Vec<usize> = gathered.iter().map(|(v, _)| v.len()).collect();
            pool_cells(&encoded, &lens, opts.pool)
        }
        Mode::Gene | Mode::Expression => {
            let b = toks.len();
            let l = encoded.dim(1)?;
            let mut full = Vec::with_capacity(b * FULL_LEN);
            let mut scatter = Vec::with_capacity(b * FULL_LEN);
            for (i, (t, (_, pos))) in toks.iter().zip(&gathered).enumerate() {
                full.extend(t.dense());
                let base = (b * l + i * FULL_LEN) as u32;
                let mut row: Vec<u32> = (0..FULL_LEN as u32).map(|p| base + p).collect();
                for (j, &p) in pos.iter().enumerate() {
                    row[p as usize] = (i * l + j) as u32;
                }
                scatter.extend(row);
            }
            let full = Tensor::from_vec(full, (b, FULL_LEN), device)?;
            let scatter = Tensor::from_vec(scatter, b * FULL_LEN, device)?;
            let hidden = model.decode_hidden(&encoded, &full, &scatter)?;
            let out = match opts.mode {
                Mode::Expression => model.expression(&hidden)?.narrow(1, 0, N_GENES)?,
                _ => hidden.narrow(1, 0, N_GENES)?,
            };
            let out = out.flatten_from(1)?.to_device(&Device::Cpu)?;
            Ok(out.to_vec2::<f32>()?)
        }
    }
}

/// Splits cells sorted by length into batches of at most `batch_size` whose longest cell is at most
/// 25% longer than the shortest, so padding costs little.
fn length_buckets<'a>(
    order: &'a [usize],
    tokens: &[CellTokens],
    batch_size: usize,
) -> Vec<&'a [usize]> {
    let len = |k: usize| tokens[k].n_gathered();
    let mut out = vec![];
    let mut start = 0;
    for i in 1..=order.len() {
        let full = i - start == batch_size;
        let long = i < order.len() && len(order[i]) * 4 > len(order[start]) * 5;
        if i == order.len() || full || long {
            out.push(&order[start..i]);
            start = i;
        }
    }
    out
}

/// Pools each cell over its own tokens only (never over padding).
fn pool_cells(encoded: &Tensor, lens: &[usize], pool: Pool) -> Result<Vec<Vec<f32>>> {
    let enc = encoded.to_device(&Device::Cpu)?.to_vec3::<f32>()?;
    let mut out = Vec::with_capacity(lens.len());
    for (e, &n) in enc.iter().zip(lens) {
        let d = e[0].len();
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
