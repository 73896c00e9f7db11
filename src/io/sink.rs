//! Where a step's per-cell results go: `create` opens the output (a temporary file beside the target),
//! `push` appends rows in cell order, `finish` writes the provenance (h5ad `uns`, or a `.npy`
//! sidecar) and moves everything into place together. Dropped without `finish`, nothing appears.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::h5ad::{ArrayOut, Frame, H5adWriter, ObsSource};
use super::npy::NpyWriter;
use super::Format;
use crate::fsutil::{self, PendingFile};

/// What the rows become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// One output row per cell.
    Rows,
    /// The mean over cells (one row of the full shape).
    Mean,
}

/// An output file's layout.
pub struct OutputSpec<'a> {
    pub path: &'a Path,
    /// Shape of the array written: `[n_cells, ...]`, or for [`Reduce::Mean`] the mean's shape.
    pub shape: Vec<usize>,
    /// h5ad location of the array (e.g. `obsm/X_scfoundation`, `X`, `varm/X_scfoundation`).
    pub h5ad_key: &'a str,
    /// h5ad obs: the input's dataframe, or these cell names.
    pub obs: Option<&'a Frame>,
    pub cell_ids: &'a [String],
    /// h5ad var names.
    pub var: &'a [String],
    pub reduce: Reduce,
    /// Files the output must not overwrite.
    pub inputs: &'a [&'a Path],
}

enum Target {
    Npy(NpyWriter),
    H5ad(H5adWriter, ArrayOut),
    /// Summed here, written at `finish`; the h5ad frames are already written.
    Mean {
        acc: Vec<f64>,
        count: usize,
        h5ad: Option<H5adWriter>,
    },
}

pub struct Sink {
    format: Format,
    target: Target,
    pending: PendingFile,
    path: PathBuf,
    shape: Vec<usize>,
    h5ad_key: String,
    row_len: usize,
    rows: usize,
}

impl Sink {
    pub fn create(spec: OutputSpec) -> Result<Sink> {
        let format = Format::of_output(spec.path)?;
        fsutil::refuse_input_as_output(spec.path, spec.inputs)?;
        if format == Format::Npy {
            fsutil::refuse_input_as_output(&sidecar(spec.path), spec.inputs)?;
        }
        let row_len: usize = match spec.reduce {
            Reduce::Rows => spec.shape[1..].iter().product(),
            Reduce::Mean => spec.shape.iter().product(),
        };
        let pending = PendingFile::new(spec.path)?;
        let h5ad = |p: &Path| -> Result<H5adWriter> {
            let w = H5adWriter::create(p)?;
            match spec.obs {
                Some(f) => w.write_obs(ObsSource::Frame(f))?,
                None => w.write_obs(ObsSource::Names(spec.cell_ids))?,
            }
            w.write_var(spec.var)?;
            w.ensure_dicts()?;
            Ok(w)
        };
        let target = match (spec.reduce, format) {
            (Reduce::Mean, Format::H5ad) => Target::Mean {
                acc: vec![0.0; row_len],
                count: 0,
                h5ad: Some(h5ad(pending.path())?),
            },
            (Reduce::Mean, _) => Target::Mean {
                acc: vec![0.0; row_len],
                count: 0,
                h5ad: None,
            },
            (Reduce::Rows, Format::Npy) => {
                Target::Npy(NpyWriter::create(pending.path(), &spec.shape)?)
            }
            (Reduce::Rows, _) => {
                let w = h5ad(pending.path())?;
                let arr = w.create_array(spec.h5ad_key, &spec.shape)?;
                Target::H5ad(w, arr)
            }
        };
        log::debug!(
            "output {}: {format:?}, shape {:?}, {:?}",
            spec.path.display(),
            spec.shape,
            spec.reduce
        );
        Ok(Sink {
            format,
            target,
            pending,
            path: spec.path.to_path_buf(),
            shape: spec.shape,
            h5ad_key: spec.h5ad_key.to_string(),
            row_len,
            rows: 0,
        })
    }

    /// Appends result rows in cell order.
    pub fn push(&mut self, rows: &[Vec<f32>]) -> Result<()> {
        if let Some(r) = rows.iter().find(|r| r.len() != self.row_len) {
            bail!(
                "internal error: result row of {} values, expected {}",
                r.len(),
                self.row_len
            );
        }
        match &mut self.target {
            Target::Npy(w) => {
                for r in rows {
                    w.write(r)?;
                }
            }
            Target::H5ad(_, a) => {
                let flat: Vec<f32> = rows.concat();
                a.append_rows(&flat)?;
            }
            Target::Mean { acc, count, .. } => {
                for r in rows {
                    for (a, v) in acc.iter_mut().zip(r) {
                        *a += *v as f64;
                    }
                }
                *count += rows.len();
            }
        }
        self.rows += rows.len();
        Ok(())
    }

