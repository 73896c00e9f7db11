//! Training cells from h5ad files, streamed: a first pass indexes the cells that pass QC by
//! (file, row); batches then read just their rows. Genes are aligned to the model's 19,264 by name,
//! as for `embed`. The held-out validation set and the per-epoch order are seeded and deterministic.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::rng::Rng;
use crate::data::{AlignedCell, CellStream, GeneAlignment, GeneVocab, N_GENES};
use crate::io::h5ad::sparse::Matrix;
use crate::io::{Format, Input, MatrixChoice};

/// A cell by position: file index and row within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CellRef {
    pub file: u32,
    pub row: u32,
}

/// What the first pass found in one file.
#[derive(Debug, Clone)]
pub struct FileSummary {
    pub path: PathBuf,
    pub sha256: String,
    pub n_cells: usize,
    pub n_eligible: usize,
    pub n_genes_mapped: usize,
    /// Some value was not a whole number (the matrix is probably normalised, not raw counts).
    pub non_integer: bool,
}

struct OpenFile {
    alignment: GeneAlignment,
    matrix: Matrix,
    // Keeps the HDF5 file open while `matrix` reads from it.
    _file: hdf5::File,
}

pub struct Dataset {
    files: Vec<OpenFile>,
    pub summaries: Vec<FileSummary>,
    /// Cells passing QC, in file order.
    pub cells: Vec<CellRef>,
}

/// Where the chosen matrix lives (the same choice `H5adReader` makes).
fn matrix_path(file: &hdf5::File, choice: &MatrixChoice) -> String {
    match (&choice.layer, choice.use_raw) {
        (Some(l), _) => format!("layers/{l}"),
        (None, true) if file.link_exists("raw") => "raw/X".to_string(),
        (None, true) => "raw.X".to_string(),
        (None, false) => "X".to_string(),
    }
}

impl Dataset {
    /// Opens every file and indexes the cells with more than `min_genes` expressed model genes and a
    /// total count above 1 (so T = log10(total) > 0).
    pub fn open(
        paths: &[PathBuf],
        choice: &MatrixChoice,
        min_genes: usize,
        min_mapped: f64,
    ) -> Result<Self> {
        if paths.is_empty() {
            bail!("no training data given");
        }
        let vocab = GeneVocab::builtin();
        let mut files = vec![];
        let mut summaries = vec![];
        let mut cells = vec![];
        for (fi, path) in paths.iter().enumerate() {
            if Format::of_input(path)? != Format::H5ad {
                bail!("{}: training data must be .h5ad", path.display());
            }
            let sha256 = crate::weights::verify::sha256_file(path)?;
            let input = Input::open(path, choice)?;
            let n_cells = input.n_cells();
            if n_cells > u32::MAX as usize {
                bail!("{}: too many cells", path.display());
            }
            let mut stream = CellStream::new(input, &vocab, false, min_mapped)?;
            let mut n_eligible = 0;
            let mut non_integer = false;
            loop {
                let chunk = stream
                    .next_cells(4096)
                    .with_context(|| format!("indexing {}", path.display()))?;
                if chunk.is_empty() {
                    break;
                }
                for (row, cell) in chunk {
                    non_integer |= cell.values.iter().any(|v| v.fract() != 0.0);
                    let expressed = cell.values.iter().filter(|v| **v > 0.0).count();
                    if expressed > min_genes && cell.sum() > 1.0 {
                        cells.push(CellRef {
                            file: fi as u32,
                            row: row as u32,
                        });
                        n_eligible += 1;
                    }
                }
            }
            if non_integer {
                log::warn!(
                    "{}: the matrix holds non-integer values; pretraining expects raw counts (try --layer counts or --use-raw)",
                    path.display()
                );
            }
            log::info!(
                "{}: {n_eligible} of {n_cells} cells pass QC (more than {min_genes} expressed genes)",
                path.display()
            );
            let alignment = stream.alignment.clone();
            // The first pass's reader goes before the batch reader opens (a CSC matrix is held whole).
            drop(stream);
            let file = crate::io::h5ad::open_file(path)?;
            let matrix = Matrix::open(&file, &matrix_path(&file, choice), n_cells)
                .with_context(|| format!("{}: opening the matrix", path.display()))?;
            summaries.push(FileSummary {
                path: path.clone(),
                sha256,
                n_cells,
                n_eligible,
                n_genes_mapped: alignment.n_genes_covered,
                non_integer,
            });
            files.push(OpenFile {
                alignment,
                matrix,
                _file: file,
            });
        }
        if cells.is_empty() {
            bail!("no cell passes QC (more than {min_genes} expressed genes); lower --min-genes?");
        }
        Ok(Self {
            files,
            summaries,
            cells,
        })
    }

