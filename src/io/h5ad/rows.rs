//! Row-wise operations on whole AnnData files, keeping every dtype: take a range of cells (split) or
//! stack files (merge). obs columns, X, layers, raw/X and obsm follow the cells; var, varm, varp and uns
//! are copied from the first file; obsp (cell x cell) is dropped.

use std::ops::Range;

use anyhow::{anyhow, bail, Context, Result};
use hdf5::types::{FloatSize, IntSize, TypeDescriptor, VarLenAscii, VarLenUnicode};
use hdf5::{Dataset, File, Group, Location};
use ndarray::{ArrayD, Axis, IxDyn, SliceInfoElem};

use super::str_attr;

/// A dataset's contents with its element type preserved.
pub enum Block {
    I8(ArrayD<i8>),
    I16(ArrayD<i16>),
    I32(ArrayD<i32>),
    I64(ArrayD<i64>),
    U8(ArrayD<u8>),
    U16(ArrayD<u16>),
    U32(ArrayD<u32>),
    U64(ArrayD<u64>),
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    Bool(ArrayD<bool>),
    /// All string encodings are written back as variable-length UTF-8, as anndata does.
    Str(ArrayD<VarLenUnicode>),
}

macro_rules! each_block {
    ($b:expr, $a:ident => $body:expr) => {
        match $b {
            Block::I8($a) => $body,
            Block::I16($a) => $body,
            Block::I32($a) => $body,
            Block::I64($a) => $body,
            Block::U8($a) => $body,
            Block::U16($a) => $body,
            Block::U32($a) => $body,
            Block::U64($a) => $body,
            Block::F32($a) => $body,
            Block::F64($a) => $body,
            Block::Bool($a) => $body,
            Block::Str($a) => $body,
        }
    };
}

fn selection(ds: &Dataset, rows: &Range<usize>) -> Vec<SliceInfoElem> {
    let mut sel = vec![SliceInfoElem::from(rows.start as isize..rows.end as isize)];
    sel.extend(ds.shape()[1..].iter().map(|_| SliceInfoElem::from(..)));
    sel
}

/// Reads rows `rows` (all rows when `None`) along the first axis.
pub fn read_rows(ds: &Dataset, rows: Option<Range<usize>>) -> Result<Block> {
    if ds.ndim() == 0 {
        bail!("{} is a scalar, not per-cell data", ds.name());
    }
    let rows = rows.unwrap_or(0..ds.shape()[0]);
    macro_rules! rd {
        ($t:ty, $v:ident) => {{
            let sel = selection(ds, &rows);
            let info = ndarray::SliceInfo::<_, IxDyn, IxDyn>::try_from(sel)?;
            Block::$v(ds.read_slice::<$t, _, IxDyn>(info)?)
        }};
    }
    Ok(match ds.dtype()?.to_descriptor()? {
        TypeDescriptor::Integer(IntSize::U1) => rd!(i8, I8),
        TypeDescriptor::Integer(IntSize::U2) => rd!(i16, I16),
        TypeDescriptor::Integer(IntSize::U4) => rd!(i32, I32),
        TypeDescriptor::Integer(IntSize::U8) => rd!(i64, I64),
        TypeDescriptor::Unsigned(IntSize::U1) => rd!(u8, U8),
        TypeDescriptor::Unsigned(IntSize::U2) => rd!(u16, U16),
        TypeDescriptor::Unsigned(IntSize::U4) => rd!(u32, U32),
        TypeDescriptor::Unsigned(IntSize::U8) => rd!(u64, U64),
        TypeDescriptor::Float(FloatSize::U4) => rd!(f32, F32),
        TypeDescriptor::Float(FloatSize::U8) => rd!(f64, F64),
        TypeDescriptor::Boolean => rd!(bool, Bool),
        TypeDescriptor::Enum(_) => rd!(bool, Bool),
        TypeDescriptor::VarLenUnicode => rd!(VarLenUnicode, Str),
        TypeDescriptor::VarLenAscii => {
            let sel = selection(ds, &rows);
            let info = ndarray::SliceInfo::<_, IxDyn, IxDyn>::try_from(sel)?;
            let a = ds.read_slice::<VarLenAscii, _, IxDyn>(info)?;
            Block::Str(a.mapv(|s| s.as_str().parse().unwrap_or_default()))
        }
        TypeDescriptor::FixedAscii(_) | TypeDescriptor::FixedUnicode(_) => {
            let all = super::read_strings(ds)?;
            let v: Vec<VarLenUnicode> = all[rows]
                .iter()
                .map(|s| s.parse().unwrap_or_default())
                .collect();
            Block::Str(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v)?)
        }
        other => bail!("{}: unsupported element type {other:?}", ds.name()),
    })
}

