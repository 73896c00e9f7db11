//! Every h5ad layout anndata reads, written by the matching writers (ci/make_layout_fixtures.py: anndata
//! itself, and HDF5 surgery for the 0.7 and 0.6 layouts): embed keeps obs, split + merge give back the
//! input, and anndata reads every output. Needs Python with anndata (SCF_PYTHON, else .venv-ci from
//! ci/setup.sh); the test fails, never skips, without it.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::*;

/// Fixtures are made once per test binary.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tmp();
        let script = root().join("ci/make_layout_fixtures.py");
        py(&[s(&script), s(d.path())]);
        d
    })
    .path()
}

fn embed_keeps_obs(name: &str) {
    let input = fixtures().join(name);
    let d = tmp();
    let out = d.path().join("out.h5ad");
    embed_ok(&input, &out, &["--min-mapped", "0.5"]);
    py(&[
        s(&root().join("ci/check_layouts.py")),
        "embed",
        s(&input),
        s(&out),
    ]);
}

fn split_merge_roundtrip(name: &str) {
    let input = fixtures().join(name);
    let d = tmp();
    let shards = d.path().join("shards");
    let out = run_ok(&[
        "split",
        "--input",
        s(&input),
        "--cells-per-shard",
        "5",
        "--outdir",
        s(&shards),
    ]);
    let list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(list.len(), 3, "12 cells in shards of 5: {list:?}");
    let merged = d.path().join("merged.h5ad");
    let mut args = vec!["merge".to_string()];
    args.extend(list.iter().cloned());
    args.extend(["--output".to_string(), s(&merged).to_string()]);
    run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut check = vec![
        s(&root().join("ci/check_layouts.py")).to_string(),
        "roundtrip".into(),
        s(&input).to_string(),
        s(&merged).to_string(),
    ];
    check.extend(list);
    py(&check.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn current_layout() {
    embed_keeps_obs("current.h5ad");
    split_merge_roundtrip("current.h5ad");
}

#[test]
fn dense_x_csc_layer_fixed_length_names() {
    embed_keeps_obs("dense_csc.h5ad");
    split_merge_roundtrip("dense_csc.h5ad");
}

#[test]
fn anndata_07_layout_with_object_references() {
    embed_keeps_obs("old07.h5ad");
    split_merge_roundtrip("old07.h5ad");
}

#[test]
fn anndata_06_layout_with_compound_frames() {
    embed_keeps_obs("legacy06.h5ad");
    split_merge_roundtrip("legacy06.h5ad");
}

#[test]
fn raw_layer_and_gene_column_in_every_layout() {
    let model = reference("tiny_models.ckpt");
    for (name, extra) in [
        ("current.h5ad", vec!["--use-raw"]),
        ("old07.h5ad", vec!["--use-raw"]),
        ("legacy06.h5ad", vec!["--use-raw"]),
        ("current.h5ad", vec!["--layer", "counts"]),
        ("dense_csc.h5ad", vec!["--layer", "csc"]),
        ("old07.h5ad", vec!["--layer", "csc"]),
    ] {
        let d = tmp();
        let out = d.path().join("o.npy");
        let input = fixtures().join(name);
        let mut args = vec![
            "embed",
            "--input",
            s(&input),
            "--model",
            s(&model),
            "--output",
            s(&out),
        ];
        args.extend(extra.iter().copied());
        run_ok(&args);
        let (shape, v) = read_npy(&out);
        assert_eq!(shape[0], 12, "{name} {extra:?}");
        assert!(v.iter().all(|x| x.is_finite()));
    }
    // A var column holding ids, not symbols, maps nothing and is refused with the cause named.
    let err = run_err(&[
        "embed",
        "--input",
        s(&fixtures().join("old07.h5ad")),
        "--model",
        s(&model),
        "--output",
        s(&tmp().path().join("never.h5ad")),
        "--gene-column",
        "gene_ids",
    ]);
    assert!(err.contains("map"), "{err}");
}
