//! Preprocessing modes without a reference fixture, checked against modes that have one, and model
//! files whose tensors disagree with their config.

mod common;
use common::*;

use std::fmt::Write as _;

use scfoundation::data::GeneVocab;

/// Writes the 8 reference cells as log1p(x/sum*1e4) plus a last `total_count` column.
fn write_prenormalized_with_total(path: &std::path::Path) {
    let (shape, x) = read_npy(&reference("input_counts_8x19264.npy"));
    let vocab = GeneVocab::builtin();
    let mut out = String::from("cell");
    for g in vocab.names() {
        write!(out, ",{g}").unwrap();
    }
    out.push_str(",total_count\n");
    for i in 0..shape[0] {
        let row = &x[i * shape[1]..(i + 1) * shape[1]];
        let total: f64 = row.iter().map(|v| *v as f64).sum();
        write!(out, "cell_{i}").unwrap();
        for v in row {
            let n = (*v as f64 / total * 1e4).ln_1p();
            if n == 0.0 {
                out.push_str(",0");
            } else {
                write!(out, ",{n:.17e}").unwrap();
            }
        }
        writeln!(out, ",{total}").unwrap();
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn prenormalized_with_total_column_equals_raw_counts() {
    let dir = tmp();
    let input = dir.path().join("norm_total.csv");
    write_prenormalized_with_total(&input);
    let out = dir.path().join("a.npy");
    run_ok(&[
        "embed",
        "--input",
        s(&input),
        "--model",
        s(&reference("tiny_models.ckpt")),
        "--output",
        s(&out),
        "--pre-normalized",
        "A",
        "--tgthighres",
        "a5",
        "--key",
        "rde",
    ]);
    assert_close(&out, &reference("out_cell_pool-all_a5_preF_rde.npy"), 1e-5);
}

#[test]
fn prenormalized_t_uses_the_sum_of_given_values_as_depth() {
    // With T, S = log10(sum of the given values). Feeding raw counts with T therefore embeds the raw
    // counts as values: it must differ from F, and be reproducible.
    let dir = tmp();
    let model = reference("tiny_models.ckpt");
    let input = reference("input_counts_8x19264.csv");
    let (a, b) = (dir.path().join("t.npy"), dir.path().join("f.npy"));
    run_ok(&[
        "embed",
        "--input",
        s(&input),
        "--model",
        s(&model),
        "--output",
        s(&a),
        "--pre-normalized",
        "T",
    ]);
    run_ok(&[
        "embed",
        "--input",
        s(&input),
        "--model",
        s(&model),
        "--output",
        s(&b),
    ]);
    let (_, ta) = read_npy(&a);
    let (_, fb) = read_npy(&b);
    assert!(max_abs_diff(&ta, &fb) > 1e-3);
}

#[test]
fn model_whose_tensors_disagree_with_its_config_is_refused() {
    let dir = tmp();
    let mut entry =
        scfoundation::model::load_entry(&reference("tiny_models.ckpt"), "cell").unwrap();
    entry.raw_config["model_config"]["mae_autobin"]["encoder"]["hidden_dim"] = 48.into();
    entry.save(dir.path()).unwrap();
    let out = dir.path().join("o.npy");
    let err = run_err(&[
        "embed",
        "--input",
        s(&reference("input_counts_8x19264.csv")),
        "--model",
        s(dir.path()),
        "--output",
        s(&out),
    ]);
    assert!(
        err.contains("shape mismatch") && err.contains("cell"),
        "{err}"
    );
    assert!(!out.exists());
}