fn concat(blocks: Vec<Block>) -> Result<Block> {
    macro_rules! cat {
        ($v:ident) => {{
            let arrs = blocks
                .iter()
                .map(|b| match b {
                    Block::$v(a) => Ok(a.view()),
                    _ => Err(anyhow!("element types differ between files")),
                })
                .collect::<Result<Vec<_>>>()?;
            Block::$v(ndarray::concatenate(Axis(0), &arrs)?)
        }};
    }
    let first = blocks
        .first()
        .ok_or_else(|| anyhow!("nothing to concatenate"))?;
    Ok(match first {
        Block::I8(_) => cat!(I8),
        Block::I16(_) => cat!(I16),
        Block::I32(_) => cat!(I32),
        Block::I64(_) => cat!(I64),
        Block::U8(_) => cat!(U8),
        Block::U16(_) => cat!(U16),
        Block::U32(_) => cat!(U32),
        Block::U64(_) => cat!(U64),
        Block::F32(_) => cat!(F32),
        Block::F64(_) => cat!(F64),
        Block::Bool(_) => cat!(Bool),
        Block::Str(_) => cat!(Str),
    })
}

fn write_block(parent: &Group, name: &str, b: &Block) -> Result<Dataset> {
    Ok(each_block!(b, a => parent.new_dataset_builder().with_data(a).create(name)?))
}

/// Copies every attribute (strings, numbers, booleans; scalar or 1-D).
pub fn copy_attrs(src: &Location, dst: &Location) -> Result<()> {
    for name in src.attr_names()? {
        let a = src.attr(&name)?;
        let scalar = a.ndim() == 0;
        macro_rules! cp {
            ($t:ty) => {{
                if scalar {
                    let v = a.read_scalar::<$t>()?;
                    dst.new_attr::<$t>()
                        .shape(())
                        .create(name.as_str())?
                        .write_scalar(&v)?;
                } else {
                    let v = a.read_1d::<$t>()?;
                    dst.new_attr::<$t>()
                        .shape(v.len())
                        .create(name.as_str())?
                        .write(&v)?;
                }
            }};
        }
        match a.dtype()?.to_descriptor()? {
            TypeDescriptor::Integer(IntSize::U1) => cp!(i8),
            TypeDescriptor::Integer(IntSize::U2) => cp!(i16),
            TypeDescriptor::Integer(IntSize::U4) => cp!(i32),
            TypeDescriptor::Integer(_) => cp!(i64),
            TypeDescriptor::Unsigned(IntSize::U1) => cp!(u8),
            TypeDescriptor::Unsigned(_) => cp!(u64),
            TypeDescriptor::Float(FloatSize::U4) => cp!(f32),
            TypeDescriptor::Float(_) => cp!(f64),
            TypeDescriptor::Boolean | TypeDescriptor::Enum(_) => cp!(bool),
            TypeDescriptor::VarLenUnicode => cp!(VarLenUnicode),
            TypeDescriptor::VarLenAscii => cp!(VarLenAscii),
            TypeDescriptor::FixedAscii(_) | TypeDescriptor::FixedUnicode(_) if scalar => {
                let s: VarLenUnicode = str_attr(src, &name)?.parse().unwrap_or_default();
                dst.new_attr::<VarLenUnicode>()
                    .shape(())
                    .create(name.as_str())?
                    .write_scalar(&s)?;
            }
            other => log::warn!("attribute '{name}' of type {other:?} not copied"),
        }
    }
    Ok(())
}

/// What happens to the cells: a range of one file, or all cells of several files in order.
pub enum RowOp {
    Slice(Range<usize>),
    Concat,
}

fn rows_block(srcs: &[Dataset], op: &RowOp) -> Result<Block> {
    match op {
        RowOp::Slice(r) => read_rows(&srcs[0], Some(r.clone())),
        RowOp::Concat => concat(
            srcs.iter()
                .map(|d| read_rows(d, None))
                .collect::<Result<_>>()?,
        ),
    }
}

fn datasets(srcs: &[Group], name: &str) -> Result<Vec<Dataset>> {
    srcs.iter()
        .map(|g| {
            g.dataset(name)
                .with_context(|| format!("{} lacks '{name}'", g.name()))
        })
        .collect()
}

fn groups(srcs: &[Group], name: &str) -> Result<Vec<Group>> {
    srcs.iter()
        .map(|g| {
            g.group(name)
                .with_context(|| format!("{} lacks '{name}'", g.name()))
        })
        .collect()
}

fn encoding(g: &Location) -> String {
    str_attr(g, "encoding-type").unwrap_or_default()
}

