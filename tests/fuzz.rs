//! Property-based fuzzing of the input parsers: whatever the bytes, the readers return `Ok` or a
//! clean `Err` — they never panic, abort, overflow the stack, allocate without bound or hang.
//!
//! Targets: the `.npy` reader (header, row streaming, `Input`), the CSV/TSV reader (`Input`), the
//! model registry JSON (`Registry::load`), and the `.h5ad` reader (`Input`) with split and merge.
//! Inputs are random bytes and structured generators that start from valid files and break them
//! (see `tests/fuzz_support/`). `SCF_FUZZ_CASES` sets the number of cases per property; how to run
//! a long campaign and turn a failure into a regression test is in `ci/FUZZING.md`.
//!
//! Each property runs its cases in a forked child (a crash fails the property, not the test
//! binary), each case under a watchdog (`SCF_FUZZ_TIMEOUT_MS`) and a heap cap (`SCF_FUZZ_MEM_MB`).

mod fuzz_support;

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use fuzz_support::csv_gen::{csv_case, CsvCase};
use fuzz_support::h5ad_gen::{build, h5ad_case, H5adCase};
use fuzz_support::json_gen::{json_case, JsonCase};
use fuzz_support::npy_gen::npy_case;
use fuzz_support::{brief, config, guarded, ok_or_clean, stat, tempdir};

use scfoundation::io::npy::{read_f32, read_header, NpyRows};
use scfoundation::io::{Input, MatrixChoice};
use scfoundation::steps::{merge::merge, split::split};
use scfoundation::weights::registry::Registry;

fn write_input(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write the case file");
    p
}

/// Reads every row of `input`, `batch` at a time, checking what the embedding step relies on:
/// each row's columns are in range and paired with values, and no more rows than cells come out.
/// `Ok(rows read)`, `Err(Ok(e))` for a reader error, `Err(Err(why))` for a broken invariant.
fn drain(input: &mut Input, batch: usize) -> Result<usize, Result<anyhow::Error, String>> {
    let n_cells = input.n_cells();
    let n_cols = input.n_cols;
    let mut total = 0usize;
    loop {
        let rows = input.next_rows(batch).map_err(Ok)?;
        if rows.is_empty() {
            return Ok(total);
        }
        if rows.len() > batch {
            return Err(Err(format!(
                "next_rows({batch}) returned {} rows",
                rows.len()
            )));
        }
        for r in &rows {
            if r.cols.len() != r.vals.len() {
                return Err(Err(format!(
                    "row {total}: {} columns but {} values",
                    r.cols.len(),
                    r.vals.len()
                )));
            }
            if let Some(c) = r.cols.iter().find(|&&c| c as usize >= n_cols) {
                return Err(Err(format!(
                    "row {total}: column {c} out of range 0..{n_cols}"
                )));
            }
        }
        total += rows.len();
        if total > n_cells {
            return Err(Err(format!(
                "read {total} rows from an input of {n_cells} cells"
            )));
        }
    }
}

/// Opens `path` as an `Input` and reads it all; a broken invariant is returned as `Err`.
fn open_and_drain(path: &Path, choice: &MatrixChoice, batch: usize) -> Result<String, String> {
    let mut input = match Input::open(path, choice) {
        Ok(i) => i,
        Err(e) => return Ok(brief::<()>(&Err(e))),
    };
    match drain(&mut input, batch) {
        Ok(n) => Ok(format!("Ok({n} of {} rows)", input.n_cells())),
        Err(Ok(e)) => Ok(format!("rows: {}", brief::<()>(&Err(e)))),
        Err(Err(why)) => Err(why),
    }
}

