//! `pretrain`: the read-depth-aware masked regression objective (`train::rda`) on h5ad raw counts,
//! starting from `init`/`convert` weights or resuming a run exactly. The output directory loads
//! directly in `embed` and holds everything a resume needs; see docs/pretraining.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device};
use serde_json::{json, Value};

use crate::data::N_GENES;
use crate::io::MatrixChoice;
use crate::model::load_entry;
use crate::train::checkpoint::{self, TrainState, MODEL_KEYS};
use crate::train::data::{file_name, CellRef, DataPosition, Dataset, Sampler, Split};
use crate::train::dist::{DistEnv, GradReduce};
use crate::train::log::{self as tlog, TrainLog};
use crate::train::optim::{AdamWConfig, LrSchedule};
use crate::train::params::{TrainModel, Trainable};
use crate::train::rda::{make_example, masked_sse, Example, RdaOptions};
use crate::train::rng::Rng;
use crate::train::{MicroBatch, Trainer, TrainerConfig};

pub use crate::steps::init::PROVENANCE_FILE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// bf16 forward pass with f32 master weights, gradients, moments and loss (mixed precision).
    Bf16,
}

/// Where the weights come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// A model path `load_entry` reads (an `init`/`convert`/`pretrain` directory, a models.ckpt or a
    /// .safetensors file) and the entry to take from it.
    Init { model: PathBuf, key: String },
    /// A `pretrain` output directory to continue.
    Resume(PathBuf),
}

#[derive(Debug, Clone)]
pub struct PretrainOptions {
    /// Total optimiser steps (a resumed run continues up to this count).
    pub steps: u64,
    /// Cells per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub accumulate: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: u64,
    pub weight_decay: f64,
    /// Global gradient-norm clip; 0 turns clipping off.
    pub clip_norm: f64,
    pub seed: u64,
    pub save_every: u64,
    /// Validation every N steps; 0: at every checkpoint.
    pub val_every: u64,
    pub val_fraction: f64,
    pub val_max_cells: usize,
    pub rda: RdaOptions,
    pub min_genes: usize,
    pub min_mapped: f64,
    pub trainable: Trainable,
    pub precision: Precision,
    pub matrix: MatrixChoice,
    /// Stop after this many steps in this invocation (checkpointing), to continue with a resume later.
    /// Not part of the run's record.
    pub stop_after: Option<u64>,
}

impl Default for PretrainOptions {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 8,
            accumulate: 1,
            lr: 1e-4,
            min_lr: 0.0,
            warmup: 100,
            weight_decay: 0.0,
            clip_norm: 1.0,
            seed: 0,
            save_every: 100,
            val_every: 0,
            val_fraction: 0.01,
            val_max_cells: 1000,
            rda: RdaOptions::default(),
            min_genes: 200,
            min_mapped: 0.2,
            trainable: Trainable::all(),
            precision: Precision::F32,
            matrix: MatrixChoice::default(),
            stop_after: None,
        }
    }
}

/// Options a resumed run may change: the rest define the run and must match.
// Precision is how the arithmetic runs (like the device), not what the run is: a run started in f32 on a CPU may
// continue in bf16 on a GPU.
const RESUMABLE_CHANGES: [&str; 4] = ["steps", "save_every", "val_every", "precision"];

impl PretrainOptions {
    pub fn to_json(&self) -> Value {
        json!({
            "steps": self.steps,
            "batch_size": self.batch_size,
            "accumulate": self.accumulate,
            "lr": self.lr,
            "min_lr": self.min_lr,
            "warmup": self.warmup,
            "weight_decay": self.weight_decay,
            "clip_norm": self.clip_norm,
            "seed": self.seed,
            "save_every": self.save_every,
            "val_every": self.val_every,
            "val_fraction": self.val_fraction,
            "val_max_cells": self.val_max_cells,
            "no_downsample_prob": self.rda.no_downsample_prob,
            "downsample_beta": [self.rda.downsample_beta.0, self.rda.downsample_beta.1],
            "value_mask_prob": self.rda.value_mask_prob,
            "zero_mask_prob": self.rda.zero_mask_prob,
            "min_genes": self.min_genes,
            "min_mapped": self.min_mapped,
            "trainable": self.trainable.to_string(),
            "precision": match self.precision { Precision::F32 => "f32", Precision::Bf16 => "bf16" },
            "layer": self.matrix.layer,
            "use_raw": self.matrix.use_raw,
            "gene_column": self.matrix.gene_column,
        })
    }