/// obs-like dataframe: every column follows the cells; categorical categories are shared.
fn rows_dataframe(srcs: &[Group], dst: &Group, op: &RowOp) -> Result<()> {
    copy_attrs(&srcs[0], dst)?;
    for name in srcs[0].member_names()? {
        if let Ok(ds) = srcs[0].dataset(&name) {
            let out = write_block(dst, &name, &rows_block(&datasets(srcs, &name)?, op)?)?;
            copy_attrs(&ds, &out)?;
            continue;
        }
        let gs = groups(srcs, &name)?;
        let g = dst.create_group(&name)?;
        copy_attrs(&gs[0], &g)?;
        let categorical = encoding(&gs[0]) == "categorical";
        for member in gs[0].member_names()? {
            let ds = datasets(&gs, &member)?;
            let block = if categorical && member == "categories" {
                let first = super::read_strings(&ds[0])?;
                for other in &ds[1..] {
                    if super::read_strings(other)? != first {
                        bail!("categorical column '{name}' has different categories in different files");
                    }
                }
                read_rows(&ds[0], None)?
            } else {
                rows_block(&ds, op)?
            };
            let out = write_block(&g, &member, &block)?;
            copy_attrs(&ds[0], &out)?;
        }
    }
    Ok(())
}

/// Applies an element-wise array operation to a block, keeping its element type.
macro_rules! map_block {
    ($b:expr, $a:ident => $body:expr) => {
        match $b {
            Block::I8($a) => Block::I8($body),
            Block::I16($a) => Block::I16($body),
            Block::I32($a) => Block::I32($body),
            Block::I64($a) => Block::I64($body),
            Block::U8($a) => Block::U8($body),
            Block::U16($a) => Block::U16($body),
            Block::U32($a) => Block::U32($body),
            Block::U64($a) => Block::U64($body),
            Block::F32($a) => Block::F32($body),
            Block::F64($a) => Block::F64($body),
            Block::Bool($a) => Block::Bool($body),
            Block::Str($a) => Block::Str($body),
        }
    };
}

/// Rows of a sparse matrix in CSR form (values keep their type; indices are int64, as anndata accepts).
struct Csr {
    data: Block,
    indices: Vec<i64>,
    indptr: Vec<i64>,
    n_cols: i64,
}

/// Reads `rows` (all when `None`) of a CSR or CSC group as CSR. CSC has no row access, so it is read
/// whole and transposed in memory (still sparse).
fn load_csr(g: &Group, rows: Option<Range<usize>>) -> Result<Csr> {
    let shape = g.attr("shape")?.read_1d::<i64>()?.to_vec();
    let (n_rows, n_cols) = (shape[0] as usize, shape[1]);
    let ptr = g.dataset("indptr")?.read_1d::<i64>()?.to_vec();
    let rows = rows.unwrap_or(0..n_rows);
    match encoding(g).as_str() {
        "csr_matrix" => {
            let (a, b) = (ptr[rows.start] as usize, ptr[rows.end] as usize);
            Ok(Csr {
                data: read_rows(&g.dataset("data")?, Some(a..b))?,
                indices: g
                    .dataset("indices")?
                    .read_slice_1d::<i64, _>(a..b)?
                    .to_vec(),
                indptr: ptr[rows.start..=rows.end]
                    .iter()
                    .map(|x| x - ptr[rows.start])
                    .collect(),
                n_cols,
            })
        }
        "csc_matrix" => {
            let row_of = g.dataset("indices")?.read_1d::<i64>()?.to_vec();
            let super::CscToCsr {
                order: perm,
                cols,
                row_ptr,
            } = super::CscToCsr::new(&ptr, &row_of, n_rows)?;
            let (a, b) = (row_ptr[rows.start] as usize, row_ptr[rows.end] as usize);
            let data = read_rows(&g.dataset("data")?, None)?;
            let take = &perm[a..b];
            Ok(Csr {
                data: map_block!(&data, x => x.select(Axis(0), take)),
                indices: cols[a..b].to_vec(),
                indptr: row_ptr[rows.start..=rows.end]
                    .iter()
                    .map(|x| x - row_ptr[rows.start])
                    .collect(),
                n_cols,
            })
        }
        other => bail!("unsupported sparse encoding '{other}'"),
    }
}

