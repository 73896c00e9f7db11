//! AnnData `.h5ad` through raw HDF5: a reader that streams cells (dense, CSR or CSC `X`, a layer or
//! `raw/X`) and a writer for our outputs. Every HDF5 detail of the project lives here.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use hdf5::types::{FixedAscii, FixedUnicode, TypeDescriptor, VarLenAscii, VarLenUnicode};
use hdf5::{Dataset, File, Group, Location};
use ndarray::s;

pub mod rows;

pub(crate) fn str_attr(loc: &Location, name: &str) -> Result<String> {
    let a = loc.attr(name)?;
    Ok(match a.dtype()?.to_descriptor()? {
        TypeDescriptor::VarLenUnicode => a.read_scalar::<VarLenUnicode>()?.as_str().to_string(),
        TypeDescriptor::VarLenAscii => a.read_scalar::<VarLenAscii>()?.as_str().to_string(),
        TypeDescriptor::FixedAscii(_) => a.read_scalar::<FixedAscii<1024>>()?.as_str().to_string(),
        TypeDescriptor::FixedUnicode(_) => {
            a.read_scalar::<FixedUnicode<1024>>()?.as_str().to_string()
        }
        other => bail!("attribute '{name}' is not a string ({other:?})"),
    })
}

/// Reads a 1-D string dataset in any of the encodings anndata or h5py have written.
pub(crate) fn read_strings(ds: &Dataset) -> Result<Vec<String>> {
    Ok(match ds.dtype()?.to_descriptor()? {
        TypeDescriptor::VarLenUnicode => ds
            .read_1d::<VarLenUnicode>()?
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        TypeDescriptor::VarLenAscii => ds
            .read_1d::<VarLenAscii>()?
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        TypeDescriptor::FixedAscii(_) => ds
            .read_1d::<FixedAscii<1024>>()?
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        TypeDescriptor::FixedUnicode(_) => ds
            .read_1d::<FixedUnicode<1024>>()?
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        other => bail!("dataset {} does not hold strings ({other:?})", ds.name()),
    })
}

/// A dataframe column: plain strings or a categorical (codes + categories).
fn read_string_column(parent: &Group, name: &str) -> Result<Vec<String>> {
    if let Ok(ds) = parent.dataset(name) {
        return read_strings(&ds);
    }
    let g = parent
        .group(name)
        .map_err(|_| anyhow!("no column '{name}' (available: {})", list_columns(parent)))?;
    let cats = read_strings(&g.dataset("categories")?)?;
    let codes = g.dataset("codes")?.read_1d::<i64>()?;
    codes
        .iter()
        .map(|&c| {
            if c < 0 {
                Ok(String::new())
            } else {
                cats.get(c as usize)
                    .cloned()
                    .ok_or_else(|| anyhow!("categorical '{name}' has code {c} out of range"))
            }
        })
        .collect()
}

fn list_columns(g: &Group) -> String {
    g.member_names().map(|v| v.join(", ")).unwrap_or_default()
}

/// Names of a dataframe's index (obs_names / var_names).
fn dataframe_index(g: &Group) -> Result<Vec<String>> {
    let idx = str_attr(g, "_index").unwrap_or_else(|_| "_index".to_string());
    read_string_column(g, &idx)
}

enum Matrix {
    Dense(Dataset),
    Csr {
        data: Dataset,
        indices: Dataset,
        indptr: Vec<u64>,
    },
    /// CSC has no cheap row access; it is transposed to CSR in memory (still sparse).
    InMemoryCsr {
        data: Vec<f64>,
        indices: Vec<i64>,
        indptr: Vec<u64>,
    },
}

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
    n_obs: usize,
    n_vars: usize,
    next_row: usize,
    _file: File,
}

