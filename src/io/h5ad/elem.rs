//! HDF5 elements as anndata stores them: typed arrays ([`Block`]), strings in every encoding,
//! attributes, and the guard that keeps a malformed file from making us allocate what it does not hold.

use std::ops::Range;

use anyhow::{anyhow, bail, Context, Result};
use hdf5::types::{
    FixedAscii, FixedUnicode, FloatSize, IntSize, TypeDescriptor, VarLenAscii, VarLenUnicode,
};
use hdf5::{Dataset, Group, Location};
use ndarray::{ArrayD, Axis, IxDyn, SliceInfoElem};

/// Reads under this many bytes are always allowed; larger ones must be backed by stored data.
const FREE_BYTES: u64 = 64 << 20;
/// deflate's best case is about 1032:1, so a declared size beyond this ratio to the stored size is a lie.
const MAX_RATIO: u64 = 1100;

/// Refuses to read `n_elems` elements of `ds` when the file cannot hold them: a shape attribute or
/// dataspace that claims more than the stored bytes (times the best compression ratio) is corrupt or
/// hostile, and believing it would mean allocating without bound.
pub fn check_read(ds: &Dataset, n_elems: usize) -> Result<()> {
    check_read_as(ds, n_elems, 0)
}

/// [`check_read`] for a read into `mem_elem`-byte elements (wider than the file's, e.g. fixed-length
/// strings read through a fixed buffer): the allocation is what counts.
pub fn check_read_as(ds: &Dataset, n_elems: usize, mem_elem: usize) -> Result<()> {
    let elem = ds
        .dtype()
        .map(|t| t.size())
        .unwrap_or(8)
        .max(mem_elem)
        .max(1) as u64;
    let bytes = (n_elems as u64)
        .checked_mul(elem)
        .ok_or_else(|| anyhow!("{}: size overflows", ds.name()))?;
    if bytes <= FREE_BYTES {
        return Ok(());
    }
    let stored = ds.storage_size();
    let file_len = ds.file().map(|f| f.size()).unwrap_or(u64::MAX);
    if stored > file_len.saturating_add(FREE_BYTES) || bytes > stored.saturating_mul(MAX_RATIO) {
        bail!(
            "{}: declares {bytes} bytes of data but the file stores {stored} (file size {file_len}); corrupt or truncated",
            ds.name()
        );
    }
    Ok(())
}

/// A dataset's contents with its element type preserved.
#[derive(Debug, Clone)]
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

/// Applies an array operation to a block, keeping its element type.
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

impl Block {
    /// Length along the first (cell) axis.
    pub fn len(&self) -> usize {
        each_block!(self, a => a.shape().first().copied().unwrap_or(0))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn ndim(&self) -> usize {
        each_block!(self, a => a.ndim())
    }

    pub fn shape(&self) -> Vec<usize> {
        each_block!(self, a => a.shape().to_vec())
    }

    pub fn slice(&self, r: Range<usize>) -> Result<Block> {
        if r.end > self.len() || r.start > r.end {
            bail!("rows {r:?} out of range 0..{}", self.len());
        }
        Ok(map_block!(self, a => a.slice_axis(Axis(0), r.clone().into()).to_owned()))
    }

    /// Rows at `idx` along the first axis (indices must be in range).
    pub fn take(&self, idx: &[usize]) -> Result<Block> {
        if idx.iter().any(|&i| i >= self.len()) {
            bail!("row index out of range 0..{}", self.len());
        }
        Ok(map_block!(self, a => a.select(Axis(0), idx)))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Block::I8(_) => "int8",
            Block::I16(_) => "int16",
            Block::I32(_) => "int32",
            Block::I64(_) => "int64",
            Block::U8(_) => "uint8",
            Block::U16(_) => "uint16",
            Block::U32(_) => "uint32",
            Block::U64(_) => "uint64",
            Block::F32(_) => "float32",
            Block::F64(_) => "float64",
            Block::Bool(_) => "bool",
            Block::Str(_) => "string",
        }
    }

    /// Numeric (or boolean) values as f64, in memory order.
    pub fn to_f64(&self) -> Result<Vec<f64>> {
        macro_rules! cv {
            ($a:expr) => {
                $a.iter().map(|&x| x as f64).collect()
            };
        }
        Ok(match self {
            Block::I8(a) => cv!(a),
            Block::I16(a) => cv!(a),
            Block::I32(a) => cv!(a),
            Block::I64(a) => cv!(a),
            Block::U8(a) => cv!(a),
            Block::U16(a) => cv!(a),
            Block::U32(a) => cv!(a),
            Block::U64(a) => cv!(a),
            Block::F32(a) => cv!(a),
            Block::F64(a) => cv!(a),
            Block::Bool(a) => a.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
            Block::Str(_) => bail!("expected numbers, found strings"),
        })
    }

