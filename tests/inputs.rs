//! Input formats and encodings all give the same embeddings; bad input fails with one clear line and
//! leaves no output behind.

mod common;
use common::*;

use std::path::Path;

fn model() -> String {
    s(&tiny_model()).to_string()
}

#[test]
fn h5ad_encodings_agree() {
    let dir = tmp();
    let base = dir.path().join("base.npy");
    embed_ok(&test_data("pbmc_tiny.h5ad"), &base, &[]);
    let (shape, _) = read_npy(&base);
    assert_eq!(shape, vec![16, 128]);
    for (file, extra) in [
        ("pbmc_tiny_dense.h5ad", vec![]),
        ("pbmc_tiny_csc.h5ad", vec![]),
        ("pbmc_tiny_fixedstr.h5ad", vec![]),
        ("pbmc_tiny_layers.h5ad", vec!["--layer", "counts"]),
        ("pbmc_tiny_layers.h5ad", vec!["--use-raw"]),
        (
            "pbmc_tiny_ensembl.h5ad",
            vec!["--gene-column", "gene_symbols"],
        ),
    ] {
        let out = dir.path().join(format!("{file}-{}.npy", extra.len()));
        embed_ok(&test_data(file), &out, &extra);
        assert_close(&out, &base, 1e-6);
    }
}

#[test]
fn same_input_gives_identical_bytes() {
    let dir = tmp();
    let m = model();
    let inp = test_data("pbmc_tiny.h5ad");
    for name in ["a.h5ad", "b.h5ad"] {
        run_ok(&[
            "embed",
            "--input",
            s(&inp),
            "--model",
            &m,
            "--output",
            s(&dir.path().join(name)),
        ]);
    }
    let a = std::fs::read(dir.path().join("a.h5ad")).unwrap();
    let b = std::fs::read(dir.path().join("b.h5ad")).unwrap();
    assert!(a == b, "two identical runs gave different h5ad bytes");
}