impl H5adReader {
    pub fn open(path: &Path, choice: &MatrixChoice) -> Result<Self> {
        let file = open_file(path)?;
        let ctx = |what: &str| format!("{}: {what}", path.display());
        let obs = file
            .group("obs")
            .with_context(|| ctx("no 'obs' group: not an AnnData file"))?;
        let obs_names = dataframe_index(&obs).with_context(|| ctx("cannot read obs names"))?;
        let (var_group, mpath) = match (&choice.layer, choice.use_raw) {
            (Some(_), true) => bail!("--layer and --use-raw are mutually exclusive"),
            (Some(l), false) => ("var".to_string(), format!("layers/{l}")),
            (None, true) => ("raw/var".to_string(), "raw/X".to_string()),
            (None, false) => ("var".to_string(), "X".to_string()),
        };
        let var = file
            .group(&var_group)
            .with_context(|| ctx(&format!("no '{var_group}' group")))?;
        let var_names = match &choice.gene_column {
            Some(c) => read_string_column(&var, c)
                .with_context(|| ctx(&format!("cannot read gene column '{c}' from {var_group}")))?,
            None => dataframe_index(&var).with_context(|| ctx("cannot read var names"))?,
        };
        if !file.link_exists(&mpath) {
            let hint = match choice.layer {
                Some(_) => match file.group("layers").map(|g| list_columns(&g)) {
                    Ok(l) if !l.is_empty() => format!(" (layers: {l})"),
                    _ => " (the file has no layers)".to_string(),
                },
                None => String::new(),
            };
            bail!("{}: no matrix at '{mpath}'{hint}", path.display());
        }
        let (matrix, shape) =
            open_matrix(&file, &mpath).with_context(|| ctx(&format!("reading '{mpath}'")))?;
        let (n_obs, n_vars) = shape;
        if n_obs != obs_names.len() {
            bail!(
                "{}: '{mpath}' has {n_obs} rows but obs has {} names",
                path.display(),
                obs_names.len()
            );
        }
        if n_vars != var_names.len() {
            bail!(
                "{}: '{mpath}' has {n_vars} columns but {var_group} has {} names",
                path.display(),
                var_names.len()
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            obs_names,
            var_names,
            matrix,
            n_obs,
            n_vars,
            next_row: 0,
            _file: file,
        })
    }

    pub fn obs_names(&self) -> &[String] {
        &self.obs_names
    }

    pub fn var_names(&self) -> &[String] {
        &self.var_names
    }

    pub fn n_obs(&self) -> usize {
        self.n_obs
    }

    /// Reads up to `count` further rows as sparse (column, value) lists.
    pub fn next_rows(&mut self, count: usize) -> Result<Vec<(Vec<u32>, Vec<f64>)>> {
        let start = self.next_row;
        let end = (start + count).min(self.n_obs);
        self.next_row = end;
        if start >= end {
            return Ok(vec![]);
        }
        let err = || format!("{}: reading rows {start}..{end}", self.path.display());
        match &self.matrix {
            Matrix::Dense(ds) => {
                let block = ds
                    .read_slice_2d::<f64, _>(s![start..end, ..])
                    .with_context(err)?;
                Ok(block
                    .outer_iter()
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
                    .collect())
            }
            Matrix::Csr {
                data,
                indices,
                indptr,
            } => {
                let (a, b) = (indptr[start] as usize, indptr[end] as usize);
                let d = data
                    .read_slice_1d::<f64, _>(a..b)
                    .with_context(err)?
                    .to_vec();
                let ix = indices
                    .read_slice_1d::<i64, _>(a..b)
                    .with_context(err)?
                    .to_vec();
                rows_from_csr(&indptr[start..=end], &d, &ix, self.n_vars).with_context(err)
            }
            Matrix::InMemoryCsr {
                data,
                indices,
                indptr,
            } => {
                let (a, b) = (indptr[start] as usize, indptr[end] as usize);
                rows_from_csr(
                    &indptr[start..=end],
                    &data[a..b],
                    &indices[a..b],
                    self.n_vars,
                )
                .with_context(err)
            }
        }
    }
}

/// Splits a CSR block (`indptr` for the rows, `data`/`indices` starting at the first row) into rows.
fn rows_from_csr(
    indptr: &[u64],
    data: &[f64],
    indices: &[i64],
    n_vars: usize,
) -> Result<Vec<(Vec<u32>, Vec<f64>)>> {
    let first = indptr[0] as usize;
    let mut out = Vec::with_capacity(indptr.len() - 1);
    for w in indptr.windows(2) {
        let (a, b) = (w[0] as usize - first, w[1] as usize - first);
        let mut c = Vec::with_capacity(b - a);
        for &j in &indices[a..b] {
            if j < 0 || j as usize >= n_vars {
                bail!("sparse column index {j} out of range 0..{n_vars}");
            }
            c.push(j as u32);
        }
        out.push((c, data[a..b].to_vec()));
    }
    Ok(out)
}

