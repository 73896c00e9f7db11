//! `embed`: cell embeddings, gene context embeddings or predicted expression for every cell of an input.
//! A short pipeline: a row source (any input format) → aligned, preprocessed cells → the model's
//! per-mode forward (`model::heads`) in length buckets → an output sink.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;

use crate::data::batch::{length_buckets, run_halving_on_oom, BatchLimits, BatchSize};
use crate::data::preprocess::{self, CellTokens};
use crate::data::{CellStream, DatasetStats, GeneVocab, PreNormalized, PreprocessOptions, N_GENES};
use crate::io::sink::{OutputSpec, Reduce, Sink};
use crate::io::{Input, MatrixChoice};
use crate::model::heads::{CellInput, GeneHead};
use crate::model::{load_entry, MaeAutobin};
use crate::progress::Progress;
use crate::provenance::Provenance;
use crate::weights::ModelRef;

pub use crate::model::heads::Pool;

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
    /// Element type of weights and activations (f32, or bf16 for mixed precision).
    pub precision: candle_core::DType,
    pub batch_size: BatchSize,
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

/// Cells read and preprocessed at a time (then bucketed by length into batches), in batches.
const CHUNK_BATCHES: usize = 16;
/// `--batch-size auto` on the CPU: larger batches do not run faster there, they only take memory.
const AUTO_CPU_BATCH: usize = 8;
/// `--batch-size auto` on a GPU: at most this many cells per batch and this many per chunk.
const AUTO_MAX_CELLS: usize = 4096;
const AUTO_MAX_CHUNK: usize = 16_384;
/// Share of the free device memory that auto-sized batches plan to use.
const AUTO_MEMORY_SHARE: f64 = 0.6;
/// Host memory for the rows one batch returns (full gene embeddings: cells x 19,264 x width f32).
const AUTO_HOST_ROWS_BYTES: u64 = 1 << 30;

pub fn embed(
    input_path: &Path,
    model_ref: &ModelRef,
    output: &Path,
    opts: &EmbedOptions,
    device: &Device,
) -> Result<EmbedSummary> {
    crate::io::Format::of_output(output)?;
    crate::fsutil::refuse_input_as_output(output, &[input_path])?;
    let vocab = GeneVocab::builtin();
    let input = Input::open(input_path, &opts.matrix)?;
    let total_last = opts.preprocess.pre_normalized == PreNormalized::A;
    let mut stream = CellStream::new(input, &vocab, total_last, opts.min_mapped)?;
    let stats = if DatasetStats::needs_pass(&opts.preprocess) {
        dataset_stats(&mut stream)?
    } else {
        DatasetStats::default()
    };
    let model = load_model(model_ref, &opts.key, device, opts.precision)?;

    let workload = match opts.mode {
        Mode::Cell => Workload::Encoder,
        Mode::Gene => Workload::Decoder {
            host_bytes_per_cell: (N_GENES * model.config().decoder.hidden_dim * 4) as u64,
        },
        Mode::Expression => Workload::Decoder {
            host_bytes_per_cell: (N_GENES * 4) as u64,
        },
    };
    let mut batching = Batching::new(opts.batch_size, workload, &model, device)?;
    let n = stream.n_cells();
    let (shape, h5ad_key, reduce) = output_layout(opts, &model, n);
    let mut prov = provenance(opts, model_ref, input_path, &stream, &stats);
    // CPU and GPU arithmetic differ slightly, so the device is part of the record.
    prov.set("device", device_name(device));

    let obs = stream.input.obs()?;
    let var: &[String] = match opts.mode {
        Mode::Cell => &[],
        Mode::Gene | Mode::Expression => vocab.names(),
    };
    let mut sink = Sink::create(OutputSpec {
        path: output,
        shape: shape.clone(),
        h5ad_key,
        obs: obs.as_ref(),
        cell_ids: stream.input.cell_ids(),
        var,
        reduce,
        inputs: &[input_path],
    })?;
    drop(obs);

    let file = input_path.display().to_string();
    let mut progress = Progress::new(n as u64, "cells", &file);
    // Reading and preprocessing the next chunk (HDF5 decoding, normalisation) runs on its own thread
    // while the model works on the current one; chunks arrive in file order.
    let chunk_cells = batching.chunk_cells;
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<CellTokens>>>(1);
        let stats = &stats;
        let file = &file;
        scope.spawn(move || loop {
            let chunk = read_chunk(&mut stream, chunk_cells, opts, stats, file);
            let done = !matches!(chunk, Ok(Some(_)));
            let sent = match chunk {
                Ok(None) => true,
                Ok(Some(tokens)) => tx.send(Ok(tokens)).is_ok(),
                Err(e) => tx.send(Err(e)).is_ok(),
            };
            // Stop at the end, on an error, or when the consumer has gone (it failed).
            if done || !sent {
                break;
            }
        });
        for chunk in rx {
            let tokens = chunk?;
            let results = run_chunk(&model, &tokens, opts, device, &mut batching, &mut progress)
                .with_context(|| format!("running the model on {file}"))?;
            sink.push(&results)?;
        }
        Ok(())
    })?;
    progress.finish();
    batching.record(&mut prov);
    sink.finish(prov.entries())?;
    Ok(EmbedSummary {
        n_cells: n,
        output_shape: shape,
        provenance: prov,
    })
}

