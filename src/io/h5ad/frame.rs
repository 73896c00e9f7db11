//! AnnData dataframes (obs, var, raw/var, dataframes in obsm) read from every layout anndata reads and
//! written in the current encoding:
//! - current (anndata >= 0.8): a group with `_index`, `column-order`, categorical groups
//!   (`codes`/`categories`), nullable groups (`values`/`mask`);
//! - old (anndata 0.7): categorical columns are code datasets whose `categories` attribute is an
//!   object reference into `__categories/<column>` (references cannot be copied into a new file, so
//!   the categories are read by name and written as a current categorical group);
//! - legacy (anndata <= 0.6): one compound dataset whose first field is the index, categories of
//!   integer columns in `uns/<column>_categories`.

use std::collections::HashMap;
use std::ops::Range;

use anyhow::{anyhow, bail, Context, Result};
use hdf5::types::TypeDescriptor;
use hdf5::{Dataset, File, Group};
use ndarray::{ArrayD, IxDyn};

use super::elem::{
    self, bool_attr, check_read, encoding, read_rows, str_attr, str_list_attr, Block,
};

#[derive(Debug, Clone)]
pub enum Column {
    Array(Block),
    Categorical {
        codes: Vec<i64>,
        categories: Block,
        ordered: bool,
    },
    /// `nullable-integer`, `nullable-boolean` or `nullable-string-array`.
    Nullable {
        encoding: String,
        values: Block,
        mask: Block,
    },
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Array(b) => b.len(),
            Column::Categorical { codes, .. } => codes.len(),
            Column::Nullable { values, .. } => values.len(),
        }
    }

    fn slice(&self, r: Range<usize>) -> Result<Column> {
        Ok(match self {
            Column::Array(b) => Column::Array(b.slice(r)?),
            Column::Categorical {
                codes,
                categories,
                ordered,
            } => Column::Categorical {
                codes: codes[r].to_vec(),
                categories: categories.clone(),
                ordered: *ordered,
            },
            Column::Nullable {
                encoding,
                values,
                mask,
            } => Column::Nullable {
                encoding: encoding.clone(),
                values: values.slice(r.clone())?,
                mask: mask.slice(r)?,
            },
        })
    }

    /// Values as strings (categories resolved; missing values empty), for gene-name columns.
    pub fn strings(&self) -> Result<Vec<String>> {
        match self {
            Column::Array(b) => b
                .strings()
                .ok_or_else(|| anyhow!("column holds {} values, not strings", b.kind())),
            Column::Categorical {
                codes, categories, ..
            } => {
                let cats = categories
                    .strings()
                    .ok_or_else(|| anyhow!("categories are not strings"))?;
                Ok(codes
                    .iter()
                    .map(|&c| {
                        if c < 0 {
                            String::new()
                        } else {
                            cats[c as usize].clone()
                        }
                    })
                    .collect())
            }
            Column::Nullable { values, mask, .. } => {
                let v = values
                    .strings()
                    .ok_or_else(|| anyhow!("column holds {} values, not strings", values.kind()))?;
                let m = mask.to_f64()?;
                Ok(v.into_iter()
                    .zip(m)
                    .map(|(s, m)| if m != 0.0 { String::new() } else { s })
                    .collect())
            }
        }
    }

    fn kind(&self) -> String {
        match self {
            Column::Array(b) => b.kind().to_string(),
            Column::Categorical { categories, .. } => {
                format!("categorical of {}", categories.kind())
            }
            Column::Nullable {
                encoding, values, ..
            } => format!("{encoding} of {}", values.kind()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Frame {
    /// Name of the index dataset (`_index` unless the file named another).
    pub index_name: String,
    pub index: Vec<String>,
    pub columns: Vec<(String, Column)>,
}

/// Names that may not be used as a dataset name in a new group.
fn safe_member(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && name != "." && name != "__categories"
}

impl Frame {
    /// Reads the dataframe at `path` of `file`, whatever its layout. `what` names it in errors.
    pub fn read(file: &File, path: &str) -> Result<Frame> {
        if let Ok(ds) = file.dataset(path) {
            return read_legacy(file, &ds);
        }
        let g = file
            .group(path)
            .with_context(|| format!("no dataframe '{path}'"))?;
        read_group(&g)
    }

    /// Only the index (cheap: no column is read). Legacy compound frames are read whole.
    pub fn read_index(file: &File, path: &str) -> Result<Vec<String>> {
        if file.dataset(path).is_ok() {
            return Ok(Frame::read(file, path)?.index);
        }
        let g = file
            .group(path)
            .with_context(|| format!("no dataframe '{path}'"))?;
        let idx = index_name(&g);
        read_index(&g, &idx)
    }

    pub fn n_rows(&self) -> usize {
        self.index.len()
    }

    pub fn column(&self, name: &str) -> Result<&Column> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .ok_or_else(|| {
                anyhow!(
                    "no column '{name}' (available: {})",
                    self.columns
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    pub fn slice(&self, r: Range<usize>) -> Result<Frame> {
        if r.end > self.n_rows() || r.start > r.end {
            bail!("rows {r:?} out of range 0..{}", self.n_rows());
        }
        Ok(Frame {
            index_name: self.index_name.clone(),
            index: self.index[r.clone()].to_vec(),
            columns: self
                .columns
                .iter()
                .map(|(n, c)| Ok((n.clone(), c.slice(r.clone())?)))
                .collect::<Result<_>>()?,
        })
    }

    /// Stacks frames row-wise. Column names, order and kinds must agree; categorical columns whose
    /// categories differ get the union of the categories (in order of first appearance) and their
    /// codes are remapped, as anndata's concat does.
    pub fn concat(frames: &[Frame]) -> Result<Frame> {
        let first = frames.first().ok_or_else(|| anyhow!("no frames"))?;
        let names: Vec<&str> = first.columns.iter().map(|(n, _)| n.as_str()).collect();
        for (k, f) in frames.iter().enumerate().skip(1) {
            let other: Vec<&str> = f.columns.iter().map(|(n, _)| n.as_str()).collect();
            if other != names {
                bail!(
                    "file {} has columns [{}] but file 1 has [{}]",
                    k + 1,
                    other.join(", "),
                    names.join(", ")
                );
            }
        }
        let mut columns = vec![];
        for (j, name) in names.iter().enumerate() {
            let cols: Vec<&Column> = frames.iter().map(|f| &f.columns[j].1).collect();
            let merged = concat_columns(&cols).with_context(|| format!("column '{name}'"))?;
            columns.push((name.to_string(), merged));
        }
        Ok(Frame {
            index_name: first.index_name.clone(),
            index: frames
                .iter()
                .flat_map(|f| f.index.iter().cloned())
                .collect(),
            columns,
        })
    }

    /// Writes the frame as `parent/name` in the current anndata encoding.
    pub fn write(&self, parent: &Group, name: &str) -> Result<()> {
        let g = parent.create_group(name)?;
        elem::set_encoding(&g, "dataframe", "0.2.0")?;
        let index_name = if safe_member(&self.index_name)
            && !self.columns.iter().any(|(n, _)| *n == self.index_name)
        {
            self.index_name.clone()
        } else {
            "_index".to_string()
        };
        elem::set_str_attr(&g, "_index", &index_name)?;
        let order: Vec<String> = self.columns.iter().map(|(n, _)| n.clone()).collect();
        elem::set_str_list_attr(&g, "column-order", &order)?;
        elem::write_array(&g, &index_name, &Block::from_strings(&self.index))?;
        for (n, c) in &self.columns {
            if !safe_member(n) || *n == index_name {
                bail!("column name '{n}' cannot be stored");
            }
            write_column(&g, n, c).with_context(|| format!("writing column '{n}'"))?;
        }
        Ok(())
    }
}

fn index_name(g: &Group) -> String {
    str_attr(g, "_index").unwrap_or_else(|_| "_index".to_string())
}

fn read_index(g: &Group, idx: &str) -> Result<Vec<String>> {
    if !safe_member(idx) {
        bail!("{}: bad index name '{idx}'", g.name());
    }
    let ds = g
        .dataset(idx)
        .with_context(|| format!("{}: no index dataset '{idx}'", g.name()))?;
    if ds.ndim() != 1 {
        bail!("{}: index is not 1-D", ds.name());
    }
    let b = read_rows(&ds, None)?;
    Ok(match b.strings() {
        Some(s) => s,
        // anndata accepts numeric indices and turns them into strings.
        None => b.to_f64()?.iter().map(|v| format!("{v}")).collect(),
    })
}

fn read_group(g: &Group) -> Result<Frame> {
    let idx = index_name(g);
    let index = read_index(g, &idx)?;
    let n = index.len();
    let names: Vec<String> = match str_list_attr(g, "column-order") {
        Ok(v) => v,
        Err(_) if g.attr("column-order").is_err() => g
            .member_names()?
            .into_iter()
            .filter(|m| *m != idx && m != "__categories")
            .collect(),
        Err(e) => return Err(e.context(format!("{}: bad column-order", g.name()))),
    };
    let mut columns = vec![];
    for name in names {
        if !safe_member(&name) || name == idx {
            bail!("{}: bad column name '{name}' in column-order", g.name());
        }
        let c = read_column(g, &name).with_context(|| format!("{}: column '{name}'", g.name()))?;
        if c.len() != n {
            bail!(
                "{}: column '{name}' has {} rows but the index has {n}",
                g.name(),
                c.len()
            );
        }
        columns.push((name, c));
    }
    Ok(Frame {
        index_name: idx,
        index,
        columns,
    })
}

fn one_d(ds: &Dataset) -> Result<Block> {
    if ds.ndim() != 1 {
        bail!("{} has shape {:?}, expected 1-D", ds.name(), ds.shape());
    }
    read_rows(ds, None)
}

fn categorical(codes: &Block, categories: Block, ordered: bool, what: &str) -> Result<Column> {
    let codes = codes.to_i64().ok_or_else(|| {
        anyhow!(
            "{what}: categorical codes are {}, not integers",
            codes.kind()
        )
    })?;
    let n = categories.len();
    if let Some(c) = codes.iter().find(|&&c| c < -1 || c >= n as i64) {
        bail!("{what}: categorical code {c} out of range for {n} categories");
    }
    Ok(Column::Categorical {
        codes,
        categories,
        ordered,
    })
}

fn read_column(g: &Group, name: &str) -> Result<Column> {
    if let Ok(ds) = g.dataset(name) {
        let block = one_d(&ds)?;
        // anndata 0.7: codes here, categories in __categories/<name> (the attribute is a reference).
        if ds.attr("categories").is_ok() {
            let cats = g
                .group("__categories")
                .and_then(|c| c.dataset(name))
                .with_context(|| format!("categorical '{name}' has no __categories/{name}"))?;
            let ordered = bool_attr(&cats, "ordered").unwrap_or(false);
            return categorical(&block, one_d(&cats)?, ordered, name);
        }
        return Ok(Column::Array(block));
    }
    let cg = g.group(name)?;
    let enc = encoding(&cg);
    match enc.as_str() {
        "categorical" => {
            let codes = one_d(&cg.dataset("codes")?)?;
            let cats = one_d(&cg.dataset("categories")?)?;
            categorical(
                &codes,
                cats,
                bool_attr(&cg, "ordered").unwrap_or(false),
                name,
            )
        }
        "nullable-integer" | "nullable-boolean" | "nullable-string-array" => {
            let values = one_d(&cg.dataset("values")?)?;
            let mask = one_d(&cg.dataset("mask")?)?;
            if mask.len() != values.len() {
                bail!(
                    "nullable column has {} values but {} mask entries",
                    values.len(),
                    mask.len()
                );
            }
            Ok(Column::Nullable {
                encoding: enc,
                values,
                mask,
            })
        }
        "" => bail!("a group without an encoding-type is not a column"),
        other => bail!("unsupported column encoding '{other}'"),
    }
}

fn write_column(g: &Group, name: &str, c: &Column) -> Result<()> {
    match c {
        Column::Array(b) => {
            elem::write_array(g, name, b)?;
        }
        Column::Categorical {
            codes,
            categories,
            ordered,
        } => {
            let cg = g.create_group(name)?;
            elem::set_encoding(&cg, "categorical", "0.2.0")?;
            elem::set_bool_attr(&cg, "ordered", *ordered)?;
            elem::write_array(&cg, "codes", &Block::codes(codes.clone(), categories.len()))?;
            elem::write_array(&cg, "categories", categories)?;
        }
        Column::Nullable {
            encoding,
            values,
            mask,
        } => {
            let cg = g.create_group(name)?;
            elem::set_encoding(&cg, encoding, "0.1.0")?;
            elem::write_array(&cg, "values", values)?;
            elem::write_array(&cg, "mask", mask)?;
        }
    }
    Ok(())
}

fn concat_columns(cols: &[&Column]) -> Result<Column> {
    match cols[0] {
        Column::Array(_) => {
            let blocks = cols
                .iter()
                .map(|c| match c {
                    Column::Array(b) => Ok(b.clone()),
                    other => bail!("is an array in file 1 but {} in another", other.kind()),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Column::Array(elem::concat(&blocks)?))
        }
        Column::Nullable { encoding, .. } => {
            let mut values = vec![];
            let mut masks = vec![];
            for c in cols {
                match c {
                    Column::Nullable {
                        encoding: e,
                        values: v,
                        mask: m,
                    } if e == encoding => {
                        values.push(v.clone());
                        masks.push(m.clone());
                    }
                    other => bail!("is {encoding} in file 1 but {} in another", other.kind()),
                }
            }
            Ok(Column::Nullable {
                encoding: encoding.clone(),
                values: elem::concat(&values)?,
                mask: elem::concat(&masks)?,
            })
        }
        Column::Categorical {
            categories: first_cats,
            ordered,
            ..
        } => {
            let key = |b: &Block| -> Result<Vec<String>> {
                Ok(match b.strings() {
                    Some(s) => s,
                    None => b.to_f64()?.iter().map(|v| v.to_string()).collect(),
                })
            };
            let mut union: Vec<String> = key(first_cats)?;
            let mut pos: HashMap<String, i64> = union
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), i as i64))
                .collect();
            let mut all_same = true;
            let mut codes = vec![];
            let mut blocks = vec![first_cats.clone()];
            for c in cols {
                let Column::Categorical {
                    codes: cc,
                    categories,
                    ..
                } = c
                else {
                    bail!("is categorical in file 1 but {} in another", c.kind());
                };
                if categories.kind() != first_cats.kind() {
                    bail!(
                        "categories are {} in file 1 but {} in another",
                        first_cats.kind(),
                        categories.kind()
                    );
                }
                let names = key(categories)?;
                if names != key(first_cats)? {
                    all_same = false;
                }
                let map: Vec<i64> = names
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        *pos.entry(s.clone()).or_insert_with(|| {
                            union.push(s.clone());
                            blocks.push(categories.slice(i..i + 1).expect("in range"));
                            union.len() as i64 - 1
                        })
                    })
                    .collect();
                codes.extend(cc.iter().map(|&k| if k < 0 { -1 } else { map[k as usize] }));
            }
            if !all_same {
                log::warn!(
                    "categorical column has different categories in different files; using their union ({} categories)",
                    union.len()
                );
            }
            Ok(Column::Categorical {
                codes,
                categories: if all_same {
                    first_cats.clone()
                } else {
                    elem::concat(&blocks)?
                },
                ordered: *ordered && all_same,
            })
        }
    }
}

/// anndata <= 0.6: one compound dataset; the first field is the index.
fn read_legacy(file: &File, ds: &Dataset) -> Result<Frame> {
    let fields = read_compound(ds)?;
    let mut it = fields.into_iter();
    let (index_name, index) = it
        .next()
        .ok_or_else(|| anyhow!("{}: compound dataframe without fields", ds.name()))?;
    let index = match index.strings() {
        Some(s) => s,
        None => index.to_f64()?.iter().map(|v| v.to_string()).collect(),
    };
    let mut columns = vec![];
    for (name, block) in it {
        if block.ndim() != 1 {
            bail!("{}: field '{name}' is not a column", ds.name());
        }
        // anndata 0.6 kept the categories of integer columns in uns/<name>_categories.
        let cats = file
            .dataset(&format!("uns/{name}_categories"))
            .ok()
            .filter(|_| block.to_i64().is_some() && safe_member(&name));
        let col = match cats {
            Some(c) => categorical(&block, one_d(&c)?, false, &name)?,
            None => Column::Array(block),
        };
        columns.push((name, col));
    }
    Ok(Frame {
        index_name,
        index,
        columns,
    })
}

/// Reads a 1-D compound dataset (anndata <= 0.6 obs/var/obsm) into one block per field. Fields may be
/// numbers, booleans, fixed-length strings or fixed-size arrays of numbers (2-D blocks).
pub fn read_compound(ds: &Dataset) -> Result<Vec<(String, Block)>> {
    let TypeDescriptor::Compound(ct) = ds.dtype()?.to_descriptor()? else {
        bail!("{} is not a compound dataset", ds.name());
    };
    if ds.ndim() != 1 {
        bail!("{}: compound dataset is not 1-D", ds.name());
    }
    let n = ds.size();
    check_read(ds, n)?;
    let mem = TypeDescriptor::Compound(ct).to_c_repr();
    let TypeDescriptor::Compound(layout) = &mem else {
        unreachable!("to_c_repr keeps compounds")
    };
    let size = layout.size;
    let dt = hdf5::Datatype::from_descriptor(&mem)?;
    let mut buf = vec![
        0u8;
        n.checked_mul(size)
            .ok_or_else(|| anyhow!("size overflows"))?
    ];
    // SAFETY: the memory type has exactly `size` bytes per record and `buf` holds `n` records; the
    // fields are plain numbers or fixed-length strings (checked below before any is interpreted),
    // so there is no HDF5-owned memory to reclaim. Under the hdf5 crate's library lock.
    let rc = hdf5::sync::sync(|| unsafe {
        hdf5_sys::h5d::H5Dread(
            ds.id(),
            dt.id(),
            hdf5_sys::h5s::H5S_ALL,
            hdf5_sys::h5s::H5S_ALL,
            hdf5_sys::h5p::H5P_DEFAULT,
            buf.as_mut_ptr().cast(),
        )
    });
    if rc < 0 {
        bail!("{}: cannot read compound dataset", ds.name());
    }
    let mut out = vec![];
    for f in &layout.fields {
        let rec = |i: usize| &buf[i * size + f.offset..i * size + f.offset + f.ty.size()];
        let block = field_block(&f.ty, n, &rec)
            .with_context(|| format!("{}: field '{}'", ds.name(), f.name))?;
        out.push((f.name.clone(), block));
    }
    Ok(out)
}

fn field_block<'a>(
    ty: &TypeDescriptor,
    n: usize,
    rec: &dyn Fn(usize) -> &'a [u8],
) -> Result<Block> {
    use hdf5::types::{FloatSize, IntSize};
    macro_rules! num {
        ($t:ty, $v:ident, $w:expr) => {{
            let k = ty.size() / $w;
            let v: Vec<$t> = (0..n)
                .flat_map(|i| {
                    rec(i)
                        .chunks_exact($w)
                        .map(|b| <$t>::from_ne_bytes(b.try_into().expect("width")))
                        .collect::<Vec<_>>()
                })
                .collect();
            let shape = if matches!(ty, TypeDescriptor::FixedArray(..)) {
                vec![n, k]
            } else {
                vec![n]
            };
            Block::$v(ArrayD::from_shape_vec(IxDyn(&shape), v)?)
        }};
    }
    let base = match ty {
        TypeDescriptor::FixedArray(inner, _) => inner.as_ref(),
        t => t,
    };
    Ok(match base {
        TypeDescriptor::Integer(IntSize::U1) => num!(i8, I8, 1),
        TypeDescriptor::Integer(IntSize::U2) => num!(i16, I16, 2),
        TypeDescriptor::Integer(IntSize::U4) => num!(i32, I32, 4),
        TypeDescriptor::Integer(IntSize::U8) => num!(i64, I64, 8),
        TypeDescriptor::Unsigned(IntSize::U1) => num!(u8, U8, 1),
        TypeDescriptor::Unsigned(IntSize::U2) => num!(u16, U16, 2),
        TypeDescriptor::Unsigned(IntSize::U4) => num!(u32, U32, 4),
        TypeDescriptor::Unsigned(IntSize::U8) => num!(u64, U64, 8),
        TypeDescriptor::Float(FloatSize::U4) => num!(f32, F32, 4),
        TypeDescriptor::Float(FloatSize::U8) => num!(f64, F64, 8),
        TypeDescriptor::Boolean | TypeDescriptor::Enum(_) if base.size() == 1 && base == ty => {
            let v: Vec<bool> = (0..n).map(|i| rec(i)[0] != 0).collect();
            Block::Bool(ArrayD::from_shape_vec(IxDyn(&[n]), v)?)
        }
        TypeDescriptor::FixedAscii(_) | TypeDescriptor::FixedUnicode(_) if base == ty => {
            let v: Vec<String> = (0..n)
                .map(|i| {
                    let b = rec(i);
                    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                    String::from_utf8_lossy(&b[..end]).into_owned()
                })
                .collect();
            Block::from_strings(&v)
        }
        other => bail!("unsupported field type {other}"),
    })
}
