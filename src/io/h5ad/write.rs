//! Writes new AnnData files in the current encoding. Object modification times are not recorded, so
//! the same content gives the same bytes.

use std::path::Path;

use anyhow::{Context, Result};
use hdf5::{Dataset, File, Group};

use super::elem::set_encoding;
use super::frame::Frame;

/// Where the output's obs comes from.
pub enum ObsSource<'a> {
    /// An input's obs dataframe (every column kept, written in the current encoding).
    Frame(&'a Frame),
    /// A fresh dataframe holding only these names.
    Names(&'a [String]),
}

pub struct H5adWriter {
    file: File,
}

impl H5adWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let file = super::create_file(path)?;
        set_encoding(&file, "anndata", "0.1.0")?;
        Ok(Self { file })
    }

    pub fn write_obs(&self, obs: ObsSource) -> Result<()> {
        match obs {
            ObsSource::Names(names) => self.write_index_frame("obs", names),
            ObsSource::Frame(f) => f.write(&self.file, "obs").context("writing obs"),
        }
    }

    pub fn write_var(&self, names: &[String]) -> Result<()> {
        self.write_index_frame("var", names)
    }

    fn write_index_frame(&self, name: &str, index: &[String]) -> Result<()> {
        Frame {
            index_name: "_index".into(),
            index: index.to_vec(),
            columns: vec![],
        }
        .write(&self.file, name)
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
        super::write_uns_strings(&self.file, name, entries)
    }

    /// Writes `uns/<name>` as an array (e.g. a string array of class names).
    pub fn write_uns_array(&self, name: &str, values: &super::elem::Block) -> Result<()> {
        let uns = self.dict("uns")?;
        if uns.link_exists(name) {
            uns.unlink(name)?;
        }
        super::elem::write_array(&uns, name, values)?;
        Ok(())
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