pub(crate) fn load_model(
    model_ref: &ModelRef,
    key: &str,
    device: &Device,
    dtype: candle_core::DType,
) -> Result<MaeAutobin> {
    let entry = load_entry(&model_ref.path, key)?;
    let model =
        MaeAutobin::load(entry.var_builder_as(device, dtype), &entry.config).map_err(|e| {
            anyhow!(
                "{}: entry '{key}' does not fit its own config: {e}",
                model_ref.path.display()
            )
        })?;
    if entry.config.n_genes() != N_GENES {
        bail!(
            "{}: model expects {} genes, this engine's gene list has {N_GENES}",
            model_ref.path.display(),
            entry.config.n_genes()
        );
    }
    log::info!(
        "model {} entry '{key}' (sha256 {}) loaded on {}",
        model_ref.name,
        model_ref.sha256,
        device_name(device)
    );
    Ok(model)
}

/// The next chunk of cells, read and preprocessed; `None` at the end of the file.
fn read_chunk(
    stream: &mut CellStream,
    n: usize,
    opts: &EmbedOptions,
    stats: &DatasetStats,
    file: &str,
) -> Result<Option<Vec<CellTokens>>> {
    let cells = stream.next_cells(n)?;
    if cells.is_empty() {
        return Ok(None);
    }
    let tokens = cells
        .iter()
        .map(|(i, c)| {
            let what = format!("{file}: cell '{}' (row {})", stream.cell_id(*i), i + 1);
            preprocess::preprocess(c, &opts.preprocess, stats, &what)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(tokens))
}

/// Output shape, h5ad location and whether rows are averaged, per mode.
fn output_layout(
    opts: &EmbedOptions,
    model: &MaeAutobin,
    n: usize,
) -> (Vec<usize>, &'static str, Reduce) {
    let cfg = model.config();
    let (enc, dec) = (cfg.encoder.hidden_dim, cfg.decoder.hidden_dim);
    match (opts.mode, opts.gene_embedding) {
        (Mode::Cell, _) => {
            let width = match opts.pool {
                Pool::All => 4 * enc,
                Pool::Max => enc,
            };
            (vec![n, width], "obsm/X_scfoundation", Reduce::Rows)
        }
        (Mode::Gene, GeneEmbedding::Full) => (
            vec![n, N_GENES, dec],
            "obsm/X_scfoundation_gene",
            Reduce::Rows,
        ),
        (Mode::Gene, GeneEmbedding::Mean) => {
            (vec![N_GENES, dec], "varm/X_scfoundation", Reduce::Mean)
        }
        (Mode::Expression, _) => (vec![n, N_GENES], "X", Reduce::Rows),
    }
}

/// What one batch computes, for sizing batches from device memory.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Workload {
    /// The encoder only (pooled cell embeddings).
    Encoder,
    /// Encoder and decoder over all positions, returning this many bytes per cell to the host.
    Decoder { host_bytes_per_cell: u64 },
}

