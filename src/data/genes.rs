//! The model's 19,264-gene vocabulary and alignment of input columns to it, always by name.

use std::collections::HashMap;

use anyhow::{bail, Result};

const GENE_INDEX_TSV: &str = include_str!("OS_scRNA_gene_index.19264.tsv");
/// sha256 of the gene index file shipped with the reference (and compiled in here).
pub const GENE_INDEX_SHA256: &str =
    "bb337ea195d94e7b033543abc02a42e7060d6562eba97deb077f7dcecec62661";
pub const N_GENES: usize = 19264;

pub struct GeneVocab {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl GeneVocab {
    /// The compiled-in scFoundation gene list, in model order.
    pub fn builtin() -> Self {
        let names: Vec<String> = GENE_INDEX_TSV
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').next().unwrap_or("").to_string())
            .collect();
        assert_eq!(names.len(), N_GENES, "compiled-in gene index is corrupt");
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        Self { names, index }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    pub fn raw_tsv() -> &'static str {
        GENE_INDEX_TSV
    }
}

/// Maps input columns to model genes. Duplicate input names that map to the same gene are summed.
#[derive(Debug, Clone)]
pub struct GeneAlignment {
    /// For every input column: the model gene index, or None if unknown.
    pub column_to_gene: Vec<Option<u32>>,
    pub n_input: usize,
    pub n_mapped_columns: usize,
    pub n_genes_covered: usize,
    pub n_duplicate_columns: usize,
}

impl GeneAlignment {
    /// Identity alignment for unnamed input (`.npy`) already in model gene order.
    pub fn identity(n: usize) -> Self {
        Self {
            column_to_gene: (0..n as u32).map(Some).collect(),
            n_input: n,
            n_mapped_columns: n,
            n_genes_covered: n,
            n_duplicate_columns: 0,
        }
    }

    pub fn by_name(names: &[String], vocab: &GeneVocab) -> Self {
        let mut seen = vec![false; vocab.len()];
        let mut dups = 0;
        let column_to_gene: Vec<Option<u32>> = names
            .iter()
            .map(|n| {
                let g = vocab.get(n.trim());
                if let Some(g) = g {
                    if seen[g as usize] {
                        dups += 1;
                    }
                    seen[g as usize] = true;
                }
                g
            })
            .collect();
        let n_mapped_columns = column_to_gene.iter().filter(|g| g.is_some()).count();
        Self {
            n_input: names.len(),
            n_mapped_columns,
            n_genes_covered: seen.iter().filter(|s| **s).count(),
            n_duplicate_columns: dups,
            column_to_gene,
        }
    }

    pub fn mapped_fraction(&self) -> f64 {
        if self.n_input == 0 {
            0.0
        } else {
            self.n_mapped_columns as f64 / self.n_input as f64
        }
    }

    /// Refuses input where too few columns are model genes, guessing the usual causes.
    pub fn check(
        &self,
        names: &[String],
        vocab: &GeneVocab,
        min_mapped: f64,
        file: &str,
    ) -> Result<()> {
        let frac = self.mapped_fraction();
        if frac >= min_mapped && self.n_mapped_columns > 0 {
            return Ok(());
        }
        let ensembl = names
            .iter()
            .filter(|n| n.starts_with("ENS") && n.chars().skip(3).any(|c| c.is_ascii_digit()))
            .count();
        let upper: HashMap<String, ()> = vocab
            .names()
            .iter()
            .map(|n| (n.to_uppercase(), ()))
            .collect();
        let case_hits = names
            .iter()
            .filter(|n| vocab.get(n).is_none() && upper.contains_key(&n.to_uppercase()))
            .count();
        let cause = if ensembl * 2 > names.len() {
            "gene names look like Ensembl ids; pick a column of gene symbols with --gene-column"
        } else if case_hits > self.n_mapped_columns {
            "gene names match only when upper-cased, which suggests mouse symbols; scFoundation is a human model"
        } else {
            "check that var names (or --gene-column) hold human HGNC gene symbols"
        };
        bail!(
            "{file}: only {} of {} genes ({:.1}%) match the 19,264 scFoundation genes, below --min-mapped {:.2}: {cause}",
            self.n_mapped_columns,
            self.n_input,
            100.0 * frac,
            min_mapped
        )
    }
}