fn assert_clean_failure(args: &[&str], out: &Path, needles: &[&str]) {
    let err = run_err(args);
    // Info logs (progress, phases) may precede it; the error itself is one line.
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("scfoundation: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "error should mention '{n}': {err}");
    }
    assert!(!out.exists(), "no output may be left behind");
    let dir = out.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

fn write(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn bad_inputs_fail_clearly() {
    let dir = tmp();
    let d = dir.path();
    let m = model();
    let out = d.join("out.h5ad");
    let o = s(&out).to_string();
    let header = "cell,TP53,GAPDH,ACTB\n";

    let missing = d.join("nope.h5ad");
    assert_clean_failure(
        &[
            "embed",
            "--input",
            s(&missing),
            "--model",
            &m,
            "--output",
            &o,
        ],
        &out,
        &["nope.h5ad", "not found"],
    );

    let wrong = write(d, "cells.xlsx", "x");
    assert_clean_failure(
        &["embed", "--input", s(&wrong), "--model", &m, "--output", &o],
        &out,
        &["cells.xlsx", "extension"],
    );

    let nan = write(d, "nan.csv", &format!("{header}c1,1,nan,3\n"));
    assert_clean_failure(
        &["embed", "--input", s(&nan), "--model", &m, "--output", &o],
        &out,
        &["nan.csv", "c1", "non-finite"],
    );

    let neg = write(d, "neg.csv", &format!("{header}c1,1,2,3\nc2,1,-4,3\n"));
    assert_clean_failure(
        &["embed", "--input", s(&neg), "--model", &m, "--output", &o],
        &out,
        &["neg.csv", "c2", "negative"],
    );

    let empty = write(d, "empty.csv", &format!("{header}c1,1,2,3\nc2,0,0,0\n"));
    assert_clean_failure(
        &["embed", "--input", s(&empty), "--model", &m, "--output", &o],
        &out,
        &["empty.csv", "c2", "empty"],
    );

    let bytes = std::fs::read(test_data("pbmc_tiny.h5ad")).unwrap();
    let trunc = d.join("trunc.h5ad");
    std::fs::write(&trunc, &bytes[..bytes.len() / 3]).unwrap();
    assert_clean_failure(
        &["embed", "--input", s(&trunc), "--model", &m, "--output", &o],
        &out,
        &["trunc.h5ad"],
    );

    let ok = write(d, "ok.csv", &format!("{header}c1,1,2,3\n"));
    assert_clean_failure(
        &[
            "embed",
            "--input",
            s(&ok),
            "--model",
            &m,
            "--output",
            &o,
            "--key",
            "nokey",
        ],
        &out,
        &["tiny_models.ckpt", "nokey", "cell"],
    );

    assert_clean_failure(
        &[
            "embed",
            "--input",
            s(&ok),
            "--model",
            s(&ok),
            "--output",
            &o,
        ],
        &out,
        &["ok.csv", "not a model"],
    );

    assert_clean_failure(
        &[
            "embed",
            "--input",
            s(&ok),
            "--model",
            &m,
            "--output",
            &o,
            "--model-sha256",
            &"0".repeat(64),
        ],
        &out,
        &["sha256 mismatch", "tiny_models.ckpt"],
    );

    let bad_npy = write(d, "bad.npy", "not numpy");
    let npy_out = d.join("o.npy");
    assert_clean_failure(
        &[
            "embed",
            "--input",
            s(&bad_npy),
            "--model",
            &m,
            "--output",
            s(&npy_out),
        ],
        &npy_out,
        &["bad.npy"],
    );
}

#[test]
fn non_human_gene_names_are_refused_with_a_cause() {
    let dir = tmp();
    let m = model();
    let out = dir.path().join("o.h5ad");
    let err = run_err(&[
        "embed",
        "--input",
        s(&test_data("pbmc_tiny_ensembl.h5ad")),
        "--model",
        &m,
        "--output",
        s(&out),
    ]);
    assert!(
        err.contains("Ensembl") && err.contains("--gene-column"),
        "{err}"
    );
    let err = run_err(&[
        "embed",
        "--input",
        s(&test_data("pbmc_tiny_mouse.h5ad")),
        "--model",
        &m,
        "--output",
        s(&out),
    ]);
    assert!(err.contains("mouse"), "{err}");
    assert!(!out.exists());
}

#[test]
fn duplicate_gene_columns_are_summed() {
    let dir = tmp();
    let d = dir.path();
    let dup = write(d, "dup.csv", "cell,TP53,GAPDH,GAPDH,ACTB\nc1,1,2,3,4\n");
    let summed = write(d, "sum.csv", "cell,TP53,GAPDH,ACTB\nc1,1,5,4\n");
    let (a, b) = (d.join("a.npy"), d.join("b.npy"));
    embed_ok(&dup, &a, &[]);
    embed_ok(&summed, &b, &[]);
    assert_close(&a, &b, 0.0);
    // One cell keeps its batch axis (the reference squeezes it away).
    assert_eq!(read_npy(&a).0, vec![1, 128]);
}

#[test]
fn version_and_help() {
    let out = run_ok(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("scfoundation {}", env!("CARGO_PKG_VERSION"))
    );
    let out = run_ok(&["embed", "--help"]);
    let h = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--input",
        "--model",
        "--output",
        "--mode",
        "--pool",
        "--tgthighres",
        "--pre-normalized",
        "--input-type",
        "--key",
        "--batch-size",
        "--device",
        "--layer",
        "--gene-column",
        "--min-mapped",
    ] {
        assert!(h.contains(flag), "help lacks {flag}");
    }
}

#[test]
fn interrupted_run_leaves_no_partial_output() {
    let dir = tmp();
    let out = dir.path().join("genes.h5ad");
    let m = model();
    let mut child = bin()
        .args([
            "embed",
            "--input",
            s(&test_data("pbmc_tiny.h5ad")),
            "--model",
            &m,
            "--output",
            s(&out),
            "--mode",
            "gene",
            "--batch-size",
            "1",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tmp_exists = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
    };
    let start = std::time::Instant::now();
    while !tmp_exists() {
        assert!(
            start.elapsed().as_secs() < 60,
            "no temporary output appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(!out.exists());
    assert!(!tmp_exists(), "temporary output left after SIGTERM");
}