    /// Reads one cell, aligned to the model genes (duplicate columns summed).
    pub fn read(&self, c: CellRef) -> Result<AlignedCell> {
        let f = &self.files[c.file as usize];
        let row = c.row as usize;
        let rows = f.matrix.f64_rows(row..row + 1)?;
        let (cols, vals) = rows.into_iter().next().unwrap_or_default();
        let mut dense: Vec<(u32, f64)> = cols
            .iter()
            .zip(&vals)
            .filter_map(|(&col, &v)| f.alignment.column_to_gene[col as usize].map(|g| (g, v)))
            .collect();
        dense.sort_by_key(|(g, _)| *g);
        let mut cell = AlignedCell::default();
        for (g, v) in dense {
            if cell.genes.last() == Some(&g) {
                *cell.values.last_mut().expect("value") += v;
            } else {
                cell.genes.push(g);
                cell.values.push(v);
            }
        }
        if cell.genes.iter().any(|g| *g as usize >= N_GENES) {
            bail!("gene index out of range");
        }
        Ok(cell)
    }
}

/// Train/validation split and the training order.
#[derive(Debug, Clone)]
pub struct Split {
    pub train: Vec<CellRef>,
    pub val: Vec<CellRef>,
}

impl Split {
    /// Holds out `ceil(val_fraction * n)` cells (at most `val_max`, and never all of them), chosen by a
    /// permutation seeded with `seed`.
    pub fn new(cells: &[CellRef], val_fraction: f64, val_max: usize, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&val_fraction) {
            bail!("--val-fraction must be in [0, 1), got {val_fraction}");
        }
        let n = cells.len();
        let n_val = ((val_fraction * n as f64).ceil() as usize)
            .min(val_max)
            .min(n.saturating_sub(1));
        let mut order: Vec<CellRef> = cells.to_vec();
        Rng::derive(seed, "split", 0).shuffle(&mut order);
        let mut val = order[..n_val].to_vec();
        val.sort();
        let mut train = order[n_val..].to_vec();
        train.sort();
        Ok(Self { train, val })
    }

    /// The training order of epoch `epoch`: a permutation seeded with (seed, epoch).
    pub fn epoch_order(&self, seed: u64, epoch: u64) -> Vec<CellRef> {
        let mut order = self.train.clone();
        Rng::derive(seed, "epoch", epoch).shuffle(&mut order);
        order
    }
}

/// Position in the data stream: epoch and index into that epoch's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataPosition {
    pub epoch: u64,
    pub index: u64,
}

/// Hands out training cells in the seeded order, epoch after epoch.
pub struct Sampler {
    split_seed: u64,
    pub position: DataPosition,
    order: Vec<CellRef>,
}

impl Sampler {
    pub fn new(split: &Split, seed: u64, position: DataPosition) -> Result<Self> {
        if split.train.is_empty() {
            bail!("no training cells left after holding out the validation set");
        }
        let order = split.epoch_order(seed, position.epoch);
        if position.index as usize > order.len() {
            bail!("data position {position:?} is past the end of the epoch");
        }
        Ok(Self {
            split_seed: seed,
            position,
            order,
        })
    }

    pub fn next(&mut self, split: &Split) -> CellRef {
        if self.position.index as usize >= self.order.len() {
            self.position.epoch += 1;
            self.position.index = 0;
            self.order = split.epoch_order(self.split_seed, self.position.epoch);
        }
        let c = self.order[self.position.index as usize];
        self.position.index += 1;
        c
    }
}

/// Paths as given, for messages and provenance.
pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_else(|| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(n: u32) -> Vec<CellRef> {
        (0..n)
            .map(|r| CellRef {
                file: r % 2,
                row: r,
            })
            .collect()
    }

    #[test]
    fn split_is_seeded_disjoint_and_complete() {
        let cells = refs(100);
        let a = Split::new(&cells, 0.1, 1000, 3).unwrap();
        let b = Split::new(&cells, 0.1, 1000, 3).unwrap();
        assert_eq!(a.val, b.val);
        assert_eq!(a.val.len(), 10);
        let mut all: Vec<CellRef> = a.train.iter().chain(&a.val).copied().collect();
        all.sort();
        assert_eq!(all, {
            let mut c = cells.clone();
            c.sort();
            c
        });
        assert_ne!(Split::new(&cells, 0.1, 1000, 4).unwrap().val, a.val);
        assert_eq!(Split::new(&cells, 0.1, 3, 3).unwrap().val.len(), 3);
        assert_eq!(Split::new(&cells, 0.0, 3, 3).unwrap().val.len(), 0);
        assert!(Split::new(&cells, 1.0, 3, 3).is_err());
    }

    #[test]
    fn sampler_walks_epochs_and_resumes_from_a_position() {
        let split = Split::new(&refs(7), 0.0, 0, 1).unwrap();
        let mut s = Sampler::new(&split, 9, DataPosition::default()).unwrap();
        let first: Vec<CellRef> = (0..7).map(|_| s.next(&split)).collect();
        let second: Vec<CellRef> = (0..7).map(|_| s.next(&split)).collect();
        let mut a = first.clone();
        a.sort();
        assert_eq!(a, split.train, "an epoch visits every cell once");
        assert_ne!(first, second, "each epoch has its own order");
        // Resuming mid-epoch continues the same sequence.
        let mut s1 = Sampler::new(&split, 9, DataPosition::default()).unwrap();
        for _ in 0..10 {
            s1.next(&split);
        }
        let mut s2 = Sampler::new(&split, 9, s1.position).unwrap();
        for _ in 0..10 {
            assert_eq!(s1.next(&split), s2.next(&split));
        }
    }
}