/// How cells are grouped into forward passes, resolved once per run from `--batch-size` (and, for
/// `auto` on a GPU, from the free device memory and the model's shape); shrinks when the device runs
/// out of memory anyway. Shared by the steps that run the model over cells.
pub(crate) struct Batching {
    limits: BatchLimits,
    /// Cells read and preprocessed at a time (bucketed by length into batches).
    pub chunk_cells: usize,
    /// Batches that ran out of device memory and were split.
    oom_splits: usize,
    auto: bool,
}

impl Batching {
    pub fn new(
        size: BatchSize,
        workload: Workload,
        model: &MaeAutobin,
        device: &Device,
    ) -> Result<Self> {
        let fixed = |n: usize| Batching {
            limits: BatchLimits::cells(n),
            chunk_cells: n.saturating_mul(CHUNK_BATCHES),
            oom_splits: 0,
            auto: size == BatchSize::Auto,
        };
        match size {
            BatchSize::Fixed(0) => bail!("--batch-size must be at least 1"),
            BatchSize::Fixed(n) => Ok(fixed(n)),
            BatchSize::Auto => match crate::device::memory_info(device)? {
                None => Ok(fixed(AUTO_CPU_BATCH)),
                Some((free, _)) => Ok(Self::sized(free, workload, model)),
            },
        }
    }

    /// `auto` on a device with `free` bytes of free memory.
    fn sized(free: u64, workload: Workload, model: &MaeAutobin) -> Self {
        let budget = ((free as f64 * AUTO_MEMORY_SHARE) as u64)
            .saturating_sub(model.attention_block_bytes());
        let (per_cell, host) = match workload {
            Workload::Encoder => (0, None),
            Workload::Decoder {
                host_bytes_per_cell,
            } => (model.decoder_bytes_per_cell(), Some(host_bytes_per_cell)),
        };
        let mut limits = BatchLimits::from_budget(
            budget,
            model.encoder_bytes_per_token(),
            per_cell,
            AUTO_MAX_CELLS,
        );
        if let Some(row) = host.filter(|&r| r > 0) {
            limits.cells = limits
                .cells
                .min((AUTO_HOST_ROWS_BYTES / row).max(1) as usize);
        }
        log::info!(
            "--batch-size auto: {:.1} GiB free on the device; up to {} cells and {} encoder tokens per batch",
            free as f64 / f64::from(1u32 << 30),
            limits.cells,
            limits.tokens
        );
        Batching {
            limits,
            chunk_cells: limits.cells.saturating_mul(4).clamp(1, AUTO_MAX_CHUNK),
            oom_splits: 0,
            auto: true,
        }
    }

    /// Runs `run` over cells `0..lens.len()` (`lens`: encoder tokens per cell) in batches of similar
    /// length within the limits, shortest first; `done` gets each batch's cell indices and results.
    /// A batch that runs out of device memory is split in halves, and later batches are planned at
    /// half the size.
    pub fn run<T>(
        &mut self,
        lens: &[usize],
        device: &Device,
        mut run: impl FnMut(&[usize]) -> Result<Vec<T>>,
        mut done: impl FnMut(&[usize], Vec<T>) -> Result<()>,
    ) -> Result<()> {
        let mut order: Vec<usize> = (0..lens.len()).collect();
        order.sort_by_key(|&k| lens[k]);
        let sorted: Vec<usize> = order.iter().map(|&k| lens[k]).collect();
        let is_oom = |e: &anyhow::Error| crate::device::is_out_of_memory(device, e);
        for bucket in length_buckets(&sorted, self.limits) {
            let ids = &order[bucket];
            let before = self.oom_splits;
            let rows = run_halving_on_oom(ids, &mut run, &is_oom, &mut self.oom_splits)?;
            if self.oom_splits > before {
                self.limits = self.limits.halved();
            }
            done(ids, rows)?;
        }
        Ok(())
    }

