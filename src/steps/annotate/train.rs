//! `annotate train`: a classifier head (and optionally the last encoder layers) trained on labelled
//! cells, saved as a head directory that `annotate predict` loads.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

use super::data::{self, Tokens};
use super::{
    CellEmbedding, CONFUSION_PNG, CURVE_PNG, ENCODER_TENSORS, HEAD_FORMAT, HEAD_JSON, HEAD_TENSORS,
    LOG_FILE, METRICS_JSON,
};
use crate::data::N_GENES;
use crate::fsutil::PendingFile;
use crate::metrics::Classification;
use crate::model::classifier::{feature_stats, HEAD_PREFIX};
use crate::model::{load_entry, CellClassifier, ClassifierConfig, MaeAutobin};
use crate::progress::Progress;
use crate::train::optim::{AdamWConfig, LrSchedule};
use crate::train::params::{TrainModel, Trainable};
use crate::train::plot::{self, Series};
use crate::train::rng::Rng;
use crate::train::{MicroBatch, Trainer, TrainerConfig};
use crate::weights::ModelRef;

#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// obs column holding the cell types.
    pub label_key: String,
    pub cell: CellEmbedding,
    /// Hidden width of the 2-layer MLP head.
    pub hidden: usize,
    /// Class weights are `min(max_j n_j / n_i, cap)` (the paper's cap: 50).
    pub class_weight_cap: f64,
    /// Last encoder layers fine-tuned with the head; 0 freezes the model.
    pub finetune_layers: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Cells per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub accumulate: usize,
    pub epochs: u64,
    /// Stop after this many optimiser steps (validating at that point), if earlier than `epochs`.
    pub max_steps: Option<u64>,
    /// Stop after this many epochs without a better validation macro-F1; 0 never stops early.
    pub patience: u64,
    /// Fraction of each class held out for validation (stratified).
    pub val_fraction: f64,
    pub seed: u64,
    /// With a frozen model, take `obsm['X_scfoundation']` when its provenance matches.
    pub reuse_embeddings: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            label_key: String::new(),
            cell: CellEmbedding::default(),
            hidden: 512,
            class_weight_cap: 50.0,
            finetune_layers: 1,
            lr: 1e-3,
            weight_decay: 0.0,
            batch_size: 64,
            accumulate: 5,
            epochs: 10,
            max_steps: None,
            patience: 3,
            val_fraction: 0.1,
            seed: 0,
            reuse_embeddings: true,
        }
    }
}

