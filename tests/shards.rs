//! split → embed each shard → merge equals embedding the whole file; merge refuses mixed provenance.

mod common;
use common::*;

use std::path::{Path, PathBuf};

fn obsm(p: &Path) -> (Vec<usize>, Vec<f32>) {
    let f = hdf5::File::open(p).unwrap();
    let ds = f.dataset("obsm/X_scfoundation").unwrap();
    (ds.shape(), ds.read_raw::<f32>().unwrap())
}

fn obs_names(p: &Path) -> Vec<String> {
    let f = hdf5::File::open(p).unwrap();
    f.dataset("obs/_index")
        .unwrap()
        .read_1d::<hdf5::types::VarLenUnicode>()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn split_embed_merge_equals_whole_file() {
    let dir = tmp();
    let d = dir.path();
    let input = test_data("pbmc_tiny.h5ad");
    let out = run_ok(&[
        "split",
        "--input",
        s(&input),
        "--cells-per-shard",
        "5",
        "--outdir",
        s(&d.join("shards")),
    ]);
    let shards: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(shards.len(), 4);
    assert!(shards[0].ends_with("shard_00000.h5ad") && shards[3].ends_with("shard_00003.h5ad"));
    let mut embedded = vec![];
    for sh in &shards {
        let o = sh.with_extension("emb.h5ad");
        embed_ok(sh, &o, &[]);
        embedded.push(o);
    }
    let merged = d.join("merged.h5ad");
    let mut args = vec!["merge"];
    args.extend(embedded.iter().map(|p| s(p)));
    args.extend(["--output", s(&merged)]);
    run_ok(&args);
    let whole = d.join("whole.h5ad");
    embed_ok(&input, &whole, &[]);
    let (ms, mv) = obsm(&merged);
    let (ws, wv) = obsm(&whole);
    assert_eq!(ms, ws);
    assert!(max_abs_diff(&mv, &wv) <= 1e-5);
    assert_eq!(obs_names(&merged), obs_names(&whole));
    assert_eq!(obs_names(&shards[1]), obs_names(&input)[5..10].to_vec());
}

#[test]
fn merge_refuses_different_models_or_options() {
    let dir = tmp();
    let d = dir.path();
    let input = test_data("pbmc_tiny.h5ad");
    let (a, b, c) = (d.join("a.h5ad"), d.join("b.h5ad"), d.join("c.h5ad"));
    embed_ok(&input, &a, &[]);
    embed_ok(&input, &b, &["--key", "rde"]);
    embed_ok(&input, &c, &["--tgthighres", "t3"]);
    let out = d.join("m.h5ad");
    let err = run_err(&["merge", s(&a), s(&b), "--output", s(&out)]);
    assert!(err.contains("checkpoint_key"), "{err}");
    let err = run_err(&["merge", s(&a), s(&c), "--output", s(&out)]);
    assert!(err.contains("tgthighres"), "{err}");
    assert!(!out.exists());
    let conv = d.join("conv");
    run_ok(&[
        "convert",
        s(&reference("tiny_models.ckpt")),
        s(&conv),
        "--key",
        "cell",
    ]);
    let e = d.join("e.h5ad");
    let m = conv.display().to_string();
    run_ok(&[
        "embed",
        "--input",
        s(&input),
        "--model",
        &m,
        "--output",
        s(&e),
    ]);
    let err = run_err(&["merge", s(&a), s(&e), "--output", s(&out)]);
    assert!(err.contains("sha256"), "{err}");
}

#[test]
fn mean_gene_embeddings_merge_to_the_overall_mean() {
    let dir = tmp();
    let d = dir.path();
    let input = test_data("pbmc_tiny.h5ad");
    run_ok(&[
        "split",
        "--input",
        s(&input),
        "--cells-per-shard",
        "6",
        "--outdir",
        s(d),
    ]);
    let mut outs = vec![];
    for i in 0..3 {
        let sh = d.join(format!("shard_0000{i}.h5ad"));
        let o = d.join(format!("g{i}.h5ad"));
        embed_ok(&sh, &o, &["--mode", "gene", "--gene-embedding", "mean"]);
        outs.push(o);
    }
    let merged = d.join("m.h5ad");
    run_ok(&[
        "merge",
        s(&outs[0]),
        s(&outs[1]),
        s(&outs[2]),
        "--output",
        s(&merged),
    ]);
    let whole = d.join("w.h5ad");
    embed_ok(
        &input,
        &whole,
        &["--mode", "gene", "--gene-embedding", "mean"],
    );
    let read = |p: &Path| {
        hdf5::File::open(p)
            .unwrap()
            .dataset("varm/X_scfoundation")
            .unwrap()
            .read_raw::<f32>()
            .unwrap()
    };
    assert!(max_abs_diff(&read(&merged), &read(&whole)) <= 1e-5);
}

#[test]
fn csc_input_splits_into_csr_shards_with_the_same_cells() {
    let dir = tmp();
    let d = dir.path();
    run_ok(&[
        "split",
        "--input",
        s(&test_data("pbmc_tiny_csc.h5ad")),
        "--cells-per-shard",
        "7",
        "--outdir",
        s(d),
        "--prefix",
        "c",
    ]);
    let mut embedded = vec![];
    for i in 0..3 {
        let sh = d.join(format!("c_0000{i}.h5ad"));
        let f = hdf5::File::open(&sh).unwrap();
        let enc = f
            .group("X")
            .unwrap()
            .attr("encoding-type")
            .unwrap()
            .read_scalar::<hdf5::types::VarLenUnicode>()
            .unwrap();
        assert_eq!(enc.as_str(), "csr_matrix");
        let o = d.join(format!("e{i}.h5ad"));
        embed_ok(&sh, &o, &[]);
        embedded.push(o);
    }
    let merged = d.join("m.h5ad");
    run_ok(&[
        "merge",
        s(&embedded[0]),
        s(&embedded[1]),
        s(&embedded[2]),
        "--output",
        s(&merged),
    ]);
    let whole = d.join("w.h5ad");
    embed_ok(&test_data("pbmc_tiny.h5ad"), &whole, &[]);
    assert!(max_abs_diff(&obsm(&merged).1, &obsm(&whole).1) <= 1e-5);
    assert_eq!(obs_names(&merged), obs_names(&whole));
}
