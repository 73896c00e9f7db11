//! Cells x features matrices: dense datasets and CSR/CSC groups (current `encoding-type` and the old
//! `h5sparse_format` attributes). One validated path serves the streaming reader, split and merge:
//! shape, `indptr`, `indices` and `data` are checked against each other before anything is sized
//! from them.

use std::ops::Range;

use anyhow::{anyhow, bail, Context, Result};
use hdf5::{Dataset, Group};

use super::elem::{self, check_read, encoding, read_rows, str_attr, Block};

/// Largest dimension accepted from a shape attribute (far beyond any real matrix; keeps sums in range).
const MAX_DIM: i64 = 1 << 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparseKind {
    Csr,
    Csc,
}

/// Rows of a matrix in CSR form: `indptr` relative to this block, column indices checked in range.
pub struct CsrRows {
    pub indptr: Vec<u64>,
    pub cols: Vec<u32>,
    pub data: Block,
    pub n_cols: usize,
}

impl CsrRows {
    pub fn n_rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }
}

/// A matrix opened for row access.
pub enum Matrix {
    Dense {
        ds: Dataset,
        shape: (usize, usize),
    },
    Csr(SparseGroup),
    /// CSC has no cheap row access: it is transposed to CSR in memory once (still sparse).
    Transposed(CsrRows),
}

pub struct SparseGroup {
    pub kind: SparseKind,
    pub shape: (usize, usize),
    data: Dataset,
    indices: Dataset,
    indptr: Vec<u64>,
}

/// Whether `g` is a sparse matrix group in any layout anndata has written.
pub fn is_sparse(g: &Group) -> bool {
    sparse_kind(g).is_some()
}

fn sparse_kind(g: &Group) -> Option<SparseKind> {
    let enc = encoding(g);
    let enc = if enc.is_empty() {
        str_attr(g, "h5sparse_format").unwrap_or_default()
    } else {
        enc
    };
    match enc.as_str() {
        "csr_matrix" | "csr" => Some(SparseKind::Csr),
        "csc_matrix" | "csc" => Some(SparseKind::Csc),
        _ => None,
    }
}

impl SparseGroup {
    pub fn open(g: &Group) -> Result<Self> {
        let kind = sparse_kind(g).ok_or_else(|| {
            let e = encoding(g);
            if e.is_empty() {
                anyhow!("{} is a group without a sparse matrix encoding", g.name())
            } else {
                anyhow!("{}: unsupported matrix encoding '{e}'", g.name())
            }
        })?;
        let shape_attr = g
            .attr("shape")
            .or_else(|_| g.attr("h5sparse_shape"))
            .with_context(|| format!("{}: sparse matrix has no shape attribute", g.name()))?;
        if shape_attr.ndim() != 1 || shape_attr.size() != 2 {
            bail!("{}: sparse shape attribute must hold 2 numbers", g.name());
        }
        let shape = shape_attr.read_1d::<i64>()?.to_vec();
        if shape.iter().any(|&d| !(0..=MAX_DIM).contains(&d)) {
            bail!("{}: bad sparse shape {shape:?}", g.name());
        }
        let (r, c) = (shape[0] as usize, shape[1] as usize);
        let data = g
            .dataset("data")
            .with_context(|| format!("{}: no 'data'", g.name()))?;
        let indices = g
            .dataset("indices")
            .with_context(|| format!("{}: no 'indices'", g.name()))?;
        let ptr_ds = g
            .dataset("indptr")
            .with_context(|| format!("{}: no 'indptr'", g.name()))?;
        let major = if kind == SparseKind::Csr { r } else { c };
        let corrupt = |why: &str| anyhow!("{}: corrupt sparse matrix: {why}", g.name());
        if data.ndim() != 1 || indices.ndim() != 1 || ptr_ds.ndim() != 1 {
            return Err(corrupt("data, indices and indptr must be 1-D"));
        }
        if ptr_ds.size() != major + 1 {
            return Err(corrupt(&format!(
                "indptr has {} entries, shape {r}x{c} needs {}",
                ptr_ds.size(),
                major + 1
            )));
        }
        let nnz = data.size();
        if indices.size() != nnz {
            return Err(corrupt(&format!(
                "{} indices but {nnz} values",
                indices.size()
            )));
        }
        check_read(&ptr_ds, major + 1)?;
        let raw = ptr_ds.read_1d::<i64>()?;
        if raw.iter().any(|&p| p < 0) {
            return Err(corrupt("negative indptr entry"));
        }
        let indptr: Vec<u64> = raw.iter().map(|&p| p as u64).collect();
        if indptr.first() != Some(&0)
            || indptr.windows(2).any(|w| w[0] > w[1])
            || indptr[major] as usize != nnz
        {
            return Err(corrupt(&format!(
                "indptr must rise from 0 to the number of values ({nnz})"
            )));
        }
        Ok(Self {
            kind,
            shape: (r, c),
            data,
            indices,
            indptr,
        })
    }

