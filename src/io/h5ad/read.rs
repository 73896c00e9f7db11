//! Streams the cells of an h5ad as sparse rows: `X`, a layer, or raw (`raw/X`, or the anndata 0.6
//! `raw.X`), with gene names from var's index or a var column.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hdf5::File;

use super::frame::Frame;
use super::sparse::Matrix;
use crate::io::{RowSource, SparseRow};

/// Dense reads are cut so that one read holds at most this many values.
const DENSE_READ_VALUES: usize = 1 << 24;

/// Which matrix of the file to read.
#[derive(Debug, Clone, Default)]
pub struct MatrixChoice {
    pub layer: Option<String>,
    pub use_raw: bool,
    pub gene_column: Option<String>,
}

pub struct H5adReader {
    path: PathBuf,
    obs_names: Vec<String>,
    var_names: Vec<String>,
    matrix: Matrix,
    next_row: usize,
    file: File,
}

/// Where raw lives: `raw/` (anndata >= 0.7) or `raw.X`/`raw.var` at the top (anndata 0.6).
fn raw_paths(file: &File) -> (&'static str, &'static str) {
    if file.link_exists("raw") {
        ("raw/var", "raw/X")
    } else {
        ("raw.var", "raw.X")
    }
}

impl H5adReader {
    pub fn open(path: &Path, choice: &MatrixChoice) -> Result<Self> {
        let file = super::open_file(path)?;
        let ctx = |what: &str| format!("{}: {what}", path.display());
        if !file.link_exists("obs") {
            bail!("{}: no 'obs': not an AnnData file", path.display());
        }
        let obs_names =
            Frame::read_index(&file, "obs").with_context(|| ctx("cannot read obs names"))?;
        let (var_path, mpath) = match (&choice.layer, choice.use_raw) {
            (Some(_), true) => bail!("--layer and --use-raw are mutually exclusive"),
            (Some(l), false) => {
                if l.is_empty() || l.contains('/') || l == "." || l == ".." {
                    bail!("invalid --layer '{l}': a layer name has no '/'");
                }
                ("var".to_string(), format!("layers/{l}"))
            }
            (None, true) => {
                let (v, m) = raw_paths(&file);
                (v.to_string(), m.to_string())
            }
            (None, false) => ("var".to_string(), "X".to_string()),
        };
        if !file.link_exists(&var_path) {
            bail!("{}: no '{var_path}'", path.display());
        }
        let var_names = match &choice.gene_column {
            Some(c) => Frame::read(&file, &var_path)
                .and_then(|f| f.column(c)?.strings())
                .with_context(|| ctx(&format!("cannot read gene column '{c}' from {var_path}")))?,
            None => {
                Frame::read_index(&file, &var_path).with_context(|| ctx("cannot read var names"))?
            }
        };
        let exists = match mpath.split_once('/') {
            Some((g, _)) => file.link_exists(g) && file.link_exists(&mpath),
            None => file.link_exists(&mpath),
        };
        if !exists {
            let hint = match choice.layer {
                Some(_) => match file.group("layers").and_then(|g| g.member_names()) {
                    Ok(l) if !l.is_empty() => format!(" (layers: {})", l.join(", ")),
                    _ => " (the file has no layers)".to_string(),
                },
                None => String::new(),
            };
            bail!("{}: no matrix at '{mpath}'{hint}", path.display());
        }
        let matrix = Matrix::open(&file, &mpath, obs_names.len())
            .with_context(|| ctx(&format!("reading '{mpath}'")))?;
        let n_vars = matrix.shape().1;
        if n_vars != var_names.len() {
            bail!(
                "{}: '{mpath}' has {n_vars} columns but {var_path} has {} names",
                path.display(),
                var_names.len()
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            obs_names,
            var_names,
            matrix,
            next_row: 0,
            file,
        })
    }

    pub fn n_obs(&self) -> usize {
        self.obs_names.len()
    }
}

impl RowSource for H5adReader {
    fn cell_ids(&self) -> &[String] {
        &self.obs_names
    }

    fn column_names(&self) -> Option<&[String]> {
        Some(&self.var_names)
    }

    fn n_cols(&self) -> usize {
        self.var_names.len()
    }

    fn rewind(&mut self) -> Result<()> {
        self.next_row = 0;
        Ok(())
    }

    fn obs(&self) -> Result<Option<Frame>> {
        Frame::read(&self.file, "obs")
            .map(Some)
            .with_context(|| format!("{}: reading obs", self.path.display()))
    }

    /// Reads up to `count` further rows.
    fn next_rows(&mut self, count: usize) -> Result<Vec<SparseRow>> {
        let start = self.next_row;
        let end = start.saturating_add(count).min(self.n_obs());
        self.next_row = end;
        let step = if self.matrix.is_dense() {
            (DENSE_READ_VALUES / self.var_names.len().max(1)).max(1)
        } else {
            end.saturating_sub(start).max(1)
        };
        let mut out = Vec::with_capacity(end.saturating_sub(start));
        let mut a = start;
        while a < end {
            let b = (a + step).min(end);
            out.extend(
                self.matrix
                    .f64_rows(a..b)
                    .with_context(|| format!("{}: reading rows {a}..{b}", self.path.display()))?
                    .into_iter()
                    .map(|(cols, vals)| SparseRow { cols, vals }),
            );
            a = b;
        }
        Ok(out)
    }
}
