//! Command-line interface: the one contract every Nextflow module and Galaxy tool wraps.

/// `println!` for command output: a reader that goes away (`| head`) ends the command quietly, as
/// for other Unix tools, instead of a panic.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            return Err(anyhow::Error::from(e).context("writing to standard output"));
        }
    }};
}

pub mod annotate;
pub mod bench;
pub mod convert;
pub mod embed;
pub mod gene_modules;
pub mod shards;
pub mod train;
pub mod weights;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "scfoundation",
    version,
    about = "Run the scFoundation single-cell foundation model: cell and gene embeddings, read-depth enhancement, cell-type annotation",
    long_about = "Run the scFoundation single-cell foundation model (Hao et al., Nature Methods 21:1481, 2024; \
doi:10.1038/s41592-024-02305-7) on CPU or an NVIDIA GPU. Inputs are AnnData .h5ad, CSV or .npy; outputs are \
.h5ad (embeddings in obsm, provenance in uns['scfoundation']) or .npy in the reference layout.\n\n\
Logging: set RUST_LOG=info (or debug) for details on stderr.",
    args_override_self = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Environment variables that stand in for global options.
pub const ENV_OPTIONS: [&str; 4] = [
    "SCFOUNDATION_REGISTRY",
    "SCFOUNDATION_OFFLINE",
    "SCFOUNDATION_FETCH_TIMEOUT",
    "SCFOUNDATION_STALL_TIMEOUT",
];

/// Options every subcommand understands.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Extra model registry (JSON) whose entries add to or override the built-in ones.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "SCFOUNDATION_REGISTRY"
    )]
    pub registry: Option<std::path::PathBuf>,
    /// Never touch the network: models must already be in the cache (env: 1/true/yes/on).
    #[arg(long, global = true, env = "SCFOUNDATION_OFFLINE", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub offline: bool,
    /// Model downloads give up after this long in total, across all mirrors and retries (a partial
    /// file is kept and the next fetch resumes it). Seconds, or with a unit: 90s, 30m, 6h; 0 for no
    /// limit [default: 6h].
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_timeout, env = "SCFOUNDATION_FETCH_TIMEOUT")]
    pub timeout: Option<Limit>,
    /// A download connection counts as stalled after this long without a byte (or without response
    /// headers), then is retried, resuming; same units, 0 to wait forever [default: 60s]
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_stall, env = "SCFOUNDATION_STALL_TIMEOUT")]
    pub stall_timeout: Option<Limit>,
    /// Progress report: auto (a bar on a terminal, periodic info logs otherwise), bar, log or none.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub progress: CliProgress,
    /// CPU threads for tensor work, 1 to 1024 (default: all cores, or RAYON_NUM_THREADS).
    #[arg(long, global = true, value_name = "N", value_parser = count_in::<1, 1024>)]
    pub threads: Option<usize>,
}

