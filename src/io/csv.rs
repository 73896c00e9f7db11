//! Cells x genes CSV (first column cell ids, header = gene names), streamed line by line.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

fn split_fields(line: &str, sep: char) -> Vec<String> {
    line.trim_end_matches(['\r', '\n'])
        .split(sep)
        .map(|f| {
            let f = f.trim();
            f.strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(f)
                .to_string()
        })
        .collect()
}

pub struct CsvRows {
    path: PathBuf,
    sep: char,
    genes: Vec<String>,
    lines: std::io::Lines<BufReader<File>>,
    line_no: usize,
}

impl CsvRows {
    pub fn open(path: &Path) -> Result<Self> {
        let sep = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tsv") || e.eq_ignore_ascii_case("txt"))
        {
            '\t'
        } else {
            ','
        };
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut lines = BufReader::with_capacity(1 << 20, f).lines();
        let header = lines
            .next()
            .with_context(|| {
                format!(
                    "{}: empty file, expected a header of gene names",
                    path.display()
                )
            })?
            .with_context(|| format!("{}: cannot read header", path.display()))?;
        let mut fields = split_fields(&header, sep);
        if fields.len() < 2 {
            bail!(
                "{}: header has {} field(s); expected a cell id column followed by gene names",
                path.display(),
                fields.len()
            );
        }
        fields.remove(0);
        Ok(Self {
            path: path.to_path_buf(),
            sep,
            genes: fields,
            lines,
            line_no: 1,
        })
    }

    pub fn gene_names(&self) -> &[String] {
        &self.genes
    }

    /// Counts data rows and collects cell ids in one pass (the row count sizes the outputs).
    pub fn scan_ids(path: &Path) -> Result<Vec<String>> {
        let mut rows = Self::open(path)?;
        let mut ids = vec![];
        for line in rows.lines.by_ref() {
            let line = line.with_context(|| format!("{}: read error", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let id = line.split(rows.sep).next().unwrap_or("").trim();
            ids.push(id.trim_matches('"').to_string());
        }
        Ok(ids)
    }

    /// Next row as (id, dense values over the header's genes).
    pub fn next_row(&mut self, out: &mut Vec<f64>) -> Result<Option<String>> {
        for line in self.lines.by_ref() {
            self.line_no += 1;
            let line = line.with_context(|| format!("{}: read error", self.path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let mut it = line.trim_end_matches(['\r', '\n']).split(self.sep);
            let id = it.next().unwrap_or("").trim().trim_matches('"').to_string();
            out.clear();
            for (j, f) in it.enumerate() {
                let f = f.trim().trim_matches('"');
                let v = if f.is_empty() {
                    0.0
                } else {
                    f.parse::<f64>().with_context(|| {
                        format!(
                            "{}: line {}: value '{f}' for gene '{}' is not a number",
                            self.path.display(),
                            self.line_no,
                            self.genes.get(j).map(String::as_str).unwrap_or("?")
                        )
                    })?
                };
                out.push(v);
            }
            if out.len() != self.genes.len() {
                bail!(
                    "{}: line {} has {} values, the header names {} genes",
                    self.path.display(),
                    self.line_no,
                    out.len(),
                    self.genes.len()
                );
            }
            return Ok(Some(id));
        }
        Ok(None)
    }
}
