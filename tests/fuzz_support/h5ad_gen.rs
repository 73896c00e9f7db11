//! Small AnnData-like HDF5 files with random defects, aimed at what `src/io/h5ad/` parses:
//! - `obs`/`var` as current dataframes (`_index` attribute naming the index dataset, `column-order`,
//!   array / categorical (`codes` + `categories`) / nullable columns), anndata 0.7 columns with
//!   `__categories`, anndata 0.6 compound datasets (with `uns/<col>_categories`), or plain datasets;
//! - `X` (and layers, obsm, obsp, raw/X, raw.X, uns entries) dense of 0-3 dims and many dtypes, or
//!   sparse groups (`encoding-type` csr/csc/garbage/missing, old `h5sparse_format`, `shape` /
//!   `h5sparse_shape` attributes) whose `data`/`indices`/`indptr` start consistent and are then
//!   mutated (lengths, dtypes, non-monotonic or negative indptr, out-of-range indices, lying shapes);
//! - datasets whose dataspace claims far more than is stored (chunked, never written);
//! - hard, soft and external links, including cycles back to the root.
//!
//! Every spec prints with `{:#?}` and [`build`] turns it back into the same file, so a failing case
//! can be pasted into a regression test.

use std::path::Path;

use hdf5::types::{FixedAscii, FixedUnicode, VarLenAscii, VarLenUnicode};
use hdf5::{Dataset, File, Group, H5Type, Location};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use proptest::sample::select;

use scfoundation::io::MatrixChoice;

// ---------------------------------------------------------------------------------------------
// Spec types

