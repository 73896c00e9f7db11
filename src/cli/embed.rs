use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::data::batch::BatchSize;
use crate::data::{InputType, PreNormalized, PreprocessOptions, TargetResolution};
use crate::steps::embed::{embed, EmbedOptions, GeneEmbedding, Mode, Pool};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
scfoundation embed --input cells.h5ad --model models.ckpt --output cells.emb.h5ad\n  \
scfoundation embed --input cells.csv --model models.ckpt --output emb.npy --tgthighres f1 --key rde\n  \
scfoundation embed --input cells.h5ad --model models.ckpt --output genes.h5ad --mode gene --gene-embedding mean")]
pub struct EmbedArgs {
    /// Cells x genes input: .h5ad (X, a layer or raw/X), .csv/.tsv (first column cell ids, header gene
    /// symbols) or .npy (exactly 19,264 columns in scFoundation gene order).
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Weights: NAME@VERSION from the registry (cached, fetched unless --offline), or a path to a
    /// reference models.ckpt, a .safetensors file, or a directory from `scfoundation convert`.
    /// NAME@VERSION always means the registry, even if a local file has that name; use a path with a
    /// separator (./NAME@VERSION) for a local file.
    #[arg(long, short = 'm')]
    pub model: String,
    /// Refuse to run unless the weights file has this sha256.
    #[arg(long, value_name = "HEX")]
    pub model_sha256: Option<String>,
    /// Output .h5ad (obs copied, results in obsm/X/varm, provenance in uns['scfoundation']) or .npy.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// cell: pooled encoder embedding per cell; gene: decoder embedding of every gene in every cell;
    /// expression: predicted expression of all 19,264 genes.
    #[arg(long, value_enum, default_value = "cell")]
    pub mode: CliMode,
    /// Cell pooling: all = [S, T, max, mean] (4 x width), max = max over all tokens.
    #[arg(long, value_enum, default_value = "all")]
    pub pool: CliPool,
    /// Gene mode output: full (cells x genes x width) or mean over cells (genes x width, h5ad varm).
    #[arg(long, value_enum, default_value = "full")]
    pub gene_embedding: CliGeneEmbedding,
    #[command(flatten)]
    pub preprocess: super::embed::PreprocessArgs,
    /// Checkpoint entry: cell, rde (read-depth enhancement) or gene. Default: cell for --mode cell,
    /// gene otherwise. The reference's --version ce|rde is --key cell|rde.
    #[arg(long)]
    pub key: Option<String>,
    /// Cells per forward pass, 1 to 4096, or auto: 8 on the CPU; on a GPU as many cells and encoder
    /// tokens as an estimate from the model's shape fits in 60% of the free device memory, halved if
    /// the device runs out of memory anyway (the limits used are recorded in the provenance). Cells are
    /// sorted by length to limit padding. On the CPU results do not depend on it; on a GPU they can
    /// differ in the last bits, so pin a number to repeat a GPU run exactly.
    #[arg(long, default_value = "auto", value_parser = parse_batch_size)]
    pub batch_size: BatchSize,
    /// Refuse input where fewer than this fraction of input genes are scFoundation genes.
    #[arg(long, default_value_t = 0.2)]
    pub min_mapped: f64,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
    /// cpu, or cuda / cuda:N (needs a binary built with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32 (matches the reference), or bf16: weights and matrix products in bfloat16, everything between
    /// the products (activations, LayerNorm, softmax, residuals) in f32. Meant for GPUs; on the CPU it
    /// is much slower than f32. bf16 results differ from f32 slightly (README "Benchmarks"); recorded in
    /// the provenance.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: CliPrecision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CliPrecision {
    F32,
    Bf16,
}