    pub fn from_json(v: &Value) -> Result<Self> {
        let f = |k: &str| {
            v[k].as_f64()
                .ok_or_else(|| anyhow!("saved options lack '{k}'"))
        };
        let u = |k: &str| {
            v[k].as_u64()
                .ok_or_else(|| anyhow!("saved options lack '{k}'"))
        };
        let s = |k: &str| v[k].as_str().map(str::to_string);
        let beta = v["downsample_beta"]
            .as_array()
            .and_then(|a| Some((a.first()?.as_f64()?, a.get(1)?.as_f64()?)))
            .ok_or_else(|| anyhow!("saved options lack 'downsample_beta'"))?;
        Ok(Self {
            steps: u("steps")?,
            batch_size: u("batch_size")? as usize,
            accumulate: u("accumulate")? as usize,
            lr: f("lr")?,
            min_lr: f("min_lr")?,
            warmup: u("warmup")?,
            weight_decay: f("weight_decay")?,
            clip_norm: f("clip_norm")?,
            seed: u("seed")?,
            save_every: u("save_every")?,
            val_every: u("val_every")?,
            val_fraction: f("val_fraction")?,
            val_max_cells: u("val_max_cells")? as usize,
            rda: RdaOptions {
                no_downsample_prob: f("no_downsample_prob")?,
                downsample_beta: beta,
                value_mask_prob: f("value_mask_prob")?,
                zero_mask_prob: f("zero_mask_prob")?,
            },
            min_genes: u("min_genes")? as usize,
            min_mapped: f("min_mapped")?,
            trainable: Trainable::parse(&s("trainable").unwrap_or_default())?,
            precision: match s("precision").as_deref() {
                Some("bf16") => Precision::Bf16,
                _ => Precision::F32,
            },
            matrix: MatrixChoice {
                layer: s("layer"),
                use_raw: v["use_raw"].as_bool().unwrap_or(false),
                gene_column: s("gene_column"),
            },
            stop_after: None,
        })
    }

    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.accumulate == 0 {
            bail!("--batch-size and --accumulate must be at least 1");
        }
        if self.save_every == 0 {
            bail!("--save-every must be at least 1");
        }
        let lr_ok = self.lr > 0.0 && self.lr.is_finite();
        if !(lr_ok && self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            bail!("--lr must be positive and --min-lr between 0 and --lr");
        }
        if !(self.weight_decay >= 0.0 && self.clip_norm >= 0.0) {
            bail!("--weight-decay and --clip-norm must not be negative");
        }
        if !(0.0..=1.0).contains(&self.min_mapped) {
            bail!("--min-mapped must be between 0 and 1");
        }
        self.rda.validate()?;
        Ok(())
    }
}

/// The options saved in a pretrain output directory (to resume with, overriding some).
pub fn saved_options(dir: &Path) -> Result<PretrainOptions> {
    let st = checkpoint::read_state(dir)?;
    PretrainOptions::from_json(&st.state.run["options"])
}

#[derive(Debug, Clone)]
pub struct PretrainSummary {
    pub step: u64,
    pub last_loss: Option<f64>,
    pub last_val_loss: Option<f64>,
    pub n_train: usize,
    pub n_val: usize,
}

