//! Row-wise operations on whole AnnData files, keeping every dtype: take a range of cells (split) or
//! stack files (merge). obs, X, layers, raw/X and obsm follow the cells; var, varm, varp and uns come
//! from the first file; obsp (cell x cell) is dropped. Inputs may be in any layout anndata reads; the
//! output is in the current encoding.

use std::collections::{BTreeSet, HashSet};
use std::ops::Range;

use anyhow::{bail, Context, Result};
use hdf5::types::TypeDescriptor;
use hdf5::{File, Group};

use super::elem::{self, encoding, set_encoding, Block};
use super::frame::{read_compound, Frame};
use super::sparse::{self, is_sparse, Matrix};

/// What happens to the cells: a range of one file, or all cells of several files in order.
pub enum RowOp {
    Slice(Range<usize>),
    Concat,
}

/// Number of cells of an AnnData file (from its obs index).
pub fn n_obs(f: &File) -> Result<usize> {
    Ok(Frame::read_index(f, "obs")?.len())
}

fn apply_frames(frames: Vec<Frame>, op: &RowOp) -> Result<Frame> {
    match op {
        RowOp::Slice(r) => frames[0].slice(r.clone()),
        RowOp::Concat => Frame::concat(&frames),
    }
}

fn apply_blocks(blocks: Vec<Block>, op: &RowOp) -> Result<Block> {
    match op {
        RowOp::Slice(r) => blocks[0].slice(r.clone()),
        RowOp::Concat => elem::concat(&blocks),
    }
}

/// A cells x features element (dense, sparse or a dataframe) at `path` of every source.
fn rows_element(
    srcs: &[File],
    counts: &[usize],
    path: &str,
    dst: &Group,
    name: &str,
    op: &RowOp,
) -> Result<()> {
    let first = &srcs[0];
    let is_frame = first.group(path).is_ok_and(|g| encoding(&g) == "dataframe");
    if is_frame {
        let frames = srcs
            .iter()
            .map(|f| Frame::read(f, path))
            .collect::<Result<Vec<_>>>()?;
        for (fr, &n) in frames.iter().zip(counts) {
            if fr.n_rows() != n {
                bail!("has {} rows but there are {n} cells", fr.n_rows());
            }
        }
        return apply_frames(frames, op)?.write(dst, name);
    }
    let mats = srcs
        .iter()
        .zip(counts)
        .map(|(f, &n)| Matrix::open(f, path, n))
        .collect::<Result<Vec<_>>>()?;
    if mats[0].is_dense() {
        let blocks = match op {
            RowOp::Slice(r) => vec![mats[0].dense_rows(r.clone())?],
            RowOp::Concat => mats
                .iter()
                .zip(counts)
                .map(|(m, &n)| m.dense_rows(0..n))
                .collect::<Result<_>>()?,
        };
        elem::write_array(dst, name, &apply_blocks(blocks, &RowOp::Concat)?)?;
        return Ok(());
    }
    let parts = match op {
        RowOp::Slice(r) => vec![mats[0].sparse_rows(r.clone())?],
        RowOp::Concat => mats
            .iter()
            .zip(counts)
            .map(|(m, &n)| m.sparse_rows(0..n))
            .collect::<Result<_>>()?,
    };
    let n_cols = mats[0].shape().1;
    sparse::write_csr(dst, name, &parts, n_cols)
}

fn dict(parent: &Group, name: &str) -> Result<Group> {
    if let Ok(g) = parent.group(name) {
        return Ok(g);
    }
    let g = parent.create_group(name)?;
    set_encoding(&g, "dict", "0.1.0")?;
    Ok(g)
}

