//! File formats. Readers stream cells as sparse rows over the input's own columns; writers write
//! atomically (temp file + rename).

pub mod csv;
pub mod h5ad;
pub mod npy;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

pub use h5ad::MatrixChoice;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    H5ad,
    Csv,
    Npy,
}

impl Format {
    pub fn of_input(path: &Path) -> Result<Self> {
        Self::from_ext(path).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: unsupported input extension; expected .h5ad, .csv, .tsv or .npy",
                path.display()
            )
        })
    }

    pub fn of_output(path: &Path) -> Result<Self> {
        match Self::from_ext(path) {
            Some(f @ (Self::H5ad | Self::Npy)) => Ok(f),
            _ => bail!(
                "{}: unsupported output extension; expected .h5ad or .npy",
                path.display()
            ),
        }
    }

    fn from_ext(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "h5ad" => Some(Self::H5ad),
            "csv" | "tsv" | "txt" => Some(Self::Csv),
            "npy" => Some(Self::Npy),
            _ => None,
        }
    }
}

/// One cell as (input column, value) pairs; zeros may be omitted.
#[derive(Debug, Clone, Default)]
pub struct SparseRow {
    pub cols: Vec<u32>,
    pub vals: Vec<f64>,
}

impl SparseRow {
    fn from_dense(d: &[f64]) -> Self {
        let mut r = Self::default();
        for (j, &v) in d.iter().enumerate() {
            if v != 0.0 {
                r.cols.push(j as u32);
                r.vals.push(v);
            }
        }
        r
    }
}

enum Rows {
    H5ad(h5ad::H5adReader),
    Csv(csv::CsvRows),
    Npy(npy::NpyRows),
}

/// An input matrix of cells x genes, read in order.
pub struct Input {
    pub path: PathBuf,
    pub format: Format,
    pub cell_ids: Vec<String>,
    /// Column names; `None` for `.npy`, whose columns are the model genes in order.
    pub gene_names: Option<Vec<String>>,
    pub n_cols: usize,
    choice: MatrixChoice,
    rows: Rows,
    scratch: Vec<f64>,
}

impl Input {
    pub fn open(path: &Path, choice: &MatrixChoice) -> Result<Self> {
        if !path.exists() {
            bail!("{}: input file not found", path.display());
        }
        if !path.is_file() {
            // A directory, FIFO or device would fail late or block forever.
            bail!("{}: not a regular file", path.display());
        }
        let format = Format::of_input(path)?;
        if format != Format::H5ad
            && (choice.layer.is_some() || choice.use_raw || choice.gene_column.is_some())
        {
            bail!(
                "{}: --layer, --use-raw and --gene-column apply only to .h5ad input",
                path.display()
            );
        }
        let (rows, cell_ids, gene_names, n_cols) = match format {
            Format::H5ad => {
                let r = h5ad::H5adReader::open(path, choice)?;
                let ids = r.obs_names().to_vec();
                let genes = r.var_names().to_vec();
                let n = genes.len();
                (Rows::H5ad(r), ids, Some(genes), n)
            }
            Format::Csv => {
                let ids = csv::CsvRows::scan_ids(path)?;
                let r = csv::CsvRows::open(path)?;
                let genes = r.gene_names().to_vec();
                let n = genes.len();
                (Rows::Csv(r), ids, Some(genes), n)
            }
            Format::Npy => {
                let r = npy::NpyRows::open(path)?;
                let ids = (0..r.n_rows()).map(|i| i.to_string()).collect();
                let n = r.n_cols();
                (Rows::Npy(r), ids, None, n)
            }
        };
        if cell_ids.is_empty() {
            bail!("{}: no cells in input", path.display());
        }
        Ok(Self {
            path: path.to_path_buf(),
            format,
            cell_ids,
            gene_names,
            n_cols,
            choice: choice.clone(),
            rows,
            scratch: vec![],
        })
    }

    /// A fresh reader over the same file, from the first cell.
    pub fn reopen(&self) -> Result<Self> {
        Self::open(&self.path, &self.choice)
    }

    pub fn n_cells(&self) -> usize {
        self.cell_ids.len()
    }

    pub fn next_rows(&mut self, count: usize) -> Result<Vec<SparseRow>> {
        match &mut self.rows {
            Rows::H5ad(r) => Ok(r
                .next_rows(count)?
                .into_iter()
                .map(|(cols, vals)| SparseRow { cols, vals })
                .collect()),
            Rows::Csv(r) => {
                let mut out = vec![];
                while out.len() < count {
                    if r.next_row(&mut self.scratch)?.is_none() {
                        break;
                    }
                    out.push(SparseRow::from_dense(&self.scratch));
                }
                Ok(out)
            }
            Rows::Npy(r) => {
                let mut out = vec![];
                while out.len() < count && r.next_row(&mut self.scratch)? {
                    out.push(SparseRow::from_dense(&self.scratch));
                }
                Ok(out)
            }
        }
    }
}