/// Everything fixed for the run: what the checkpoint's `run` record holds.
fn run_record(opts: &PretrainOptions, ds: &Dataset, init: &Value) -> Value {
    json!({
        "options": opts.to_json(),
        "data": ds.summaries.iter().map(|s| json!({
            "file": file_name(&s.path),
            "sha256": s.sha256,
            "n_cells": s.n_cells,
            "n_eligible": s.n_eligible,
            "n_genes_mapped": s.n_genes_mapped,
        })).collect::<Vec<_>>(),
        "init": init,
    })
}

/// Refuses a resume whose data or run-defining options differ from the saved run.
fn check_resume(saved: &Value, now: &Value) -> Result<()> {
    let digests = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| d["sha256"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    if digests(saved) != digests(now) {
        bail!("--resume: the --data files differ from the run's (compared by sha256, in order)");
    }
    let (Some(a), Some(b)) = (saved["options"].as_object(), now["options"].as_object()) else {
        bail!("--resume: the saved run has no options");
    };
    let mut differ = vec![];
    for (k, v) in a {
        if !RESUMABLE_CHANGES.contains(&k.as_str()) && b.get(k) != Some(v) {
            differ.push(format!(
                "{k} (run: {v}, now: {})",
                b.get(k).unwrap_or(&Value::Null)
            ));
        }
    }
    if !differ.is_empty() {
        bail!(
            "--resume continues a run exactly, so these options must not change: {}",
            differ.join("; ")
        );
    }
    if a.get("steps") != b.get("steps") {
        log::warn!(
            "--steps differs from the run's: the cosine schedule now ends at the new step count"
        );
    }
    Ok(())
}

/// A model path's digest for provenance: the entry's file in a directory, else the file.
fn model_digest(path: &Path, key: &str) -> Result<String> {
    let f = if path.is_dir() {
        crate::model::checkpoint::converted_file(path, key)
    } else {
        path.to_path_buf()
    };
    crate::weights::verify::sha256_file(&f)
}

/// How this process takes part in data-parallel training (default: alone).
#[derive(Debug, Clone, Default)]
pub struct Parallel {
    pub env: DistEnv,
    /// Where rank 0 publishes the NCCL id (default `<out>/.nccl-id`).
    pub id_file: Option<PathBuf>,
    /// How long ranks wait for rank 0's id.
    pub timeout: std::time::Duration,
}

pub fn pretrain(
    data: &[PathBuf],
    start: &Start,
    out: &Path,
    opts: &PretrainOptions,
    device: &Device,
    par: &Parallel,
) -> Result<PretrainSummary> {
    opts.validate()?;
    let dist = par.env;
    // Rank 0 alone validates and writes the log and checkpoints; every rank trains.
    let main_rank = dist.rank == 0;
    let inputs: Vec<&Path> = data.iter().map(PathBuf::as_path).collect();
    crate::fsutil::refuse_input_as_output(out, &inputs)?;
    if out.exists() && !out.is_dir() {
        bail!("{}: exists and is not a directory", out.display());
    }
    let resume_dir = match start {
        Start::Resume(d) => Some(d.as_path()),
        Start::Init { .. } => None,
    };
    let same_dir = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    };
    if out.join(checkpoint::STATE_FILE).exists() && !resume_dir.is_some_and(|d| same_dir(d, out)) {
        bail!(
            "{} already holds a training run; continue it with --resume {} or choose another --out",
            out.display(),
            out.display()
        );
    }

    let ds = Dataset::open(data, &opts.matrix, opts.min_genes, opts.min_mapped)?;
    let split = Split::new(&ds.cells, opts.val_fraction, opts.val_max_cells, opts.seed)?;
    log::info!(
        "{} cells pass QC: {} for training, {} held out for validation",
        ds.cells.len(),
        split.train.len(),
        split.val.len()
    );

    // Weights and, when resuming, the saved state.
    let (entry, loaded, init_record) = match start {
        Start::Init { model, key } => {
            let e = load_entry(model, key)?;
            let rec = json!({
                "model": file_name(model),
                "key": key,
                "sha256": model_digest(model, key)?,
            });
            (e, None, rec)
        }
        Start::Resume(dir) => {
            let st = checkpoint::read_state(dir)?;
            for key in MODEL_KEYS {
                let s = checkpoint::entry_step(dir, key)?;
                if s != Some(st.state.step) {
                    bail!(
                        "{}: {key}.safetensors is from step {s:?} but the train state from step {}; the checkpoint is incomplete",
                        dir.display(),
                        st.state.step
                    );
                }
            }
            let e = load_entry(dir, "gene")?;
            let rec = st.state.run["init"].clone();
            (e, Some(st), rec)
        }
    };
    if entry.config.n_genes() != N_GENES {
        bail!(
            "the model has {} genes, not {N_GENES}",
            entry.config.n_genes()
        );
    }
    let run = run_record(opts, &ds, &init_record);
    if let Some(st) = &loaded {
        check_resume(&st.state.run, &run)?;
    }
    let mut model = TrainModel::from_tensors(
        entry.raw_config.clone(),
        entry.tensors,
        &opts.trainable,
        DType::F32,
        device,
    )?;
    if opts.precision == Precision::Bf16 {
        if device.is_cpu() {
            log::warn!("--precision bf16 on the CPU: correct but slow (candle's CPU bf16 kernels); meant for CUDA");
        }
        model.set_compute_dtype(DType::BF16)?;
    }
    log::info!(
        "{} trainable parameters in {} tensors ({})",
        model.n_trainable(),
        model.params.len(),
        opts.trainable
    );
    let mask_token = model.config.mask_token_id as f32;
    let mut trainer = Trainer::new(
        model,
        TrainerConfig {
            schedule: LrSchedule {
                peak: opts.lr,
                min: opts.min_lr,
                warmup: opts.warmup,
                total: opts.steps,
            },
            clip_norm: (opts.clip_norm > 0.0).then_some(opts.clip_norm),
            adamw: AdamWConfig {
                weight_decay: opts.weight_decay,
                ..Default::default()
            },
        },
    );
    if !dist.is_single() {
        trainer.reducer = Some(reducer(par, out, device)?);
        log::info!(
            "data parallel: rank {} of {}, {} cells per micro-batch per rank",
            dist.rank,
            dist.world,
            opts.batch_size
        );
    }
    let (mut rng, position, mut cells_seen, history) = match &loaded {
        Some(st) => {
            checkpoint::restore_moments(&trainer.model, &mut trainer.opt, &st.moments)?;
            trainer.step = st.state.step;
            let dir = resume_dir.expect("resume");
            (
                st.state.rng.clone(),
                DataPosition {
                    epoch: st.state.epoch,
                    index: st.state.index,
                },
                st.state.cells_seen,
                tlog::history(dir, st.state.step)?,
            )
        }
        None => (
            Rng::derive(opts.seed, "sample", 0),
            DataPosition::default(),
            0,
            vec![],
        ),
    };
    let mut sampler = Sampler::new(&split, opts.seed, position)?;
    let mut log = if main_rank {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        Some(TrainLog::create(out, &history)?)
    } else {
        None
    };
    let val_every = if opts.val_every == 0 {
        opts.save_every
    } else {
        opts.val_every
    };

    // The latest validation loss so far, from the log when resuming (so provenance does not depend on
    // where a run was interrupted).
    let mut last_val = history
        .iter()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok()?["val_loss"].as_f64());
    let mut last_loss = None;
    let mut saved_at = None;
    let loss_fn =
        |m: &crate::model::MaeAutobin, b: &Vec<Example>| -> Result<Option<candle_core::Tensor>> {
            Ok(masked_sse(m, b, device)?.map(|(t, _)| t))
        };
    if let (None, Some(log)) = (&loaded, log.as_mut()) {
        // The starting point's validation loss, as step 0 of the log and the curve.
        if let Some(v) = validate(&trainer, &ds, &split.val, opts, mask_token, device)? {
            log.append(&json!({"step": 0, "val_loss": v}))?;
            log::info!("step 0: val loss {v:.5}");
        }
    }
    let first_step = trainer.step;
    let stop_at = opts
        .stop_after
        .map_or(opts.steps, |n| opts.steps.min(first_step.saturating_add(n)));
    while trainer.step < stop_at {
        let t0 = Instant::now();
        let mut micro = Vec::with_capacity(opts.accumulate);
        for _ in 0..opts.accumulate {
            let mut batch = Vec::with_capacity(opts.batch_size);
            // Every rank draws the whole global micro-batch (one shared order and random stream)
            // and keeps its share.
            for i in 0..opts.batch_size * dist.world {
                let c = sampler.next(&split);
                let ex = example(&ds, c, opts, mask_token, &mut rng)?;
                if dist.owns(i) {
                    batch.push(ex);
                }
            }
            let units = batch.iter().map(|e| e.masked.len()).sum();
            micro.push(MicroBatch { data: batch, units });
        }
        let n_cells = (opts.batch_size * opts.accumulate * dist.world) as u64;
        let stats = trainer
            .step(&micro, loss_fn)
            .with_context(|| format!("training step {}", trainer.step + 1))?;
        cells_seen += n_cells;
        last_loss = Some(stats.loss);
        let mut rec = serde_json::Map::new();
        rec.insert("step".into(), json!(stats.step));
        rec.insert("loss".into(), json!(stats.loss));
        rec.insert("lr".into(), json!(stats.lr));
        rec.insert("grad_norm".into(), json!(stats.grad_norm));
        rec.insert("cells".into(), json!(cells_seen));
        rec.insert(
            "masked".into(),
            json!(micro.iter().map(|m| m.units).sum::<usize>()),
        );
        if main_rank && (stats.step % val_every == 0 || stats.step == opts.steps) {
            if let Some(v) = validate(&trainer, &ds, &split.val, opts, mask_token, device)? {
                rec.insert("val_loss".into(), json!(v));
                last_val = Some(v);
            }
        }
        rec.insert(
            "cells_per_s".into(),
            json!(n_cells as f64 / t0.elapsed().as_secs_f64().max(1e-9)),
        );
        if let Some(log) = log.as_mut() {
            log.append(&Value::Object(rec))?;
        }
        log::info!(
            "step {}/{}: loss {:.5}, lr {:.3e}, grad norm {:.3}{}",
            stats.step,
            opts.steps,
            stats.loss,
            stats.lr,
            stats.grad_norm,
            last_val
                .filter(|_| stats.step % val_every == 0)
                .map(|v| format!(", val loss {v:.5}"))
                .unwrap_or_default()
        );
        if main_rank && (stats.step % opts.save_every == 0 || stats.step == opts.steps) {
            let state = TrainState {
                step: trainer.step,
                rng: rng.clone(),
                epoch: sampler.position.epoch,
                index: sampler.position.index,
                cells_seen,
                run: run.clone(),
            };
            save(out, &trainer, &state, &split, last_val)?;
            saved_at = Some(trainer.step);
        }
    }
    if main_rank && saved_at != Some(trainer.step) {
        // Stopped early, or nothing left to train: the output still gets the checkpoint.
        let state = TrainState {
            step: trainer.step,
            rng: rng.clone(),
            epoch: sampler.position.epoch,
            index: sampler.position.index,
            cells_seen,
            run: run.clone(),
        };
        save(out, &trainer, &state, &split, last_val)?;
    }
    Ok(PretrainSummary {
        step: trainer.step,
        last_loss,
        last_val_loss: last_val,
        n_train: split.train.len(),
        n_val: split.val.len(),
    })
}

