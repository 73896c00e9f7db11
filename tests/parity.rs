//! Every reference output reproduced through the public CLI at <= 1e-5, from the .ckpt and from safetensors.

mod common;
use common::*;

const TOL: f32 = 1e-5;

struct Case {
    golden: &'static str,
    input: &'static str,
    args: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        golden: "out_cell_pool-all_t4_preF_ce.npy",
        input: "input_counts_8x19264.csv",
        args: &["--pool", "all", "--tgthighres", "t4"],
    },
    Case {
        golden: "out_cell_pool-max_t4_preF_ce.npy",
        input: "input_counts_8x19264.csv",
        args: &["--pool", "max", "--tgthighres", "t4"],
    },
    Case {
        golden: "out_cell_pool-all_f1_preF_ce.npy",
        input: "input_counts_8x19264.csv",
        args: &["--tgthighres", "f1"],
    },
    Case {
        golden: "out_cell_pool-all_a5_preF_rde.npy",
        input: "input_counts_8x19264.csv",
        args: &["--tgthighres", "a5", "--key", "rde"],
    },
    Case {
        golden: "out_cell_pool-all_t4_preF_ce_from-npy-float32.npy",
        input: "input_counts_8x19264.npy",
        args: &[],
    },
    Case {
        golden: "out_cell_pool-all_t4_preF_ce_from-subset.npy",
        input: "input_subset_8x3005.csv",
        args: &[],
    },
    Case {
        golden: "out_bulk_cell_pool-max_preF_ce.npy",
        input: "input_counts_8x19264.npy",
        args: &[
            "--input-type",
            "bulk",
            "--pool",
            "max",
            "--tgthighres",
            "f1",
        ],
    },
    Case {
        golden: "out_gene_t4_preF.npy",
        input: "input_counts_2x19264.npy",
        args: &["--mode", "gene", "--batch-size", "1"],
    },
    Case {
        golden: "out_gene-batch_t4_preF.npy",
        input: "input_counts_2x19264.npy",
        args: &["--mode", "gene", "--batch-size", "2"],
    },
    Case {
        golden: "out_gene-expression_t4_preF.npy",
        input: "input_counts_2x19264.npy",
        args: &["--mode", "expression"],
    },
];

fn check_all(model: &str) {
    check_all_with(model, &[]);
}

/// Every golden output, with these environment variables set for the binary.
fn check_all_with(model: &str, env: &[(&str, &str)]) {
    let dir = tmp();
    for c in CASES {
        let out = dir.path().join(c.golden);
        let input = reference(c.input);
        let mut args = vec![
            "embed",
            "--input",
            s(&input),
            "--model",
            model,
            "--output",
            s(&out),
        ];
        args.extend_from_slice(c.args);
        let res = bin()
            .envs(env.iter().copied())
            .args(&args)
            .output()
            .expect("spawn scfoundation");
        assert!(
            res.status.success(),
            "{env:?} scfoundation {args:?}: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        assert_close(&out, &reference(c.golden), TOL);
    }
}

#[test]
fn all_reference_outputs_from_ckpt() {
    check_all(s(&reference("tiny_models.ckpt")));
}

/// candle's own products and composite ops (no OpenBLAS, no fused kernels) and glibc's default
/// allocator: the baseline `bench` compares against must give the same results.
#[test]
fn all_reference_outputs_with_candle_kernels() {
    check_all_with(
        s(&reference("tiny_models.ckpt")),
        &[
            ("SCFOUNDATION_GEMM", "candle"),
            ("SCFOUNDATION_FUSED", "0"),
            ("SCFOUNDATION_MALLOC", "system"),
        ],
    );
}

#[test]
fn all_reference_outputs_from_safetensors() {
    check_all(s(&reference("tiny_models.safetensors")));
}

#[test]
fn converted_directory_gives_the_same_results() {
    let dir = tmp();
    let conv = dir.path().join("converted");
    run_ok(&["convert", s(&reference("tiny_models.ckpt")), s(&conv)]);
    for k in ["gene", "cell", "rde"] {
        assert!(conv.join(format!("{k}.safetensors")).exists());
        assert!(conv.join(format!("{k}.config.json")).exists());
    }
    let out = dir.path().join("o.npy");
    run_ok(&[
        "embed",
        "--input",
        s(&reference("input_counts_8x19264.csv")),
        "--model",
        s(&conv),
        "--output",
        s(&out),
        "--key",
        "rde",
        "--tgthighres",
        "a5",
    ]);
    assert_close(&out, &reference("out_cell_pool-all_a5_preF_rde.npy"), TOL);
}

#[test]
fn batch_size_does_not_change_cell_embeddings() {
    let dir = tmp();
    let input = reference("input_subset_8x3005.csv");
    let model = reference("tiny_models.ckpt");
    let mut outs = vec![];
    for bs in ["1", "3", "8", "auto"] {
        let out = dir.path().join(format!("b{bs}.npy"));
        run_ok(&[
            "embed",
            "--input",
            s(&input),
            "--model",
            s(&model),
            "--output",
            s(&out),
            "--batch-size",
            bs,
        ]);
        outs.push(out);
    }
    for o in &outs[1..] {
        assert_close(o, &outs[0], TOL);
    }
    assert_close(
        &outs[2],
        &reference("out_cell_pool-all_t4_preF_ce_from-subset.npy"),
        TOL,
    );
    // auto is 8 cells per batch on the CPU: the same bytes, and the provenance says so.
    let prov = std::fs::read_to_string(format!("{}.provenance.json", outs[3].display())).unwrap();
    assert!(prov.contains("\"batch_size\": \"auto\""), "{prov}");
    assert!(prov.contains("\"batch_cells_max\": \"8\""), "{prov}");
    assert_eq!(
        std::fs::read(&outs[3]).unwrap(),
        std::fs::read(&outs[2]).unwrap()
    );
}

#[test]
fn batch_size_does_not_change_pool_max_or_expression() {
    let dir = tmp();
    let model = reference("tiny_models.ckpt");
    let input = reference("input_counts_8x19264.csv");
    let a = dir.path().join("a.npy");
    let b = dir.path().join("b.npy");
    run_ok(&[
        "embed",
        "--input",
        s(&input),
        "--model",
        s(&model),
        "--output",
        s(&a),
        "--pool",
        "max",
        "--batch-size",
        "1",
    ]);
    run_ok(&[
        "embed",
        "--input",
        s(&input),
        "--model",
        s(&model),
        "--output",
        s(&b),
        "--pool",
        "max",
        "--batch-size",
        "5",
    ]);
    assert_close(&a, &b, TOL);
}
