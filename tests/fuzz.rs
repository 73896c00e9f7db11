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
use fuzz_support::h5ad_gen::{Ds, Extra, FrameNode, Shape, SparseSpec, UnsNode, Vals};
use fuzz_support::json_gen::{json_case, JsonCase};
use fuzz_support::npy_gen::{npy_case, HeaderLen, NpyCase, NpyParts};
use fuzz_support::{brief, config, config_once, guarded, ok_or_clean, stat, tempdir, Bytes};
use proptest::test_runner::TestCaseResult;

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
    let n_cols = input.n_cols();
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

// ---------------------------------------------------------------------------------------------
// One case of each target (shared by the properties and the regression tests)

fn npy_read_header_case(case: &NpyCase) -> TestCaseResult {
    let bytes = case.bytes();
    guarded("npy_read_header", case, move || {
        let dir = tempdir();
        let p = write_input(dir.path(), "in.npy", &bytes);
        let r = read_header(&p);
        stat(|| format!("npy_read_header {}", brief(&r)));
        ok_or_clean(r);
        Ok(())
    })
}

fn npy_rows_case(case: &NpyCase) -> TestCaseResult {
    let bytes = case.bytes();
    guarded("npy_rows", case, move || {
        let dir = tempdir();
        let p = write_input(dir.path(), "in.npy", &bytes);
        let Some(mut rows) = ok_or_clean(NpyRows::open(&p)) else {
            return Ok(());
        };
        let (n_rows, n_cols) = (rows.n_rows(), rows.n_cols());
        let mut out = vec![];
        let mut read = 0usize;
        loop {
            match rows.next_row(&mut out) {
                Ok(true) => {
                    read += 1;
                    if out.len() != n_cols {
                        return Err(format!(
                            "row {read} has {} values, n_cols is {n_cols}",
                            out.len()
                        ));
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
    })
}

fn npy_input_case(case: &NpyCase, batch: usize) -> TestCaseResult {
    let bytes = case.bytes();
    guarded("npy_input", &(case, batch), move || {
        let dir = tempdir();
        let p = write_input(dir.path(), "in.npy", &bytes);
        let r = open_and_drain(&p, &MatrixChoice::default(), batch)?;
        stat(|| format!("npy_input {r}"));
        Ok(())
    })
}

fn npy_read_f32_case(case: &NpyCase) -> TestCaseResult {
    let bytes = case.bytes();
    guarded("npy_read_f32", case, move || {
        let dir = tempdir();
        let p = write_input(dir.path(), "in.npy", &bytes);
        ok_or_clean(read_f32(&p));
        Ok(())
    })
}

fn csv_input_case(case: &CsvCase, batch: usize) -> TestCaseResult {
    let c = case.clone();
    guarded("csv_input", &(case, batch), move || {
        let dir = tempdir();
        let p = write_input(dir.path(), &format!("in.{}", c.ext), &c.text.0);
        let r = open_and_drain(&p, &MatrixChoice::default(), batch)?;
        stat(|| format!("csv_input {r}"));
        Ok(())
    })
}

fn registry_json_case(case: &JsonCase) -> TestCaseResult {
    let bytes = case.bytes();
    guarded("registry_json", case, move || {
        let dir = tempdir();
        let p = write_input(dir.path(), "registry.json", &bytes);
        let r = Registry::load(Some(&p));
        stat(|| format!("registry_json {}", brief(&r)));
        let Some(reg) = ok_or_clean(r) else {
            return Ok(());
        };
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
    })
}

fn h5ad_input_case(case: &H5adCase, batch: usize) -> TestCaseResult {
    let c = case.clone();
    guarded("h5ad_input", &(case, batch), move || {
        let dir = tempdir();
        let p = dir.path().join("in.h5ad");
        if let Err(e) = build(&c, &p) {
            stat(|| format!("h5ad_input build-failed {e}"));
            return Ok(());
        }
        let r = open_and_drain(&p, &c.choice.matrix_choice(), batch)?;
        stat(|| format!("h5ad_input {r}"));
        Ok(())
    })
}

fn h5ad_split_merge_case(case: &H5adCase) -> TestCaseResult {
    let c = case.clone();
    guarded("h5ad_split_merge", case, move || {
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
    })
}

// ---------------------------------------------------------------------------------------------
// The properties

proptest! {
    #![proptest_config(config())]

    /// `read_header` on any bytes.
    #[test]
    fn npy_read_header(case in npy_case()) {
        npy_read_header_case(&case)?;
    }

    /// `NpyRows::open` and `next_row` until the end (or an error).
    #[test]
    fn npy_rows(case in npy_case()) {
        npy_rows_case(&case)?;
    }

    /// `Input::open` on a `.npy` and `next_rows(batch)` until empty.
    #[test]
    fn npy_input(case in npy_case(), batch in 1usize..5) {
        npy_input_case(&case, batch)?;
    }

    /// `read_f32` (the whole-array reader used by tests and small inputs).
    #[test]
    fn npy_read_f32(case in npy_case()) {
        npy_read_f32_case(&case)?;
    }

    /// `Input::open` on a `.csv`/`.tsv`/`.txt` of any text, then every row.
    #[test]
    fn csv_input(case in csv_case(), batch in 1usize..5) {
        csv_input_case(&case, batch)?;
    }

    /// `Registry::load` of a user registry file, then the lookups the CLI makes on its entries.
    #[test]
    fn registry_json(case in json_case()) {
        registry_json_case(&case)?;
    }

    /// `Input::open` on a generated `.h5ad` (with the case's layer / raw / gene column choice),
    /// then every row.
    #[test]
    fn h5ad_input(case in h5ad_case(), batch in 1usize..5) {
        h5ad_input_case(&case, batch)?;
    }

    /// `split` of a generated `.h5ad`, `merge` of its shards (and of the input with itself), and
    /// reading the merged files back.
    #[test]
    fn h5ad_split_merge(case in h5ad_case()) {
        h5ad_split_merge_case(&case)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Regression tests: the minimal failing inputs the properties found, run once each (in a forked
// child, under the same watchdog and heap cap, so a crash fails only that test). Each is named
// `regress_<target>_<what>` and documents the failure it reproduces (see ci/FUZZING.md).

fn npy(header: &str, data: &[u8]) -> NpyCase {
    NpyCase::Parts(NpyParts {
        version: 1,
        hlen: HeaderLen::Exact,
        header: header.to_string(),
        data: Bytes(data.to_vec()),
    })
}

proptest! {
    #![proptest_config(config_once())]

    /// npy_rows hangs: shape (2^32, 0) needs 0 data bytes, so the header check passes, and
    /// `next_row` then returns 2^32 empty rows.
    #[test]
    fn regress_npy_rows_zero_width_huge_count(case in Just(npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 0), }\n",
        b"",
    ))) {
        npy_rows_case(&case)?;
    }

    /// npy_input aborts: the same file makes `Input::open` collect 2^32 cell ids
    /// ("memory allocation of 103079215104 bytes failed").
    #[test]
    fn regress_npy_input_zero_width_huge_count(case in Just(npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 0), }\n",
        b"",
    ))) {
        npy_input_case(&case, 1)?;
    }

    /// A soft link `uns/loop -> /uns`: split and merge copy `uns` recursively and never stop.
    #[test]
    fn regress_h5ad_split_merge_soft_link_cycle(case in Just(H5adCase::minimal(1, 1).with(
        Extra::SoftLink { target: "/uns".into(), name: "uns/loop".into() },
    ))) {
        h5ad_split_merge_case(&case)?;
    }

    /// A hard link `uns/loop -> /`: the same unbounded recursion through the root group.
    #[test]
    fn regress_h5ad_split_merge_hard_link_cycle(case in Just(H5adCase::minimal(1, 1).with(
        Extra::HardLink { target: "/".into(), name: "uns/loop".into() },
    ))) {
        h5ad_split_merge_case(&case)?;
    }

    /// A CSC matrix in `uns` whose shape attribute claims 2^40 rows (nothing checks rows of a
    /// CSC against anything there): split and merge transpose it and allocate 8 TiB.
    #[test]
    fn regress_h5ad_split_merge_csc_in_uns_huge_rows(case in Just(H5adCase::minimal(1, 1).with(
        Extra::Uns("m".into(), UnsNode::Sparse(SparseSpec::empty(true, (1, 1), vec![1 << 40, 1]))),
    ))) {
        h5ad_split_merge_case(&case)?;
    }

    /// An obs index of 2^26 one-byte fixed-length strings, never written (64 MiB as declared, within
    /// the allowance for reads without stored data): each string is read into a 64-byte buffer,
    /// a 4 GiB allocation.
    #[test]
    fn regress_h5ad_input_wide_read_of_narrow_fixed_strings(case in Just(wide_index_case())) {
        h5ad_input_case(&case, 1)?;
    }
}

fn wide_index_case() -> H5adCase {
    let mut c = H5adCase::minimal(1, 1);
    if let FrameNode::Group(f) = &mut c.obs {
        f.index = Some(Ds {
            vals: Vals::Fixed1(vec!["a".into()]),
            shape: Shape::Lie {
                extent: vec![1 << 26],
                deflate: false,
            },
        });
    }
    c
}