#[cfg(feature = "nccl")]
fn reducer(par: &Parallel, out: &Path, device: &Device) -> Result<Box<dyn GradReduce>> {
    let file = crate::train::dist::id_file(par.id_file.as_deref(), out);
    Ok(Box::new(crate::train::dist::NcclReducer::new(
        &par.env,
        device,
        &file,
        par.timeout,
    )?))
}

#[cfg(not(feature = "nccl"))]
fn reducer(par: &Parallel, _: &Path, _: &Device) -> Result<Box<dyn GradReduce>> {
    bail!(
        "the launcher says world size {} (rank {}): data-parallel training needs a binary built with --features nccl",
        par.env.world,
        par.env.rank
    )
}

fn example(
    ds: &Dataset,
    c: CellRef,
    opts: &PretrainOptions,
    mask_token: f32,
    rng: &mut Rng,
) -> Result<Example> {
    let cell = ds.read(c).with_context(|| {
        format!(
            "{}: reading row {}",
            ds.summaries[c.file as usize].path.display(),
            c.row + 1
        )
    })?;
    make_example(&cell, &opts.rda, mask_token, rng)
}

/// Masked MSE on the held-out cells, with inputs drawn from a fixed stream so every evaluation sees
/// the same downsampling and masks. `None` without validation cells.
fn validate(
    trainer: &Trainer,
    ds: &Dataset,
    val: &[CellRef],
    opts: &PretrainOptions,
    mask_token: f32,
    device: &Device,
) -> Result<Option<f64>> {
    if val.is_empty() {
        return Ok(None);
    }
    let mut rng = Rng::derive(opts.seed, "val", 0);
    let (mut sse, mut n) = (0f64, 0usize);
    let fresh = trainer.model.compute_model()?;
    let model = fresh.as_ref().unwrap_or(&trainer.model.model);
    for chunk in val.chunks(opts.batch_size) {
        let batch = chunk
            .iter()
            .map(|&c| example(ds, c, opts, mask_token, &mut rng))
            .collect::<Result<Vec<_>>>()?;
        if let Some((s, k)) = masked_sse(model, &batch, device)? {
            sse += s.detach().to_dtype(DType::F64)?.to_scalar::<f64>()?;
            n += k;
        }
    }
    Ok((n > 0).then(|| sse / n as f64))
}