/// A cells x features matrix: dense dataset, or CSR/CSC group (written back as CSR).
fn rows_matrix(srcs: &[File], path: &str, dst: &File, op: &RowOp) -> Result<()> {
    if srcs[0].dataset(path).is_ok() {
        let ds: Vec<Dataset> = srcs
            .iter()
            .map(|f| f.dataset(path))
            .collect::<hdf5::Result<_>>()?;
        let out = write_block(&dst.group("/")?, path, &rows_block(&ds, op)?)?;
        return copy_attrs(&ds[0], &out);
    }
    let gs: Vec<Group> = srcs
        .iter()
        .map(|f| f.group(path))
        .collect::<hdf5::Result<_>>()?;
    let parts: Vec<Csr> = match op {
        RowOp::Slice(r) => vec![load_csr(&gs[0], Some(r.clone()))?],
        RowOp::Concat => gs
            .iter()
            .map(|g| load_csr(g, None))
            .collect::<Result<_>>()?,
    };
    let n_cols = parts[0].n_cols;
    if parts.iter().any(|p| p.n_cols != n_cols) {
        bail!("'{path}' has different numbers of columns in different files");
    }
    let mut indptr = vec![0i64];
    let mut indices = vec![];
    for p in &parts {
        let base = *indptr.last().expect("non-empty");
        indptr.extend(p.indptr[1..].iter().map(|x| x + base));
        indices.extend_from_slice(&p.indices);
    }
    let data = concat(parts.into_iter().map(|p| p.data).collect())?;
    let n_rows = indptr.len() - 1;
    let g = dst.create_group(path)?;
    let out = write_block(&g, "data", &data)?;
    let src_data = gs[0].dataset("data")?;
    copy_attrs(&src_data, &out)?;
    g.new_dataset_builder()
        .with_data(&indices)
        .create("indices")?;
    g.new_dataset_builder()
        .with_data(&indptr)
        .create("indptr")?;
    copy_attrs_except(&gs[0], &g, &["shape", "encoding-type"])?;
    super::set_str_attr(&g, "encoding-type", "csr_matrix")?;
    g.new_attr::<i64>()
        .shape(2)
        .create("shape")?
        .write(&[n_rows as i64, n_cols])?;
    Ok(())
}

fn copy_attrs_except(src: &Location, dst: &Location, skip: &[&str]) -> Result<()> {
    copy_attrs(src, dst)?;
    for s in skip {
        if dst.attr(s).is_ok() {
            dst.delete_attr(s)?;
        }
    }
    Ok(())
}

fn copy_object(src: &File, path: &str, dst: &File) -> Result<()> {
    super::copy_object(src, path, dst, path)
}

/// Writes the cells selected by `op` from `srcs` into the new file `dst`.
pub fn write_rows(srcs: &[File], dst: &File, op: &RowOp) -> Result<()> {
    let first = &srcs[0];
    copy_attrs(first, dst)?;
    let obs: Vec<Group> = srcs
        .iter()
        .map(|f| f.group("obs"))
        .collect::<hdf5::Result<_>>()?;
    rows_dataframe(&obs, &dst.create_group("obs")?, op).context("obs")?;
    for key in first.member_names()? {
        match key.as_str() {
            "obs" => {}
            "X" => rows_matrix(srcs, "X", dst, op).context("X")?,
            "layers" | "obsm" => {
                let g = dst.create_group(&key)?;
                let src = first.group(&key)?;
                copy_attrs(&src, &g)?;
                for name in first.group(&key)?.member_names()? {
                    let path = format!("{key}/{name}");
                    if first.dataset(&path).is_ok()
                        || first
                            .group(&path)
                            .is_ok_and(|m| encoding(&m) == "csr_matrix")
                    {
                        rows_matrix(srcs, &path, dst, op).with_context(|| path.clone())?;
                    } else {
                        let gs: Vec<Group> = srcs
                            .iter()
                            .map(|f| f.group(&path))
                            .collect::<hdf5::Result<_>>()?;
                        rows_dataframe(&gs, &g.create_group(&name)?, op)
                            .with_context(|| path.clone())?;
                    }
                }
            }
            "raw" => {
                let g = dst.create_group("raw")?;
                let src = first.group("raw")?;
                copy_attrs(&src, &g)?;
                for name in first.group("raw")?.member_names()? {
                    let path = format!("raw/{name}");
                    if name == "X" {
                        rows_matrix(srcs, &path, dst, op).context("raw/X")?;
                    } else {
                        copy_object(first, &path, dst)?;
                    }
                }
            }
            "obsp" => {
                let g = dst.create_group("obsp")?;
                let src = first.group("obsp")?;
                copy_attrs(&src, &g)?;
                if !first.group("obsp")?.member_names()?.is_empty() {
                    log::warn!(
                        "obsp (cell x cell graphs) cannot follow a split or merge and is dropped"
                    );
                }
            }
            _ => copy_object(first, &key, dst)?,
        }
    }
    Ok(())
}

/// Number of cells of an AnnData file (from its obs index).
pub fn n_obs(f: &File) -> Result<usize> {
    let obs = f.group("obs")?;
    let idx = str_attr(&obs, "_index").unwrap_or_else(|_| "_index".into());
    Ok(obs.dataset(&idx)?.shape().first().copied().unwrap_or(0))
}
