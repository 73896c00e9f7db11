//! Cells x genes CSV/TSV (first column cell ids, header = gene names), streamed record by record with
//! the `csv` crate, so quoted fields (commas inside quotes, escaped quotes) are read as written.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A record longer than this is not a row of numbers: refuse it rather than buffer without bound.
const MAX_RECORD_BYTES: u64 = 1 << 30;

pub struct CsvRows {
    path: PathBuf,
    genes: Vec<String>,
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
        let mut reader = ::csv::ReaderBuilder::new()
            .delimiter(separator(path))
            .has_headers(false)
            .flexible(true)
            .trim(::csv::Trim::All)
            .from_reader(LineCap {
                inner: BufReader::with_capacity(1 << 20, f),
                since_newline: 0,
            });
        let mut header = ::csv::StringRecord::new();
        let got = reader
            .read_record(&mut header)
            .with_context(|| format!("{}: cannot read the header", path.display()))?;
        if !got {
            bail!(
                "{}: empty file, expected a header of gene names",
                path.display()
            );
        }
        if header.len() < 2 {
            bail!(
                "{}: header has {} field(s); expected a cell id column followed by gene names",
                path.display(),
                header.len()
            );
        }
        let genes = header.iter().skip(1).map(str::to_string).collect();
        Ok(Self {
            path: path.to_path_buf(),
            genes,
            reader,
            record: ::csv::StringRecord::new(),
        })
    }

    pub fn gene_names(&self) -> &[String] {
        &self.genes
    }

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

    /// Counts data rows and collects cell ids in one pass (the row count sizes the outputs).
    pub fn scan_ids(path: &Path) -> Result<Vec<String>> {
        let mut rows = Self::open(path)?;
        let mut ids = vec![];
        while rows.next_record()? {
            ids.push(rows.record.get(0).unwrap_or("").to_string());
        }
        Ok(ids)
    }

    /// Next row as (id, dense values over the header's genes).
    pub fn next_row(&mut self, out: &mut Vec<f64>) -> Result<Option<String>> {
        if !self.next_record()? {
            return Ok(None);
        }
        let n = self.record.len().saturating_sub(1);
        if n != self.genes.len() {
            bail!(
                "{}: line {} has {n} values, the header names {} genes",
                self.path.display(),
                self.line(),
                self.genes.len()
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
                        self.genes[j]
                    )
                })?
            };
            out.push(v);
        }
        Ok(Some(self.record.get(0).unwrap_or("").to_string()))
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
