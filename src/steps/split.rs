//! `split`: cut an h5ad into shards of at most N cells (every obs column, X, layers, raw and obsm
//! follow their cells), so a workflow manager can embed them in parallel.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::fsutil::PendingFile;
use crate::io::h5ad::{self, rows};
use crate::io::Format;
use crate::provenance::Provenance;

pub fn shard_name(prefix: &str, i: usize, n_shards: usize) -> String {
    let width = n_shards.saturating_sub(1).to_string().len().max(5);
    format!("{prefix}_{i:0width$}.h5ad")
}

pub fn split(
    input: &Path,
    cells_per_shard: usize,
    outdir: &Path,
    prefix: &str,
) -> Result<Vec<PathBuf>> {
    if cells_per_shard == 0 {
        bail!("--cells-per-shard must be at least 1");
    }
    if !input.exists() {
        bail!("{}: input file not found", input.display());
    }
    crate::fsutil::plain_name(prefix, "--prefix")?;
    if Format::of_input(input)? != Format::H5ad {
        bail!("{}: split needs an .h5ad input", input.display());
    }
    let src = h5ad::open_file(input)?;
    let n = rows::n_obs(&src).with_context(|| format!("{}: cannot read obs", input.display()))?;
    if n == 0 {
        bail!("{}: no cells to split", input.display());
    }
    let n_shards = n.div_ceil(cells_per_shard);
    std::fs::create_dir_all(outdir)
        .with_context(|| format!("cannot create output directory {}", outdir.display()))?;
    let name = input
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    // All shards are written before any is renamed into place, so a failure leaves none behind.
    let mut pending = vec![];
    for i in 0..n_shards {
        let range = i * cells_per_shard..((i + 1) * cells_per_shard).min(n);
        let target = outdir.join(shard_name(prefix, i, n_shards));
        crate::fsutil::refuse_input_as_output(&target, &[input])?;
        let p = PendingFile::new(&target)?;
        let dst = h5ad::create_file(p.path())?;
        rows::write_rows(
            std::slice::from_ref(&src),
            &dst,
            &rows::RowOp::Slice(range.clone()),
        )
        .with_context(|| format!("{}: writing shard {i}", input.display()))?;
        let mut prov = Provenance::new("split");
        prov.set("source", &name);
        prov.set("shard", i);
        prov.set("n_shards", n_shards);
        prov.set("first_cell", range.start);
        prov.set("n_cells", range.len());
        h5ad::write_uns_strings(&dst, "scfoundation_split", prov.entries())?;
        dst.close()?;
        pending.push(p);
    }
    let out: Vec<PathBuf> = pending.iter().map(|p| p.target().to_path_buf()).collect();
    PendingFile::commit_all(pending)?;
    Ok(out)
}
