//! `annotate train` / `annotate predict` with the tiny test model on synthetic h5ad files written here:
//! four cell types, each with its own gene program (planted, separable), labels as a categorical obs
//! column with a few missing values.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use scfoundation::data::GeneVocab;
use scfoundation::io::h5ad::elem::Block;
use scfoundation::io::h5ad::frame::Column;
use scfoundation::io::h5ad::{Frame, H5adWriter, ObsSource};
use scfoundation::train::rng::Rng;
use serde_json::Value;

const TYPES: [&str; 4] = ["B cell", "T cell", "monocyte", "NK cell"];

/// 200 real model genes spread over the vocabulary.
fn panel() -> Vec<String> {
    let vocab = GeneVocab::builtin();
    (0..200).map(|i| vocab.names()[i * 90].clone()).collect()
}

/// Counts: type t expresses genes 40t..40t+40 highly (mean 8), a shared block 160..200 (mean 3), and
/// sparse background (mean 0.3), scaled by a per-cell depth. Returns (counts, type per cell).
fn counts(n_cells: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
    let mut rng = Rng::seed_from_u64(seed);
    let mut rows = vec![];
    let mut types = vec![];
    for c in 0..n_cells {
        let t = c % TYPES.len();
        let depth = 0.5 + rng.uniform();
        let row = (0..200)
            .map(|g| {
                let mean = if g / 40 == t {
                    8.0
                } else if g >= 160 {
                    3.0
                } else {
                    0.3
                };
                rng.binomial(30, (depth * mean / 30.0f64).min(1.0)) as f32
            })
            .collect();
        rows.push(row);
        types.push(t);
    }
    (rows, types)
}

/// Writes an h5ad (dense X) whose obs has `cell_type` (categorical; code -1 = missing) and `batch`.
fn write_h5ad(path: &Path, rows: &[Vec<f32>], labels: &[Option<usize>]) {
    let n = rows.len();
    let codes: Vec<i64> = labels.iter().map(|l| l.map_or(-1, |t| t as i64)).collect();
    let names: Vec<String> = TYPES.iter().map(|s| s.to_string()).collect();
    let frame = Frame {
        index_name: "_index".into(),
        index: (0..n).map(|i| format!("cell{i}")).collect(),
        columns: vec![
            (
                "cell_type".into(),
                Column::Categorical {
                    codes,
                    categories: Block::from_strings(&names),
                    ordered: false,
                },
            ),
            (
                "batch".into(),
                Column::Array(Block::from_strings(
                    &(0..n).map(|i| format!("b{}", i % 2)).collect::<Vec<_>>(),
                )),
            ),
        ],
    };
    let w = H5adWriter::create(path).unwrap();
    w.write_obs(ObsSource::Frame(&frame)).unwrap();
    w.write_var(&panel()).unwrap();
    w.ensure_dicts().unwrap();
    w.create_array("X", &[n, 200])
        .unwrap()
        .append_rows(&rows.concat())
        .unwrap();
    w.close().unwrap();
}

/// A labelled file of `n` cells (every 23rd cell unlabelled) and the true types.
fn dataset(dir: &Path, name: &str, n: usize, seed: u64) -> (PathBuf, Vec<usize>) {
    let (rows, types) = counts(n, seed);
    let labels: Vec<Option<usize>> = types
        .iter()
        .enumerate()
        .map(|(i, &t)| (i % 23 != 5).then_some(t))
        .collect();
    let p = dir.join(name);
    write_h5ad(&p, &rows, &labels);
    (p, types)
}

