//! Shared helpers for integration tests: fixtures, running the binary, comparing arrays.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn reference(name: &str) -> PathBuf {
    root().join("test-data/reference").join(name)
}

pub fn test_data(name: &str) -> PathBuf {
    root().join("test-data").join(name)
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scfoundation"));
    c.env_remove("RUST_LOG");
    // A test run inside a SLURM job or under torchrun must not look like data-parallel training.
    for v in [
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "SLURM_LOCALID",
    ] {
        c.env_remove(v);
    }
    c
}

/// Runs the binary and fails the test with its stderr when it does not succeed.
pub fn run_ok(args: &[&str]) -> Output {
    let out = bin().args(args).output().expect("spawn scfoundation");
    assert!(
        out.status.success(),
        "scfoundation {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the binary expecting failure; returns stderr.
pub fn run_err(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("spawn scfoundation");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "scfoundation {args:?} should have failed"
    );
    err
}

pub fn read_npy(p: &Path) -> (Vec<usize>, Vec<f32>) {
    scfoundation::io::npy::read_f32(p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()))
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn assert_close(got: &Path, want: &Path, tol: f32) {
    let (gs, g) = read_npy(got);
    let (ws, w) = read_npy(want);
    assert_eq!(gs, ws, "shape of {} vs {}", got.display(), want.display());
    let d = max_abs_diff(&g, &w);
    assert!(
        d <= tol,
        "{} differs from {} by {d:e} (> {tol:e})",
        got.display(),
        want.display()
    );
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The tiny random model every test uses.
pub fn tiny_model() -> PathBuf {
    reference("tiny_models.ckpt")
}

/// `embed --input IN --model <tiny> --output OUT EXTRA...`
pub fn embed_args(input: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "embed",
        "--input",
        s(input),
        "--model",
        s(&tiny_model()),
        "--output",
        s(out),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// Runs embed with the tiny model and fails the test if it does not succeed.
pub fn embed_ok(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let args = embed_args(input, out, extra);
    run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Asserts a clean failure: exit status 1 (not a panic or a signal) and exactly one
/// `scfoundation: error:` line (info logs may precede it), containing `needle`. Returns that line.
pub fn clean_error(out: &Output, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status {:?}: {err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("scfoundation: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    assert!(lines[0].contains(needle), "expected '{needle}' in: {err}");
    lines[0].to_string()
}

/// The Python with anndata, scanpy, igraph and leidenalg (ci/setup.sh): SCF_PYTHON, else .venv-ci.
pub fn python() -> PathBuf {
    std::env::var_os("SCF_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv-ci/bin/python"))
}

/// Runs [`python`] with `args`, fails the test with its output when it does not succeed; returns stdout.
pub fn py(args: &[&str]) -> String {
    let out = Command::new(python())
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (run ci/setup.sh or set SCF_PYTHON): {e}",
                python().display()
            )
        });
    assert!(
        out.status.success(),
        "python {args:?} failed (SCF_PYTHON needs anndata, scanpy, igraph, leidenalg; see ci/setup.sh):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}
