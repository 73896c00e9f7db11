//! `init` and `pretrain`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::steps::init::{init, InitConfig};
use crate::steps::pretrain::{
    pretrain, saved_options, Parallel, Precision, PretrainOptions, Start,
};
use crate::train::dist::DistEnv;
use crate::train::params::Trainable;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
scfoundation init --config tiny --seed 1 --out tiny-model\n  \
scfoundation init --config 100m --seed 0 --out model-100m")]
pub struct InitArgs {
    /// Model shape: tiny (fixture size), small (~8.6M parameters), mid (released widths, 4+2 layers),
    /// 100m (the released shape), or a
    /// config JSON file (the reference checkpoint's nested config, or its merged form).
    #[arg(long, value_name = "tiny|small|mid|100m|FILE")]
    pub config: String,
    /// Seed of the random initialisation (the same seed gives the same weights).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory: cell.safetensors and gene.safetensors (same weights) with their
    /// .config.json, and provenance.json; loads in `embed --model DIR` and `pretrain --init DIR`.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run_init(a: InitArgs) -> Result<()> {
    let s = init(&InitConfig::parse(&a.config), a.seed, &a.out)?;
    for f in s.files {
        outln!("{}", f.display());
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CliPrecision {
    F32,
    Bf16,
}

impl From<CliPrecision> for Precision {
    fn from(p: CliPrecision) -> Self {
        match p {
            CliPrecision::F32 => Precision::F32,
            CliPrecision::Bf16 => Precision::Bf16,
        }
    }
}

/// Options left out take the run's values when resuming, else the defaults shown.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
scfoundation init --config tiny --out m0 && scfoundation pretrain --data a.h5ad b.h5ad --init m0 --out run --steps 2000\n  \
scfoundation pretrain --data a.h5ad b.h5ad --resume run --out run --steps 4000\n\n\
With --resume every option not given is the run's own; only --steps, --save-every and --val-every may \
differ from the run (anything else would not continue it exactly). See docs/pretraining.md.")]
#[command(group(clap::ArgGroup::new("start").required(true).args(["init", "resume"])))]
pub struct PretrainArgs {
    /// Training data: h5ad files of raw counts (X, a layer with --layer, or raw with --use-raw).
    #[arg(long, num_args = 1.., required = true, value_name = "FILE.h5ad")]
    pub data: Vec<PathBuf>,
    /// Start from these weights: a directory from `init`, `convert` or `pretrain`, a models.ckpt or a
    /// .safetensors file.
    #[arg(long, value_name = "MODEL")]
    pub init: Option<PathBuf>,
    /// Continue a pretrain output directory exactly where its last checkpoint left off.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Entry of --init to start from [default: gene].
    #[arg(long)]
    pub key: Option<String>,
    /// Output directory (may be the --resume directory): model entries for `embed`, train state,
    /// train_log.jsonl, loss.png, provenance.json.
    #[arg(long)]
    pub out: PathBuf,
    /// cpu, or cuda / cuda:N (needs a binary built with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The file through which rank 0 hands the NCCL id to the other ranks in data-parallel training
    /// (ranks and world size come from RANK/WORLD_SIZE/LOCAL_RANK or SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID)
    /// [default: OUT/.nccl-id].
    #[arg(long)]
    pub dist_id_file: Option<PathBuf>,
    /// Seconds ranks wait for rank 0's NCCL id [default: 600].
    #[arg(long, value_parser = super::count_in::<1, 86400>)]
    pub dist_timeout: Option<usize>,
    /// f32, or bf16: mixed precision (bf16 forward, f32 master weights and optimiser; for CUDA, slow on CPU) [default: f32].
    #[arg(long, value_enum)]
    pub precision: Option<CliPrecision>,
    /// Total optimiser steps [default: 1000].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Cells per micro-batch [default: 8].
    #[arg(long, value_parser = super::count_in::<1, 65536>)]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimiser step (gradient accumulation) [default: 1].
    #[arg(long, value_parser = super::count_in::<1, 65536>)]
    pub accumulate: Option<usize>,
    /// Peak learning rate (AdamW) [default: 1e-4, as released].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning rate at the end of the cosine decay [default: 0].
    #[arg(long)]
    pub min_lr: Option<f64>,
    /// Linear warm-up steps [default: 100; the release used 9766].
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Decoupled weight decay [default: 0, as released].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Clip gradients to this global L2 norm, 0 for no clipping [default: 1, as released].
    #[arg(long)]
    pub clip_norm: Option<f64>,
    /// Seed of the validation split, data order, downsampling and masking [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop after N steps in this invocation, writing a checkpoint (continue later with --resume).
    #[arg(long, value_name = "N")]
    pub stop_after: Option<u64>,
    /// Write a checkpoint every N steps (and at the end) [default: 100].
    #[arg(long)]
    pub save_every: Option<u64>,
    /// Validation loss every N steps, 0 for at every checkpoint [default: 0].
    #[arg(long)]
    pub val_every: Option<u64>,
    /// Fraction of QC-passing cells held out for validation [default: 0.01].
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// At most this many validation cells [default: 1000; the paper used 100,000].
    #[arg(long)]
    pub val_max_cells: Option<usize>,
    /// Masking probability of nonzero input values [default: 0.3].
    #[arg(long)]
    pub value_mask_prob: Option<f64>,
    /// Masking probability of zero input values [default: 0.03 as in the released config; the paper
    /// text says 0.3].
    #[arg(long)]
    pub zero_mask_prob: Option<f64>,
    /// Probability that a cell's input is its raw profile, not downsampled [default: 0.5].
    #[arg(long)]
    pub no_downsample_prob: Option<f64>,
    /// Beta(A,B) law of the downsampling rate [default: 2,2].
    #[arg(long, value_name = "A,B", value_parser = parse_pair)]
    pub downsample_beta: Option<(f64, f64)>,
    /// QC: keep cells with more than this many expressed model genes [default: 200].
    #[arg(long)]
    pub min_genes: Option<usize>,
    /// Refuse files where fewer than this fraction of genes are scFoundation genes [default: 0.2].
    #[arg(long)]
    pub min_mapped: Option<f64>,
    /// Trainable parameters: all, encoder-last:K, or name prefixes, comma separated (e.g.
    /// encoder-last:2,encoder.norm.) [default: all].
    #[arg(long)]
    pub trainable: Option<String>,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
}

fn parse_pair(s: &str) -> Result<(f64, f64), String> {
    let bad = || format!("'{s}' is not two numbers A,B");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

/// The options: the run's own (resume) or the defaults, then whatever was given.
fn options(a: &PretrainArgs) -> Result<PretrainOptions> {
    let mut o = match &a.resume {
        Some(dir) => saved_options(dir)?,
        None => PretrainOptions::default(),
    };
    macro_rules! over {
        ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { o.$f = v; } )* };
    }
    over!(
        steps,
        batch_size,
        accumulate,
        lr,
        min_lr,
        warmup,
        weight_decay,
        clip_norm,
        seed,
        save_every,
        val_every,
        val_fraction,
        val_max_cells,
        min_genes,
        min_mapped
    );
    o.stop_after = a.stop_after;
    if let Some(p) = a.precision {
        o.precision = p.into();
    }
    if let Some(v) = a.value_mask_prob {
        o.rda.value_mask_prob = v;
    }
    if let Some(v) = a.zero_mask_prob {
        o.rda.zero_mask_prob = v;
    }
    if let Some(v) = a.no_downsample_prob {
        o.rda.no_downsample_prob = v;
    }
    if let Some(v) = a.downsample_beta {
        o.rda.downsample_beta = v;
    }
    if let Some(t) = &a.trainable {
        o.trainable = Trainable::parse(t)?;
    }
    let m = &a.matrix;
    if m.layer.is_some() || m.use_raw || m.gene_column.is_some() {
        o.matrix = m.choice();
    }
    Ok(o)
}

pub fn run_pretrain(a: PretrainArgs) -> Result<()> {
    let env = DistEnv::from_env()?;
    // One process per GPU: `--device cuda` without an index takes the launcher's local rank.
    let spec = if !env.is_single() && a.device.trim().eq_ignore_ascii_case("cuda") {
        format!("cuda:{}", env.local_rank)
    } else {
        a.device.clone()
    };
    let device = crate::device::parse(&spec)?;
    let par = Parallel {
        env,
        id_file: a.dist_id_file.clone(),
        timeout: std::time::Duration::from_secs(a.dist_timeout.unwrap_or(600) as u64),
    };
    let opts = options(&a)?;
    let start = match (&a.init, &a.resume) {
        (Some(m), None) => Start::Init {
            model: m.clone(),
            key: a.key.clone().unwrap_or_else(|| "gene".to_string()),
        },
        (None, Some(d)) => Start::Resume(d.clone()),
        _ => anyhow::bail!("give exactly one of --init and --resume"),
    };
    if a.key.is_some() && a.resume.is_some() {
        anyhow::bail!("--key applies to --init only");
    }
    let s = pretrain(&a.data, &start, &a.out, &opts, &device, &par)?;
    if env.rank != 0 {
        return Ok(());
    }
    let fmt = |x: Option<f64>| x.map(|v| format!("{v:.6}")).unwrap_or_else(|| "-".into());
    outln!(
        "{}: step {}, loss {}, validation loss {} ({} training cells, {} validation cells)",
        a.out.display(),
        s.step,
        fmt(s.last_loss),
        fmt(s.last_val_loss),
        s.n_train,
        s.n_val
    );
    Ok(())
}