    /// Reads a validated index range of `indices`, checking every index is below `bound`.
    fn read_indices(&self, r: Range<usize>, bound: usize) -> Result<Vec<u32>> {
        check_read(&self.indices, r.len())?;
        let ix = self
            .indices
            .read_slice_1d::<i64, _>(r)
            .with_context(|| format!("reading {}", self.indices.name()))?;
        ix.iter()
            .map(|&j| {
                if j < 0 || j as u64 >= bound as u64 || j > u32::MAX as i64 {
                    bail!(
                        "{}: sparse index {j} out of range 0..{bound}",
                        self.indices.name()
                    )
                }
                Ok(j as u32)
            })
            .collect()
    }

    /// Rows `rows` of a CSR group.
    fn csr_rows(&self, rows: Range<usize>) -> Result<CsrRows> {
        let (a, b) = (
            self.indptr[rows.start] as usize,
            self.indptr[rows.end] as usize,
        );
        let cols = self.read_indices(a..b, self.shape.1)?;
        let data = read_rows(&self.data, Some(a..b))?;
        Ok(CsrRows {
            indptr: self.indptr[rows.start..=rows.end]
                .iter()
                .map(|&p| p - a as u64)
                .collect(),
            cols,
            data,
            n_cols: self.shape.1,
        })
    }

    /// The whole CSC matrix as CSR.
    fn transpose(&self) -> Result<CsrRows> {
        let (n_rows, n_cols) = self.shape;
        let nnz = self.data.size();
        let row_of = self.read_indices(0..nnz, n_rows)?;
        let mut row_ptr = vec![0u64; n_rows + 1];
        for &r in &row_of {
            row_ptr[r as usize + 1] += 1;
        }
        for i in 0..n_rows {
            row_ptr[i + 1] += row_ptr[i];
        }
        let mut fill = row_ptr.clone();
        let mut order = vec![0usize; nnz];
        let mut cols = vec![0u32; nnz];
        for (c, w) in self.indptr.windows(2).enumerate() {
            for k in w[0] as usize..w[1] as usize {
                let dst = &mut fill[row_of[k] as usize];
                order[*dst as usize] = k;
                cols[*dst as usize] = c as u32;
                *dst += 1;
            }
        }
        let data = read_rows(&self.data, None)?.take(&order)?;
        Ok(CsrRows {
            indptr: row_ptr,
            cols,
            data,
            n_cols,
        })
    }
}

impl CsrRows {
    fn rows(&self, rows: Range<usize>) -> Result<CsrRows> {
        let (a, b) = (
            self.indptr[rows.start] as usize,
            self.indptr[rows.end] as usize,
        );
        Ok(CsrRows {
            indptr: self.indptr[rows.start..=rows.end]
                .iter()
                .map(|&p| p - a as u64)
                .collect(),
            cols: self.cols[a..b].to_vec(),
            data: self.data.slice(a..b)?,
            n_cols: self.n_cols,
        })
    }
}

impl Matrix {
    /// Opens the dense dataset or sparse group at `path` under `parent`, which must have `n_rows`
    /// rows (the number of names in obs), checked before anything is sized from its shape.
    pub fn open(parent: &Group, path: &str, n_rows: usize) -> Result<Self> {
        let rows_ok = |r: usize, name: String| {
            if r != n_rows {
                bail!("{name} has {r} rows but there are {n_rows} cells (obs names)");
            }
            Ok(())
        };
        if let Ok(ds) = parent.dataset(path) {
            let shape = ds.shape();
            if shape.len() != 2 {
                bail!("{}: matrix has shape {shape:?}, expected 2-D", ds.name());
            }
            rows_ok(shape[0], ds.name())?;
            return Ok(Matrix::Dense {
                ds,
                shape: (shape[0], shape[1]),
            });
        }
        let g = parent.group(path)?;
        let s = SparseGroup::open(&g)?;
        rows_ok(s.shape.0, g.name())?;
        Ok(match s.kind {
            SparseKind::Csr => Matrix::Csr(s),
            SparseKind::Csc => Matrix::Transposed(s.transpose()?),
        })
    }

