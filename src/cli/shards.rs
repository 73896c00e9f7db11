use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct SplitArgs {
    /// Input .h5ad.
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Maximum number of cells per shard (at least 1).
    #[arg(long, value_parser = super::count_in::<1, { usize::MAX }>)]
    pub cells_per_shard: usize,
    /// Directory for the shards.
    #[arg(long, default_value = ".")]
    pub outdir: PathBuf,
    /// Shard file names: PREFIX_00000.h5ad, PREFIX_00001.h5ad, ... (sorting by name keeps cell order).
    /// A plain name: no '/' or '..'.
    #[arg(long, default_value = "shard")]
    pub prefix: String,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Files to stack, in cell order (shard_*.h5ad sorts correctly).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output .h5ad.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
}

pub fn split(a: SplitArgs) -> Result<()> {
    for p in crate::steps::split::split(&a.input, a.cells_per_shard, &a.outdir, &a.prefix)? {
        outln!("{}", p.display());
    }
    Ok(())
}

pub fn merge(a: MergeArgs) -> Result<()> {
    let s = crate::steps::merge::merge(&a.inputs, &a.output)?;
    log::info!(
        "{}: {} cells from {} files",
        a.output.display(),
        s.n_cells,
        s.n_files
    );
    Ok(())
}
