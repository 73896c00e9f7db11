//! AnnData `.h5ad` through raw HDF5, in every layout anndata reads (current, the anndata 0.7 layout with
//! `__categories` and object references, the anndata 0.6 compound dataframes, `raw/` and `raw.X`, old
//! `h5sparse` attributes); everything written is in the current anndata encoding.
//!
//! - `elem`: typed arrays, strings, attributes and the allocation guard;
//! - `sparse`: dense and sparse matrices, one validated path;
//! - `frame`: dataframes;
//! - `read`: the streaming cell reader; `write`: the output writer; `rows`: split and merge.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use hdf5::types::{TypeDescriptor, VarLenAscii, VarLenUnicode};
use hdf5::File;

pub mod elem;
pub mod frame;
pub mod read;
pub mod rows;
pub mod sparse;
pub mod write;

pub use frame::Frame;
pub use read::{H5adReader, MatrixChoice};
pub use write::{ArrayOut, H5adWriter, ObsSource};

/// Opens an existing h5ad for reading (regular files only: a FIFO or device would block or never end).
pub fn open_file(path: &Path) -> Result<File> {
    let meta =
        std::fs::metadata(path).map_err(|e| anyhow!("{}: cannot open: {e}", path.display()))?;
    if !meta.is_file() {
        bail!("{}: not a regular file", path.display());
    }
    File::open(path).map_err(|e| {
        anyhow!(
            "{}: cannot open as HDF5/h5ad (truncated or not an h5ad file): {e}",
            path.display()
        )
    })
}

/// Creates an HDF5 file without object timestamps, so equal content gives equal bytes.
pub fn create_file(path: &Path) -> Result<File> {
    File::with_options()
        .with_fcpl(|p| p.obj_track_times(false))
        .create(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Replaces `uns/<name>` with a dict of strings, creating `uns` when missing.
pub fn write_uns_strings(file: &File, name: &str, entries: &[(String, String)]) -> Result<()> {
    let uns = match file.group("uns") {
        Ok(g) => g,
        Err(_) => {
            let g = file.create_group("uns")?;
            elem::set_encoding(&g, "dict", "0.1.0")?;
            g
        }
    };
    if uns.link_exists(name) {
        uns.unlink(name)?;
    }
    let g = uns.create_group(name)?;
    elem::set_encoding(&g, "dict", "0.1.0")?;
    for (k, v) in entries {
        let ds = g
            .new_dataset::<VarLenUnicode>()
            .shape(())
            .create(k.as_str())?;
        ds.write_scalar(&elem::vlen_lossy(v.as_bytes()))?;
        elem::set_encoding(&ds, "string", "0.2.0")?;
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
        let Ok(ds) = g.dataset(&k) else { continue };
        if ds.ndim() != 0 {
            continue;
        }
        let v = match ds.dtype()?.to_descriptor()? {
            TypeDescriptor::VarLenUnicode => {
                String::from_utf8_lossy(ds.read_scalar::<VarLenUnicode>()?.as_bytes()).into_owned()
            }
            TypeDescriptor::VarLenAscii => {
                String::from_utf8_lossy(ds.read_scalar::<VarLenAscii>()?.as_bytes()).into_owned()
            }
            _ => continue,
        };
        out.push((k, v));
    }
    Ok(Some(out))
}

/// HDF5's own deep copy of an object between open files. Object-reference attributes of the copy are
/// removed: they would point nowhere in the new file.
pub(crate) fn copy_object(
    src: &hdf5::Group,
    src_name: &str,
    dst: &hdf5::Group,
    dst_name: &str,
) -> Result<()> {
    let c_src = std::ffi::CString::new(src_name)?;
    let c_dst = std::ffi::CString::new(dst_name)?;
    // SAFETY: both ids are valid open HDF5 locations for the duration of the call; default property
    // lists. Under the hdf5 crate's library lock, as its own calls (embed reads on another thread).
    let rc = hdf5::sync::sync(|| unsafe {
        hdf5_sys::h5o::H5Ocopy(
            src.id(),
            c_src.as_ptr(),
            dst.id(),
            c_dst.as_ptr(),
            hdf5_sys::h5p::H5P_DEFAULT,
            hdf5_sys::h5p::H5P_DEFAULT,
        )
    });
    if rc < 0 {
        bail!("cannot copy '{src_name}'");
    }
    if let Ok(ds) = dst.dataset(dst_name) {
        for a in ds.attr_names()? {
            let is_ref = ds
                .attr(&a)
                .and_then(|x| x.dtype())
                .and_then(|t| t.to_descriptor())
                .is_ok_and(|d| matches!(d, TypeDescriptor::Reference(_)));
            if is_ref {
                log::warn!("{}: reference attribute '{a}' dropped", ds.name());
                ds.delete_attr(&a)?;
            }
        }
    }
    Ok(())
}