    /// Integer values (categorical codes), `None` for non-integer blocks.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        macro_rules! cv {
            ($a:expr) => {
                Some($a.iter().map(|&x| x as i64).collect())
            };
        }
        match self {
            Block::I8(a) => cv!(a),
            Block::I16(a) => cv!(a),
            Block::I32(a) => cv!(a),
            Block::I64(a) => cv!(a),
            Block::U8(a) => cv!(a),
            Block::U16(a) => cv!(a),
            Block::U32(a) => cv!(a),
            Block::U64(a) => a.iter().map(|&x| i64::try_from(x).ok()).collect(),
            _ => None,
        }
    }

    pub fn strings(&self) -> Option<Vec<String>> {
        match self {
            Block::Str(a) => Some(a.iter().map(|s| s.as_str().to_string()).collect()),
            _ => None,
        }
    }

    pub fn from_strings(v: &[String]) -> Block {
        let s: Vec<VarLenUnicode> = v.iter().map(|s| vlen_lossy(s.as_bytes())).collect();
        Block::Str(
            ArrayD::from_shape_vec(IxDyn(&[s.len()]), s).expect("1-D shape of its own length"),
        )
    }

    pub fn from_i64(v: Vec<i64>) -> Block {
        Block::I64(
            ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).expect("1-D shape of its own length"),
        )
    }

    /// Smallest signed integer type holding codes below `n` (anndata writes categorical codes so).
    pub fn codes(v: Vec<i64>, n_categories: usize) -> Block {
        let sh = IxDyn(&[v.len()]);
        let conv = |v: &[i64]| v.to_vec();
        if n_categories < i8::MAX as usize {
            Block::I8(
                ArrayD::from_shape_vec(sh, v.iter().map(|&x| x as i8).collect()).expect("shape"),
            )
        } else if n_categories < i16::MAX as usize {
            Block::I16(
                ArrayD::from_shape_vec(sh, v.iter().map(|&x| x as i16).collect()).expect("shape"),
            )
        } else if n_categories < i32::MAX as usize {
            Block::I32(
                ArrayD::from_shape_vec(sh, v.iter().map(|&x| x as i32).collect()).expect("shape"),
            )
        } else {
            Block::I64(ArrayD::from_shape_vec(sh, conv(&v)).expect("shape"))
        }
    }
}