fn open_matrix(file: &File, mpath: &str) -> Result<(Matrix, (usize, usize))> {
    if let Ok(ds) = file.dataset(mpath) {
        let shape = ds.shape();
        if shape.len() != 2 {
            bail!("dense matrix has shape {shape:?}, expected 2-D");
        }
        return Ok((Matrix::Dense(ds), (shape[0], shape[1])));
    }
    let g = file.group(mpath)?;
    let enc = str_attr(&g, "encoding-type")
        .or_else(|_| str_attr(&g, "h5sparse_format").map(|f| format!("{f}_matrix")))
        .context("sparse matrix group has no encoding-type")?;
    let shape = g
        .attr("shape")
        .or_else(|_| g.attr("h5sparse_shape"))?
        .read_1d::<i64>()?
        .to_vec();
    if shape.len() != 2 || shape.iter().any(|&d| d < 0) {
        bail!("bad sparse shape {shape:?}");
    }
    let (r, c) = (shape[0] as usize, shape[1] as usize);
    let data = g.dataset("data")?;
    let indices = g.dataset("indices")?;
    let indptr: Vec<u64> = g
        .dataset("indptr")?
        .read_1d::<i64>()?
        .iter()
        .map(|&x| x.max(0) as u64)
        .collect();
    let nnz = data.size() as u64;
    let check_ptr = |n: usize| -> Result<()> {
        if indptr.len() != n + 1
            || indptr.windows(2).any(|w| w[0] > w[1])
            || indptr[n] > nnz
            || indices.size() as u64 != nnz
        {
            bail!("corrupt sparse matrix: indptr/indices/data do not agree");
        }
        Ok(())
    };
    match enc.as_str() {
        "csr_matrix" => {
            check_ptr(r)?;
            Ok((
                Matrix::Csr {
                    data,
                    indices,
                    indptr,
                },
                (r, c),
            ))
        }
        "csc_matrix" => {
            check_ptr(c)?;
            let d = data.read_1d::<f64>()?.to_vec();
            let ix = indices.read_1d::<i64>()?.to_vec();
            let col_ptr: Vec<i64> = indptr.iter().map(|&p| p as i64).collect();
            let t = CscToCsr::new(&col_ptr, &ix, r)?;
            Ok((
                Matrix::InMemoryCsr {
                    data: t.order.iter().map(|&k| d[k]).collect(),
                    indices: t.cols,
                    indptr: t.row_ptr.iter().map(|&p| p as u64).collect(),
                },
                (r, c),
            ))
        }
        other => bail!("unsupported matrix encoding '{other}'"),
    }
}

/// How the entries of a CSC matrix are reordered into CSR: `order[j]` is the CSC position of the j-th
/// CSR entry, `cols[j]` its column, `row_ptr` the CSR row pointers.
pub(crate) struct CscToCsr {
    pub order: Vec<usize>,
    pub cols: Vec<i64>,
    pub row_ptr: Vec<i64>,
}

impl CscToCsr {
    pub fn new(col_ptr: &[i64], row_of: &[i64], n_rows: usize) -> Result<Self> {
        let mut row_ptr = vec![0i64; n_rows + 1];
        for &r in row_of {
            if r < 0 || r as usize >= n_rows {
                bail!("sparse row index {r} out of range 0..{n_rows}");
            }
            row_ptr[r as usize + 1] += 1;
        }
        for i in 0..n_rows {
            row_ptr[i + 1] += row_ptr[i];
        }
        let mut fill = row_ptr.clone();
        let mut order = vec![0usize; row_of.len()];
        let mut cols = vec![0i64; row_of.len()];
        for (c, w) in col_ptr.windows(2).enumerate() {
            for k in w[0] as usize..w[1] as usize {
                let dst = &mut fill[row_of[k] as usize];
                order[*dst as usize] = k;
                cols[*dst as usize] = c as i64;
                *dst += 1;
            }
        }
        Ok(Self {
            order,
            cols,
            row_ptr,
        })
    }
}