    pub fn shape(&self) -> (usize, usize) {
        match self {
            Matrix::Dense { shape, .. } => *shape,
            Matrix::Csr(s) => s.shape,
            Matrix::Transposed(t) => (t.n_rows(), t.n_cols),
        }
    }

    pub fn is_dense(&self) -> bool {
        matches!(self, Matrix::Dense { .. })
    }

    /// Rows of a dense matrix, keeping the element type.
    pub fn dense_rows(&self, rows: Range<usize>) -> Result<Block> {
        match self {
            Matrix::Dense { ds, .. } => read_rows(ds, Some(rows)),
            _ => bail!("not a dense matrix"),
        }
    }

    /// Rows of a sparse matrix in CSR form, keeping the value type.
    pub fn sparse_rows(&self, rows: Range<usize>) -> Result<CsrRows> {
        let n = self.shape().0;
        if rows.start > rows.end || rows.end > n {
            bail!("rows {rows:?} out of range 0..{n}");
        }
        match self {
            Matrix::Csr(s) => s.csr_rows(rows),
            Matrix::Transposed(t) => t.rows(rows),
            Matrix::Dense { .. } => bail!("not a sparse matrix"),
        }
    }

    /// Rows as (column, value) lists over f64, zeros of dense input dropped.
    pub fn f64_rows(&self, rows: Range<usize>) -> Result<Vec<(Vec<u32>, Vec<f64>)>> {
        if let Matrix::Dense { shape, .. } = self {
            let block = self.dense_rows(rows)?;
            let vals = block.to_f64()?;
            let n_cols = shape.1;
            return Ok(vals
                .chunks(n_cols.max(1))
                .take(block.len())
                .map(|row| {
                    let mut c = vec![];
                    let mut v = vec![];
                    for (j, &x) in row.iter().enumerate() {
                        if x != 0.0 {
                            c.push(j as u32);
                            v.push(x);
                        }
                    }
                    (c, v)
                })
                .collect());
        }
        let part = self.sparse_rows(rows)?;
        let vals = part.data.to_f64()?;
        Ok(part
            .indptr
            .windows(2)
            .map(|w| {
                let (a, b) = (w[0] as usize, w[1] as usize);
                (part.cols[a..b].to_vec(), vals[a..b].to_vec())
            })
            .collect())
    }
}

/// Writes CSR rows as an anndata `csr_matrix` group (int64 indices and indptr, values keep their type).
pub fn write_csr(parent: &Group, name: &str, parts: &[CsrRows], n_cols: usize) -> Result<()> {
    let mut indptr = vec![0i64];
    let mut indices: Vec<i64> = vec![];
    for p in parts {
        if p.n_cols != n_cols {
            bail!(
                "'{name}' has {} columns in one file and {n_cols} in another",
                p.n_cols
            );
        }
        let base = *indptr.last().unwrap_or(&0);
        indptr.extend(p.indptr[1..].iter().map(|&x| x as i64 + base));
        indices.extend(p.cols.iter().map(|&c| c as i64));
    }
    let blocks: Vec<Block> = parts.iter().map(|p| p.data.clone()).collect();
    let data = elem::concat(&blocks)?;
    let n_rows = indptr.len() - 1;
    let g = parent.create_group(name)?;
    elem::set_encoding(&g, "csr_matrix", "0.1.0")?;
    g.new_attr::<i64>()
        .shape(2)
        .create("shape")?
        .write(&[n_rows as i64, n_cols as i64])?;
    elem::write_block(&g, "data", &data)?;
    g.new_dataset_builder()
        .with_data(&indices)
        .create("indices")?;
    g.new_dataset_builder()
        .with_data(&indptr)
        .create("indptr")?;
    Ok(())
}