/// Concatenates blocks along the first axis; element types and trailing shapes must agree.
pub fn concat(blocks: &[Block]) -> Result<Block> {
    macro_rules! cat {
        ($v:ident) => {{
            let arrs = blocks
                .iter()
                .map(|b| match b {
                    Block::$v(a) => Ok(a.view()),
                    other => Err(anyhow!(
                        "element types differ between files ({} vs {})",
                        blocks[0].kind(),
                        other.kind()
                    )),
                })
                .collect::<Result<Vec<_>>>()?;
            Block::$v(
                ndarray::concatenate(Axis(0), &arrs)
                    .map_err(|e| anyhow!("shapes differ between files: {e}"))?,
            )
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

/// A UTF-8 string for HDF5; invalid bytes become U+FFFD and NULs (which HDF5 strings cannot hold) are dropped.
pub fn vlen_lossy(bytes: &[u8]) -> VarLenUnicode {
    let s = String::from_utf8_lossy(bytes).replace('\0', "");
    s.parse().unwrap_or_default()
}

fn selection(shape: &[usize], rows: &Range<usize>) -> Vec<SliceInfoElem> {
    let mut sel = vec![SliceInfoElem::from(rows.start as isize..rows.end as isize)];
    sel.extend(shape[1..].iter().map(|_| SliceInfoElem::from(..)));
    sel
}

/// Reads rows `rows` (all rows when `None`) along the first axis, keeping the element type.
pub fn read_rows(ds: &Dataset, rows: Option<Range<usize>>) -> Result<Block> {
    let shape = ds.shape();
    if shape.is_empty() {
        bail!("{} is a scalar, not per-row data", ds.name());
    }
    let rows = rows.unwrap_or(0..shape[0]);
    if rows.start > rows.end || rows.end > shape[0] {
        bail!("{}: rows {rows:?} out of range 0..{}", ds.name(), shape[0]);
    }
    let per_row: usize = shape[1..]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| anyhow!("{}: shape {shape:?} overflows", ds.name()))?;
    let n = rows
        .len()
        .checked_mul(per_row)
        .ok_or_else(|| anyhow!("{}: shape {shape:?} overflows", ds.name()))?;
    // Fixed-length strings are read through a buffer of at least their width, vlen ones as pointers.
    let mem_elem = match ds.dtype().and_then(|t| t.to_descriptor()) {
        Ok(TypeDescriptor::FixedAscii(w) | TypeDescriptor::FixedUnicode(w)) => match w {
            0..=64 => 64,
            65..=256 => 256,
            _ => 1024,
        },
        Ok(TypeDescriptor::VarLenAscii | TypeDescriptor::VarLenUnicode) => 16,
        _ => 0,
    };
    check_read_as(ds, n, mem_elem)?;
    let err = || format!("reading {}", ds.name());
    macro_rules! rd {
        ($t:ty, $v:ident) => {{
            let info = ndarray::SliceInfo::<_, IxDyn, IxDyn>::try_from(selection(&shape, &rows))?;
            Block::$v(ds.read_slice::<$t, _, IxDyn>(info).with_context(err)?)
        }};
    }
    macro_rules! rd_str {
        ($t:ty) => {{
            let info = ndarray::SliceInfo::<_, IxDyn, IxDyn>::try_from(selection(&shape, &rows))?;
            let a = ds.read_slice::<$t, _, IxDyn>(info).with_context(err)?;
            Block::Str(a.mapv(|s| vlen_lossy(s.as_bytes())))
        }};
    }
    Ok(match ds.dtype()?.to_descriptor().with_context(err)? {
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
        TypeDescriptor::Boolean | TypeDescriptor::Enum(_) => rd!(bool, Bool),
        TypeDescriptor::VarLenUnicode => rd_str!(VarLenUnicode),
        TypeDescriptor::VarLenAscii => rd_str!(VarLenAscii),
        // Fixed-length strings are read through a buffer of at least their width (longer ones are cut).
        TypeDescriptor::FixedAscii(n) if n <= 64 => rd_str!(FixedAscii<64>),
        TypeDescriptor::FixedAscii(n) if n <= 256 => rd_str!(FixedAscii<256>),
        TypeDescriptor::FixedAscii(_) => rd_str!(FixedAscii<1024>),
        TypeDescriptor::FixedUnicode(n) if n <= 64 => rd_str!(FixedUnicode<64>),
        TypeDescriptor::FixedUnicode(n) if n <= 256 => rd_str!(FixedUnicode<256>),
        TypeDescriptor::FixedUnicode(_) => rd_str!(FixedUnicode<1024>),
        other => bail!("{}: unsupported element type {other}", ds.name()),
    })
}

/// Reads a 1-D string dataset in any of the encodings anndata or h5py have written.
pub fn read_strings(ds: &Dataset) -> Result<Vec<String>> {
    if ds.ndim() != 1 {
        bail!(
            "{}: expected a 1-D array of strings, found shape {:?}",
            ds.name(),
            ds.shape()
        );
    }
    read_rows(ds, None)?
        .strings()
        .ok_or_else(|| anyhow!("{} does not hold strings", ds.name()))
}

pub fn write_block(parent: &Group, name: &str, b: &Block) -> Result<Dataset> {
    Ok(each_block!(b, a => parent.new_dataset_builder().with_data(a).create(name)?))
}

/// Writes a block with the anndata encoding attributes of its kind.
pub fn write_array(parent: &Group, name: &str, b: &Block) -> Result<Dataset> {
    let ds = write_block(parent, name, b)?;
    match b {
        Block::Str(_) => set_encoding(&ds, "string-array", "0.2.0")?,
        _ => set_encoding(&ds, "array", "0.2.0")?,
    }
    Ok(ds)
}

pub fn str_attr(loc: &Location, name: &str) -> Result<String> {
    let a = loc.attr(name)?;
    if a.ndim() != 0 {
        bail!("attribute '{name}' is not a scalar");
    }
    Ok(match a.dtype()?.to_descriptor()? {
        TypeDescriptor::VarLenUnicode => {
            String::from_utf8_lossy(a.read_scalar::<VarLenUnicode>()?.as_bytes()).into_owned()
        }
        TypeDescriptor::VarLenAscii => {
            String::from_utf8_lossy(a.read_scalar::<VarLenAscii>()?.as_bytes()).into_owned()
        }
        TypeDescriptor::FixedAscii(_) => {
            String::from_utf8_lossy(a.read_scalar::<FixedAscii<1024>>()?.as_bytes()).into_owned()
        }
        TypeDescriptor::FixedUnicode(_) => {
            String::from_utf8_lossy(a.read_scalar::<FixedUnicode<1024>>()?.as_bytes()).into_owned()
        }
        other => bail!("attribute '{name}' is not a string ({other})"),
    })
}

/// A 1-D string attribute (e.g. `column-order`); an empty numeric array counts as no strings.
pub fn str_list_attr(loc: &Location, name: &str) -> Result<Vec<String>> {
    let a = loc.attr(name)?;
    if a.ndim() == 0 {
        return Ok(vec![str_attr(loc, name)?]);
    }
    if a.size() > 1 << 20 {
        bail!("attribute '{name}' has {} entries", a.size());
    }
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(match a.dtype()?.to_descriptor()? {
        TypeDescriptor::VarLenUnicode => a
            .read_1d::<VarLenUnicode>()?
            .iter()
            .map(|s| lossy(s.as_bytes()))
            .collect(),
        TypeDescriptor::VarLenAscii => a
            .read_1d::<VarLenAscii>()?
            .iter()
            .map(|s| lossy(s.as_bytes()))
            .collect(),
        TypeDescriptor::FixedAscii(_) => a
            .read_1d::<FixedAscii<1024>>()?
            .iter()
            .map(|s| lossy(s.as_bytes()))
            .collect(),
        TypeDescriptor::FixedUnicode(_) => a
            .read_1d::<FixedUnicode<1024>>()?
            .iter()
            .map(|s| lossy(s.as_bytes()))
            .collect(),
        _ if a.size() == 0 => vec![],
        other => bail!("attribute '{name}' is not a list of strings ({other})"),
    })
}

pub fn bool_attr(loc: &Location, name: &str) -> Option<bool> {
    let a = loc.attr(name).ok()?;
    if a.ndim() != 0 {
        return None;
    }
    a.read_scalar::<bool>()
        .ok()
        .or_else(|| a.read_scalar::<i64>().ok().map(|v| v != 0))
}

pub fn set_str_attr(loc: &Location, name: &str, value: &str) -> Result<()> {
    loc.new_attr::<VarLenUnicode>()
        .shape(())
        .create(name)?
        .write_scalar(&vlen_lossy(value.as_bytes()))?;
    Ok(())
}

pub fn set_str_list_attr(loc: &Location, name: &str, values: &[String]) -> Result<()> {
    let v: Vec<VarLenUnicode> = values.iter().map(|s| vlen_lossy(s.as_bytes())).collect();
    let a = loc
        .new_attr::<VarLenUnicode>()
        .shape(v.len())
        .create(name)?;
    if !v.is_empty() {
        a.write(&v)?;
    }
    Ok(())
}

pub fn set_bool_attr(loc: &Location, name: &str, value: bool) -> Result<()> {
    loc.new_attr::<bool>()
        .shape(())
        .create(name)?
        .write_scalar(&value)?;
    Ok(())
}

pub fn set_encoding(loc: &Location, kind: &str, version: &str) -> Result<()> {
    set_str_attr(loc, "encoding-type", kind)?;
    set_str_attr(loc, "encoding-version", version)
}

/// The `encoding-type` attribute, or "" when absent (old files).
pub fn encoding(loc: &Location) -> String {
    str_attr(loc, "encoding-type").unwrap_or_default()
}

/// Copies attributes (strings, numbers, booleans; scalar or 1-D). Object references and other
/// types cannot follow into a new file and are dropped with a warning; names in `skip` are not copied.
pub fn copy_attrs(src: &Location, dst: &Location, skip: &[&str]) -> Result<()> {
    for name in src.attr_names()? {
        if skip.contains(&name.as_str()) {
            continue;
        }
        let a = src.attr(&name)?;
        let scalar = a.ndim() == 0;
        if a.ndim() > 1 || a.size() > 1 << 20 {
            log::warn!(
                "{}: attribute '{name}' of shape {:?} not copied",
                src.name(),
                a.shape()
            );
            continue;
        }
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
                    let d = dst.new_attr::<$t>().shape(v.len()).create(name.as_str())?;
                    if !v.is_empty() {
                        d.write(&v)?;
                    }
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
            TypeDescriptor::VarLenUnicode
            | TypeDescriptor::VarLenAscii
            | TypeDescriptor::FixedAscii(_)
            | TypeDescriptor::FixedUnicode(_) => {
                if scalar {
                    set_str_attr(dst, &name, &str_attr(src, &name)?)?;
                } else {
                    set_str_list_attr(dst, &name, &str_list_attr(src, &name)?)?;
                }
            }
            other => log::warn!(
                "{}: attribute '{name}' of type {other} not copied",
                src.name()
            ),
        }
    }
    Ok(())
}
