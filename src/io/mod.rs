//! File formats. Readers stream cells as sparse rows over the input's own columns; writers write
//! atomically (temp file + rename).

pub mod csv;
pub mod h5ad;
pub mod npy;
pub mod sink;

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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseRow {
    pub cols: Vec<u32>,
    pub vals: Vec<f64>,
}

impl SparseRow {
    pub fn from_dense(d: &[f64]) -> Self {
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

/// A cells x columns matrix read in order as sparse rows: the one interface every step reads cells
/// through, whatever the file format.
pub trait RowSource: Send {
    /// Cell ids in row order.
    fn cell_ids(&self) -> &[String];
    /// Number of cells (without materialising ids where the format has none).
    fn n_rows(&self) -> usize {
        self.cell_ids().len()
    }
    /// Column (gene) names; `None` when the format has none (`.npy`: the model's gene order).
    fn column_names(&self) -> Option<&[String]>;
    fn n_cols(&self) -> usize;
    /// Up to `count` further rows; empty at the end.
    fn next_rows(&mut self, count: usize) -> Result<Vec<SparseRow>>;
    /// Back to the first row, for a second pass (dataset statistics).
    fn rewind(&mut self) -> Result<()>;
    /// The obs dataframe outputs should carry, for formats that have one.
    fn obs(&self) -> Result<Option<h5ad::Frame>> {
        Ok(None)
    }
}

/// An input matrix of cells x genes, opened once and read in order.
pub struct Input {
    pub path: PathBuf,
    pub format: Format,
    source: Box<dyn RowSource>,
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
        let source: Box<dyn RowSource> = match format {
            Format::H5ad => Box::new(h5ad::H5adReader::open(path, choice)?),
            Format::Csv => Box::new(csv::CsvRows::open(path)?),
            Format::Npy => Box::new(npy::NpyRows::open(path)?),
        };
        if source.n_rows() == 0 {
            bail!("{}: no cells in input", path.display());
        }
        if source.n_cols() == 0 {
            bail!("{}: no gene columns in input", path.display());
        }
        log::info!(
            "{}: {} cells x {} columns ({format:?})",
            path.display(),
            source.n_rows(),
            source.n_cols()
        );
        Ok(Self {
            path: path.to_path_buf(),
            format,
            source,
        })
    }

    pub fn n_cells(&self) -> usize {
        self.source.n_rows()
    }

    pub fn cell_ids(&self) -> &[String] {
        self.source.cell_ids()
    }

    /// Column names; `None` for `.npy`, whose columns are the model genes in order.
    pub fn gene_names(&self) -> Option<&[String]> {
        self.source.column_names()
    }

    pub fn n_cols(&self) -> usize {
        self.source.n_cols()
    }

    pub fn next_rows(&mut self, count: usize) -> Result<Vec<SparseRow>> {
        self.source.next_rows(count)
    }

    pub fn rewind(&mut self) -> Result<()> {
        self.source.rewind()
    }

    pub fn obs(&self) -> Result<Option<h5ad::Frame>> {
        self.source.obs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn all_rows(input: &mut Input) -> Vec<SparseRow> {
        let mut out = vec![];
        loop {
            let r = input.next_rows(2).unwrap();
            if r.is_empty() {
                return out;
            }
            out.extend(r);
        }
    }

    #[test]
    fn csv_rows_quoted_blank_lines_and_rewind() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "x.csv",
            b"id,\"G,1\",G2\r\n\"c,1\",0,2.5\r\n\r\nc2,3,\n",
        );
        let mut inp = Input::open(&p, &MatrixChoice::default()).unwrap();
        assert_eq!(inp.gene_names().unwrap(), ["G,1", "G2"]);
        assert_eq!(inp.cell_ids(), ["c,1", "c2"]);
        let rows = all_rows(&mut inp);
        assert_eq!(
            rows[0],
            SparseRow {
                cols: vec![1],
                vals: vec![2.5]
            }
        );
        assert_eq!(
            rows[1],
            SparseRow {
                cols: vec![0],
                vals: vec![3.0]
            }
        );
        inp.rewind().unwrap();
        assert_eq!(all_rows(&mut inp), rows);
        let tsv = write(d.path(), "x.tsv", b"id\tA\tB\nc1\t1\t0\n");
        let mut inp = Input::open(&tsv, &MatrixChoice::default()).unwrap();
        assert_eq!(all_rows(&mut inp)[0].vals, vec![1.0]);
    }

    #[test]
    fn csv_malformed_rows_are_named() {
        let d = tempfile::tempdir().unwrap();
        for (body, needle) in [
            (&b"id,A,B\nc1,1\n"[..], "line 2 has 1 values"),
            (b"id,A,B\nc1,1,x\n", "'x' for gene 'B' is not a number"),
            (b"id,A\nc1,\xff\n", "UTF-8"),
            (b"", "empty file"),
            (b"id\n", "header has 1 field"),
        ] {
            let p = write(d.path(), "bad.csv", body);
            let e = Input::open(&p, &MatrixChoice::default())
                .err()
                .expect("must fail");
            assert!(format!("{e:#}").contains(needle), "{needle}: {e:#}");
        }
    }

    #[test]
    fn npy_rows_and_rewind() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.npy");
        let mut w = npy::NpyWriter::create(&p, &[3, 2]).unwrap();
        w.write(&[0.0, 1.5, 2.0, 0.0, 0.0, 0.0]).unwrap();
        w.finish().unwrap();
        let mut inp = Input::open(&p, &MatrixChoice::default()).unwrap();
        assert!(inp.gene_names().is_none());
        assert_eq!(inp.cell_ids(), ["0", "1", "2"]);
        let rows = all_rows(&mut inp);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            SparseRow {
                cols: vec![1],
                vals: vec![1.5]
            }
        );
        assert!(rows[2].cols.is_empty());
        inp.rewind().unwrap();
        assert_eq!(all_rows(&mut inp), rows);
    }

    #[test]
    fn h5ad_rows_match_across_encodings() {
        let td = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-data");
        let read = |name: &str| {
            let mut inp = Input::open(&td.join(name), &MatrixChoice::default()).unwrap();
            let obs = inp.obs().unwrap().expect("h5ad has obs");
            assert_eq!(obs.index, inp.cell_ids());
            let rows = all_rows(&mut inp);
            inp.rewind().unwrap();
            assert_eq!(all_rows(&mut inp), rows, "rewind");
            rows
        };
        let csr = read("pbmc_tiny.h5ad");
        assert_eq!(csr.len(), 16);
        assert_eq!(read("pbmc_tiny_dense.h5ad"), csr);
        assert_eq!(read("pbmc_tiny_csc.h5ad"), csr);
    }
}