impl GlobalArgs {
    pub fn weights(&self) -> anyhow::Result<crate::weights::Weights> {
        let mut fetch = crate::weights::fetch::FetchOptions {
            progress: crate::progress::mode() == crate::progress::ProgressMode::Bar,
            ..Default::default()
        };
        if let Some(Limit(t)) = self.timeout {
            fetch.timeout = t;
        }
        if let Some(Limit(t)) = self.stall_timeout {
            fetch.stall = t;
        }
        crate::weights::Weights::open(self.registry.as_deref(), self.offline, fetch)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CliProgress {
    Auto,
    Bar,
    Log,
    None,
}

impl From<CliProgress> for crate::progress::ProgressMode {
    fn from(p: CliProgress) -> Self {
        match p {
            CliProgress::Auto => Self::Auto,
            CliProgress::Bar => Self::Bar,
            CliProgress::Log => Self::Log,
            CliProgress::None => Self::None,
        }
    }
}

/// A duration limit; `None` inside means "no limit" (given as 0).
#[derive(Debug, Clone, Copy)]
pub struct Limit(Option<std::time::Duration>);

fn parse_limit(s: &str, env: &str) -> Result<Limit, String> {
    crate::weights::fetch::parse_limit(s)
        .map(Limit)
        .map_err(|e| format!("{e} (from the option or {env})"))
}

fn parse_timeout(s: &str) -> Result<Limit, String> {
    parse_limit(s, "SCFOUNDATION_FETCH_TIMEOUT")
}

fn parse_stall(s: &str) -> Result<Limit, String> {
    parse_limit(s, "SCFOUNDATION_STALL_TIMEOUT")
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Embed cells (cell mode), genes in their cellular context (gene mode), or predict expression.
    Embed(embed::EmbedArgs),
    /// Gene modules: Leiden clusters of gene context embeddings, module scores per cell, heatmap.
    GeneModules(Box<gene_modules::GeneModulesArgs>),
    /// Convert a reference models.ckpt into per-entry safetensors files plus config JSON.
    Convert(convert::ConvertArgs),
    /// Cut an h5ad into shards of at most N cells, for parallel embedding.
    Split(shards::SplitArgs),
    /// Stack h5ad files cell-wise in the given order, checking they come from the same model and options.
    Merge(shards::MergeArgs),
    /// Manage model weights: list, fetch (with resume and sha256 check), verify, import, remove.
    #[command(subcommand)]
    Weights(weights::WeightsCommand),
    /// Write a randomly initialised model (tiny, small, the released 100m shape, or a config file).
    Init(train::InitArgs),
    /// Pretrain with the read-depth-aware masked regression objective on h5ad raw counts.
    Pretrain(Box<train::PretrainArgs>),
    /// Cell-type annotation: train a classifier head on labelled cells, predict labels of new cells.
    #[command(subcommand)]
    Annotate(annotate::AnnotateCommand),
    /// Throughput of each inference path (random model, synthetic cells) beside the GEMM ceiling.
    Bench(bench::BenchArgs),
}

/// Which matrix of the h5ad to read.
#[derive(Debug, clap::Args)]
pub struct MatrixArgs {
    /// h5ad: read this layer instead of X.
    #[arg(long)]
    pub layer: Option<String>,
    /// h5ad: read raw/X (and raw/var names) instead of X.
    #[arg(long)]
    pub use_raw: bool,
    /// h5ad: var column holding gene symbols (default: var names).
    #[arg(long)]
    pub gene_column: Option<String>,
}

impl MatrixArgs {
    pub fn choice(&self) -> crate::io::MatrixChoice {
        crate::io::MatrixChoice {
            layer: self.layer.clone(),
            use_raw: self.use_raw,
            gene_column: self.gene_column.clone(),
        }
    }
}

/// A whole number in `LO..=HI`; clap reports anything else (including overflow) as a usage error,
/// so no option silently wraps around to 0 or an absurd size.
pub fn count_in<const LO: usize, const HI: usize>(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number from {LO} to {HI}"))?;
    if !(LO..=HI).contains(&n) {
        return Err(format!("{n} is out of range: expected {LO} to {HI}"));
    }
    Ok(n)
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(n) = cli.global.threads {
        // candle's CPU kernels size their rayon pool from this variable; set before any tensor work.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    match cli.command {
        Command::Embed(a) => embed::run(a, &cli.global),
        Command::GeneModules(a) => gene_modules::run(*a, &cli.global),
        Command::Convert(a) => convert::run(a),
        Command::Split(a) => shards::split(a),
        Command::Merge(a) => shards::merge(a),
        Command::Weights(c) => weights::run(c, &cli.global),
        Command::Init(a) => train::run_init(a),
        Command::Pretrain(a) => train::run_pretrain(*a),
        Command::Annotate(c) => annotate::run(c, &cli.global),
        Command::Bench(a) => bench::run_bench(a),
    }
}