fn vlen(s: &str) -> Result<VarLenUnicode> {
    VarLenUnicode::from_str(s).map_err(|e| anyhow!("string '{s}' cannot be stored: {e}"))
}

pub(crate) fn set_str_attr(loc: &Location, name: &str, value: &str) -> Result<()> {
    loc.new_attr::<VarLenUnicode>()
        .shape(())
        .create(name)?
        .write_scalar(&vlen(value)?)?;
    Ok(())
}

fn set_encoding(loc: &Location, kind: &str, version: &str) -> Result<()> {
    set_str_attr(loc, "encoding-type", kind)?;
    set_str_attr(loc, "encoding-version", version)
}

/// Creates an HDF5 file without object timestamps, so equal content gives equal bytes.
pub fn create_file(path: &Path) -> Result<File> {
    File::with_options()
        .with_fcpl(|p| p.obj_track_times(false))
        .create(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

pub fn open_file(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| {
        anyhow!(
            "{}: cannot open as HDF5/h5ad (truncated or not an h5ad file): {e}",
            path.display()
        )
    })
}

/// Replaces `uns/<name>` with a dict of strings, creating `uns` when missing.
pub fn write_uns_strings(file: &File, name: &str, entries: &[(String, String)]) -> Result<()> {
    let uns = match file.group("uns") {
        Ok(g) => g,
        Err(_) => {
            let g = file.create_group("uns")?;
            set_encoding(&g, "dict", "0.1.0")?;
            g
        }
    };
    if uns.link_exists(name) {
        uns.unlink(name)?;
    }
    let g = uns.create_group(name)?;
    set_encoding(&g, "dict", "0.1.0")?;
    for (k, v) in entries {
        let ds = g
            .new_dataset::<VarLenUnicode>()
            .shape(())
            .create(k.as_str())?;
        ds.write_scalar(&vlen(v)?)?;
        set_encoding(&ds, "string", "0.2.0")?;
    }
    Ok(())
}

/// Reads `uns/<name>` as written by [`write_uns_strings`]; `None` when absent.
pub fn read_uns_strings(file: &File, name: &str) -> Result<Option<Vec<(String, String)>>> {
    let Ok(g) = file.group(&format!("uns/{name}")) else {
        return Ok(None);
    };
    let mut out = vec![];
    for k in g.member_names()? {
        let ds = g.dataset(&k)?;
        let v = match ds.dtype()?.to_descriptor()? {
            TypeDescriptor::VarLenUnicode => {
                ds.read_scalar::<VarLenUnicode>()?.as_str().to_string()
            }
            TypeDescriptor::VarLenAscii => ds.read_scalar::<VarLenAscii>()?.as_str().to_string(),
            _ => continue,
        };
        out.push((k, v));
    }
    Ok(Some(out))
}

/// Where the output's obs comes from.
pub enum ObsSource<'a> {
    /// Copy the whole obs dataframe of an input h5ad (all columns kept).
    CopyFrom(&'a Path),
    /// A fresh dataframe holding only these names.
    Names(&'a [String]),
}

/// Writes a new AnnData file. Object modification times are not recorded, so the same content gives the
/// same bytes.
pub struct H5adWriter {
    file: File,
}

impl H5adWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let file = create_file(path)?;
        set_encoding(&file, "anndata", "0.1.0")?;
        Ok(Self { file })
    }

    pub fn write_obs(&self, obs: ObsSource) -> Result<()> {
        match obs {
            ObsSource::Names(names) => self.write_index_frame("obs", names),
            ObsSource::CopyFrom(src) => copy_group(src, "obs", &self.file, "obs"),
        }
    }

    pub fn write_var(&self, names: &[String]) -> Result<()> {
        self.write_index_frame("var", names)
    }

    fn write_index_frame(&self, name: &str, index: &[String]) -> Result<()> {
        let g = self.file.create_group(name)?;
        set_encoding(&g, "dataframe", "0.2.0")?;
        set_str_attr(&g, "_index", "_index")?;
        g.new_attr::<VarLenUnicode>()
            .shape(0)
            .create("column-order")?;
        let vals = index.iter().map(|s| vlen(s)).collect::<Result<Vec<_>>>()?;
        let ds = g
            .new_dataset::<VarLenUnicode>()
            .shape(vals.len())
            .create("_index")?;
        if !vals.is_empty() {
            ds.write(&vals)?;
        }
        set_encoding(&ds, "string-array", "0.2.0")
    }

    /// Creates `obsm`, `varm`, `layers`, `obsp`, `varp` and `uns` as empty dicts where missing.
    pub fn ensure_dicts(&self) -> Result<()> {
        for g in ["layers", "obsm", "obsp", "varm", "varp", "uns"] {
            self.dict(g)?;
        }
        Ok(())
    }

    fn dict(&self, path: &str) -> Result<Group> {
        if let Ok(g) = self.file.group(path) {
            return Ok(g);
        }
        let g = self.file.create_group(path)?;
        set_encoding(&g, "dict", "0.1.0")?;
        Ok(g)
    }

    /// Creates an f32 array at `path` (e.g. "obsm/X_scfoundation" or "X") to be filled by row blocks.
    pub fn create_array(&self, path: &str, shape: &[usize]) -> Result<ArrayOut> {
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) => (Some(self.dict(p)?), n),
            None => (None, path),
        };
        let builder = match &parent {
            Some(g) => g.new_dataset::<f32>(),
            None => self.file.new_dataset::<f32>(),
        };
        let ds = builder.shape(shape).create(name)?;
        set_encoding(&ds, "array", "0.2.0")?;
        Ok(ArrayOut {
            ds,
            rows_written: 0,
        })
    }

    /// Writes `uns/<name>` as a dict of strings (the provenance record).
    pub fn write_uns_strings(&self, name: &str, entries: &[(String, String)]) -> Result<()> {
        write_uns_strings(&self.file, name, entries)
    }

    pub fn close(self) -> Result<()> {
        self.file.close()?;
        Ok(())
    }
}