    /// What a re-run needs to batch the same way (pin `--batch-size` to repeat it exactly).
    pub fn record(&self, prov: &mut Provenance) {
        if !self.auto {
            return;
        }
        prov.set("batch_cells_max", self.limits.cells);
        if self.limits.tokens != usize::MAX {
            prov.set("batch_tokens_max", self.limits.tokens);
        }
        if self.oom_splits > 0 {
            prov.set("batch_oom_splits", self.oom_splits);
        }
    }
}

/// Runs the model on a chunk of cells, in batches of similar length (little padding); results come
/// back in the chunk's order.
fn run_chunk(
    model: &MaeAutobin,
    tokens: &[CellTokens],
    opts: &EmbedOptions,
    device: &Device,
    batching: &mut Batching,
    progress: &mut Progress,
) -> Result<Vec<Vec<f32>>> {
    let gathered: Vec<(Vec<f32>, Vec<u32>)> = tokens.iter().map(CellTokens::gathered).collect();
    let lens: Vec<usize> = gathered.iter().map(|g| g.0.len()).collect();
    let mut results: Vec<Vec<f32>> = vec![vec![]; tokens.len()];
    let run_batch = |ids: &[usize]| -> Result<Vec<Vec<f32>>> {
        let dense: Vec<Vec<f32>> = match opts.mode {
            Mode::Cell => vec![],
            _ => ids.iter().map(|&k| tokens[k].dense()).collect(),
        };
        let cells: Vec<CellInput> = ids
            .iter()
            .enumerate()
            .map(|(j, &k)| CellInput {
                values: &gathered[k].0,
                positions: &gathered[k].1,
                full: dense.get(j).map(Vec::as_slice).unwrap_or(&[]),
            })
            .collect();
        log::debug!(
            "batch of {} cells, {}..{} encoder tokens",
            cells.len(),
            cells.first().map(|c| c.values.len()).unwrap_or(0),
            cells.last().map(|c| c.values.len()).unwrap_or(0)
        );
        match opts.mode {
            Mode::Cell => model.cell_embeddings(&cells, opts.pool, device),
            Mode::Gene => model.gene_outputs(&cells, GeneHead::Hidden, N_GENES, device),
            Mode::Expression => model.gene_outputs(&cells, GeneHead::Expression, N_GENES, device),
        }
    };
    batching.run(&lens, device, run_batch, |ids, rows| {
        for (&k, r) in ids.iter().zip(rows) {
            results[k] = r;
        }
        progress.inc(ids.len() as u64);
        Ok(())
    })?;
    Ok(results)
}

/// Bulk input with raw counts normalises every sample to the file's median total: a first pass.
pub(crate) fn dataset_stats(stream: &mut CellStream) -> Result<DatasetStats> {
    let file = stream.input.path.display().to_string();
    let mut totals = Vec::with_capacity(stream.n_cells());
    loop {
        let cells = stream.next_cells(4096)?;
        if cells.is_empty() {
            break;
        }
        for (i, c) in &cells {
            preprocess::validate(c, &format!("{file}: cell '{}'", stream.cell_id(*i)))?;
            totals.push(c.sum());
        }
    }
    stream.rewind()?;
    Ok(DatasetStats::from_totals(totals))
}