#[derive(Clone, Debug)]
pub enum Vals {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I8(Vec<i8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    /// Variable-length UTF-8.
    Str(Vec<String>),
    /// Variable-length ASCII.
    Ascii(Vec<String>),
    /// Fixed-length ASCII, 1 byte.
    Fixed1(Vec<String>),
    /// Fixed-length ASCII, 8 bytes.
    Fixed8(Vec<String>),
    /// Fixed-length UTF-8, 300 bytes (wider than the reader's 256-byte buffer class).
    FixedU300(Vec<String>),
}

/// How a dataset's values are laid out.
#[derive(Clone, Debug)]
pub enum Shape {
    /// 1-D of the values' length.
    Flat,
    /// These dimensions, the values repeated or cut to fit.
    Dims(Vec<usize>),
    /// A scalar (the first value).
    Scalar,
    /// A chunked dataspace of this extent, of which only the first values (1-D) or nothing is
    /// written: the file claims much more than it stores.
    Lie { extent: Vec<usize>, deflate: bool },
}

#[derive(Clone, Debug)]
pub struct Ds {
    pub vals: Vals,
    pub shape: Shape,
}

#[derive(Clone, Debug)]
pub enum AttrV {
    Str(String),
    FixedStr(String),
    StrList(Vec<String>),
    I64(i64),
    I64s(Vec<i64>),
    I32s(Vec<i32>),
    U64s(Vec<u64>),
    F64s(Vec<f64>),
    Bool(bool),
    /// A zero-length i64 array.
    Empty,
}

#[derive(Clone, Debug)]
pub enum Col {
    Array(Ds),
    Categorical {
        enc: Option<AttrV>,
        codes: Option<Ds>,
        categories: Option<Ds>,
        ordered: Option<AttrV>,
    },
    /// anndata 0.7: codes dataset with a `categories` attribute, categories in `__categories/<name>`.
    Old {
        codes: Ds,
        attr: Option<AttrV>,
        categories: Option<Ds>,
        ordered: Option<AttrV>,
    },
    Nullable {
        enc: String,
        values: Option<Ds>,
        mask: Option<Ds>,
    },
    EmptyGroup,
}

#[derive(Clone, Debug)]
pub struct FrameSpec {
    pub encoding: Option<AttrV>,
    pub index_attr: Option<AttrV>,
    /// Name under which the index dataset is stored.
    pub index_name: String,
    pub index: Option<Ds>,
    pub columns: Vec<(String, Col)>,
    pub column_order: Option<AttrV>,
}

/// Compound records as anndata 0.6 wrote obs/var/obsm.
#[derive(H5Type, Clone, Copy, Debug)]
#[repr(C)]
pub struct RecA {
    pub index: FixedAscii<8>,
    pub n_genes: i32,
    pub frac: f32,
    pub cat: i8,
}

#[derive(H5Type, Clone, Copy, Debug)]
#[repr(C)]
pub struct RecB {
    pub index: i64,
    pub arr: [f32; 2],
    pub flag: bool,
}

#[derive(H5Type, Clone, Debug)]
#[repr(C)]
pub struct RecC {
    pub index: VarLenUnicode,
    pub x: f64,
}

#[derive(Clone, Debug)]
pub enum Legacy {
    A(Vec<(String, i32, f32, i8)>),
    B(Vec<(i64, [f32; 2], bool)>),
    C(Vec<(String, f64)>),
}

#[derive(Clone, Debug)]
pub enum FrameNode {
    Missing,
    Group(FrameSpec),
    /// A non-compound dataset where a dataframe belongs.
    Plain(Ds),
    /// A compound dataset, and optionally `uns/<field>_categories`.
    Legacy(Legacy, Option<(String, Ds)>),
}

#[derive(Clone, Debug)]
pub struct SparseSpec {
    pub enc: Option<AttrV>,
    pub old_format: Option<AttrV>,
    /// `shape` or `h5sparse_shape`.
    pub shape_name: &'static str,
    pub shape: Option<AttrV>,
    pub data: Option<Ds>,
    pub indices: Option<Ds>,
    pub indptr: Option<Ds>,
}

#[derive(Clone, Debug)]
pub enum MatSpec {
    Missing,
    Dense(Ds),
    Sparse(SparseSpec),
    Frame(FrameSpec),
    EmptyGroup,
}

#[derive(Clone, Debug)]
pub enum UnsNode {
    Ds(Ds),
    Group(Vec<(String, UnsNode)>),
    Sparse(SparseSpec),
    Frame(FrameSpec),
}

#[derive(Clone, Debug)]
pub enum Extra {
    Layer(String, MatSpec),
    Obsm(String, MatSpec),
    /// anndata 0.6: `obsm` itself a compound dataset.
    ObsmLegacy(Legacy),
    Obsp(String, MatSpec),
    Varm(String, Ds),
    Uns(String, UnsNode),
    /// `raw/` (anndata >= 0.7) or `raw.X` / `raw.var` (`old`).
    Raw {
        x: MatSpec,
        var: FrameNode,
        old: bool,
    },
    HardLink {
        target: String,
        name: String,
    },
    SoftLink {
        target: String,
        name: String,
    },
    ExternalLink {
        file: String,
        target: String,
        name: String,
    },
    /// `uns/scfoundation`: scalar string datasets, as the embed step writes (merge reads them).
    Provenance(Vec<(String, String)>),
    /// Any other top-level dataset.
    Top(String, Ds),
}

impl Extra {
    /// The path the extra writes (links: none, they may clash on purpose).
    fn path(&self) -> Option<String> {
        Some(match self {
            Extra::Layer(n, _) => format!("layers/{n}"),
            Extra::Obsm(n, _) => format!("obsm/{n}"),
            Extra::ObsmLegacy(_) => "obsm".into(),
            Extra::Obsp(n, _) => format!("obsp/{n}"),
            Extra::Varm(n, _) => format!("varm/{n}"),
            Extra::Uns(n, _) => format!("uns/{n}"),
            Extra::Raw { old: false, .. } => "raw".into(),
            Extra::Raw { old: true, .. } => "raw.X".into(),
            Extra::Provenance(_) => "uns/scfoundation".into(),
            Extra::Top(n, _) => n.clone(),
            Extra::HardLink { .. } | Extra::SoftLink { .. } | Extra::ExternalLink { .. } => {
                return None
            }
        })
    }
}

#[derive(Clone, Debug)]
pub struct Choice {
    pub layer: Option<String>,
    pub use_raw: bool,
    pub gene_column: Option<String>,
}

impl Choice {
    pub fn matrix_choice(&self) -> MatrixChoice {
        MatrixChoice {
            layer: self.layer.clone(),
            use_raw: self.use_raw,
            gene_column: self.gene_column.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct H5adCase {
    pub n_obs: usize,
    pub n_vars: usize,
    pub obs: FrameNode,
    pub var: FrameNode,
    pub x: MatSpec,
    pub extras: Vec<Extra>,
    pub choice: Choice,
    pub cells_per_shard: usize,
}

// ---------------------------------------------------------------------------------------------
// Building the file

type H5Result<T> = hdf5::Result<T>;

fn vlu(s: &str) -> VarLenUnicode {
    s.replace('\0', "").parse().unwrap_or_default()
}

fn ascii(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii() && *c != '\0').collect()
}

fn fixed8(s: &str) -> FixedAscii<8> {
    let a = ascii(s);
    FixedAscii::<8>::from_ascii(&a.as_bytes()[..a.len().min(8)]).unwrap_or_default()
}

fn fixed1(s: &str) -> FixedAscii<1> {
    let a = ascii(s);
    FixedAscii::<1>::from_ascii(&a.as_bytes()[..a.len().min(1)]).unwrap_or_default()
}

fn fixed_u300(s: &str) -> FixedUnicode<300> {
    let mut t: String = s.replace('\0', "");
    while t.len() > 300 {
        t.pop();
    }
    t.parse().unwrap_or_default()
}

fn put<T: H5Type + Clone + Default>(
    g: &Group,
    name: &str,
    v: Vec<T>,
    shape: &Shape,
) -> H5Result<Dataset> {
    match shape {
        Shape::Flat if v.is_empty() => g.new_dataset::<T>().shape(0).create(name),
        Shape::Flat => g.new_dataset_builder().with_data(&v[..]).create(name),
        Shape::Scalar => {
            let ds = g.new_dataset::<T>().shape(()).create(name)?;
            ds.write_scalar(&v.first().cloned().unwrap_or_default())?;
            Ok(ds)
        }
        Shape::Dims(d) => {
            let n: usize = d.iter().product();
            if n == 0 {
                return g.new_dataset::<T>().shape(d.clone()).create(name);
            }
            let data: Vec<T> = (0..n)
                .map(|i| {
                    if v.is_empty() {
                        T::default()
                    } else {
                        v[i % v.len()].clone()
                    }
                })
                .collect();
            let a = ArrayD::from_shape_vec(IxDyn(d), data).expect("product of dims");
            g.new_dataset_builder().with_data(&a).create(name)
        }
        Shape::Lie { extent, deflate } => {
            let chunk: Vec<usize> = extent.iter().map(|&e| e.clamp(1, 64)).collect();
            let mut b = g.new_dataset::<T>().chunk(chunk);
            if *deflate {
                b = b.deflate(9);
            }
            let ds = b.shape(extent.clone()).create(name)?;
            if extent.len() == 1 && !v.is_empty() {
                let k = v.len().min(extent[0]);
                ds.write_slice(&v[..k], 0..k)?;
            }
            Ok(ds)
        }
    }
}

pub fn write_ds(g: &Group, name: &str, ds: &Ds) -> H5Result<Dataset> {
    let sh = &ds.shape;
    match &ds.vals {
        Vals::F32(v) => put(g, name, v.clone(), sh),
        Vals::F64(v) => put(g, name, v.clone(), sh),
        Vals::I8(v) => put(g, name, v.clone(), sh),
        Vals::I32(v) => put(g, name, v.clone(), sh),
        Vals::I64(v) => put(g, name, v.clone(), sh),
        Vals::U8(v) => put(g, name, v.clone(), sh),
        Vals::U64(v) => put(g, name, v.clone(), sh),
        Vals::Bool(v) => put(g, name, v.clone(), sh),
        Vals::Str(v) => put(g, name, v.iter().map(|s| vlu(s)).collect(), sh),
        Vals::Ascii(v) => put(
            g,
            name,
            v.iter()
                .map(|s| VarLenAscii::from_ascii(&ascii(s)).unwrap_or_default())
                .collect(),
            sh,
        ),
        Vals::Fixed1(v) => put(g, name, v.iter().map(|s| fixed1(s)).collect(), sh),
        Vals::Fixed8(v) => put(g, name, v.iter().map(|s| fixed8(s)).collect(), sh),
        Vals::FixedU300(v) => put(g, name, v.iter().map(|s| fixed_u300(s)).collect(), sh),
    }
}

pub fn set_attr(loc: &Location, name: &str, v: &AttrV) -> H5Result<()> {
    if loc.attr(name).is_ok() {
        loc.delete_attr(name)?;
    }
    match v {
        AttrV::Str(s) => loc
            .new_attr::<VarLenUnicode>()
            .shape(())
            .create(name)?
            .write_scalar(&vlu(s)),
        AttrV::FixedStr(s) => loc
            .new_attr::<FixedAscii<16>>()
            .shape(())
            .create(name)?
            .write_scalar(
                &FixedAscii::<16>::from_ascii(&ascii(s)[..ascii(s).len().min(16)])
                    .unwrap_or_default(),
            ),
        AttrV::StrList(l) => {
            let v: Vec<VarLenUnicode> = l.iter().map(|s| vlu(s)).collect();
            let a = loc
                .new_attr::<VarLenUnicode>()
                .shape(v.len())
                .create(name)?;
            if v.is_empty() {
                Ok(())
            } else {
                a.write(&v)
            }
        }
        AttrV::I64(x) => loc
            .new_attr::<i64>()
            .shape(())
            .create(name)?
            .write_scalar(x),
        AttrV::I64s(l) => list_attr(loc, name, l),
        AttrV::I32s(l) => list_attr(loc, name, l),
        AttrV::U64s(l) => list_attr(loc, name, l),
        AttrV::F64s(l) => list_attr(loc, name, l),
        AttrV::Bool(b) => loc
            .new_attr::<bool>()
            .shape(())
            .create(name)?
            .write_scalar(b),
        AttrV::Empty => loc.new_attr::<i64>().shape(0).create(name).map(|_| ()),
    }
}

fn list_attr<T: H5Type>(loc: &Location, name: &str, l: &[T]) -> H5Result<()> {
    let a = loc.new_attr::<T>().shape(l.len()).create(name)?;
    if l.is_empty() {
        Ok(())
    } else {
        a.write(l)
    }
}

/// The group at `path` (relative to the file root), created with its parents when missing.
fn ensure_group(f: &File, path: &str) -> H5Result<Group> {
    let mut g: Group = f.as_group()?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        g = match g.group(part) {
            Ok(x) => x,
            Err(_) => g.create_group(part)?,
        };
    }
    Ok(g)
}

fn write_frame(parent: &Group, name: &str, fs: &FrameSpec) -> H5Result<()> {
    let g = parent.create_group(name)?;
    if let Some(e) = &fs.encoding {
        set_attr(&g, "encoding-type", e)?;
        set_attr(&g, "encoding-version", &AttrV::Str("0.2.0".into()))?;
    }
    if let Some(a) = &fs.index_attr {
        set_attr(&g, "_index", a)?;
    }
    if let Some(ix) = &fs.index {
        write_ds(&g, &fs.index_name, ix)?;
    }
    for (cname, c) in &fs.columns {
        match c {
            Col::Array(d) => {
                write_ds(&g, cname, d)?;
            }
            Col::Categorical {
                enc,
                codes,
                categories,
                ordered,
            } => {
                let cg = g.create_group(cname)?;
                if let Some(e) = enc {
                    set_attr(&cg, "encoding-type", e)?;
                }
                if let Some(o) = ordered {
                    set_attr(&cg, "ordered", o)?;
                }
                if let Some(d) = codes {
                    write_ds(&cg, "codes", d)?;
                }
                if let Some(d) = categories {
                    write_ds(&cg, "categories", d)?;
                }
            }
            Col::Old {
                codes,
                attr,
                categories,
                ordered,
            } => {
                let ds = write_ds(&g, cname, codes)?;
                if let Some(a) = attr {
                    set_attr(&ds, "categories", a)?;
                }
                if let Some(d) = categories {
                    let cg = match g.group("__categories") {
                        Ok(x) => x,
                        Err(_) => g.create_group("__categories")?,
                    };
                    let cds = write_ds(&cg, cname, d)?;
                    if let Some(o) = ordered {
                        set_attr(&cds, "ordered", o)?;
                    }
                }
            }
            Col::Nullable { enc, values, mask } => {
                let cg = g.create_group(cname)?;
                set_attr(&cg, "encoding-type", &AttrV::Str(enc.clone()))?;
                if let Some(d) = values {
                    write_ds(&cg, "values", d)?;
                }
                if let Some(d) = mask {
                    write_ds(&cg, "mask", d)?;
                }
            }
            Col::EmptyGroup => {
                g.create_group(cname)?;
            }
        }
    }
    if let Some(o) = &fs.column_order {
        set_attr(&g, "column-order", o)?;
    }
    Ok(())
}

fn write_legacy(
    f: &File,
    parent: &Group,
    name: &str,
    l: &Legacy,
    cats: &Option<(String, Ds)>,
) -> H5Result<()> {
    match l {
        Legacy::A(rows) => {
            let recs: Vec<RecA> = rows
                .iter()
                .map(|(s, n, x, c)| RecA {
                    index: fixed8(s),
                    n_genes: *n,
                    frac: *x,
                    cat: *c,
                })
                .collect();
            parent
                .new_dataset_builder()
                .with_data(&recs[..])
                .create(name)?;
        }
        Legacy::B(rows) => {
            let recs: Vec<RecB> = rows
                .iter()
                .map(|&(index, arr, flag)| RecB { index, arr, flag })
                .collect();
            parent
                .new_dataset_builder()
                .with_data(&recs[..])
                .create(name)?;
        }
        Legacy::C(rows) => {
            let recs: Vec<RecC> = rows
                .iter()
                .map(|(s, x)| RecC {
                    index: vlu(s),
                    x: *x,
                })
                .collect();
            parent
                .new_dataset_builder()
                .with_data(&recs[..])
                .create(name)?;
        }
    }
    if let Some((field, d)) = cats {
        let uns = ensure_group(f, "uns")?;
        write_ds(&uns, &format!("{field}_categories"), d)?;
    }
    Ok(())
}

fn write_frame_node(f: &File, parent: &Group, name: &str, n: &FrameNode) -> H5Result<()> {
    match n {
        FrameNode::Missing => Ok(()),
        FrameNode::Group(fs) => write_frame(parent, name, fs),
        FrameNode::Plain(d) => write_ds(parent, name, d).map(|_| ()),
        FrameNode::Legacy(l, cats) => write_legacy(f, parent, name, l, cats),
    }
}

fn write_sparse(parent: &Group, name: &str, s: &SparseSpec) -> H5Result<()> {
    let g = parent.create_group(name)?;
    if let Some(e) = &s.enc {
        set_attr(&g, "encoding-type", e)?;
        set_attr(&g, "encoding-version", &AttrV::Str("0.1.0".into()))?;
    }
    if let Some(o) = &s.old_format {
        set_attr(&g, "h5sparse_format", o)?;
    }
    if let Some(sh) = &s.shape {
        set_attr(&g, s.shape_name, sh)?;
    }
    for (n, d) in [
        ("data", &s.data),
        ("indices", &s.indices),
        ("indptr", &s.indptr),
    ] {
        if let Some(d) = d {
            write_ds(&g, n, d)?;
        }
    }
    Ok(())
}

fn write_mat(parent: &Group, name: &str, m: &MatSpec) -> H5Result<()> {
    match m {
        MatSpec::Missing => Ok(()),
        MatSpec::Dense(d) => write_ds(parent, name, d).map(|_| ()),
        MatSpec::Sparse(s) => write_sparse(parent, name, s),
        MatSpec::Frame(fs) => write_frame(parent, name, fs),
        MatSpec::EmptyGroup => parent.create_group(name).map(|_| ()),
    }
}

fn write_uns(parent: &Group, name: &str, n: &UnsNode) -> H5Result<()> {
    match n {
        UnsNode::Ds(d) => write_ds(parent, name, d).map(|_| ()),
        UnsNode::Group(members) => {
            let g = parent.create_group(name)?;
            for (m, node) in members {
                write_uns(&g, m, node)?;
            }
            Ok(())
        }
        UnsNode::Sparse(s) => write_sparse(parent, name, s),
        UnsNode::Frame(fs) => write_frame(parent, name, fs),
    }
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

/// Writes the case as an `.h5ad` at `path`. An `Err` means the spec is not representable in HDF5
/// (e.g. two members of one name); such a case is skipped, not failed.
pub fn build(case: &H5adCase, path: &Path) -> H5Result<()> {
    let f = File::create(path)?;
    let root = f.as_group()?;
    set_attr(&root, "encoding-type", &AttrV::Str("anndata".into()))?;
    set_attr(&root, "encoding-version", &AttrV::Str("0.1.0".into()))?;
    write_frame_node(&f, &root, "obs", &case.obs)?;
    write_frame_node(&f, &root, "var", &case.var)?;
    write_mat(&root, "X", &case.x)?;
    let mut links = vec![];
    for e in &case.extras {
        match e {
            Extra::Layer(n, m) => write_mat(&ensure_group(&f, "layers")?, n, m)?,
            Extra::Obsm(n, m) => write_mat(&ensure_group(&f, "obsm")?, n, m)?,
            Extra::ObsmLegacy(l) => write_legacy(&f, &root, "obsm", l, &None)?,
            Extra::Obsp(n, m) => write_mat(&ensure_group(&f, "obsp")?, n, m)?,
            Extra::Varm(n, d) => {
                write_ds(&ensure_group(&f, "varm")?, n, d)?;
            }
            Extra::Uns(n, node) => write_uns(&ensure_group(&f, "uns")?, n, node)?,
            Extra::Raw { x, var, old } => {
                if *old {
                    write_mat(&root, "raw.X", x)?;
                    write_frame_node(&f, &root, "raw.var", var)?;
                } else {
                    let g = ensure_group(&f, "raw")?;
                    write_mat(&g, "X", x)?;
                    write_frame_node(&f, &g, "var", var)?;
                }
            }
            Extra::Provenance(kv) => {
                let g = ensure_group(&f, "uns/scfoundation")?;
                for (k, v) in kv {
                    let ds = g
                        .new_dataset::<VarLenUnicode>()
                        .shape(())
                        .create(k.as_str())?;
                    ds.write_scalar(&vlu(v))?;
                }
            }
            Extra::Top(n, d) => {
                write_ds(&root, n, d)?;
            }
            // Links last, so that their targets exist when they should.
            link => links.push(link),
        }
    }
    for l in links {
        match l {
            Extra::HardLink { target, name } => {
                ensure_group(&f, parent_of(name))?;
                root.link_hard(target, name)?;
            }
            Extra::SoftLink { target, name } => {
                ensure_group(&f, parent_of(name))?;
                root.link_soft(target, name)?;
            }
            Extra::ExternalLink { file, target, name } => {
                ensure_group(&f, parent_of(name))?;
                root.link_external(file, target, name)?;
            }
            _ => unreachable!("only links are deferred"),
        }
    }
    f.close()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strategies
//
// Every generator takes `d`, the weight of defects against a weight of [`OK`] for the well-formed
// choice: a case is drawn clean (`d` = 0: a valid AnnData file, so split and merge get to their
// deep paths), lightly broken or heavily broken.

const OK: u32 = 24;

/// The well-formed strategy, or (with weight `d` against [`OK`]) one of the defects.
fn pick<T: std::fmt::Debug + 'static>(
    d: u32,
    good: BoxedStrategy<T>,
    bad: Vec<BoxedStrategy<T>>,
) -> BoxedStrategy<T> {
    if d == 0 || bad.is_empty() {
        return good;
    }
    let mut options = vec![(OK, good)];
    options.extend(bad.into_iter().map(|b| (d, b)));
    proptest::strategy::Union::new_weighted(options).boxed()
}

/// `n`, or (a defect) one more, one less, or zero.
fn around(n: usize, d: u32) -> BoxedStrategy<usize> {
    pick(
        d,
        Just(n).boxed(),
        vec![
            Just(n + 1).boxed(),
            Just(n.saturating_sub(1)).boxed(),
            Just(0).boxed(),
        ],
    )
}

const NAMES: &[&str] = &[
    "AAAC-1",
    "gene",
    "CD3E",
    "",
    " ",
    "\u{e9}",
    "a/b",
    "_index",
    "__categories",
    ".",
    "x\ty",
    "dup",
    "0",
    "-1",
    "nan",
    "NaN",
];

fn name_str(d: u32) -> BoxedStrategy<String> {
    pick(
        d,
        "[A-Za-z0-9_-]{1,6}".boxed(),
        vec![
            select(NAMES).prop_map(str::to_string).boxed(),
            (1usize..400).prop_map(|n| "w".repeat(n)).boxed(),
        ],
    )
}

fn string_vals(n: usize, d: u32) -> BoxedStrategy<Vals> {
    (prop::collection::vec(name_str(d), n), 0u8..9)
        .prop_map(|(v, k)| match k {
            0..=5 => Vals::Str(v),
            6 => Vals::Ascii(v),
            7 => Vals::Fixed8(v),
            _ => Vals::FixedU300(v),
        })
        .boxed()
}

fn small_f64(d: u32) -> BoxedStrategy<f64> {
    pick(
        d,
        prop_oneof![2 => Just(0.0), 3 => (1i32..5).prop_map(f64::from)].boxed(),
        vec![
            Just(f64::NAN).boxed(),
            Just(f64::INFINITY).boxed(),
            Just(-1.0).boxed(),
            any::<f64>().boxed(),
        ],
    )
}

fn numbers_as(v: Vec<f64>, ty: u8) -> Vals {
    match ty {
        0..=2 => Vals::F32(v.iter().map(|&x| x as f32).collect()),
        3 => Vals::F64(v),
        4 => Vals::I32(v.iter().map(|&x| x as i32).collect()),
        5 => Vals::I64(v.iter().map(|&x| x as i64).collect()),
        6 => Vals::U8(v.iter().map(|&x| x as u8).collect()),
        7 => Vals::I8(v.iter().map(|&x| x as i8).collect()),
        8 => Vals::U64(v.iter().map(|&x| x as u64).collect()),
        _ => Vals::Bool(v.iter().map(|&x| x != 0.0).collect()),
    }
}

/// Numbers of a random numeric dtype; strings are a defect.
fn num_vals(n: usize, d: u32) -> BoxedStrategy<Vals> {
    pick(
        d,
        (prop::collection::vec(small_f64(d), n), 0u8..10)
            .prop_map(|(v, ty)| numbers_as(v, ty))
            .boxed(),
        vec![string_vals(n, d)],
    )
}

/// Integers as one of the integer dtypes; float and string dtypes are defects the reader must
/// refuse or convert (`ty` >= 9).
fn int_vals(v: Vec<i64>, ty: u8) -> Vals {
    match ty {
        0..=3 => Vals::I64(v),
        4 | 5 => Vals::I32(v.into_iter().map(|x| x as i32).collect()),
        6 => Vals::U64(v.into_iter().map(|x| x as u64).collect()),
        7 => Vals::I8(v.into_iter().map(|x| x as i8).collect()),
        8 => Vals::U8(v.into_iter().map(|x| x as u8).collect()),
        9 => Vals::F64(v.into_iter().map(|x| x as f64).collect()),
        _ => Vals::Str(v.into_iter().map(|x| x.to_string()).collect()),
    }
}

/// An integer dtype selector: integer types when clean.
fn int_ty(d: u32) -> BoxedStrategy<u8> {
    pick(d, (0u8..9).boxed(), vec![(9u8..11).boxed()])
}

/// Declared extents far beyond anything stored: the readers must refuse them before allocating
/// (extents the readers may legitimately read, up to 64 MiB, are kept small by the generators:
/// reading them is allowed and only slow).
const BIG: &[usize] = &[1 << 31, 1 << 40, (1 << 40) + 1, 1 << 62];

/// A 1-D shape of the values' length; lying, scalar or 2-D shapes are defects.
fn shape_1d(n: usize, d: u32) -> BoxedStrategy<Shape> {
    pick(
        d,
        Just(Shape::Flat).boxed(),
        vec![
            Just(Shape::Scalar).boxed(),
            Just(Shape::Dims(vec![n, 2])).boxed(),
            (select(BIG), any::<bool>())
                .prop_map(|(e, deflate)| Shape::Lie {
                    extent: vec![e],
                    deflate,
                })
                .boxed(),
            (1usize..20_000)
                .prop_map(|e| Shape::Lie {
                    extent: vec![e],
                    deflate: true,
                })
                .boxed(),
        ],
    )
}

fn ds_1d(vals: BoxedStrategy<Vals>, n: usize, d: u32) -> BoxedStrategy<Ds> {
    (vals, shape_1d(n, d))
        .prop_map(|(vals, shape)| Ds { vals, shape })
        .boxed()
}

/// 2^26 one-byte strings: 64 MiB as stored, under the readers' allowance for reads without stored
/// data, but each string is read into a wider fixed buffer.
const WIDE_READ: usize = 1 << 26;

fn index_ds(n: usize, d: u32) -> BoxedStrategy<Ds> {
    let good = around(n, d)
        .prop_flat_map(move |m| {
            let vals = pick(d, string_vals(m, d), vec![num_vals(m, d)]);
            ds_1d(vals, m, d)
        })
        .boxed();
    pick(
        d,
        good,
        vec![Just(Ds {
            vals: Vals::Fixed1(vec!["a".into()]),
            shape: Shape::Lie {
                extent: vec![WIDE_READ],
                deflate: false,
            },
        })
        .boxed()],
    )
}

fn attr_any() -> BoxedStrategy<AttrV> {
    prop_oneof![
        3 => name_str(1).prop_map(AttrV::Str),
        1 => name_str(1).prop_map(AttrV::FixedStr),
        1 => prop::collection::vec(name_str(1), 0..4).prop_map(AttrV::StrList),
        1 => any::<i64>().prop_map(AttrV::I64),
        1 => prop::collection::vec(any::<i64>(), 0..4).prop_map(AttrV::I64s),
        1 => prop::collection::vec(any::<f64>(), 0..3).prop_map(AttrV::F64s),
        1 => any::<bool>().prop_map(AttrV::Bool),
        1 => Just(AttrV::Empty),
    ]
    .boxed()
}

fn str_attr(s: &str) -> Option<AttrV> {
    Some(AttrV::Str(s.to_string()))
}

/// An optional `ordered`-style flag; non-boolean values are defects.
fn flag_attr(d: u32) -> BoxedStrategy<Option<AttrV>> {
    pick(
        d,
        prop_oneof![Just(None), any::<bool>().prop_map(|b| Some(AttrV::Bool(b)))].boxed(),
        vec![attr_any().prop_map(Some).boxed()],
    )
}

fn categorical_col(n: usize, d: u32) -> BoxedStrategy<Col> {
    (1usize..5, around(n, d), int_ty(d))
        .prop_flat_map(move |(k, m, ty)| {
            let code = pick(
                d,
                prop_oneof![8 => 0..k as i64, 1 => Just(-1i64)].boxed(),
                vec![(-3i64..k as i64 + 3).boxed()],
            );
            let cats = pick(
                d,
                string_vals(k, d).prop_map(Some).boxed(),
                vec![num_vals(k, d).prop_map(Some).boxed(), Just(None).boxed()],
            );
            let enc = pick(
                d,
                Just(str_attr("categorical")).boxed(),
                vec![
                    Just(None).boxed(),
                    Just(str_attr("categoricalish")).boxed(),
                    attr_any().prop_map(Some).boxed(),
                ],
            );
            let has_codes = pick(d, Just(true).boxed(), vec![Just(false).boxed()]);
            (
                prop::collection::vec(code, m),
                cats,
                enc,
                flag_attr(d),
                has_codes,
            )
                .prop_map(move |(codes, cats, enc, ordered, has_codes)| {
                    Col::Categorical {
                        enc,
                        codes: has_codes.then(|| Ds {
                            vals: int_vals(codes, ty),
                            shape: Shape::Flat,
                        }),
                        categories: cats.map(|vals| Ds {
                            vals,
                            shape: Shape::Flat,
                        }),
                        ordered,
                    }
                })
        })
        .boxed()
}

fn old_categorical_col(n: usize, d: u32) -> BoxedStrategy<Col> {
    (1usize..5, around(n, d), int_ty(d))
        .prop_flat_map(move |(k, m, ty)| {
            let code = pick(
                d,
                prop_oneof![8 => 0..k as i64, 1 => Just(-1i64)].boxed(),
                vec![(-3i64..k as i64 + 3).boxed()],
            );
            let cats = pick(
                d,
                string_vals(k, d).prop_map(Some).boxed(),
                vec![Just(None).boxed(), num_vals(k, d).prop_map(Some).boxed()],
            );
            let attr = pick(
                d,
                Just(str_attr("<object reference>")).boxed(),
                vec![attr_any().prop_map(Some).boxed()],
            );
            (prop::collection::vec(code, m), attr, cats, flag_attr(d)).prop_map(
                move |(codes, attr, cats, ordered)| Col::Old {
                    codes: Ds {
                        vals: int_vals(codes, ty),
                        shape: Shape::Flat,
                    },
                    attr,
                    categories: cats.map(|vals| Ds {
                        vals,
                        shape: Shape::Flat,
                    }),
                    ordered,
                },
            )
        })
        .boxed()
}

fn nullable_col(n: usize, d: u32) -> BoxedStrategy<Col> {
    let enc = pick(
        d,
        select(
            &[
                "nullable-integer",
                "nullable-boolean",
                "nullable-string-array",
            ][..],
        )
        .boxed(),
        vec![Just("nullable-float").boxed()],
    );
    (enc, around(n, d), around(n, d))
        .prop_flat_map(move |(enc, a, b)| {
            let values = if enc == "nullable-string-array" {
                string_vals(a, d)
            } else {
                num_vals(a, d)
            };
            let mask =
                (prop::collection::vec(any::<bool>(), b), shape_1d(b, d)).prop_map(|(v, shape)| {
                    Ds {
                        vals: Vals::Bool(v),
                        shape,
                    }
                });
            let present = pick(d, Just(true).boxed(), vec![Just(false).boxed()]);
            (
                Just(enc.to_string()),
                ds_1d(values, a, d),
                mask,
                present.clone(),
                present,
            )
                .prop_map(|(enc, values, mask, hv, hm)| Col::Nullable {
                    enc,
                    values: hv.then_some(values),
                    mask: hm.then_some(mask),
                })
        })
        .boxed()
}

fn column(n: usize, d: u32) -> BoxedStrategy<Col> {
    let array = around(n, d)
        .prop_flat_map(move |m| ds_1d(num_vals(m, d), m, d))
        .prop_map(Col::Array);
    let strings = around(n, d)
        .prop_flat_map(move |m| ds_1d(string_vals(m, d), m, d))
        .prop_map(Col::Array);
    let good = prop_oneof![
        4 => array,
        2 => strings,
        3 => categorical_col(n, d),
        2 => old_categorical_col(n, d),
        1 => nullable_col(n, d),
    ]
    .boxed();
    pick(d, good, vec![Just(Col::EmptyGroup).boxed()])
}

const COL_NAMES: &[&str] = &["n_genes", "cell_type", "batch", "gene_symbols"];
const BAD_COL_NAMES: &[&str] = &["_index", "__categories", "a/b", "ghost", "codes", "cell"];

fn frame_spec(n: usize, d: u32) -> BoxedStrategy<FrameSpec> {
    let col_name = pick(
        d,
        select(COL_NAMES).boxed(),
        vec![select(BAD_COL_NAMES).boxed()],
    )
    .prop_map(str::to_string);
    let columns = prop::collection::vec((col_name, column(n, d)), 0..3);
    let index_naming = pick(
        d,
        prop_oneof![
            5 => Just((str_attr("_index"), "_index".to_string())),
            1 => Just((str_attr("cell"), "cell".to_string())),
            1 => Just((None, "_index".to_string())),
        ]
        .boxed(),
        vec![
            (attr_any(), select(&["_index", "cell", "a", "n_genes"][..]))
                .prop_map(|(a, n)| (Some(a), n.to_string()))
                .boxed(),
            select(&["a/b", "__categories", ".", "", "missing"][..])
                .prop_map(|s| (str_attr(s), "_index".to_string()))
                .boxed(),
        ],
    );
    let encoding = pick(
        d,
        Just(str_attr("dataframe")).boxed(),
        vec![Just(None).boxed(), attr_any().prop_map(Some).boxed()],
    );
    let index = pick(
        d,
        index_ds(n, d).prop_map(Some).boxed(),
        vec![Just(None).boxed()],
    );
    let order_kind = pick(d, (0u8..6).boxed(), vec![(6u8..10).boxed()]);
    (
        encoding,
        index_naming,
        index,
        columns,
        order_kind,
        attr_any(),
    )
        .prop_map(
            |(encoding, (index_attr, index_name), index, mut columns, order_kind, other)| {
                // Member names must be unique within a group for the file to be buildable.
                let mut seen = std::collections::HashSet::new();
                seen.insert(index_name.clone());
                columns.retain(|(n, _)| seen.insert(n.clone()));
                let names: Vec<String> = columns.iter().map(|(n, _)| n.clone()).collect();
                let column_order = match order_kind {
                    0..=4 => Some(AttrV::StrList(names)),
                    5 => None,
                    6 => {
                        let mut v = names;
                        v.push("ghost".to_string());
                        Some(AttrV::StrList(v))
                    }
                    7 => Some(AttrV::Empty),
                    8 => Some(other),
                    _ => {
                        let mut v = names.clone();
                        v.extend(names);
                        Some(AttrV::StrList(v))
                    }
                };
                FrameSpec {
                    encoding,
                    index_attr,
                    index_name,
                    index,
                    columns,
                    column_order,
                }
            },
        )
        .boxed()
}

/// anndata 0.6 compound records: `A` is what it wrote; a 2-D field (`B`) or a variable-length
/// string index (`C`) are defects.
fn legacy(n: usize, d: u32) -> BoxedStrategy<Legacy> {
    let a =
        (name_str(d), -2i32..4, small_f64(d), -2i8..4).prop_map(|(s, a, b, c)| (s, a, b as f32, c));
    pick(
        d,
        prop::collection::vec(a, n).prop_map(Legacy::A).boxed(),
        vec![
            prop::collection::vec((any::<i64>(), any::<[f32; 2]>(), any::<bool>()), n)
                .prop_map(Legacy::B)
                .boxed(),
            prop::collection::vec((name_str(d), small_f64(d)), n)
                .prop_map(Legacy::C)
                .boxed(),
        ],
    )
}

fn legacy_node(n: usize, d: u32) -> BoxedStrategy<FrameNode> {
    (
        around(n, d).prop_flat_map(move |m| legacy(m, d)),
        prop::option::weighted(
            0.5,
            (select(&["cat", "n_genes", "index", "frac"][..]), 1usize..5)
                .prop_flat_map(move |(f, k)| (Just(f.to_string()), ds_1d(string_vals(k, d), k, d))),
        ),
    )
        .prop_map(|(l, c)| FrameNode::Legacy(l, c))
        .boxed()
}

fn frame_node(n: usize, d: u32) -> BoxedStrategy<FrameNode> {
    pick(
        d,
        prop_oneof![
            8 => frame_spec(n, d).prop_map(FrameNode::Group),
            1 => legacy_node(n, d),
        ]
        .boxed(),
        vec![
            Just(FrameNode::Missing).boxed(),
            ds_1d(string_vals(n, d), n, d)
                .prop_map(FrameNode::Plain)
                .boxed(),
        ],
    )
}

/// What can go wrong with a sparse group that started out consistent.
#[derive(Clone, Debug)]
enum SparseMut {
    ShapeAttr(AttrV),
    ShapeRows(i64),
    ShapeCols(i64),
    IndptrSet(usize, i64),
    IndptrReverse,
    IndptrLen(bool),
    IndexSet(usize, i64),
    IndicesLen(bool),
    DataLen(bool),
    Drop(u8),
    Enc(AttrV),
    NoEnc,
    IndptrLie(usize),
}

fn sparse_mut() -> BoxedStrategy<SparseMut> {
    let big = prop_oneof![
        select(
            &[
                -1i64,
                1 << 20,
                1 << 31,
                1 << 40,
                (1 << 40) + 1,
                i64::MAX,
                i64::MIN
            ][..]
        ),
        -2i64..8,
    ];
    prop_oneof![
        1 => attr_any().prop_map(SparseMut::ShapeAttr),
        1 => prop::collection::vec(big.clone(), 0..4).prop_map(|v| SparseMut::ShapeAttr(AttrV::I64s(v))),
        1 => prop::collection::vec(any::<u64>(), 2).prop_map(|v| SparseMut::ShapeAttr(AttrV::U64s(v))),
        1 => prop::collection::vec(-3i32..9, 2).prop_map(|v| SparseMut::ShapeAttr(AttrV::I32s(v))),
        1 => prop::collection::vec(-1.0f64..9.0, 2).prop_map(|v| SparseMut::ShapeAttr(AttrV::F64s(v))),
        3 => big.clone().prop_map(SparseMut::ShapeRows),
        3 => big.clone().prop_map(SparseMut::ShapeCols),
        3 => (any::<usize>(), big.clone()).prop_map(|(i, v)| SparseMut::IndptrSet(i, v)),
        1 => Just(SparseMut::IndptrReverse),
        1 => any::<bool>().prop_map(SparseMut::IndptrLen),
        3 => (any::<usize>(), big).prop_map(|(i, v)| SparseMut::IndexSet(i, v)),
        1 => any::<bool>().prop_map(SparseMut::IndicesLen),
        1 => any::<bool>().prop_map(SparseMut::DataLen),
        1 => (0u8..3).prop_map(SparseMut::Drop),
        1 => attr_any().prop_map(SparseMut::Enc),
        1 => Just(SparseMut::NoEnc),
        1 => select(BIG).prop_map(SparseMut::IndptrLie),
    ]
    .boxed()
}

/// A CSR or CSC group (current `encoding-type`, or the old `h5sparse_format`) for an `r` x `c`
/// matrix, consistent before its mutations.
fn sparse(r: usize, c: usize, d: u32) -> BoxedStrategy<SparseSpec> {
    let muts = if d == 0 {
        Just(vec![]).boxed()
    } else {
        pick(
            d,
            Just(vec![]).boxed(),
            vec![
                prop::collection::vec(sparse_mut(), 1..3).boxed(),
                prop::collection::vec(sparse_mut(), 1..3).boxed(),
                prop::collection::vec(sparse_mut(), 1..3).boxed(),
            ],
        )
    };
    (
        any::<bool>(),
        prop_oneof![6 => Just(false), 1 => Just(true)],
        prop::collection::vec(small_f64(d), r * c),
        int_ty(d),
        int_ty(d),
        0u8..12,
        muts,
    )
        .prop_flat_map(move |(csr, old_style, dense, ity, pty, dty, muts)| {
            let (major, minor) = if csr { (r, c) } else { (c, r) };
            let mut indptr = vec![0i64];
            let mut indices = vec![];
            let mut data = vec![];
            for a in 0..major {
                for b in 0..minor {
                    let v = if csr {
                        dense[a * c + b]
                    } else {
                        dense[b * c + a]
                    };
                    if v != 0.0 {
                        indices.push(b as i64);
                        data.push(v);
                    }
                }
                indptr.push(indices.len() as i64);
            }
            let nnz = data.len();
            let strs = if d > 0 && dty >= 10 {
                string_vals(nnz, d).prop_map(Some).boxed()
            } else {
                Just(None).boxed()
            };
            (
                Just((csr, old_style, indptr, indices, ity, pty, dty, muts)),
                strs,
                Just(data),
            )
        })
        .prop_map(
            move |((csr, old_style, mut indptr, mut indices, ity, pty, dty, muts), strs, data)| {
                let mut data_vals = match strs {
                    Some(s) => s,
                    None => numbers_as(data, dty),
                };
                let kind = if csr { "csr" } else { "csc" };
                let mut spec = SparseSpec {
                    enc: (!old_style).then(|| AttrV::Str(format!("{kind}_matrix"))),
                    old_format: old_style.then(|| AttrV::Str(kind.to_string())),
                    shape_name: if old_style { "h5sparse_shape" } else { "shape" },
                    shape: Some(AttrV::I64s(vec![r as i64, c as i64])),
                    data: None,
                    indices: None,
                    indptr: None,
                };
                let mut shape = vec![r as i64, c as i64];
                let mut indptr_lie = None;
                let mut drop = None;
                for m in muts {
                    match m {
                        SparseMut::ShapeAttr(a) => spec.shape = Some(a),
                        SparseMut::ShapeRows(v) => {
                            shape[0] = v;
                            spec.shape = Some(AttrV::I64s(shape.clone()));
                        }
                        SparseMut::ShapeCols(v) => {
                            shape[1] = v;
                            spec.shape = Some(AttrV::I64s(shape.clone()));
                        }
                        SparseMut::IndptrSet(i, v) => {
                            let k = i % indptr.len();
                            indptr[k] = v;
                        }
                        SparseMut::IndptrReverse => indptr.reverse(),
                        SparseMut::IndptrLen(longer) => {
                            if longer {
                                indptr.push(*indptr.last().unwrap_or(&0));
                            } else {
                                indptr.pop();
                            }
                        }
                        SparseMut::IndexSet(i, v) => {
                            if !indices.is_empty() {
                                let k = i % indices.len();
                                indices[k] = v;
                            }
                        }
                        SparseMut::IndicesLen(longer) => {
                            if longer {
                                indices.push(0);
                            } else {
                                indices.pop();
                            }
                        }
                        SparseMut::DataLen(longer) => {
                            let mut v = match data_vals {
                                Vals::F64(v) => v,
                                other => {
                                    data_vals = other;
                                    continue;
                                }
                            };
                            if longer {
                                v.push(1.0);
                            } else {
                                v.pop();
                            }
                            data_vals = Vals::F64(v);
                        }
                        SparseMut::Drop(k) => drop = Some(k),
                        SparseMut::Enc(a) => spec.enc = Some(a),
                        SparseMut::NoEnc => {
                            spec.enc = None;
                            spec.old_format = None;
                        }
                        SparseMut::IndptrLie(e) => indptr_lie = Some(e),
                    }
                }
                spec.data = Some(Ds {
                    vals: data_vals,
                    shape: Shape::Flat,
                });
                spec.indices = Some(Ds {
                    vals: int_vals(indices, ity),
                    shape: Shape::Flat,
                });
                spec.indptr = Some(Ds {
                    vals: int_vals(indptr, pty),
                    shape: match indptr_lie {
                        Some(e) => Shape::Lie {
                            extent: vec![e],
                            deflate: false,
                        },
                        None => Shape::Flat,
                    },
                });
                match drop {
                    Some(0) => spec.data = None,
                    Some(1) => spec.indices = None,
                    Some(_) => spec.indptr = None,
                    None => {}
                }
                spec
            },
        )
        .boxed()
}

fn dense(r: usize, c: usize, d: u32) -> BoxedStrategy<Ds> {
    let shape = pick(
        d,
        Just(Shape::Dims(vec![r, c])).boxed(),
        vec![
            Just(Shape::Dims(vec![r])).boxed(),
            Just(Shape::Dims(vec![r, c, 2])).boxed(),
            Just(Shape::Scalar).boxed(),
            Just(Shape::Dims(vec![c, r])).boxed(),
            (select(BIG), any::<bool>())
                .prop_map(move |(e, deflate)| Shape::Lie {
                    extent: vec![r.max(1), e],
                    deflate,
                })
                .boxed(),
            (select(BIG), any::<bool>())
                .prop_map(move |(e, deflate)| Shape::Lie {
                    extent: vec![e, c.max(1)],
                    deflate,
                })
                .boxed(),
            (1usize..2000)
                .prop_map(move |e| Shape::Lie {
                    extent: vec![r.max(1), e],
                    deflate: true,
                })
                .boxed(),
        ],
    );
    (num_vals(r * c, d), shape)
        .prop_map(|(vals, shape)| Ds { vals, shape })
        .boxed()
}

fn matrix(r: usize, c: usize, d: u32) -> BoxedStrategy<MatSpec> {
    pick(
        d,
        prop_oneof![
            2 => dense(r, c, d).prop_map(MatSpec::Dense),
            3 => sparse(r, c, d).prop_map(MatSpec::Sparse),
        ]
        .boxed(),
        vec![
            Just(MatSpec::Missing).boxed(),
            Just(MatSpec::EmptyGroup).boxed(),
            frame_spec(r, d).prop_map(MatSpec::Frame).boxed(),
        ],
    )
}

fn member_name(d: u32) -> BoxedStrategy<String> {
    pick(
        d,
        prop_oneof![
            4 => select(&["counts", "X_pca", "X_umap", "spliced", "distances", "X_scfoundation"][..])
                .prop_map(str::to_string),
            1 => "[a-z_]{1,6}",
        ]
        .boxed(),
        vec![select(&["a b", "\u{e9}", "-", "0", "__categories"][..])
            .prop_map(str::to_string)
            .boxed()],
    )
}

fn uns_node(d: u32) -> BoxedStrategy<UnsNode> {
    let leaf = prop_oneof![
        4 => (0usize..4).prop_flat_map(move |n| ds_1d(num_vals(n, d), n, d)).prop_map(UnsNode::Ds),
        1 => (0usize..4).prop_flat_map(move |n| ds_1d(string_vals(n, d), n, d)).prop_map(UnsNode::Ds),
        2 => (0usize..4, 0usize..4).prop_flat_map(move |(r, c)| sparse(r, c, d)).prop_map(UnsNode::Sparse),
        1 => (0usize..3).prop_flat_map(move |n| frame_spec(n, d)).prop_map(UnsNode::Frame),
    ];
    leaf.prop_recursive(3, 12, 4, move |inner| {
        prop::collection::vec((member_name(d), inner), 0..4).prop_map(|mut v| {
            let mut seen = std::collections::HashSet::new();
            v.retain(|(n, _)| seen.insert(n.clone()));
            UnsNode::Group(v)
        })
    })
    .boxed()
}

const LINK_TARGETS: &[&str] = &[
    "/",
    "/uns",
    "/obs",
    "/var",
    "/X",
    "/raw",
    "/layers",
    "/nowhere",
    "/uns/loop",
];
const LINK_NAMES: &[&str] = &[
    "uns/loop",
    "uns/a/back",
    "raw",
    "layers/cycle",
    "obsm/link",
    "varm/link",
    "X",
    "uns/x",
    "extra",
];

fn links() -> Vec<BoxedStrategy<Extra>> {
    vec![
        (select(LINK_TARGETS), select(LINK_NAMES))
            .prop_map(|(t, n)| Extra::HardLink {
                target: t.into(),
                name: n.into(),
            })
            .boxed(),
        (select(LINK_TARGETS), select(LINK_NAMES))
            .prop_map(|(t, n)| Extra::SoftLink {
                target: t.into(),
                name: n.into(),
            })
            .boxed(),
        (
            select(&["in.h5ad", "missing.h5ad", "/dev/null"][..]),
            select(LINK_TARGETS),
            select(LINK_NAMES),
        )
            .prop_map(|(f, t, n)| Extra::ExternalLink {
                file: f.into(),
                target: t.into(),
                name: n.into(),
            })
            .boxed(),
        (
            select(&["obsm", "uns", "layers", "raw", "obsp", "varp", "misc"][..]),
            (0usize..4).prop_flat_map(|n| ds_1d(num_vals(n, 1), n, 1)),
        )
            .prop_map(|(n, d)| Extra::Top(n.into(), d))
            .boxed(),
    ]
}

fn extra(r: usize, c: usize, d: u32) -> BoxedStrategy<Extra> {
    let good = prop_oneof![
        3 => (member_name(d), matrix(r, c, d)).prop_map(|(n, m)| Extra::Layer(n, m)),
        3 => (member_name(d), around(r, d), 1usize..4)
            .prop_flat_map(move |(n, rr, k)| (Just(n), prop_oneof![
                3 => dense(rr, k, d).prop_map(MatSpec::Dense),
                1 => sparse(rr, k, d).prop_map(MatSpec::Sparse),
                1 => frame_spec(rr, d).prop_map(MatSpec::Frame),
            ]))
            .prop_map(|(n, m)| Extra::Obsm(n, m)),
        1 => around(r, d).prop_flat_map(move |rr| legacy(rr, d)).prop_map(Extra::ObsmLegacy),
        1 => (member_name(d), matrix(r, r, d)).prop_map(|(n, m)| Extra::Obsp(n, m)),
        1 => (member_name(d), dense(c, 2, d)).prop_map(|(n, x)| Extra::Varm(n, x)),
        4 => (member_name(d), uns_node(d)).prop_map(|(n, u)| Extra::Uns(n, u)),
        2 => (around(c, d), any::<bool>())
            .prop_flat_map(move |(cc, old)| (matrix(r, cc, d), frame_node(cc, d), Just(old)))
            .prop_map(|(x, var, old)| Extra::Raw { x, var, old }),
        1 => prop::collection::vec(
            (
                select(&["model_sha256", "gene_embedding", "input", "device", "n_cells", "pool"][..])
                    .prop_map(str::to_string),
                select(&["mean", "none", "abc", ""][..]).prop_map(str::to_string),
            ),
            0..4,
        )
        .prop_map(|mut kv| {
            let mut seen = std::collections::HashSet::new();
            kv.retain(|(k, _)| seen.insert(k.clone()));
            Extra::Provenance(kv)
        }),
    ]
    .boxed();
    pick(d, good, links())
}

fn choice() -> BoxedStrategy<Choice> {
    let default = Choice {
        layer: None,
        use_raw: false,
        gene_column: None,
    };
    let layer = select(&["counts", "X_pca", "spliced", "", "a/b", "..", "missing"][..])
        .prop_map(str::to_string);
    let col = select(&["gene_symbols", "n_genes", "cell_type", "ghost", "_index"][..])
        .prop_map(str::to_string);
    prop_oneof![
        16 => Just(default),
        2 => layer.clone().prop_map(|l| Choice { layer: Some(l), use_raw: false, gene_column: None }),
        2 => Just(Choice { layer: None, use_raw: true, gene_column: None }),
        2 => (col, any::<bool>()).prop_map(|(c, raw)| Choice { layer: None, use_raw: raw, gene_column: Some(c) }),
        1 => layer.prop_map(|l| Choice { layer: Some(l), use_raw: true, gene_column: None }),
    ]
    .boxed()
}

/// A whole file: `n_obs` x `n_vars` (0..5 each), clean (40%), lightly or heavily broken.
pub fn h5ad_case() -> BoxedStrategy<H5adCase> {
    (
        prop_oneof![1 => Just(0usize), 6 => 1usize..5],
        0usize..5,
        prop_oneof![4 => Just(0u32), 4 => Just(1u32), 2 => Just(4u32)],
    )
        .prop_flat_map(|(r, c, d)| {
            (
                Just((r, c)),
                frame_node(r, d),
                frame_node(c, d),
                matrix(r, c, d),
                prop::collection::vec(extra(r, c, d), 0..4),
                choice(),
                1usize..4,
            )
        })
        .prop_map(
            |((n_obs, n_vars), obs, var, x, mut extras, choice, cells_per_shard)| {
                // Two extras at one path (or one inside the other) cannot both be written.
                let mut taken: Vec<String> = vec![];
                extras.retain(|e| match e.path() {
                    None => true,
                    Some(p) => {
                        let clash = |q: &String| {
                            p == *q
                                || p.starts_with(&format!("{q}/"))
                                || q.starts_with(&format!("{p}/"))
                        };
                        if taken.iter().any(clash) {
                            false
                        } else {
                            taken.push(p);
                            true
                        }
                    }
                });
                H5adCase {
                    n_obs,
                    n_vars,
                    obs,
                    var,
                    x,
                    extras,
                    choice,
                    cells_per_shard,
                }
            },
        )
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// Hand-written cases (regression tests start from these)

impl H5adCase {
    /// A valid file: `n_obs` x `n_vars`, obs/var with an index only, dense float32 `X` of ones,
    /// no extras, default matrix choice, one cell per shard.
    pub fn minimal(n_obs: usize, n_vars: usize) -> Self {
        let frame = |prefix: &str, n: usize| {
            FrameNode::Group(FrameSpec {
                encoding: Some(AttrV::Str("dataframe".into())),
                index_attr: Some(AttrV::Str("_index".into())),
                index_name: "_index".into(),
                index: Some(Ds {
                    vals: Vals::Str((0..n).map(|i| format!("{prefix}{i}")).collect()),
                    shape: Shape::Flat,
                }),
                columns: vec![],
                column_order: Some(AttrV::StrList(vec![])),
            })
        };
        H5adCase {
            n_obs,
            n_vars,
            obs: frame("cell", n_obs),
            var: frame("gene", n_vars),
            x: MatSpec::Dense(Ds {
                vals: Vals::F32(vec![1.0; n_obs * n_vars]),
                shape: Shape::Dims(vec![n_obs, n_vars]),
            }),
            extras: vec![],
            choice: Choice {
                layer: None,
                use_raw: false,
                gene_column: None,
            },
            cells_per_shard: 1,
        }
    }

    pub fn with(mut self, e: Extra) -> Self {
        self.extras.push(e);
        self
    }
}

impl SparseSpec {
    /// A consistent all-zero CSR (`csc` false) or CSC group of shape `shape` whose shape attribute
    /// then says `declared`.
    pub fn empty(csc: bool, shape: (usize, usize), declared: Vec<i64>) -> Self {
        let major = if csc { shape.1 } else { shape.0 };
        SparseSpec {
            enc: Some(AttrV::Str(
                if csc { "csc_matrix" } else { "csr_matrix" }.into(),
            )),
            old_format: None,
            shape_name: "shape",
            shape: Some(AttrV::I64s(declared)),
            data: Some(Ds {
                vals: Vals::F32(vec![]),
                shape: Shape::Flat,
            }),
            indices: Some(Ds {
                vals: Vals::I64(vec![]),
                shape: Shape::Flat,
            }),
            indptr: Some(Ds {
                vals: Vals::I64(vec![0; major + 1]),
                shape: Shape::Flat,
            }),
        }
    }
}
