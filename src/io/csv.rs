//! Cells x genes CSV/TSV (first column cell ids, header = gene names), streamed record by record with
//! the `csv` crate, so quoted fields (commas inside quotes, escaped quotes) are read as written.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{RowSource, SparseRow};

/// A record longer than this is not a row of numbers: refuse it rather than buffer without bound.
const MAX_RECORD_BYTES: u64 = 1 << 30;

/// The whole file is parsed in one pass at open (its row count sizes the outputs); rows are kept
/// sparse, so memory follows the nonzero values, not the text.
pub struct CsvRows {
    genes: Vec<String>,
    ids: Vec<String>,
    rows: Vec<SparseRow>,
    next: usize,
}

struct Parser {
    path: PathBuf,
    reader: ::csv::Reader<LineCap<BufReader<File>>>,
    record: ::csv::StringRecord,
}

fn separator(path: &Path) -> u8 {
    let tab = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv") || e.eq_ignore_ascii_case("txt"));
    if tab {
        b'\t'
    } else {
        b','
    }
}

impl CsvRows {
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let reader = ::csv::ReaderBuilder::new()
            .delimiter(separator(path))
            .has_headers(false)
            .flexible(true)
            .trim(::csv::Trim::All)
            .from_reader(LineCap {
                inner: BufReader::with_capacity(1 << 20, f),
                since_newline: 0,
            });
        let mut p = Parser {
            path: path.to_path_buf(),
            reader,
            record: ::csv::StringRecord::new(),
        };
        if !p.next_record()? {
            bail!(
                "{}: empty file, expected a header of gene names",
                path.display()
            );
        }
        if p.record.len() < 2 {
            bail!(
                "{}: header has {} field(s); expected a cell id column followed by gene names",
                path.display(),
                p.record.len()
            );
        }
        let genes: Vec<String> = p.record.iter().skip(1).map(str::to_string).collect();
        let mut ids = vec![];
        let mut rows = vec![];
        let mut dense = Vec::with_capacity(genes.len());
        while p.next_record()? {
            p.values(&genes, &mut dense)?;
            ids.push(p.record.get(0).unwrap_or("").to_string());
            rows.push(SparseRow::from_dense(&dense));
        }
        Ok(Self {
            genes,
            ids,
            rows,
            next: 0,
        })
    }
}

impl RowSource for CsvRows {
    fn cell_ids(&self) -> &[String] {
        &self.ids
    }

    fn column_names(&self) -> Option<&[String]> {
        Some(&self.genes)
    }

    fn n_cols(&self) -> usize {
        self.genes.len()
    }

    fn next_rows(&mut self, count: usize) -> Result<Vec<SparseRow>> {
        let end = self.next.saturating_add(count).min(self.rows.len());
        let out = self.rows[self.next..end].to_vec();
        self.next = end;
        Ok(out)
    }

    fn rewind(&mut self) -> Result<()> {
        self.next = 0;
        Ok(())
    }
}

impl Parser {
    /// Reads the next non-blank record into `self.record`; false at the end.
    fn next_record(&mut self) -> Result<bool> {
        loop {
            let got = self
                .reader
                .read_record(&mut self.record)
                .map_err(|e| anyhow::anyhow!("{}: {}", self.path.display(), describe(&e)))?;
            if !got {
                return Ok(false);
            }
            if self.record.iter().all(str::is_empty) {
                continue;
            }
            return Ok(true);
        }
    }

    fn line(&self) -> u64 {
        self.record.position().map(|p| p.line()).unwrap_or(0)
    }

    /// The current record's values over the header's genes (an empty field is 0).
    fn values(&self, genes: &[String], out: &mut Vec<f64>) -> Result<()> {
        let n = self.record.len().saturating_sub(1);
        if n != genes.len() {
            bail!(
                "{}: line {} has {n} values, the header names {} genes",
                self.path.display(),
                self.line(),
                genes.len()
            );
        }
        out.clear();
        for (j, f) in self.record.iter().skip(1).enumerate() {
            let v = if f.is_empty() {
                0.0
            } else {
                f.parse::<f64>().with_context(|| {
                    format!(
                        "{}: line {}: value '{}' for gene '{}' is not a number",
                        self.path.display(),
                        self.line(),
                        f.chars().take(40).collect::<String>(),
                        genes[j]
                    )
                })?
            };
            out.push(v);
        }
        Ok(())
    }
}

fn describe(e: &::csv::Error) -> String {
    match e.kind() {
        ::csv::ErrorKind::Utf8 { pos, .. } => format!(
            "line {}: not valid UTF-8 text",
            pos.as_ref().map(|p| p.line()).unwrap_or(0)
        ),
        _ => e.to_string(),
    }
}

/// Fails a read once a line grows past [`MAX_RECORD_BYTES`], so a file without newlines cannot make
/// the parser buffer it whole.
struct LineCap<R> {
    inner: R,
    since_newline: u64,
}

impl<R: std::io::Read> std::io::Read for LineCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match buf[..n].iter().rposition(|&b| b == b'\n') {
            Some(p) => self.since_newline = (n - p - 1) as u64,
            None => self.since_newline += n as u64,
        }
        if self.since_newline > MAX_RECORD_BYTES {
            return Err(std::io::Error::other("a line is longer than 1 GiB"));
        }
        Ok(n)
    }
}