pub(crate) fn device_name(device: &Device) -> String {
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
    prov.set("precision", format!("{:?}", opts.precision).to_lowercase());
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
    record_reading(
        &mut prov,
        &opts.preprocess,
        opts.batch_size,
        opts.min_mapped,
        &opts.matrix,
        stream,
    );
    if let Some(m) = stats.median_total {
        prov.set("bulk_median_total", m);
    }
    prov
}

/// The reading and preprocessing options and what the input mapped to, in the order every output
/// records them (shared by the steps that read cells through a [`CellStream`]).
pub(crate) fn record_reading(
    prov: &mut Provenance,
    pre: &PreprocessOptions,
    batch_size: impl std::fmt::Display,
    min_mapped: f64,
    matrix: &MatrixChoice,
    stream: &CellStream,
) {
    prov.set("input_type", format!("{:?}", pre.input_type).to_lowercase());
    prov.set("pre_normalized", format!("{:?}", pre.pre_normalized));
    prov.set("tgthighres", pre.tgthighres);
    prov.set("batch_size", batch_size);
    prov.set("min_mapped", min_mapped);
    if let Some(l) = &matrix.layer {
        prov.set("layer", l);
    }
    if matrix.use_raw {
        prov.set("use_raw", "true");
    }
    if let Some(c) = &matrix.gene_column {
        prov.set("gene_column", c);
    }
    prov.set("n_cells", stream.n_cells());
    prov.set("n_input_genes", stream.alignment.n_input);
    prov.set("n_genes_mapped", stream.alignment.n_genes_covered);
    prov.set("gene_index_sha256", crate::data::genes::GENE_INDEX_SHA256);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::init::{random_tensors, Preset};
    use candle_core::{DType, Tensor};
    use std::collections::HashMap;

    /// `auto` on a GPU, with the released widths in bf16 (`mid` has the 100M model's widths and
    /// fewer layers; the estimates are per layer) and an H200's free memory.
    #[test]
    fn auto_batches_from_free_memory() {
        let cfg = crate::model::ModelConfig::from_json(&Preset::Mid.config()).unwrap();
        let tensors: HashMap<String, Tensor> =
            random_tensors(&cfg, 1).unwrap().into_iter().collect();
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::BF16, &Device::Cpu);
        let model = MaeAutobin::load(vb, &cfg).unwrap();
        let gib = 1u64 << 30;
        let cell = Batching::sized(139 * gib, Workload::Encoder, &model);
        // About 1,700 cells of 850 genes (852 tokens) per batch, capped at 4,096 cells.
        let cells_850 = cell.limits.tokens / 852;
        assert!((1000..3000).contains(&cells_850), "{:?}", cell.limits);
        assert_eq!(cell.limits.cells, AUTO_MAX_CELLS);
        assert_eq!(cell.chunk_cells, AUTO_MAX_CHUNK);
        let expression = Batching::sized(
            139 * gib,
            Workload::Decoder {
                host_bytes_per_cell: (N_GENES * 4) as u64,
            },
            &model,
        );
        assert!(
            (20..80).contains(&expression.limits.cells),
            "{:?}",
            expression.limits
        );
        // Full gene embeddings: 19,264 x 512 f32 per cell, at most 1 GiB of them per batch.
        let gene = Batching::sized(
            139 * gib,
            Workload::Decoder {
                host_bytes_per_cell: (N_GENES * 512 * 4) as u64,
            },
            &model,
        );
        assert_eq!(gene.limits.cells, 27);
        // A small card still runs, one cell at a time if need be.
        let small = Batching::sized(gib, Workload::Encoder, &model);
        assert!(small.limits.cells >= 1 && small.limits.tokens >= 1);
        assert!(small.limits.tokens < cell.limits.tokens / 100);
        let mut prov = Provenance::new("embed");
        expression.record(&mut prov);
        assert_eq!(
            prov.get("batch_cells_max"),
            Some(expression.limits.cells.to_string().as_str())
        );
    }
}
