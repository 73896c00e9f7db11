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