proptest! {
    #![proptest_config(config())]

    /// `read_header` on any bytes.
    #[test]
    fn npy_read_header(case in npy_case()) {
        let bytes = case.bytes();
        guarded("npy_read_header", &case, move || {
            let dir = tempdir();
            let p = write_input(dir.path(), "in.npy", &bytes);
            let r = read_header(&p);
            stat(|| format!("npy_read_header {}", brief(&r)));
            ok_or_clean(r);
            Ok(())
        })?;
    }

    /// `NpyRows::open` and `next_row` until the end (or an error).
    #[test]
    fn npy_rows(case in npy_case()) {
        let bytes = case.bytes();
        guarded("npy_rows", &case, move || {
            let dir = tempdir();
            let p = write_input(dir.path(), "in.npy", &bytes);
            let Some(mut rows) = ok_or_clean(NpyRows::open(&p)) else { return Ok(()) };
            let (n_rows, n_cols) = (rows.n_rows(), rows.n_cols());
            let mut out = vec![];
            let mut read = 0usize;
            loop {
                match rows.next_row(&mut out) {
                    Ok(true) => {
                        read += 1;
                        if out.len() != n_cols {
                            return Err(format!("row {read} has {} values, n_cols is {n_cols}", out.len()));
                        }
                        if read > n_rows {
                            return Err(format!("read {read} rows of a {n_rows}-row array"));
                        }
                    }
                    Ok(false) => break,
                    Err(e) => {
                        ok_or_clean::<()>(Err(e));
                        break;
                    }
                }
            }
            stat(|| format!("npy_rows read {read} of {n_rows}x{n_cols}"));
            Ok(())
        })?;
    }

    /// `Input::open` on a `.npy` and `next_rows(batch)` until empty.
    #[test]
    fn npy_input(case in npy_case(), batch in 1usize..5) {
        let bytes = case.bytes();
        guarded("npy_input", &(&case, batch), move || {
            let dir = tempdir();
            let p = write_input(dir.path(), "in.npy", &bytes);
            let r = open_and_drain(&p, &MatrixChoice::default(), batch)?;
            stat(|| format!("npy_input {r}"));
            Ok(())
        })?;
    }

    /// `read_f32` (whole-array reader used by tests and small inputs).
    #[test]
    fn npy_read_f32(case in npy_case()) {
        let bytes = case.bytes();
        guarded("npy_read_f32", &case, move || {
            let dir = tempdir();
            let p = write_input(dir.path(), "in.npy", &bytes);
            ok_or_clean(read_f32(&p));
            Ok(())
        })?;
    }

    /// `Input::open` on a `.csv`/`.tsv`/`.txt` of any text, then every row.
    #[test]
    fn csv_input(case in csv_case(), batch in 1usize..5) {
        let c: CsvCase = case.clone();
        guarded("csv_input", &(&case, batch), move || {
            let dir = tempdir();
            let p = write_input(dir.path(), &format!("in.{}", c.ext), &c.text.0);
            let r = open_and_drain(&p, &MatrixChoice::default(), batch)?;
            stat(|| format!("csv_input {r}"));
            Ok(())
        })?;
    }

    /// `Registry::load` of a user registry file, then the lookups the CLI makes on its entries.
    #[test]
    fn registry_json(case in json_case()) {
        let c: JsonCase = case.clone();
        guarded("registry_json", &case, move || {
            let dir = tempdir();
            let p = write_input(dir.path(), "registry.json", &c.bytes());
            let r = Registry::load(Some(&p));
            stat(|| format!("registry_json {}", brief(&r)));
            let Some(reg) = ok_or_clean(r) else { return Ok(()) };
            let _ = reg.known_names();
            for e in reg.entries() {
                if let Some(f) = ok_or_clean(e.weights_file()) {
                    let _ = f.mirrors();
                    ok_or_clean(f.file_name());
                }
                ok_or_clean(reg.find(&e.id()));
                ok_or_clean(reg.find(&e.name));
            }
            Ok(())
        })?;
    }

    /// `Input::open` on a generated `.h5ad` (with the case's layer / raw / gene column choice), then
    /// every row.
    #[test]
    fn h5ad_input(case in h5ad_case(), batch in 1usize..5) {
        let c: H5adCase = case.clone();
        guarded("h5ad_input", &(&case, batch), move || {
            let dir = tempdir();
            let p = dir.path().join("in.h5ad");
            if let Err(e) = build(&c, &p) {
                stat(|| format!("h5ad_input build-failed {e}"));
                return Ok(());
            }
            let r = open_and_drain(&p, &c.choice.matrix_choice(), batch)?;
            stat(|| format!("h5ad_input {r}"));
            Ok(())
        })?;
    }

    /// `split` of a generated `.h5ad`, `merge` of its shards (and of the input with itself), and
    /// reading the merged files back.
    #[test]
    fn h5ad_split_merge(case in h5ad_case()) {
        let c: H5adCase = case.clone();
        guarded("h5ad_split_merge", &case, move || {
            let dir = tempdir();
            let p = dir.path().join("in.h5ad");
            if let Err(e) = build(&c, &p) {
                stat(|| format!("h5ad_split build-failed {e}"));
                return Ok(());
            }
            let shards = split(&p, c.cells_per_shard, &dir.path().join("shards"), "shard");
            stat(|| format!("h5ad_split {}", brief(&shards)));
            if let Some(shards) = ok_or_clean(shards) {
                let out = dir.path().join("merged.h5ad");
                let m = merge(&shards, &out);
                stat(|| format!("h5ad_merge_shards {}", brief(&m)));
                if ok_or_clean(m).is_some() {
                    let r = open_and_drain(&out, &MatrixChoice::default(), 2)?;
                    stat(|| format!("h5ad_merged_input {r}"));
                }
            }
            let twice = dir.path().join("twice.h5ad");
            let m = merge(&[p.clone(), p.clone()], &twice);
            stat(|| format!("h5ad_merge_twice {}", brief(&m)));
            if ok_or_clean(m).is_some() {
                open_and_drain(&twice, &MatrixChoice::default(), 3)?;
            }
            Ok(())
        })?;
    }
}