/// The library's enums carry no CLI concerns; these mirror them for clap (names, help) and map onto them.
macro_rules! cli_enum {
    ($cli:ident => $lib:ty { $($(#[$m:meta])* $v:ident => $lv:expr),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
        pub enum $cli {
            $($(#[$m])* $v),+
        }
        impl From<$cli> for $lib {
            fn from(c: $cli) -> Self {
                match c {
                    $($cli::$v => $lv),+
                }
            }
        }
    };
}

cli_enum!(CliMode => Mode {
    /// One vector per cell from the encoder (pooled).
    Cell => Mode::Cell,
    /// Per-cell context embeddings of all 19,264 genes from the decoder.
    Gene => Mode::Gene,
    /// Predicted expression of all 19,264 genes (the pretraining head).
    Expression => Mode::Expression,
});

cli_enum!(CliPool => Pool {
    /// [S token, T token, max over genes, mean over genes]: 4 x encoder width.
    All => Pool::All,
    /// Max over all encoder positions: 1 x encoder width.
    Max => Pool::Max,
});

cli_enum!(CliGeneEmbedding => GeneEmbedding {
    /// Cells x genes x width.
    Full => GeneEmbedding::Full,
    /// Mean over cells: genes x width (into varm for h5ad).
    Mean => GeneEmbedding::Mean,
});

cli_enum!(CliInputType => InputType {
    #[value(name = "singlecell")]
    SingleCell => InputType::SingleCell,
    Bulk => InputType::Bulk,
});

cli_enum!(CliPreNormalized => PreNormalized {
    #[value(name = "F")]
    F => PreNormalized::F,
    #[value(name = "T")]
    T => PreNormalized::T,
    #[value(name = "A")]
    A => PreNormalized::A,
});

/// How cells are normalised and which T token they get (embed, gene-modules, annotate).
#[derive(Debug, Args)]
pub struct PreprocessArgs {
    /// Target resolution token T: tX sets T=X, fX sets T=log10(total*X), aX sets T=log10(total)+X.
    #[arg(long, default_value = "t4", value_parser = parse_tgthighres)]
    pub tgthighres: TargetResolution,
    /// F: raw counts (normalised here); T: already normalised; A: normalised with the total count as the last column.
    #[arg(long, value_enum, default_value = "F", ignore_case = true)]
    pub pre_normalized: CliPreNormalized,
    /// singlecell, or bulk (raw counts normalised to the file's median total, T = S = log10 sum).
    #[arg(long, value_enum, default_value = "singlecell")]
    pub input_type: CliInputType,
}

impl PreprocessArgs {
    pub fn options(&self) -> PreprocessOptions {
        PreprocessOptions {
            input_type: self.input_type.into(),
            pre_normalized: self.pre_normalized.into(),
            tgthighres: self.tgthighres,
        }
    }
}

/// `auto` or a whole number from 1 to 4096.
pub fn parse_batch_size(s: &str) -> Result<BatchSize, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(BatchSize::Auto);
    }
    super::count_in::<1, 4096>(s)
        .map(BatchSize::Fixed)
        .map_err(|e| format!("{e}, or auto"))
}

pub fn parse_tgthighres(s: &str) -> Result<TargetResolution, String> {
    s.parse().map_err(|e: anyhow::Error| e.to_string())
}

pub fn run(a: EmbedArgs, global: &super::GlobalArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&a.min_mapped) {
        anyhow::bail!("--min-mapped must be between 0 and 1, got {}", a.min_mapped);
    }
    let key = a
        .key
        .clone()
        .unwrap_or_else(|| EmbedOptions::default_key(a.mode.into()).to_string());
    let device = crate::device::parse(&a.device)?;
    crate::io::Format::of_output(&a.output)?;
    let model = global
        .weights()?
        .resolve(&a.model, &key, a.model_sha256.as_deref())?;
    let opts = EmbedOptions {
        mode: a.mode.into(),
        pool: a.pool.into(),
        gene_embedding: a.gene_embedding.into(),
        preprocess: a.preprocess.options(),
        key,
        precision: match a.precision {
            CliPrecision::F32 => candle_core::DType::F32,
            CliPrecision::Bf16 => candle_core::DType::BF16,
        },
        batch_size: a.batch_size,
        min_mapped: a.min_mapped,
        matrix: a.matrix.choice(),
    };
    embed(&a.input, &model, &a.output, &opts, &device)?;
    Ok(())
}