    /// Writes the provenance and moves the output (and its sidecar) into place together.
    pub fn finish(self, provenance: &[(String, String)]) -> Result<()> {
        let Sink {
            format,
            target,
            pending,
            path,
            shape,
            h5ad_key,
            rows,
            ..
        } = self;
        match target {
            Target::Npy(w) => w.finish()?,
            Target::H5ad(w, _) => {
                w.write_uns_strings("scfoundation", provenance)?;
                w.close()?;
            }
            Target::Mean { acc, count, h5ad } => {
                let mean: Vec<f32> = acc
                    .iter()
                    .map(|s| (s / count.max(1) as f64) as f32)
                    .collect();
                match h5ad {
                    Some(w) => {
                        w.create_array(&h5ad_key, &shape)?.append_rows(&mean)?;
                        w.write_uns_strings("scfoundation", provenance)?;
                        w.close()?;
                    }
                    None => {
                        let mut w = NpyWriter::create(pending.path(), &shape)?;
                        w.write(&mean)?;
                        w.finish()?;
                    }
                }
            }
        }
        let mut outputs = vec![pending];
        if format == Format::Npy {
            let side = sidecar(&path);
            let json: serde_json::Map<String, serde_json::Value> = provenance
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            let p = PendingFile::new(&side)?;
            std::fs::write(p.path(), serde_json::to_string_pretty(&json)? + "\n")
                .with_context(|| format!("writing {}", side.display()))?;
            outputs.push(p);
        }
        PendingFile::commit_all(outputs)?;
        log::info!(
            "{}: written ({rows} cells, shape {shape:?})",
            path.display()
        );
        Ok(())
    }
}

/// The provenance sidecar of a `.npy` output.
pub fn sidecar(npy: &Path) -> PathBuf {
    npy.with_extension("npy.provenance.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(path: &'a Path, ids: &'a [String], reduce: Reduce) -> OutputSpec<'a> {
        OutputSpec {
            path,
            shape: if reduce == Reduce::Rows {
                vec![2, 3]
            } else {
                vec![3]
            },
            h5ad_key: "obsm/X_test",
            obs: None,
            cell_ids: ids,
            var: &[],
            reduce,
            inputs: &[],
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn nothing_appears_until_finish_and_nothing_stays_when_dropped() {
        let d = tempfile::tempdir().unwrap();
        let ids = vec!["a".to_string(), "b".to_string()];
        for name in ["o.npy", "o.h5ad"] {
            let out = d.path().join(name);
            let mut s = Sink::create(spec(&out, &ids, Reduce::Rows)).unwrap();
            s.push(&[vec![1.0, 2.0, 3.0]]).unwrap();
            assert!(!out.exists(), "{name} visible before finish");
            drop(s);
            assert!(names(d.path()).is_empty(), "{name}: {:?}", names(d.path()));
        }
    }

    #[test]
    fn npy_with_sidecar_and_mean() {
        let d = tempfile::tempdir().unwrap();
        let ids = vec!["a".to_string(), "b".to_string()];
        let out = d.path().join("o.npy");
        let mut s = Sink::create(spec(&out, &ids, Reduce::Rows)).unwrap();
        s.push(&[vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]).unwrap();
        assert!(s.push(&[vec![1.0]]).is_err(), "wrong row length");
        s.finish(&[("k".into(), "v".into())]).unwrap();
        assert_eq!(names(d.path()), vec!["o.npy", "o.npy.provenance.json"]);
        let (shape, v) = crate::io::npy::read_f32(&out).unwrap();
        assert_eq!((shape, v), (vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));

        let out = d.path().join("m.npy");
        let mut s = Sink::create(spec(&out, &ids, Reduce::Mean)).unwrap();
        s.push(&[vec![1.0, 2.0, 3.0]]).unwrap();
        s.push(&[vec![3.0, 4.0, 5.0]]).unwrap();
        s.finish(&[]).unwrap();
        assert_eq!(
            crate::io::npy::read_f32(&out).unwrap().1,
            vec![2.0, 3.0, 4.0]
        );
    }

    #[test]
    fn refuses_an_input_as_output() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("o.h5ad");
        std::fs::write(&out, b"x").unwrap();
        let ids = vec!["a".to_string(), "b".to_string()];
        let mut sp = spec(&out, &ids, Reduce::Rows);
        let inputs = [out.as_path()];
        sp.inputs = &inputs;
        assert!(Sink::create(sp).is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"x");
    }
}
