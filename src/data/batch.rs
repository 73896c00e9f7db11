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
            if input.n_cols < 2 {
                bail!("{file}: --pre-normalized A needs gene columns plus a last total column");
            }
            input.n_cols - 1
        } else {
            input.n_cols
        };
        let alignment = match &input.gene_names {
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
                        input.n_cols
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
        &self.input.cell_ids[i]
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
                .gene_names
                .as_ref()
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
