//! `annotate train` and `annotate predict`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::embed::CliPool;
use crate::data::batch::BatchSize;
use crate::steps::annotate::{self, CellEmbedding, PredictOptions, TrainOptions};

#[derive(Debug, Subcommand)]
pub enum AnnotateCommand {
    /// Train a cell-type classifier head (optionally fine-tuning the last encoder layers) on a
    /// labelled h5ad; writes a head directory.
    Train(Box<TrainArgs>),
    /// Predict cell types of a query file with a head directory; writes an h5ad.
    Predict(Box<PredictArgs>),
}

/// Which weights: as `embed --model`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Weights: NAME@VERSION from the registry (cached, fetched unless --offline), or a path to a
    /// reference models.ckpt, a .safetensors file, or a directory from `convert`/`init`/`pretrain`.
    #[arg(long, short = 'm')]
    pub model: String,
    /// Refuse to run unless the weights file has this sha256.
    #[arg(long, value_name = "HEX")]
    pub model_sha256: Option<String>,
    /// cpu, or cuda / cuda:N (needs a binary built with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
scfoundation annotate train --input ref.h5ad --label-key cell_type --model scfoundation@1.0 --out head/\n  \
scfoundation annotate train --input ref.scf.h5ad --label-key cell_type --model models.ckpt --out head0/ --finetune-layers 0\n\n\
Defaults follow the paper's protocol (Hao et al. 2024, Methods): the last encoder layer is fine-tuned \
with a 2-layer ReLU MLP head, class-weighted cross-entropy with w_i = min(max_j n_j / n_i, 50), \
lr 1e-3, batch 64, gradient accumulation 5, the head with the best validation macro-F1 is kept. \
With --finetune-layers 0 the model is frozen: embeddings are computed once, or taken from \
obsm['X_scfoundation'] when its provenance shows the same model sha256 and embedding options.")]
pub struct TrainArgs {
    /// Labelled cells: .h5ad (X, a layer or raw/X) with the labels in an obs column.
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// obs column holding the cell types (missing/NaN labels are skipped with a warning).
    #[arg(long)]
    pub label_key: String,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output head directory: head.safetensors, encoder.safetensors (fine-tuned layers),
    /// annotate.json, metrics.json, train_log.jsonl, training.png, confusion.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Encoder layers fine-tuned with the head (the last K); 0 freezes the model.
    #[arg(long, default_value_t = 1)]
    pub finetune_layers: usize,
    /// Hidden width of the 2-layer MLP head.
    #[arg(long, default_value_t = 512, value_parser = super::count_in::<1, 65536>)]
    pub hidden: usize,
    /// Cap of the class weights min(max_j n_j / n_i, CAP) (the paper's: 50).
    #[arg(long, default_value_t = 50.0)]
    pub class_weight_cap: f64,
    /// Learning rate (AdamW, constant; the paper's 1e-3).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Cells per micro-batch (the paper's 64).
    #[arg(long, default_value_t = 64, value_parser = super::count_in::<1, 65536>)]
    pub batch_size: usize,
    /// Micro-batches per optimiser step (the paper's gradient accumulation 5).
    #[arg(long, default_value_t = 5, value_parser = super::count_in::<1, 65536>)]
    pub accumulate: usize,
    /// Passes over the training cells (at most).
    #[arg(long, default_value_t = 10)]
    pub epochs: u64,
    /// Stop after this many optimiser steps, if before the last epoch.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Stop after this many epochs without a better validation macro-F1; 0: never stop early.
    #[arg(long, default_value_t = 3)]
    pub patience: u64,
    /// Fraction of each class held out for validation (stratified; the paper split 8:1:1).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Seed of the split, the data order and the head's initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// With --finetune-layers 0, always compute embeddings (never reuse obsm['X_scfoundation']).
    #[arg(long)]
    pub no_reuse_embeddings: bool,
    /// Cell pooling: all = [S, T, max, mean] (4 x width), max = max over all tokens (as embed).
    #[arg(long, value_enum, default_value = "all")]
    pub pool: CliPool,
    #[command(flatten)]
    pub preprocess: super::embed::PreprocessArgs,
    /// Checkpoint entry (as embed --mode cell).
    #[arg(long, default_value = "cell")]
    pub key: String,
    /// Cells per inference forward pass (embeddings and validation), 1 to 4096, or auto: 8 on the
    /// CPU, sized from the free memory on a GPU (as in embed).
    #[arg(long, default_value = "auto", value_parser = super::embed::parse_batch_size)]
    pub embed_batch_size: BatchSize,
    /// Refuse input where fewer than this fraction of input genes are scFoundation genes.
    #[arg(long, default_value_t = 0.2)]
    pub min_mapped: f64,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
scfoundation annotate predict --input query.h5ad --head head/ --model scfoundation@1.0 --output query.annotated.h5ad\n  \
scfoundation annotate predict --input query.h5ad --head head/ --model models.ckpt --output q.h5ad --label-key cell_type\n\n\
The embedding options (pooling, T/S, normalisation, checkpoint entry) are the head's. A head is \
used only with the weights it was trained on (same sha256).")]
pub struct PredictArgs {
    /// Query cells: .h5ad, .csv/.tsv or .npy (as embed).
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Head directory written by `annotate train`.
    #[arg(long)]
    pub head: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output .h5ad: obs copied plus obs['scfoundation_label'] (categorical) and
    /// obs['scfoundation_label_confidence'], obsm['scfoundation_label_proba'] (cells x classes),
    /// uns['scfoundation_label_classes'], provenance in uns['scfoundation'].
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// obs column with known labels (h5ad): also write metrics (accuracy, macro-F1, per-class F1,
    /// confusion matrix) as JSON.
    #[arg(long)]
    pub label_key: Option<String>,
    /// Metrics JSON path (with --label-key) [default: the output with .metrics.json for .h5ad].
    #[arg(long, requires = "label_key")]
    pub metrics: Option<PathBuf>,
    /// Cells per forward pass, 1 to 4096, or auto: 8 on the CPU, sized from the free memory on a GPU
    /// (as in embed).
    #[arg(long, default_value = "auto", value_parser = super::embed::parse_batch_size)]
    pub batch_size: BatchSize,
    /// Refuse input where fewer than this fraction of input genes are scFoundation genes
    /// [default: the head's].
    #[arg(long)]
    pub min_mapped: Option<f64>,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
}

pub fn run(c: AnnotateCommand, global: &super::GlobalArgs) -> Result<()> {
    match c {
        AnnotateCommand::Train(a) => run_train(*a, global),
        AnnotateCommand::Predict(a) => run_predict(*a, global),
    }
}

fn run_train(a: TrainArgs, global: &super::GlobalArgs) -> Result<()> {
    let opts = TrainOptions {
        label_key: a.label_key.clone(),
        cell: CellEmbedding {
            pool: a.pool.into(),
            preprocess: a.preprocess.options(),
            key: a.key.clone(),
            min_mapped: a.min_mapped,
            matrix: a.matrix.choice(),
            batch_size: a.embed_batch_size,
        },
        hidden: a.hidden,
        class_weight_cap: a.class_weight_cap,
        finetune_layers: a.finetune_layers,
        lr: a.lr,
        weight_decay: a.weight_decay,
        batch_size: a.batch_size,
        accumulate: a.accumulate,
        epochs: a.epochs,
        max_steps: a.max_steps,
        patience: a.patience,
        val_fraction: a.val_fraction,
        seed: a.seed,
        reuse_embeddings: !a.no_reuse_embeddings,
    };
    opts.validate()?;
    let device = crate::device::parse(&a.model.device)?;
    let model =
        global
            .weights()?
            .resolve(&a.model.model, &a.key, a.model.model_sha256.as_deref())?;
    let s = annotate::train(&a.input, &model, &a.out, &opts, &device)?;
    outln!(
        "{}: {} classes, {} training / {} validation cells, best epoch {} ({} steps): macro-F1 {:.4}, accuracy {:.4}",
        a.out.display(),
        s.classes.len(),
        s.n_train,
        s.n_val,
        s.best_epoch,
        s.steps,
        s.metrics.macro_f1,
        s.metrics.accuracy
    );
    Ok(())
}

fn run_predict(a: PredictArgs, global: &super::GlobalArgs) -> Result<()> {
    if let Some(m) = a.min_mapped {
        if !(0.0..=1.0).contains(&m) {
            anyhow::bail!("--min-mapped must be between 0 and 1, got {m}");
        }
    }
    let device = crate::device::parse(&a.model.device)?;
    crate::io::Format::of_output(&a.output)?;
    // The head names its checkpoint entry; read it before resolving the weights.
    let head = annotate::predict::Head::open(&a.head)?;
    let model = global.weights()?.resolve(
        &a.model.model,
        &head.cell.key,
        a.model.model_sha256.as_deref(),
    )?;
    let opts = PredictOptions {
        label_key: a.label_key.clone(),
        metrics: a.metrics.clone(),
        matrix: a.matrix.choice(),
        min_mapped: a.min_mapped,
        batch_size: a.batch_size,
    };
    let s = annotate::predict(&a.input, &a.head, &model, &a.output, &opts, &device)?;
    match (&s.metrics, &s.metrics_path) {
        (Some(m), Some(p)) => outln!(
            "{}: {} cells, {} classes; {}: macro-F1 {:.4}, accuracy {:.4} on {} labelled cells",
            a.output.display(),
            s.n_cells,
            s.classes.len(),
            p.display(),
            m.macro_f1,
            m.accuracy,
            m.n
        ),
        _ => outln!(
            "{}: {} cells, {} classes",
            a.output.display(),
            s.n_cells,
            s.classes.len()
        ),
    }
    Ok(())
}