/// Writes the checkpoint (model entries, train state, provenance) as one commit, then the plot.
fn save(
    out: &Path,
    trainer: &Trainer,
    state: &TrainState,
    split: &Split,
    last_val: Option<f64>,
) -> Result<()> {
    let prov = json!({
        "engine": crate::provenance::ENGINE,
        "engine_version": crate::provenance::ENGINE_VERSION,
        "step": "pretrain",
        "train_step": state.step,
        "cells_seen": state.cells_seen,
        "n_train_cells": split.train.len(),
        "n_val_cells": split.val.len(),
        "last_val_loss": last_val,
        "objective": "read-depth-aware masked regression (MSE on masked genes vs log1p(raw/total*1e4))",
        "run": state.run,
    });
    let meta: BTreeMap<String, String> = [
        ("train_step".to_string(), state.step.to_string()),
        ("provenance".to_string(), serde_json::to_string(&prov)?),
    ]
    .into();
    let tensors = trainer.model.tensors()?;
    let mut files =
        checkpoint::model_files(out, &MODEL_KEYS, &trainer.model.raw_config, &tensors, &meta)?;
    files.push(checkpoint::state_file(
        out,
        &trainer.model,
        &trainer.opt,
        state,
    )?);
    let p = crate::fsutil::PendingFile::new(&out.join(PROVENANCE_FILE))?;
    std::fs::write(p.path(), serde_json::to_string_pretty(&prov)? + "\n")?;
    files.push(p);
    checkpoint::commit(files)?;
    tlog::plot(out)?;
    log::info!("{}: checkpoint at step {}", out.display(), state.step);
    Ok(())
}