impl TrainOptions {
    pub fn validate(&self) -> Result<()> {
        if self.label_key.is_empty() {
            bail!("--label-key must name an obs column");
        }
        if self.batch_size == 0 || self.accumulate == 0 || self.hidden == 0 {
            bail!("--batch-size, --accumulate and --hidden must be at least 1");
        }
        if self.epochs == 0 || self.max_steps == Some(0) {
            bail!("--epochs and --max-steps must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("--lr must be a positive number");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            bail!("--weight-decay must not be negative");
        }
        if !(self.class_weight_cap >= 1.0 && self.class_weight_cap.is_finite()) {
            bail!("--class-weight-cap must be at least 1");
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            bail!("--val-fraction must be in [0, 1)");
        }
        if !(0.0..=1.0).contains(&self.cell.min_mapped) {
            bail!("--min-mapped must be between 0 and 1");
        }
        Ok(())
    }

    fn to_json(&self) -> Value {
        json!({
            "label_key": self.label_key,
            "hidden": self.hidden,
            "class_weight_cap": self.class_weight_cap,
            "finetune_layers": self.finetune_layers,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "accumulate": self.accumulate,
            "epochs": self.epochs,
            "max_steps": self.max_steps,
            "patience": self.patience,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "reuse_embeddings": self.reuse_embeddings,
            "embed_batch_size": self.cell.batch_size.to_json(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub classes: Vec<String>,
    pub n_train: usize,
    pub n_val: usize,
    pub n_missing_label: usize,
    pub best_epoch: u64,
    pub steps: u64,
    /// Metrics of the saved head on the validation cells (training cells without validation).
    pub metrics: Classification,
    pub files: Vec<PathBuf>,
}

/// Stratified split: per class, a seeded shuffle, then `round(n * fraction)` cells (at least one when
/// the class has two or more and the fraction is positive; none for a single cell) to validation.
/// Returns (train, val) as sorted cell indices.
pub fn stratified_split(
    labels: &[usize],
    n_classes: usize,
    fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut by_class = vec![vec![]; n_classes];
    for (i, &y) in labels.iter().enumerate() {
        by_class[y].push(i);
    }
    let (mut train, mut val) = (vec![], vec![]);
    for (k, cells) in by_class.iter_mut().enumerate() {
        let mut rng = Rng::derive(seed, "annotate-split", k as u64);
        rng.shuffle(cells);
        let n = cells.len();
        let mut v = (n as f64 * fraction).round() as usize;
        if fraction > 0.0 && n >= 2 {
            v = v.clamp(1, n - 1);
        } else {
            v = 0;
        }
        val.extend_from_slice(&cells[..v]);
        train.extend_from_slice(&cells[v..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

/// `w_k = min(max_j n_j / n_k, cap)`, scaled so the mean weight over the training cells is 1 (the
/// loss keeps the scale of an unweighted mean). Classes without training cells get weight 0.
pub fn class_weights(counts: &[usize], cap: f64) -> Vec<f64> {
    let max = counts.iter().copied().max().unwrap_or(0) as f64;
    let raw: Vec<f64> = counts
        .iter()
        .map(|&n| {
            if n == 0 {
                0.0
            } else {
                (max / n as f64).min(cap)
            }
        })
        .collect();
    let total: usize = counts.iter().sum();
    let mass: f64 = raw.iter().zip(counts).map(|(w, &n)| w * n as f64).sum();
    if mass <= 0.0 {
        return raw;
    }
    raw.iter().map(|w| w * total as f64 / mass).collect()
}

/// torch `nn.Linear`'s default initialisation (weights and biases uniform in ±1/sqrt(fan_in)) from a
/// seeded stream.
fn init_head(cfg: &ClassifierConfig, seed: u64) -> Result<BTreeMap<String, Tensor>> {
    let mut rng = Rng::derive(seed, "annotate-head", 0);
    let mut out = BTreeMap::new();
    for (name, fan_in, fan_out) in [
        ("fc1", cfg.in_dim, cfg.hidden),
        ("fc2", cfg.hidden, cfg.n_classes),
    ] {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let mut u = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                .collect()
        };
        let w = Tensor::from_vec(u(fan_in * fan_out), (fan_out, fan_in), &Device::Cpu)?;
        let b = Tensor::from_vec(u(fan_out), fan_out, &Device::Cpu)?;
        out.insert(format!("{HEAD_PREFIX}.{name}.weight"), w);
        out.insert(format!("{HEAD_PREFIX}.{name}.bias"), b);
    }
    Ok(out)
}

/// What the training loop feeds the head: fixed embeddings (frozen model) or tokens (fine-tuning).
enum Features {
    Embeddings { rows: Vec<Vec<f32>> },
    Tokens { tokens: Vec<Tokens> },
}

/// Class-weighted cross-entropy summed over a batch: `-sum_i w_{y_i} log softmax(logits_i)[y_i]`.
fn weighted_ce_sum(logits: &Tensor, targets: &[usize], weights: &[f64]) -> Result<Tensor> {
    let (b, k) = logits.dims2()?;
    let mut pick = vec![0f32; b * k];
    for (i, &y) in targets.iter().enumerate() {
        pick[i * k + y] = weights[y] as f32;
    }
    let pick = Tensor::from_vec(pick, (b, k), logits.device())?.to_dtype(logits.dtype())?;
    let logp = candle_nn::ops::log_softmax(logits, 1)?;
    Ok((logp * pick)?.sum_all()?.neg()?)
}

fn sha256_of(p: &Path) -> Result<String> {
    crate::weights::verify::sha256_file(p)
}

#[allow(clippy::too_many_arguments)]
/// Evaluates the current parameters on `cells` (inference numerics, as `predict`): predictions and
/// the weighted cross-entropy per cell.
fn evaluate(
    trainer: &mut Trainer,
    head: &CellClassifier,
    features: &Features,
    cells: &[usize],
    labels: &[usize],
    weights: &[f64],
    opts: &TrainOptions,
    device: &Device,
) -> Result<(Vec<usize>, f64)> {
    let width = head.config().in_dim;
    let computed;
    let rows: Vec<&[f32]> = match features {
        Features::Embeddings { rows } => cells.iter().map(|&i| rows[i].as_slice()).collect(),
        Features::Tokens { tokens } => {
            trainer.model.model.set_differentiable(false);
            let toks: Vec<&Tokens> = cells.iter().map(|&i| &tokens[i]).collect();
            let r = data::embed_rows(&trainer.model.model, &toks, &opts.cell, device, None);
            trainer.model.model.set_differentiable(true);
            computed = r?;
            computed.iter().map(Vec::as_slice).collect()
        }
    };
    let probs = data::probabilities(head, &rows, width, device)?;
    let pred: Vec<usize> = probs.iter().map(|p| data::argmax(p)).collect();
    let mut loss = 0f64;
    for (p, &i) in probs.iter().zip(cells) {
        let y = labels[i];
        loss -= weights[y] * (p[y].max(f32::MIN_POSITIVE) as f64).ln();
    }
    Ok((pred, loss / cells.len().max(1) as f64))
}

pub fn train(
    input: &Path,
    model_ref: &ModelRef,
    out: &Path,
    opts: &TrainOptions,
    device: &Device,
) -> Result<TrainSummary> {
    opts.validate()?;
    crate::fsutil::refuse_input_as_output(out, &[input])?;
    if out.exists() && !out.is_dir() {
        bail!("{}: exists and is not a directory", out.display());
    }
    let file = input.display().to_string();

    // Labels: missing ones skipped, classes sorted by name.
    let raw_labels = data::read_labels(input, &opts.label_key)?;
    let n_missing = raw_labels.iter().filter(|l| l.is_none()).count();
    if n_missing > 0 {
        log::warn!(
            "{file}: {n_missing} of {} cells have no '{}' label and are skipped",
            raw_labels.len(),
            opts.label_key
        );
    }
    let mut classes: Vec<String> = raw_labels.iter().flatten().cloned().collect();
    classes.sort();
    classes.dedup();
    if classes.len() < 2 {
        bail!(
            "{file}: obs column '{}' has {} distinct label(s) among labelled cells; a classifier needs at least 2",
            opts.label_key,
            classes.len()
        );
    }
    let class_of: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(k, c)| (c.as_str(), k))
        .collect();
    let labelled: Vec<usize> = (0..raw_labels.len())
        .filter(|&i| raw_labels[i].is_some())
        .collect();
    let labels: Vec<usize> = labelled
        .iter()
        .map(|&i| class_of[raw_labels[i].as_deref().expect("labelled")])
        .collect();
    let k = classes.len();

    let (train_idx, val_idx) = stratified_split(&labels, k, opts.val_fraction, opts.seed);
    let count = |idx: &[usize]| {
        let mut c = vec![0usize; k];
        for &i in idx {
            c[labels[i]] += 1;
        }
        c
    };
    let (train_counts, val_counts) = (count(&train_idx), count(&val_idx));
    for (c, name) in classes.iter().enumerate() {
        if train_counts[c] + val_counts[c] < 10 {
            log::warn!(
                "class '{name}' has only {} labelled cells; its F1 will be unreliable",
                train_counts[c] + val_counts[c]
            );
        }
    }
    let weights = class_weights(&train_counts, opts.class_weight_cap);
    log::info!(
        "{} labelled cells in {k} classes: {} for training, {} for validation (stratified)",
        labels.len(),
        train_idx.len(),
        val_idx.len()
    );

    // The model: trainable last K encoder layers (or none) plus the head, one optimiser.
    let entry = load_entry(&model_ref.path, &opts.cell.key)?;
    if entry.config.n_genes() != N_GENES {
        bail!(
            "{}: model expects {} genes, this engine's gene list has {N_GENES}",
            model_ref.path.display(),
            entry.config.n_genes()
        );
    }
    if opts.finetune_layers > entry.config.encoder.depth {
        bail!(
            "--finetune-layers {} exceeds the encoder's {} layers",
            opts.finetune_layers,
            entry.config.encoder.depth
        );
    }
    let width = match opts.cell.pool {
        crate::model::heads::Pool::All => 4 * entry.config.encoder.hidden_dim,
        crate::model::heads::Pool::Max => entry.config.encoder.hidden_dim,
    };
    let mut tm = TrainModel::from_tensors(
        entry.raw_config.clone(),
        entry.tensors,
        &Trainable::last_encoder_layers(opts.finetune_layers),
        DType::F32,
        device,
    )?;
    // Features: reused embeddings (frozen model, matching provenance; the matrix is not read), or
    // the cells read, validated and preprocessed as embed does (only labelled ones kept).
    let mut embeddings_source = "computed";
    let reused = if opts.finetune_layers == 0 && opts.reuse_embeddings {
        data::reusable_embeddings(input, model_ref, &opts.cell, raw_labels.len(), width)?
    } else {
        None
    };
    let (cells, reused) = match reused {
        Some(r) => (None, Some(r)),
        None => {
            let c = data::read_cells(input, &opts.cell)?;
            if c.tokens.len() != raw_labels.len() {
                bail!(
                    "{file}: obs has {} rows but the matrix {} cells",
                    raw_labels.len(),
                    c.tokens.len()
                );
            }
            (Some(c), None)
        }
    };
    let (n_input_genes, n_genes_mapped) = cells.as_ref().map_or((None, None), |c| {
        (Some(c.n_input_genes), Some(c.n_genes_mapped))
    });
    let features = if opts.finetune_layers == 0 {
        let all = match (reused, &cells) {
            (Some(r), _) => {
                log::info!("{file}: reusing obsm['X_scfoundation'] (same model and options)");
                embeddings_source = "obsm['X_scfoundation']";
                r
            }
            (None, Some(cells)) => {
                tm.model.set_differentiable(false);
                let toks: Vec<&Tokens> = labelled.iter().map(|&i| &cells.tokens[i]).collect();
                let mut progress = Progress::new(toks.len() as u64, "cells", &file);
                let rows =
                    data::embed_rows(&tm.model, &toks, &opts.cell, device, Some(&mut progress))
                        .with_context(|| format!("embedding the cells of {file}"))?;
                progress.finish();
                tm.model.set_differentiable(true);
                let mut full = vec![vec![]; cells.tokens.len()];
                for (&i, r) in labelled.iter().zip(rows) {
                    full[i] = r;
                }
                full
            }
            (None, None) => unreachable!("cells are read when embeddings are not reused"),
        };
        Features::Embeddings {
            rows: labelled.iter().map(|&i| all[i].clone()).collect(),
        }
    } else {
        let mut tokens = cells.expect("cells are read when fine-tuning").tokens;
        let mut kept = Vec::with_capacity(labelled.len());
        for &i in &labelled {
            kept.push(std::mem::take(&mut tokens[i]));
        }
        Features::Tokens { tokens: kept }
    };

    // The head: standardisation from the training cells' embeddings (before any fine-tuning; at
    // most 1024 cells when they must be computed), then seeded linear layers in the optimiser.
    let stats_rows: Vec<Vec<f32>> = match &features {
        Features::Embeddings { rows } => train_idx.iter().map(|&i| rows[i].clone()).collect(),
        Features::Tokens { tokens } => {
            tm.model.set_differentiable(false);
            let toks: Vec<&Tokens> = train_idx.iter().take(1024).map(|&i| &tokens[i]).collect();
            let r = data::embed_rows(&tm.model, &toks, &opts.cell, device, None);
            tm.model.set_differentiable(true);
            r?
        }
    };
    let refs: Vec<&[f32]> = stats_rows.iter().map(Vec::as_slice).collect();
    let (mean, std) = feature_stats(&refs, width);
    drop(stats_rows);
    let head_cfg = ClassifierConfig {
        in_dim: width,
        hidden: opts.hidden,
        n_classes: k,
        standardize: false,
    };
    tm.add_params(&init_head(&head_cfg, opts.seed)?)?;
    let norm_tensors = (
        Tensor::from_vec(mean, width, &Device::Cpu)?,
        Tensor::from_vec(std, width, &Device::Cpu)?,
    );
    let head = CellClassifier::with_norm(
        tm.extra_var_builder().pp(HEAD_PREFIX),
        &head_cfg,
        Some((
            norm_tensors.0.to_device(device)?,
            norm_tensors.1.to_device(device)?,
        )),
    )?;
    log::info!(
        "model {} (sha256 {}): {} trainable parameters ({} fine-tuned encoder layers + head {}-{}-{})",
        model_ref.name,
        model_ref.sha256,
        tm.n_trainable(),
        opts.finetune_layers,
        width,
        opts.hidden,
        k
    );

    let mut trainer = Trainer::new(
        tm,
        TrainerConfig {
            // Constant learning rate (the paper gives lr 1e-3 and no schedule).
            schedule: LrSchedule {
                peak: opts.lr,
                min: opts.lr,
                warmup: 0,
                total: u64::MAX,
            },
            clip_norm: None,
            adamw: AdamWConfig {
                weight_decay: opts.weight_decay,
                ..Default::default()
            },
        },
    );

    let pool = opts.cell.pool;
    let loss_fn = |m: &MaeAutobin, batch: &Vec<usize>| -> Result<Option<Tensor>> {
        let x = match &features {
            Features::Embeddings { rows } => {
                let r: Vec<&[f32]> = batch.iter().map(|&i| rows[i].as_slice()).collect();
                data::rows_tensor(&r, width, device)?
            }
            Features::Tokens { tokens } => {
                let inputs: Vec<crate::model::heads::CellInput> = batch
                    .iter()
                    .map(|&i| crate::model::heads::CellInput {
                        values: &tokens[i].0,
                        positions: &tokens[i].1,
                        full: &[],
                    })
                    .collect();
                m.cell_embedding_tensor(&inputs, pool, device)?
            }
        };
        let logits = head.forward(&x)?;
        let targets: Vec<usize> = batch.iter().map(|&i| labels[i]).collect();
        Ok(Some(weighted_ce_sum(&logits, &targets, &weights)?))
    };

    // Training: epochs over a seeded order of the training cells; validation after each epoch.
    let per_step = opts.batch_size * opts.accumulate;
    let steps_per_epoch = train_idx.len().div_ceil(per_step) as u64;
    let mut log_lines: Vec<Value> = vec![];
    let (mut best_f1, mut best_epoch, mut since_best) = (f64::NEG_INFINITY, 0u64, 0u64);
    let mut best: Option<BTreeMap<String, Tensor>> = None;
    // The kept epoch's validation metrics: restoring its parameters gives them again.
    let mut best_metrics: Option<Classification> = None;
    let eval_idx: &[usize] = if val_idx.is_empty() {
        log::warn!("no validation cells (--val-fraction 0 or too few cells): no early stopping; metrics are on the training cells");
        &train_idx
    } else {
        &val_idx
    };
    let truth: Vec<usize> = eval_idx.iter().map(|&i| labels[i]).collect();
    // Metrics and loss of the current parameters on the evaluation cells.
    let score = |trainer: &mut Trainer| -> Result<(Classification, f64)> {
        let (pred, loss) = evaluate(
            trainer, &head, &features, eval_idx, &labels, &weights, opts, device,
        )?;
        Ok((Classification::new(&truth, &pred, k), loss))
    };
    let mut done = false;
    let mut epoch = 0u64;
    while epoch < opts.epochs && !done {
        epoch += 1;
        let mut order = train_idx.clone();
        Rng::derive(opts.seed, "annotate-order", epoch).shuffle(&mut order);
        let (mut loss_sum, mut n_steps) = (0f64, 0u64);
        for chunk in order.chunks(per_step) {
            let micro: Vec<MicroBatch<Vec<usize>>> = chunk
                .chunks(opts.batch_size)
                .map(|c| MicroBatch {
                    data: c.to_vec(),
                    units: c.len(),
                })
                .collect();
            let stats = trainer
                .step(&micro, loss_fn)
                .with_context(|| format!("training step {}", trainer.step + 1))?;
            loss_sum += stats.loss;
            n_steps += 1;
            log_lines.push(json!({
                "epoch": epoch,
                "step": stats.step,
                "loss": stats.loss,
                "lr": stats.lr,
                "grad_norm": stats.grad_norm,
            }));
            log::debug!("step {}: loss {:.5}", stats.step, stats.loss);
            if opts.max_steps.is_some_and(|m| trainer.step >= m) {
                done = true;
                break;
            }
        }
        let (m, val_loss) = score(&mut trainer)?;
        log_lines.push(json!({
            "epoch": epoch,
            "step": trainer.step,
            "val_loss": val_loss,
            "val_macro_f1": m.macro_f1,
            "val_accuracy": m.accuracy,
        }));
        log::info!(
            "epoch {epoch}/{} (step {}): train loss {:.4}, validation loss {:.4}, macro-F1 {:.4}, accuracy {:.4}",
            opts.epochs,
            trainer.step,
            loss_sum / n_steps.max(1) as f64,
            val_loss,
            m.macro_f1,
            m.accuracy
        );
        if m.macro_f1 > best_f1 {
            best_f1 = m.macro_f1;
            best_epoch = epoch;
            since_best = 0;
            best = Some(trainer.model.param_tensors(|_| true)?);
            best_metrics = Some(m);
        } else {
            since_best += 1;
            if opts.patience > 0 && since_best >= opts.patience {
                log::info!(
                    "early stop: no better validation macro-F1 for {since_best} epochs (best {best_f1:.4} at epoch {best_epoch})"
                );
                done = true;
            }
        }
    }
    if let Some(b) = &best {
        let map: HashMap<String, Tensor> = b.iter().map(|(n, t)| (n.clone(), t.clone())).collect();
        trainer.model.set_params(&map)?;
    }

    // Final metrics with the kept parameters (evaluated only when no epoch was kept).
    let metrics = match best_metrics {
        Some(m) => m,
        None => score(&mut trainer)?.0,
    };

    // The head directory, all files committed together.
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut head_tensors = trainer
        .model
        .param_tensors(|n| n.starts_with(&format!("{HEAD_PREFIX}.")))?;
    head_tensors.insert(format!("{HEAD_PREFIX}.input_mean"), norm_tensors.0.clone());
    head_tensors.insert(format!("{HEAD_PREFIX}.input_std"), norm_tensors.1.clone());
    let enc_tensors = trainer
        .model
        .param_tensors(|n| !n.starts_with(&format!("{HEAD_PREFIX}.")))?;
    let meta: BTreeMap<String, String> = [
        ("format".to_string(), HEAD_FORMAT.to_string()),
        ("base_model_sha256".to_string(), model_ref.sha256.clone()),
    ]
    .into();
    let mut files = vec![];
    let p = PendingFile::new(&out.join(HEAD_TENSORS))?;
    crate::train::checkpoint::write_safetensors(p.path(), &head_tensors, &meta)?;
    files.push(p);
    if opts.finetune_layers > 0 {
        let p = PendingFile::new(&out.join(ENCODER_TENSORS))?;
        crate::train::checkpoint::write_safetensors(p.path(), &enc_tensors, &meta)?;
        files.push(p);
    }
    let split_name = if val_idx.is_empty() {
        "train"
    } else {
        "validation"
    };
    let mut mjson = metrics.to_json(&classes);
    mjson["split"] = json!(split_name);
    mjson["best_epoch"] = json!(best_epoch);
    let head_json = json!({
        "format": HEAD_FORMAT,
        "engine": crate::provenance::ENGINE,
        "engine_version": crate::provenance::ENGINE_VERSION,
        "classes": classes,
        "classifier": {"in_dim": width, "hidden": opts.hidden, "n_classes": k, "standardize": true,
                       "architecture": "(x - input_mean) / input_std -> Linear(in_dim, hidden) -> ReLU -> Linear(hidden, n_classes)"},
        "finetune_layers": opts.finetune_layers,
        "finetuned_tensors": enc_tensors.keys().collect::<Vec<_>>(),
        "base_model": {"name": model_ref.name, "sha256": model_ref.sha256, "checkpoint_key": opts.cell.key},
        "cell_embedding": opts.cell.to_json(),
        "options": opts.to_json(),
        "input": {
            "file": crate::train::data::file_name(input),
            "sha256": sha256_of(input)?,
            "n_cells": raw_labels.len(),
            "n_labelled": labels.len(),
            "n_missing_label": n_missing,
            "n_input_genes": n_input_genes,
            "n_genes_mapped": n_genes_mapped,
        },
        "embeddings": embeddings_source,
        "class_counts": {"train": train_counts, "validation": val_counts},
        "class_weights": weights,
        "loss": "class-weighted cross-entropy, w_k = min(max_j n_j / n_k, cap), normalised to mean 1 over training cells",
        "best_epoch": best_epoch,
        "best_val_macro_f1": if best_f1.is_finite() { json!(best_f1) } else { Value::Null },
        "steps": trainer.step,
        "epochs_run": epoch,
    });
    let mut write_json = |name: &str, v: &Value| -> Result<()> {
        let p = PendingFile::new(&out.join(name))?;
        std::fs::write(p.path(), serde_json::to_string_pretty(v)? + "\n")
            .with_context(|| format!("writing {}", out.join(name).display()))?;
        files.push(p);
        Ok(())
    };
    write_json(HEAD_JSON, &head_json)?;
    write_json(METRICS_JSON, &mjson)?;
    let p = PendingFile::new(&out.join(LOG_FILE))?;
    let mut text = String::new();
    for l in &log_lines {
        text.push_str(&serde_json::to_string(l)?);
        text.push('\n');
    }
    std::fs::write(p.path(), text)?;
    files.push(p);
    // Curves against epochs: training loss per step (fractional epoch), validation loss and F1.
    let (mut tr, mut vl, mut vf) = (vec![], vec![], vec![]);
    let mut step_in_epoch: HashMap<u64, u64> = HashMap::new();
    for l in &log_lines {
        let e = l["epoch"].as_u64().unwrap_or(0);
        if let Some(x) = l["loss"].as_f64() {
            let s = step_in_epoch.entry(e).or_insert(0);
            *s += 1;
            let frac = (*s as f64) / steps_per_epoch.max(1) as f64;
            tr.push(((e - 1) as f64 + frac, x));
        }
        if let Some(x) = l["val_loss"].as_f64() {
            vl.push((e as f64, x));
        }
        if let Some(x) = l["val_macro_f1"].as_f64() {
            vf.push((e as f64, x));
        }
    }
    let p = PendingFile::new(&out.join(CURVE_PNG))?;
    plot::line_plot(
        p.path(),
        "epoch",
        "loss / macro f1",
        &[
            Series {
                name: "train loss",
                points: &tr,
                dots: false,
            },
            Series {
                name: "val loss",
                points: &vl,
                dots: true,
            },
            Series {
                name: "val macro f1",
                points: &vf,
                dots: true,
            },
        ],
    )?;
    files.push(p);
    let p = PendingFile::new(&out.join(CONFUSION_PNG))?;
    plot::confusion_heatmap(p.path(), &metrics.confusion)?;
    files.push(p);
    let paths: Vec<PathBuf> = files.iter().map(|f| f.target().to_path_buf()).collect();
    PendingFile::commit_all(files)?;
    if opts.finetune_layers == 0 {
        // A head trained with fine-tuning earlier in this directory must not leave its layers behind.
        let stale = out.join(ENCODER_TENSORS);
        if stale.exists() {
            std::fs::remove_file(&stale)
                .with_context(|| format!("removing stale {}", stale.display()))?;
        }
    }
    log::info!(
        "{}: head saved (best epoch {best_epoch}, {split_name} macro-F1 {:.4}, accuracy {:.4})",
        out.display(),
        metrics.macro_f1,
        metrics.accuracy
    );
    Ok(TrainSummary {
        classes,
        n_train: train_idx.len(),
        n_val: val_idx.len(),
        n_missing_label: n_missing,
        best_epoch,
        steps: trainer.step,
        metrics,
        files: paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_and_seeded() {
        let labels: Vec<usize> = (0..100)
            .map(|i| if i < 80 { 0 } else { 1 + i % 2 })
            .collect();
        let (tr, va) = stratified_split(&labels, 3, 0.1, 7);
        assert_eq!(tr.len() + va.len(), 100);
        let c = |idx: &[usize], k| idx.iter().filter(|&&i| labels[i] == k).count();
        assert_eq!((c(&va, 0), c(&va, 1), c(&va, 2)), (8, 1, 1));
        assert_eq!(
            stratified_split(&labels, 3, 0.1, 7),
            (tr.clone(), va.clone())
        );
        assert_ne!(stratified_split(&labels, 3, 0.1, 8).1, va);
        // A single-cell class stays in training.
        let (tr, va) = stratified_split(&[0, 0, 0, 1], 2, 0.5, 0);
        assert!(tr.contains(&3) && va.len() == 2, "{tr:?} {va:?}");
    }

    #[test]
    fn class_weights_are_capped_and_normalised() {
        let w = class_weights(&[1000, 100, 1], 50.0);
        // raw 1, 10, 50 (capped from 1000)
        assert!((w[1] / w[0] - 10.0).abs() < 1e-9 && (w[2] / w[0] - 50.0).abs() < 1e-9);
        let mean = (w[0] * 1000.0 + w[1] * 100.0 + w[2]) / 1101.0;
        assert!((mean - 1.0).abs() < 1e-12);
    }
}