/// `annotate train` with small, fast settings, then EXTRA.
fn train_args(input: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "annotate",
        "train",
        "--input",
        s(input),
        "--label-key",
        "cell_type",
        "--model",
        s(&tiny_model()),
        "--out",
        s(out),
        "--hidden",
        "32",
        "--batch-size",
        "16",
        "--accumulate",
        "1",
        "--val-fraction",
        "0.2",
        "--embed-batch-size",
        "16",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// The binary without HDF5 file locking: test threads write h5ad files while others spawn
/// processes, which inherit the writer's descriptor and its lock.
fn cmd(args: &[String]) -> std::process::Output {
    bin()
        .env("HDF5_USE_FILE_LOCKING", "FALSE")
        .args(args)
        .output()
        .expect("spawn scfoundation")
}

fn run_strings(args: &[String]) -> std::process::Output {
    let out = cmd(args);
    assert!(
        out.status.success(),
        "scfoundation {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|x| x.to_string()).collect()
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn dir_bytes(d: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(d)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn predict_args(
    input: &Path,
    head: &Path,
    model: &Path,
    out: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut a: Vec<String> = [
        "annotate",
        "predict",
        "--input",
        s(input),
        "--head",
        s(head),
        "--model",
        s(model),
        "--output",
        s(out),
        "--batch-size",
        "16",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

fn read_proba(p: &Path) -> (Vec<usize>, Vec<f32>) {
    let f = hdf5::File::open(p).unwrap();
    let ds = f.dataset("obsm/scfoundation_label_proba").unwrap();
    (ds.shape(), ds.read_raw::<f32>().unwrap())
}

fn python() -> PathBuf {
    std::env::var_os("SCF_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv-ci/bin/python"))
}

#[test]
fn finetuned_head_learns_planted_types_and_predict_uses_its_layers() {
    let d = tmp();
    let (input, _) = dataset(d.path(), "ref.h5ad", 160, 1);
    let head = d.path().join("head");
    let out = run_strings(&train_args(
        &input,
        &head,
        &[
            "--finetune-layers",
            "1",
            "--epochs",
            "12",
            "--lr",
            "2e-3",
            "--patience",
            "0",
        ],
    ));
    assert!(String::from_utf8_lossy(&out.stdout).contains("macro-F1"));
    for f in [
        "annotate.json",
        "head.safetensors",
        "encoder.safetensors",
        "metrics.json",
        "train_log.jsonl",
        "training.png",
        "confusion.png",
    ] {
        assert!(head.join(f).is_file(), "{f} missing");
    }
    let m = json(&head.join("metrics.json"));
    let f1 = m["macro_f1"].as_f64().unwrap();
    assert!(f1 >= 0.9, "validation macro-F1 {f1}: {m}");
    assert_eq!(m["split"], "validation");
    let h = json(&head.join("annotate.json"));
    assert_eq!(h["classes"].as_array().unwrap().len(), 4);
    assert_eq!(h["input"]["n_missing_label"], 7);
    assert_eq!(h["finetune_layers"], 1);
    assert!(h["finetuned_tensors"].as_array().unwrap().iter().all(|t| t
        .as_str()
        .unwrap()
        .starts_with("encoder.transformer_encoder.1.")));
    assert_eq!(
        h["base_model"]["sha256"].as_str().unwrap(),
        scfoundation::weights::sha256_file(&tiny_model()).unwrap()
    );
    let k = h["class_counts"]["validation"].as_array().unwrap();
    assert!(
        k.iter().all(|c| c.as_u64().unwrap() >= 6),
        "stratified: {k:?}"
    );

    // Predict on a new labelled query: the labels come back, with metrics beside the output.
    let (query, _) = dataset(d.path(), "query.h5ad", 80, 2);
    let pred = d.path().join("query.annotated.h5ad");
    run_strings(&predict_args(
        &query,
        &head,
        &tiny_model(),
        &pred,
        &["--label-key", "cell_type"],
    ));
    let qm = json(&d.path().join("query.annotated.metrics.json"));
    let qf1 = qm["macro_f1"].as_f64().unwrap();
    assert!(qf1 >= 0.9, "query macro-F1 {qf1}: {qm}");
    assert_eq!(qm["n_missing_label"], 4);
    let (shape, p) = read_proba(&pred);
    assert_eq!(shape, vec![80, 4]);
    for row in p.chunks(4) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
    let f = hdf5::File::open(&pred).unwrap();
    let prov = scfoundation::io::h5ad::read_uns_strings(&f, "scfoundation")
        .unwrap()
        .unwrap();
    let get = |k: &str| prov.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(get("step"), "annotate-predict");
    assert_eq!(get("finetune_layers"), "1");
    let obs = Frame::read(&f, "obs").unwrap();
    let names: Vec<&str> = obs.columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "cell_type",
            "batch",
            "scfoundation_label",
            "scfoundation_label_confidence"
        ]
    );
    drop(f);

    // The fine-tuned layers matter: the same head without them predicts other probabilities.
    let frozen = d.path().join("head_without_layers");
    std::fs::create_dir(&frozen).unwrap();
    for f in ["head.safetensors", "annotate.json"] {
        std::fs::copy(head.join(f), frozen.join(f)).unwrap();
    }
    let mut hj = h.clone();
    hj["finetune_layers"] = 0.into();
    std::fs::write(frozen.join("annotate.json"), hj.to_string()).unwrap();
    let pred0 = d.path().join("q0.h5ad");
    run_strings(&predict_args(&query, &frozen, &tiny_model(), &pred0, &[]));
    let (_, p0) = read_proba(&pred0);
    assert!(
        max_abs_diff(&p, &p0) > 1e-4,
        "predict ignored the fine-tuned layers"
    );

    // anndata reads the output (categorical label, probabilities, classes in uns).
    let script = "import anndata, sys\n\
a = anndata.read_h5ad(sys.argv[1])\n\
assert a.n_obs == 80, a\n\
assert str(a.obs['scfoundation_label'].dtype) == 'category'\n\
assert list(a.obs['scfoundation_label'].cat.categories) == list(a.uns['scfoundation_label_classes'])\n\
assert a.obsm['scfoundation_label_proba'].shape == (80, 4)\n\
assert (a.obs['scfoundation_label_confidence'] > 0.25).all()\n\
assert a.uns['scfoundation']['step'] == 'annotate-predict'\n";
    let out = Command::new(python())
        .args(["-c", script, s(&pred)])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (set SCF_PYTHON): {e}", python().display()));
    assert!(
        out.status.success(),
        "anndata check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn frozen_model_reuses_matching_embeddings_and_is_deterministic() {
    let d = tmp();
    let (input, _) = dataset(d.path(), "ref.h5ad", 120, 3);
    // embed writes obsm['X_scfoundation'] and keeps obs (the labels).
    let embedded = d.path().join("ref.scf.h5ad");
    run_strings(&embed_args(&input, &embedded, &[]));
    let a = d.path().join("a");
    let b = d.path().join("b");
    let args = |out: &Path| {
        train_args(
            &embedded,
            out,
            &["--finetune-layers", "0", "--epochs", "15", "--lr", "3e-3"],
        )
    };
    run_strings(&args(&a));
    run_strings(&args(&b));
    assert_eq!(dir_bytes(&a), dir_bytes(&b), "two runs differ");
    assert!(!a.join("encoder.safetensors").exists());
    let h = json(&a.join("annotate.json"));
    assert_eq!(h["embeddings"], "obsm['X_scfoundation']");
    let f1 = json(&a.join("metrics.json"))["macro_f1"].as_f64().unwrap();
    assert!(f1 >= 0.9, "frozen-model macro-F1 {f1}");

    // Other embedding options than the file's: not reused, so the matrix is needed (embed's output
    // has none); the raw file's embeddings are computed.
    let c = d.path().join("c");
    let o = cmd(&train_args(
        &embedded,
        &c,
        &[
            "--finetune-layers",
            "0",
            "--epochs",
            "1",
            "--tgthighres",
            "t5",
        ],
    ));
    clean_error(&o, "ref.scf.h5ad: no matrix at 'X'");
    run_strings(&train_args(
        &input,
        &c,
        &["--finetune-layers", "0", "--epochs", "1"],
    ));
    assert_eq!(json(&c.join("annotate.json"))["embeddings"], "computed");

    // Fine-tuning runs are byte-identical too.
    let e = d.path().join("e");
    let f = d.path().join("f");
    for out in [&e, &f] {
        run_strings(&train_args(&input, out, &["--max-steps", "3"]));
    }
    assert_eq!(dir_bytes(&e), dir_bytes(&f), "two fine-tuning runs differ");
}

#[test]
fn shuffled_labels_stay_near_chance() {
    let d = tmp();
    let (rows, types) = counts(160, 4);
    let mut labels: Vec<Option<usize>> = types.iter().map(|&t| Some(t)).collect();
    Rng::seed_from_u64(99).shuffle(&mut labels);
    let input = d.path().join("shuffled.h5ad");
    write_h5ad(&input, &rows, &labels);
    let head = d.path().join("head");
    run_strings(&train_args(
        &input,
        &head,
        &[
            "--finetune-layers",
            "0",
            "--epochs",
            "10",
            "--val-fraction",
            "0.3",
            "--patience",
            "0",
        ],
    ));
    let f1 = json(&head.join("metrics.json"))["macro_f1"]
        .as_f64()
        .unwrap();
    assert!(
        f1 < 0.5,
        "shuffled labels gave macro-F1 {f1} (chance is 0.25)"
    );
}

#[test]
fn predict_refuses_a_head_trained_on_other_weights() {
    let d = tmp();
    let (input, _) = dataset(d.path(), "ref.h5ad", 40, 5);
    let head = d.path().join("head");
    run_strings(&train_args(
        &input,
        &head,
        &["--finetune-layers", "0", "--epochs", "1"],
    ));
    let other = d.path().join("other");
    run_strings(&strings(&[
        "init",
        "--config",
        "tiny",
        "--seed",
        "7",
        "--out",
        s(&other),
    ]));
    let out = d.path().join("o.h5ad");
    let o = cmd(&predict_args(&input, &head, &other, &out, &[]));
    clean_error(&o, "refusing to predict with different weights");
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().to_string();
            n.ends_with(".tmp").then_some(n)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bad_inputs_fail_with_one_line_naming_the_file() {
    let d = tmp();
    let (input, _) = dataset(d.path(), "ref.h5ad", 24, 6);
    let head = d.path().join("head");
    let fail = |args: Vec<String>, needle: &str| {
        let o = cmd(&args);
        clean_error(&o, needle);
    };
    // No such obs column.
    let mut a = train_args(&input, &head, &[]);
    a[5] = "celltype".into();
    fail(
        a,
        "ref.h5ad: label column --label-key 'celltype' not found in obs",
    );
    assert!(!head.exists());
    // A single class.
    let (rows, _) = counts(12, 7);
    let one = d.path().join("one.h5ad");
    write_h5ad(&one, &rows, &[Some(2); 12]);
    fail(
        train_args(&one, &head, &[]),
        "a classifier needs at least 2",
    );
    // Labels need an h5ad.
    let csv = d.path().join("x.csv");
    std::fs::write(&csv, "id,A1BG\nc1,1\n").unwrap();
    fail(
        train_args(&csv, &head, &[]),
        "x.csv: labels come from an obs column",
    );
    // Predict: no head directory, a directory that is not a head.
    let out = d.path().join("o.h5ad");
    fail(
        predict_args(&input, &d.path().join("nohead"), &tiny_model(), &out, &[]),
        "nohead: head directory not found",
    );
    fail(
        predict_args(&input, d.path(), &tiny_model(), &out, &[]),
        "not an annotation head",
    );
    // Bad option values are usage errors.
    let mut a = train_args(&input, &head, &["--val-fraction", "1.5"]);
    a.push("--epochs".into());
    a.push("1".into());
    fail(a, "--val-fraction must be in [0, 1)");
    assert!(!out.exists());
}