/// Members of group `key` in every file; files must agree on them when merging.
fn members(srcs: &[File], key: &str) -> Result<Vec<String>> {
    let list = |f: &File| -> Result<BTreeSet<String>> {
        Ok(match f.group(key) {
            Ok(g) => g.member_names()?.into_iter().collect(),
            Err(_) => BTreeSet::new(),
        })
    };
    let first = list(&srcs[0])?;
    for (k, f) in srcs.iter().enumerate().skip(1) {
        let other = list(f)?;
        if other != first {
            bail!(
                "{key} keys differ between files: file 1 has [{}], file {} has [{}]",
                first.iter().cloned().collect::<Vec<_>>().join(", "),
                k + 1,
                other.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok(first.into_iter().collect())
}

/// obsm or layers: every member follows the cells. anndata 0.6 stored obsm as one compound dataset
/// (one field per embedding); it is written as a dict of arrays.
fn rows_dict(srcs: &[File], counts: &[usize], key: &str, dst: &File, op: &RowOp) -> Result<()> {
    let out = dict(dst, key)?;
    if srcs[0].dataset(key).is_ok() {
        let per_file = srcs
            .iter()
            .map(|f| read_compound(&f.dataset(key)?))
            .collect::<Result<Vec<_>>>()?;
        for (j, (name, _)) in per_file[0].iter().enumerate() {
            let blocks = per_file
                .iter()
                .zip(counts)
                .map(|(fields, &n)| {
                    let (other, b) = fields.get(j).context("fields differ between files")?;
                    if other != name || b.len() != n {
                        bail!(
                            "{key}: field '{name}' differs between files or has the wrong length"
                        );
                    }
                    Ok(b.clone())
                })
                .collect::<Result<Vec<_>>>()?;
            elem::write_array(&out, name, &apply_blocks(blocks, op)?)?;
        }
        return Ok(());
    }
    for name in members(srcs, key)? {
        let path = format!("{key}/{name}");
        rows_element(srcs, counts, &path, &out, &name, op).with_context(|| path.clone())?;
    }
    Ok(())
}

/// Copies `name` of `src` into `dst` in the current encoding: dataframes are rewritten, dicts recursed,
/// datasets and sparse matrices copied (reference attributes dropped). Soft and external links are
/// not followed and a group reached twice (a hard-link cycle) is copied once, so a malformed file
/// cannot make the copy recurse without end.
pub fn copy_tree(src: &Group, name: &str, dst: &Group, dst_name: &str) -> Result<()> {
    let mut visited = vec![];
    if let Ok(root) = src.file().and_then(|f| f.loc_info()) {
        visited.push(root.token);
    }
    copy_tree_in(src, name, dst, dst_name, &mut visited)
}

fn copy_tree_in(
    src: &Group,
    name: &str,
    dst: &Group,
    dst_name: &str,
    visited: &mut Vec<hdf5::LocationToken>,
) -> Result<()> {
    if let Ok(ds) = src.dataset(name) {
        if matches!(
            ds.dtype()?.to_descriptor(),
            Ok(TypeDescriptor::Reference(_))
        ) {
            log::warn!("{}: object references cannot be copied; dropped", ds.name());
            return Ok(());
        }
        return super::copy_object(src, name, dst, dst_name);
    }
    let g = src.group(name)?;
    let token = g.loc_info()?.token;
    if visited.contains(&token) {
        log::warn!("{}: group already copied (a link cycle); skipped", g.name());
        return Ok(());
    }
    visited.push(token);
    let enc = encoding(&g);
    if enc == "dataframe" || g.link_exists("__categories") {
        let f = g.file()?;
        return Frame::read(&f, &g.name()).and_then(|fr| fr.write(dst, dst_name));
    }
    if is_sparse(&g) {
        // Copied as stored (no need to read it); old h5sparse attributes get their current names.
        super::copy_object(src, name, dst, dst_name)?;
        let out = dst.group(dst_name)?;
        if enc.is_empty() {
            let kind = if elem::str_attr(&g, "h5sparse_format").unwrap_or_default() == "csc" {
                "csc_matrix"
            } else {
                "csr_matrix"
            };
            set_encoding(&out, kind, "0.1.0")?;
            if let Ok(shape) = g.attr("h5sparse_shape").and_then(|a| a.read_raw::<i64>()) {
                if shape.len() == 2 && out.attr("shape").is_err() {
                    out.new_attr::<i64>()
                        .shape(2)
                        .create("shape")?
                        .write(&shape)?;
                }
            }
        }
        return Ok(());
    }
    let out = dst.create_group(dst_name)?;
    elem::copy_attrs(&g, &out, &[])?;
    for (m, hard) in hard_members(&g)? {
        if !hard {
            log::warn!("{}/{m}: soft or external link not copied", g.name());
            continue;
        }
        copy_tree_in(&g, &m, &out, &m, visited).with_context(|| format!("{}/{m}", g.name()))?;
    }
    Ok(())
}

/// A group's members with whether each is a hard link (soft and external links are not followed).
fn hard_members(g: &Group) -> Result<Vec<(String, bool)>> {
    let mut out = vec![];
    g.iter_visit_default(|name, info| {
        out.push((name.to_string(), info.link_type == hdf5::LinkType::Hard));
        Ok(())
    })?;
    Ok(out)
}

/// Writes the cells selected by `op` from `srcs` into the new file `dst`.
pub fn write_rows(srcs: &[File], dst: &File, op: &RowOp) -> Result<()> {
    let first = &srcs[0];
    set_encoding(dst, "anndata", "0.1.0")?;
    let counts = srcs
        .iter()
        .map(n_obs)
        .collect::<Result<Vec<_>>>()
        .context("obs")?;
    if let RowOp::Slice(r) = op {
        if r.end > counts[0] || r.start > r.end {
            bail!("cells {r:?} out of range 0..{}", counts[0]);
        }
    }
    let obs = srcs
        .iter()
        .map(|f| Frame::read(f, "obs"))
        .collect::<Result<Vec<_>>>()
        .context("obs")?;
    let obs = apply_frames(obs, op).context("obs")?;
    if matches!(op, RowOp::Concat) {
        let mut seen = HashSet::new();
        let dups = obs
            .index
            .iter()
            .filter(|n| !seen.insert(n.as_str()))
            .count();
        if dups > 0 {
            log::warn!("{dups} obs names occur more than once in the merged file; anndata will warn too (obs_names_make_unique)");
        }
    }
    obs.write(dst, "obs").context("obs")?;

    // var must be the same genes in the same order in every file, or the columns would not line up.
    for var in ["var", "raw/var", "raw.var"] {
        if !first.link_exists(var.split('/').next().unwrap_or(var)) || !first.link_exists(var) {
            continue;
        }
        let names = Frame::read_index(first, var).with_context(|| var.to_string())?;
        for (k, f) in srcs.iter().enumerate().skip(1) {
            if Frame::read_index(f, var).with_context(|| var.to_string())? != names {
                bail!("{var} differs between file 1 and file {}: the files do not have the same genes in the same order", k + 1);
            }
        }
    }
    // The files must hold the same kinds of per-cell data, or part of the merge would silently lack it.
    for key in ["X", "raw", "raw.X", "layers", "obsm"] {
        let has: Vec<bool> = srcs.iter().map(|f| f.link_exists(key)).collect();
        if let Some(k) = has.iter().position(|&h| h != has[0]) {
            bail!(
                "'{key}' is {} file 1 but {} file {}",
                if has[0] { "in" } else { "missing from" },
                if has[k] { "in" } else { "missing from" },
                k + 1
            );
        }
        if has[0] && (key == "layers" || key == "obsm") && srcs[0].group(key).is_ok() {
            members(srcs, key)?;
        }
    }
    let root = first.member_names()?;
    for key in &root {
        match key.as_str() {
            "obs" => {}
            "var" => Frame::read(first, "var")
                .and_then(|f| f.write(dst, "var"))
                .context("var")?,
            "X" => rows_element(srcs, &counts, "X", dst, "X", op).context("X")?,
            "layers" | "obsm" => {
                rows_dict(srcs, &counts, key, dst, op).with_context(|| key.clone())?
            }
            "raw" => {
                let g = dst.create_group("raw")?;
                for name in first.group("raw")?.member_names()? {
                    let path = format!("raw/{name}");
                    if name == "X" {
                        rows_element(srcs, &counts, &path, &g, "X", op).context("raw/X")?;
                    } else {
                        copy_tree(&first.group("raw")?, &name, &g, &name)
                            .with_context(|| path.clone())?;
                    }
                }
            }
            // anndata 0.6 kept raw beside X; written as raw/ as anndata does now.
            "raw.X" | "raw.var" | "raw.varm" => {
                let g = dict_plain(dst, "raw")?;
                let sub = &key[4..];
                if sub == "X" {
                    rows_element(srcs, &counts, key, &g, "X", op).context("raw.X")?;
                } else if sub == "var" {
                    Frame::read(first, key)
                        .and_then(|f| f.write(&g, "var"))
                        .context("raw.var")?;
                } else {
                    copy_tree(first, key, &g, sub).with_context(|| key.clone())?;
                }
            }
            "obsp" => {
                dict(dst, "obsp")?;
                if !first.group("obsp")?.member_names()?.is_empty() {
                    log::warn!(
                        "obsp (cell x cell graphs) cannot follow a split or merge and is dropped"
                    );
                }
            }
            _ => copy_tree(first, key, dst, key).with_context(|| key.clone())?,
        }
    }
    // anndata 0.6 files may lack these; current readers expect them.
    for g in ["layers", "obsm", "obsp", "varm", "varp", "uns"] {
        dict(dst, g)?;
    }
    Ok(())
}

fn dict_plain(parent: &Group, name: &str) -> Result<Group> {
    match parent.group(name) {
        Ok(g) => Ok(g),
        Err(_) => Ok(parent.create_group(name)?),
    }
}

/// Replaces `dst`'s dataset at `path` by the mean of the sources' (each a mean over its `counts[i]`
/// cells), so per-shard mean gene embeddings combine into the mean over all cells.
pub fn weighted_mean(srcs: &[File], counts: &[usize], path: &str, dst: &File) -> Result<()> {
    let mut acc: Option<ndarray::ArrayD<f64>> = None;
    for (f, &n) in srcs.iter().zip(counts) {
        let b = elem::read_rows(&f.dataset(path)?, None)?;
        let shape = b.shape();
        let vals = b.to_f64()?;
        let a = ndarray::ArrayD::from_shape_vec(shape, vals)?.mapv(|v| v * n as f64);
        acc = Some(match acc {
            None => a,
            Some(s) if s.shape() == a.shape() => s + a,
            Some(s) => bail!(
                "{path} has shape {:?} in one file and {:?} in another",
                s.shape(),
                a.shape()
            ),
        });
    }
    let total: usize = counts.iter().sum();
    let mean = acc
        .context("no files")?
        .mapv(|v| (v / total.max(1) as f64) as f32);
    dst.dataset(path)?.write(&mean)?;
    Ok(())
}