pub struct ArrayOut {
    ds: Dataset,
    rows_written: usize,
}

impl ArrayOut {
    /// Appends a block of rows, given flat in row-major order.
    pub fn append_rows(&mut self, data: &[f32]) -> Result<()> {
        let shape = self.ds.shape();
        let row: usize = shape[1..].iter().product();
        if row == 0 || data.is_empty() {
            return Ok(());
        }
        let n = data.len() / row;
        let start = self.rows_written;
        let mut full = shape.clone();
        full[0] = n;
        let arr = ndarray::ArrayViewD::from_shape(full, data)?;
        let sel: Vec<hdf5::SliceOrIndex> =
            std::iter::once(hdf5::SliceOrIndex::from(start..start + n))
                .chain(shape[1..].iter().map(|&d| hdf5::SliceOrIndex::from(0..d)))
                .collect();
        self.ds
            .write_slice(&arr, hdf5::Selection::from(hdf5::Hyperslab::from(sel)))?;
        self.rows_written += n;
        Ok(())
    }
}

/// Copies a whole group (datasets, subgroups, attributes) from another file.
fn copy_group(src: &Path, src_name: &str, dst: &File, dst_name: &str) -> Result<()> {
    let sf = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    copy_object(&sf, src_name, dst, dst_name)
        .with_context(|| format!("copying '{src_name}' from {}", src.display()))
}

/// HDF5's own deep copy of an object (group or dataset) between open files.
pub(crate) fn copy_object(src: &File, src_name: &str, dst: &File, dst_name: &str) -> Result<()> {
    let c_src = std::ffi::CString::new(src_name)?;
    let c_dst = std::ffi::CString::new(dst_name)?;
    // SAFETY: both ids are valid open HDF5 files for the duration of the call; default property lists.
    let rc = unsafe {
        hdf5_sys::h5o::H5Ocopy(
            src.id(),
            c_src.as_ptr(),
            dst.id(),
            c_dst.as_ptr(),
            hdf5_sys::h5p::H5P_DEFAULT,
            hdf5_sys::h5p::H5P_DEFAULT,
        )
    };
    if rc < 0 {
        bail!("cannot copy '{src_name}'");
    }
    Ok(())
}
