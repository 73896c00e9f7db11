use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::data::batch::BatchSize;
use crate::steps::gene_modules::{gene_modules, GeneChoice, GeneModuleOptions, GeneModuleOutputs};

#[derive(Debug, Args)]
#[command(
    group(clap::ArgGroup::new("geneset").required(true).args(["genes", "n_hvg"])),
    after_help = "Examples:\n  \
scfoundation gene-modules --input pbmc.h5ad --model scfoundation@1.0 --n-hvg 500 \\\n    \
--groupby cell_type --groups 'CD14+ Monocyte,CD8+ Cytotoxic T,CD19+ B' --per-group 100 \\\n    \
--output modules.tsv --scores-output scores.h5ad --heatmap modules.png\n  \
scfoundation gene-modules --input cells.h5ad --model models.ckpt --genes genes.txt --output modules.tsv"
)]
pub struct GeneModulesArgs {
    /// Cells x genes input (.h5ad, .csv/.tsv or .npy, as for embed); raw counts unless --pre-normalized.
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Weights: NAME@VERSION from the registry, or a path (as for embed).
    #[arg(long, short = 'm')]
    pub model: String,
    /// Refuse to run unless the weights file has this sha256.
    #[arg(long, value_name = "HEX")]
    pub model_sha256: Option<String>,
    /// Modules table (.tsv): gene, module, module_size, degree, intra_similarity, mean_expression; the
    /// provenance goes to <output>.provenance.json.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Per-cell module scores (scanpy score_genes) as obs columns module_<id> of this .h5ad (the
    /// input's obs copied, provenance in uns['scfoundation']).
    #[arg(long, value_name = "H5AD")]
    pub scores_output: Option<PathBuf>,
    /// PNG heatmap of the mean cosine similarity between modules.
    #[arg(long, value_name = "PNG")]
    pub heatmap: Option<PathBuf>,
    /// Genes to cluster: one HGNC symbol per line (first field; '#' comments); unknown symbols are
    /// dropped with a warning.
    #[arg(long, value_name = "FILE")]
    pub genes: Option<PathBuf>,
    /// Cluster the N most highly variable genes of the input (scanpy 'seurat' flavour on log1p CP10k).
    #[arg(long, value_name = "N", value_parser = super::count_in::<2, 19264>)]
    pub n_hvg: Option<usize>,
    /// Obs column whose groups are sampled with --per-group (h5ad input only).
    #[arg(long, value_name = "COL")]
    pub groupby: Option<String>,
    /// Use at most N cells per group (without --groupby: N cells in all), drawn with --seed.
    #[arg(long, value_name = "N", value_parser = super::count_in::<1, 100000000>)]
    pub per_group: Option<usize>,
    /// Only these groups of --groupby (comma-separated).
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Neighbours per gene in the cosine kNN graph, the gene itself included (scanpy's n_neighbors).
    #[arg(long, default_value_t = 15, value_parser = super::count_in::<2, 10000>)]
    pub k: usize,
    /// Leiden resolution (RB configuration quality); larger gives more, smaller modules.
    #[arg(long, default_value_t = 1.0)]
    pub resolution: f64,
    /// Seed of every random choice (cells per group, Leiden node order, control genes).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Module scores: control genes drawn per expression bin (scanpy's ctrl_size).
    #[arg(long, default_value_t = 50, value_parser = super::count_in::<1, 19264>)]
    pub ctrl_size: usize,
    /// Module scores: expression bins (scanpy's n_bins).
    #[arg(long, default_value_t = 25, value_parser = super::count_in::<2, 19264>)]
    pub n_bins: usize,
    #[command(flatten)]
    pub preprocess: super::embed::PreprocessArgs,
    /// Checkpoint entry whose decoder gives the gene embeddings.
    #[arg(long, default_value = "gene")]
    pub key: String,
    /// Cells per forward pass, 1 to 4096, or auto: 8 on the CPU, sized from the free memory on a GPU
    /// (as in embed).
    #[arg(long, default_value = "auto", value_parser = super::embed::parse_batch_size)]
    pub batch_size: BatchSize,
    /// Refuse input where fewer than this fraction of input genes are scFoundation genes.
    #[arg(long, default_value_t = 0.2)]
    pub min_mapped: f64,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
    /// cpu, or cuda / cuda:N (needs a binary built with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(a: GeneModulesArgs, global: &super::GlobalArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&a.min_mapped) {
        anyhow::bail!("--min-mapped must be between 0 and 1, got {}", a.min_mapped);
    }
    let genes = match (a.genes, a.n_hvg) {
        (Some(f), _) => GeneChoice::File(f),
        (None, Some(n)) => GeneChoice::Hvg(n),
        (None, None) => anyhow::bail!("give --genes FILE or --n-hvg N"),
    };
    let device = crate::device::parse(&a.device)?;
    let opts = GeneModuleOptions {
        genes,
        groupby: a.groupby,
        per_group: a.per_group,
        groups: a.groups.into_iter().filter(|g| !g.is_empty()).collect(),
        k: a.k,
        resolution: a.resolution,
        seed: a.seed,
        ctrl_size: a.ctrl_size,
        n_bins: a.n_bins,
        preprocess: a.preprocess.options(),
        key: a.key,
        batch_size: a.batch_size,
        min_mapped: a.min_mapped,
        matrix: a.matrix.choice(),
    };
    let out = GeneModuleOutputs {
        modules: a.output,
        scores: a.scores_output,
        heatmap: a.heatmap,
    };
    // Cheap checks (extensions, option ranges, outputs vs inputs) before any model is fetched.
    crate::steps::gene_modules::validate(&opts, &out, &a.input)?;
    let model = global
        .weights()?
        .resolve(&a.model, &opts.key, a.model_sha256.as_deref())?;
    let s = gene_modules(&a.input, &model, &out, &opts, &device)?;
    log::info!(
        "{} genes from {} cells in {} modules",
        s.genes.len(),
        s.n_cells_used,
        s.n_modules
    );
    Ok(())
}
