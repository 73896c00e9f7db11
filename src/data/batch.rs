//! From input rows to aligned cells: column → model gene mapping, duplicate summing, the total column
//! of `--pre-normalized A`.

use anyhow::{bail, Result};

use super::genes::{GeneAlignment, GeneVocab, N_GENES};
use super::preprocess::AlignedCell;
use crate::io::{Input, SparseRow};

pub struct CellStream {
    pub input: Input,
    pub alignment: GeneAlignment,
    /// Input column holding each cell's total (`--pre-normalized A`).
    total_column: Option<u32>,
    scratch: Vec<f64>,
    touched: Vec<u32>,
    next_cell: usize,
}

impl CellStream {
    /// Aligns the input's columns to the model genes. With `total_last`, the last column is the
    /// cell total and takes no part in alignment.
    pub fn new(input: Input, vocab: &GeneVocab, total_last: bool, min_mapped: f64) -> Result<Self> {
        let file = input.path.display().to_string();
        let n_gene_cols = if total_last {
            if input.n_cols() < 2 {
                bail!("{file}: --pre-normalized A needs gene columns plus a last total column");
            }
            input.n_cols() - 1
        } else {
            input.n_cols()
        };
        let alignment = match input.gene_names() {
            Some(names) => {
                let names = &names[..n_gene_cols];
                let a = GeneAlignment::by_name(names, vocab);
                a.check(names, vocab, min_mapped, &file)?;
                a
            }
            None => {
                if n_gene_cols != N_GENES {
                    bail!(
                        "{file}: a .npy input has no gene names, so it must have exactly {N_GENES} columns in scFoundation gene order{}; found {}",
                        if total_last { " plus the total column" } else { "" },
                        input.n_cols()
                    );
                }
                GeneAlignment::identity(N_GENES)
            }
        };
        log::info!(
            "{file}: {} of {} input genes map to {} of the {N_GENES} model genes ({:.1}%); {} duplicate columns summed",
            alignment.n_mapped_columns,
            alignment.n_input,
            alignment.n_genes_covered,
            100.0 * alignment.mapped_fraction(),
            alignment.n_duplicate_columns
        );
        if alignment.n_duplicate_columns > 0 {
            log::warn!(
                "{file}: {} columns repeat a gene name; their values are summed",
                alignment.n_duplicate_columns
            );
        }
        Ok(Self {
            input,
            alignment,
            total_column: total_last.then_some(n_gene_cols as u32),
            scratch: vec![0.0; N_GENES],
            touched: vec![],
            next_cell: 0,
        })
    }

    pub fn n_cells(&self) -> usize {
        self.input.n_cells()
    }

    pub fn cell_id(&self, i: usize) -> &str {
        &self.input.cell_ids()[i]
    }

    /// Back to the first cell, for a second pass.
    pub fn rewind(&mut self) -> Result<()> {
        self.input.rewind()?;
        self.next_cell = 0;
        Ok(())
    }

    /// Next `count` cells (fewer at the end) with their indices in file order.
    pub fn next_cells(&mut self, count: usize) -> Result<Vec<(usize, AlignedCell)>> {
        let rows = self.input.next_rows(count)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let i = self.next_cell;
            self.next_cell += 1;
            self.check_row(i, &row)?;
            out.push((i, self.align(&row)));
        }
        Ok(out)
    }

    /// Refuses negative and non-finite values before duplicate genes are summed, where +x and -x
    /// would cancel (or inf and -inf make NaN) and hide the problem.
    fn check_row(&self, i: usize, row: &SparseRow) -> Result<()> {
        for (&c, &v) in row.cols.iter().zip(&row.vals) {
            if v.is_finite() && v >= 0.0 {
                continue;
            }
            let gene = self
                .input
                .gene_names()
                .and_then(|g| g.get(c as usize))
                .map(|g| format!("gene '{g}'"))
                .unwrap_or_else(|| format!("column {}", c + 1));
            let why = if v.is_finite() {
                "a negative value; expected counts or non-negative normalised expression, not scaled data"
            } else {
                "a non-finite value"
            };
            bail!(
                "{}: cell '{}' (row {}) has {why} ({v}) for {gene}",
                self.input.path.display(),
                self.cell_id(i),
                i + 1
            );
        }
        Ok(())
    }

    fn align(&mut self, row: &SparseRow) -> AlignedCell {
        let mut given_total = None;
        for (&c, &v) in row.cols.iter().zip(&row.vals) {
            if Some(c) == self.total_column {
                given_total = Some(v);
                continue;
            }
            if let Some(g) = self.alignment.column_to_gene[c as usize] {
                self.scratch[g as usize] += v;
                self.touched.push(g);
            }
        }
        if self.total_column.is_some() && given_total.is_none() {
            given_total = Some(0.0);
        }
        self.touched.sort_unstable();
        self.touched.dedup();
        let mut cell = AlignedCell {
            genes: Vec::with_capacity(self.touched.len()),
            values: Vec::with_capacity(self.touched.len()),
            given_total,
        };
        for &g in &self.touched {
            let v = self.scratch[g as usize];
            self.scratch[g as usize] = 0.0;
            if v != 0.0 || v.is_nan() {
                cell.genes.push(g);
                cell.values.push(v);
            }
        }
        self.touched.clear();
        cell
    }
}

/// Splits positions `0..lens.len()` of cells sorted by length (ascending) into batches of at most
/// `batch_size` whose longest cell is at most 25% longer than the shortest, so padding costs little.
pub fn length_buckets(sorted_lens: &[usize], batch_size: usize) -> Vec<std::ops::Range<usize>> {
    let batch_size = batch_size.max(1);
    let mut out = vec![];
    let mut start = 0;
    for i in 1..=sorted_lens.len() {
        let full = i - start == batch_size;
        let long = i < sorted_lens.len() && sorted_lens[i] * 4 > sorted_lens[start] * 5;
        if i == sorted_lens.len() || full || long {
            out.push(start..i);
            start = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::length_buckets;

    #[test]
    fn buckets_cover_every_cell_once_in_order() {
        let lens = [3, 3, 4, 10, 11, 12, 12, 13, 40, 41];
        let b = length_buckets(&lens, 3);
        let flat: Vec<usize> = b.iter().flat_map(|r| r.clone()).collect();
        assert_eq!(flat, (0..lens.len()).collect::<Vec<_>>());
        for r in &b {
            assert!(r.len() <= 3 && !r.is_empty());
            // Within 25% of the bucket's shortest cell.
            assert!(lens[r.end - 1] * 4 <= lens[r.start] * 5, "{r:?}");
        }
        assert_eq!(b, vec![0..2, 2..3, 3..6, 6..8, 8..10]);
    }

    #[test]
    fn buckets_edge_cases() {
        assert!(length_buckets(&[], 4).is_empty());
        assert_eq!(length_buckets(&[5], 4), vec![0..1]);
        assert_eq!(length_buckets(&[5, 5, 5], 1), vec![0..1, 1..2, 2..3]);
        assert_eq!(length_buckets(&[5, 5, 5], 0), vec![0..1, 1..2, 2..3]);
    }
}
