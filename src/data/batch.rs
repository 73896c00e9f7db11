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

/// Cells per forward pass: a fixed number, or sized from the device's free memory (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchSize {
    Fixed(usize),
    #[default]
    Auto,
}

impl std::fmt::Display for BatchSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchSize::Fixed(n) => write!(f, "{n}"),
            BatchSize::Auto => f.write_str("auto"),
        }
    }
}

impl BatchSize {
    /// A number, or the string "auto", for JSON records.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            BatchSize::Fixed(n) => n.into(),
            BatchSize::Auto => "auto".into(),
        }
    }
}

/// What one batch may hold: at most `cells` cells and at most `tokens` padded encoder tokens
/// (cells x the longest cell's length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub cells: usize,
    pub tokens: usize,
}

impl BatchLimits {
    /// A fixed number of cells, however long.
    pub fn cells(n: usize) -> Self {
        Self {
            cells: n.max(1),
            tokens: usize::MAX,
        }
    }

    /// As many cells and tokens as fit in `budget` bytes when each padded encoder token needs
    /// `per_token` bytes and each cell `per_cell` more (0 when only the encoder runs), capped at
    /// `max_cells`; never less than one cell.
    pub fn from_budget(budget: u64, per_token: u64, per_cell: u64, max_cells: usize) -> Self {
        let cells = match per_cell {
            0 => max_cells,
            c => usize::try_from(budget / c)
                .unwrap_or(usize::MAX)
                .min(max_cells),
        };
        Self {
            cells: cells.max(1),
            tokens: usize::try_from(budget / per_token.max(1))
                .unwrap_or(usize::MAX)
                .max(1),
        }
    }

    /// Half of each limit (after the device ran out of memory), at least one cell and one token.
    pub fn halved(self) -> Self {
        Self {
            cells: (self.cells / 2).max(1),
            tokens: if self.tokens == usize::MAX {
                usize::MAX
            } else {
                (self.tokens / 2).max(1)
            },
        }
    }
}

/// Splits positions `0..lens.len()` of cells sorted by length (ascending) into batches within
/// `limits` whose longest cell is at most 25% longer than the shortest, so padding costs little. A
/// cell longer than the token limit gets a batch of its own.
pub fn length_buckets(sorted_lens: &[usize], limits: BatchLimits) -> Vec<std::ops::Range<usize>> {
    let max_cells = limits.cells.max(1);
    let mut out = vec![];
    let mut start = 0;
    for i in 1..=sorted_lens.len() {
        let close = i == sorted_lens.len()
            || i - start == max_cells
            || sorted_lens[i] * 4 > sorted_lens[start] * 5
            || (i + 1 - start).saturating_mul(sorted_lens[i]) > limits.tokens;
        if close {
            out.push(start..i);
            start = i;
        }
    }
    out
}

/// Runs `run` on the cells `ids` as one batch; when the device runs out of memory (`is_oom`), runs
/// each half on its own instead, down to single cells, and counts each split in `splits`. Results
/// come back in the order of `ids`.
pub fn run_halving_on_oom<T>(
    ids: &[usize],
    run: &mut impl FnMut(&[usize]) -> Result<Vec<T>>,
    is_oom: &impl Fn(&anyhow::Error) -> bool,
    splits: &mut usize,
) -> Result<Vec<T>> {
    match run(ids) {
        Err(e) if ids.len() > 1 && is_oom(&e) => {
            *splits += 1;
            log::warn!(
                "out of device memory with {} cells in a batch; retrying in halves",
                ids.len()
            );
            let (a, b) = ids.split_at(ids.len() / 2);
            let mut out = run_halving_on_oom(a, run, is_oom, splits)?;
            out.extend(run_halving_on_oom(b, run, is_oom, splits)?);
            Ok(out)
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::{length_buckets, run_halving_on_oom, BatchLimits};

    #[test]
    fn buckets_cover_every_cell_once_in_order() {
        let lens = [3, 3, 4, 10, 11, 12, 12, 13, 40, 41];
        let b = length_buckets(&lens, BatchLimits::cells(3));
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
        let c = BatchLimits::cells;
        assert!(length_buckets(&[], c(4)).is_empty());
        assert_eq!(length_buckets(&[5], c(4)), vec![0..1]);
        assert_eq!(length_buckets(&[5, 5, 5], c(1)), vec![0..1, 1..2, 2..3]);
        assert_eq!(length_buckets(&[5, 5, 5], c(0)), vec![0..1, 1..2, 2..3]);
    }

    #[test]
    fn token_limit_bounds_padded_tokens() {
        // 20 cells of 10 tokens, then 4 of 12 (within 25%), then a cell of 100.
        let mut lens = vec![10; 20];
        lens.extend([12; 4]);
        lens.push(100);
        let limits = BatchLimits {
            cells: 64,
            tokens: 50,
        };
        let b = length_buckets(&lens, limits);
        let flat: Vec<usize> = b.iter().flat_map(|r| r.clone()).collect();
        assert_eq!(flat, (0..lens.len()).collect::<Vec<_>>());
        for r in &b[..b.len() - 1] {
            assert!(r.len() * lens[r.end - 1] <= 50, "{r:?}");
        }
        assert_eq!(&b[..4], &[0..5, 5..10, 10..15, 15..20]);
        assert_eq!(&b[4..], &[20..24, 24..25]);
        // A cell over the limit still gets its own batch.
        assert_eq!(
            length_buckets(
                &[100, 100],
                BatchLimits {
                    cells: 8,
                    tokens: 50
                }
            ),
            vec![0..1, 1..2]
        );
    }

    #[test]
    fn limits_from_a_memory_budget() {
        let l = BatchLimits::from_budget(1000, 10, 0, 4096);
        assert_eq!((l.cells, l.tokens), (4096, 100));
        let l = BatchLimits::from_budget(1000, 10, 300, 4096);
        assert_eq!((l.cells, l.tokens), (3, 100));
        // Too small a budget still runs one cell at a time.
        let l = BatchLimits::from_budget(5, 10, 300, 4096);
        assert_eq!((l.cells, l.tokens), (1, 1));
        let h = BatchLimits::from_budget(1000, 10, 300, 4096).halved();
        assert_eq!((h.cells, h.tokens), (1, 50));
        assert_eq!(BatchLimits::cells(8).halved(), BatchLimits::cells(4));
    }

    #[test]
    fn halving_on_oom_keeps_order_and_counts_splits() {
        // A fake device that holds at most 3 cells at once.
        let mut calls = vec![];
        let mut run = |ids: &[usize]| -> anyhow::Result<Vec<usize>> {
            calls.push(ids.len());
            if ids.len() > 3 {
                anyhow::bail!("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")")
            }
            Ok(ids.iter().map(|i| i * 10).collect())
        };
        let is_oom = |e: &anyhow::Error| e.to_string().contains("OUT_OF_MEMORY");
        let ids: Vec<usize> = (0..10).collect();
        let mut splits = 0;
        let out = run_halving_on_oom(&ids, &mut run, &is_oom, &mut splits).unwrap();
        assert_eq!(out, (0..10).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(splits, 3); // 10 -> 5 + 5 -> (2 + 3) + (2 + 3)
        assert_eq!(calls, vec![10, 5, 2, 3, 5, 2, 3]);
        // Other errors are not retried.
        let mut failing =
            |_: &[usize]| -> anyhow::Result<Vec<usize>> { anyhow::bail!("bad input") };
        let mut splits = 0;
        assert!(run_halving_on_oom(&ids, &mut failing, &is_oom, &mut splits).is_err());
        assert_eq!(splits, 0);
    }
}
