//! Training: `init`, `pretrain` and the training core, on CPU with small models and synthetic h5ad
//! files written here (real gene names, raw counts with cell-type structure).
//!
//! Most tests use a "micro" config FILE (encoder 16 wide x 2 layers, decoder 8 wide x 1 layer, 10 bins)
//! instead of the tiny preset: a training step still runs the decoder over all 19,266 positions, and
//! the micro model makes a few hundred steps affordable on a small CPU.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{run_err, run_ok, s, tmp};
use scfoundation::data::{AlignedCell, GeneVocab, N_GENES};
use scfoundation::train::init::{nested_config, random_tensors};
use scfoundation::train::params::{TrainModel, Trainable};
use scfoundation::train::rda::{make_example, masked_sse, Example, RdaOptions};
use scfoundation::train::rng::Rng;
use scfoundation::train::{MicroBatch, Trainer, TrainerConfig};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Synthetic data

/// Genes of the synthetic panel: 240 real model genes spread over the vocabulary, plus 4 unknown.
fn panel() -> Vec<String> {
    let vocab = GeneVocab::builtin();
    let mut g: Vec<String> = (0..240).map(|i| vocab.names()[i * 80].clone()).collect();
    g.extend((0..4).map(|i| format!("NOTAGENE{i}")));
    g
}

/// Raw counts with structure: three cell types, each with its own 60-gene program (mean 6 counts),
/// a shared 60-gene block (mean 3) and sparse background (mean 0.2), scaled by a per-cell depth.
fn synthetic_counts(n_cells: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::seed_from_u64(seed);
    let n_genes = panel().len();
    (0..n_cells)
        .map(|c| {
            let t = c % 3;
            let depth = 0.5 + rng.uniform();
            (0..n_genes)
                .map(|g| {
                    let mean = if g / 60 == t {
                        6.0
                    } else if (180..240).contains(&g) {
                        3.0
                    } else {
                        0.2
                    };
                    rng.binomial(20, (depth * mean / 20.0f64).min(1.0)) as f32
                })
                .collect()
        })
        .collect()
}

fn write_index(f: &hdf5::File, group: &str, names: &[String]) {
    let grp = f.create_group(group).unwrap();
    let v: Vec<hdf5::types::VarLenUnicode> = names.iter().map(|s| s.parse().unwrap()).collect();
    grp.new_dataset_builder()
        .with_data(&v)
        .create("_index")
        .unwrap();
    grp.new_attr::<hdf5::types::VarLenUnicode>()
        .shape(())
        .create("_index")
        .unwrap()
        .write_scalar(&"_index".parse::<hdf5::types::VarLenUnicode>().unwrap())
        .unwrap();
}

/// Writes an AnnData file with the hdf5 crate: X dense (float32) or CSR.
fn write_h5ad(path: &Path, counts: &[Vec<f32>], csr: bool) {
    let genes = panel();
    let f = hdf5::File::create(path).unwrap();
    let cells: Vec<String> = (0..counts.len()).map(|i| format!("cell{i}")).collect();
    write_index(&f, "obs", &cells);
    write_index(&f, "var", &genes);
    if csr {
        let (mut data, mut indices, mut indptr) = (vec![], vec![], vec![0i64]);
        for row in counts {
            for (j, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    data.push(v);
                    indices.push(j as i64);
                }
            }
            indptr.push(data.len() as i64);
        }
        let g = f.create_group("X").unwrap();
        g.new_attr::<hdf5::types::VarLenUnicode>()
            .shape(())
            .create("encoding-type")
            .unwrap()
            .write_scalar(&"csr_matrix".parse::<hdf5::types::VarLenUnicode>().unwrap())
            .unwrap();
        g.new_attr::<i64>()
            .shape(2)
            .create("shape")
            .unwrap()
            .write(&[counts.len() as i64, genes.len() as i64])
            .unwrap();
        g.new_dataset_builder()
            .with_data(&data)
            .create("data")
            .unwrap();
        g.new_dataset_builder()
            .with_data(&indices)
            .create("indices")
            .unwrap();
        g.new_dataset_builder()
            .with_data(&indptr)
            .create("indptr")
            .unwrap();
    } else {
        let flat: Vec<f32> = counts.iter().flatten().copied().collect();
        let arr = ndarray::Array2::from_shape_vec((counts.len(), genes.len()), flat).unwrap();
        f.new_dataset_builder().with_data(&arr).create("X").unwrap();
    }
}

/// Two files (CSR and dense) of synthetic cells in `dir`.
fn synthetic_data(dir: &Path) -> Vec<PathBuf> {
    let a = dir.join("part_a.h5ad");
    let b = dir.join("part_b.h5ad");
    write_h5ad(&a, &synthetic_counts(40, 11), true);
    write_h5ad(&b, &synthetic_counts(40, 12), false);
    vec![a, b]
}

/// The micro config as a JSON file.
fn micro_config(dir: &Path) -> PathBuf {
    let p = dir.join("micro.json");
    let cfg = nested_config((16, 2, 2, 8), (8, 1, 2, 4), 10);
    std::fs::write(&p, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    p
}

fn log_records(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Log records without the timing field (the only part that may differ between equal runs).
fn log_without_timing(dir: &Path) -> Vec<Value> {
    log_records(dir)
        .into_iter()
        .map(|mut v| {
            v.as_object_mut().unwrap().remove("cells_per_s");
            v
        })
        .collect()
}

fn safetensors_tensors(p: &Path) -> HashMap<String, Vec<u8>> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().to_vec()))
        .collect()
}

fn embed_works(model: &Path, input: &Path, dir: &Path) {
    let out = dir.join("cells.npy");
    run_ok(&[
        "--threads",
        "1",
        "embed",
        "-i",
        s(input),
        "-m",
        s(model),
        "-o",
        s(&out),
    ]);
    let (shape, v) = common::read_npy(&out);
    assert_eq!(shape[0], 16);
    assert!(v.iter().all(|x| x.is_finite()));
    let out = dir.join("expr.npy");
    run_ok(&[
        "--threads",
        "1",
        "embed",
        "-i",
        s(input),
        "-m",
        s(model),
        "-o",
        s(&out),
        "--mode",
        "expression",
        "--batch-size",
        "4",
    ]);
    let (shape, v) = common::read_npy(&out);
    assert_eq!(shape, vec![16, N_GENES]);
    assert!(v.iter().all(|x| x.is_finite()));
}

fn pretrain_args<'a>(data: &'a [PathBuf], extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["--threads", "1", "pretrain", "--data"];
    a.extend(data.iter().map(|p| s(p)));
    a.extend([
        "--min-genes",
        "20",
        "--batch-size",
        "2",
        "--val-fraction",
        "0.1",
        "--lr",
        "3e-3",
        "--warmup",
        "5",
    ]);
    a.extend_from_slice(extra);
    a
}

// ---------------------------------------------------------------------------------------------
// CLI: init and pretrain

#[test]
fn init_writes_a_model_embed_loads() {
    let d = tmp();
    let m = d.path().join("model");
    run_ok(&["init", "--config", "tiny", "--seed", "3", "--out", s(&m)]);
    for f in [
        "cell.safetensors",
        "gene.safetensors",
        "cell.config.json",
        "provenance.json",
    ] {
        assert!(m.join(f).is_file(), "{f}");
    }
    // Same seed, same bytes; another seed, other weights.
    let m2 = d.path().join("model2");
    run_ok(&["init", "--config", "tiny", "--seed", "3", "--out", s(&m2)]);
    assert_eq!(
        std::fs::read(m.join("gene.safetensors")).unwrap(),
        std::fs::read(m2.join("gene.safetensors")).unwrap()
    );
    let m3 = d.path().join("model3");
    run_ok(&["init", "--config", "tiny", "--seed", "4", "--out", s(&m3)]);
    assert_ne!(
        safetensors_tensors(&m.join("gene.safetensors"))["pos_emb.weight"],
        safetensors_tensors(&m3.join("gene.safetensors"))["pos_emb.weight"]
    );
    embed_works(&m, &common::test_data("pbmc_tiny.h5ad"), d.path());
    let e = run_err(&[
        "init",
        "--config",
        "nonesuch",
        "--out",
        s(&d.path().join("x")),
    ]);
    assert!(e.contains("neither a preset"), "{e}");
}

/// Masked MSE on structured synthetic data falls clearly over 120 steps; the output loads in embed.
/// Zeros are masked rarely here (0.001): with the released 0.03, the ~19,000 absent genes of these
/// 240-gene cells make "predict 0" a floor that hides what the model learns in a short run.
#[test]
fn pretraining_lowers_the_masked_loss_and_the_output_embeds() {
    let d = tmp();
    let data = synthetic_data(d.path());
    let m0 = d.path().join("m0");
    run_ok(&[
        "init",
        "--config",
        s(&micro_config(d.path())),
        "--seed",
        "1",
        "--out",
        s(&m0),
    ]);
    let out = d.path().join("run");
    let t0 = std::time::Instant::now();
    let args = pretrain_args(
        &data,
        &[
            "--init",
            s(&m0),
            "--out",
            s(&out),
            "--steps",
            "120",
            "--save-every",
            "60",
            "--val-every",
            "30",
            "--zero-mask-prob",
            "0.001",
        ],
    );
    run_ok(&args);
    eprintln!("120 steps in {:.1}s", t0.elapsed().as_secs_f64());
    let log = log_records(&out);
    assert_eq!(log.len(), 121, "step 0 (validation only) and 120 steps");
    assert_eq!(log[0]["step"], 0);
    let val: Vec<f64> = log.iter().filter_map(|r| r["val_loss"].as_f64()).collect();
    let log = &log[1..];
    let loss: Vec<f64> = log.iter().map(|r| r["loss"].as_f64().unwrap()).collect();
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let (first, last) = (mean(&loss[..10]), mean(&loss[100..]));
    eprintln!("loss {first:.4} -> {last:.4}; validation {val:?}");
    assert!(last < 0.4 * first, "training loss {first} -> {last}");
    assert_eq!(val.len(), 5);
    assert!(
        val[4] < 0.5 * val[0] && val[4] < val[1],
        "validation loss {val:?}"
    );
    assert!(log
        .iter()
        .all(|r| r["grad_norm"].as_f64().unwrap().is_finite()));
    // Warm-up, then cosine decay towards 0 after the last step.
    let lr: Vec<f64> = log.iter().map(|r| r["lr"].as_f64().unwrap()).collect();
    assert!((lr[4] - 3e-3).abs() < 1e-12 && (lr[5] - 3e-3).abs() < 1e-12);
    assert!(lr[119] > 0.0 && lr[119] < 1e-6);
    assert!(lr[5..].windows(2).all(|w| w[1] <= w[0]));
    for f in [
        "loss.png",
        "provenance.json",
        "train_state.safetensors",
        "cell.config.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let prov: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("provenance.json")).unwrap())
            .unwrap();
    assert_eq!(prov["train_step"], 120);
    let files = prov["run"]["data"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(
        files[0]["sha256"].as_str().unwrap(),
        sha256(&data[0]),
        "data digests recorded"
    );
    assert_eq!(prov["run"]["options"]["seed"], 0);
    embed_works(&out, &common::test_data("pbmc_tiny.h5ad"), d.path());
}

fn sha256(p: &Path) -> String {
    scfoundation::weights::verify::sha256_file(p).unwrap()
}

/// A run stopped after 3 steps and resumed (into another directory, then in place) ends bit for bit
/// where an uninterrupted run does: model, optimizer state and log.
#[test]
fn resume_continues_bit_for_bit() {
    let d = tmp();
    let data = synthetic_data(d.path());
    let m0 = d.path().join("m0");
    run_ok(&[
        "init",
        "--config",
        s(&micro_config(d.path())),
        "--seed",
        "2",
        "--out",
        s(&m0),
    ]);
    let common_args = [
        "--steps",
        "7",
        "--save-every",
        "2",
        "--val-every",
        "3",
        "--accumulate",
        "2",
    ];
    let full = d.path().join("full");
    let mut a = pretrain_args(&data, &["--init", s(&m0), "--out", s(&full)]);
    a.extend(common_args);
    run_ok(&a);

    let part = d.path().join("part");
    let mut a = pretrain_args(
        &data,
        &["--init", s(&m0), "--out", s(&part), "--stop-after", "3"],
    );
    a.extend(common_args);
    run_ok(&a);
    assert_eq!(log_records(&part).len(), 4, "step 0 validation and 3 steps");
    // The interrupted model is not the final one.
    assert_ne!(
        safetensors_tensors(&part.join("gene.safetensors")),
        safetensors_tensors(&full.join("gene.safetensors"))
    );
    // Resume into a new directory for two steps, then in place to the end; options come from the run.
    let cont = d.path().join("cont");
    let mut a = vec!["--threads", "1", "pretrain", "--data"];
    a.extend(data.iter().map(|p| s(p)));
    a.extend(["--resume", s(&part), "--out", s(&cont), "--stop-after", "2"]);
    run_ok(&a);
    // The last part as a data-parallel world of one (SLURM variables): plain training, bit for bit.
    let mut a = vec!["--threads", "1", "pretrain", "--data"];
    a.extend(data.iter().map(|p| s(p)));
    a.extend(["--resume", s(&cont), "--out", s(&cont)]);
    let out = common::bin()
        .args(&a)
        .env("SLURM_PROCID", "0")
        .env("SLURM_NTASKS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for f in [
        "gene.safetensors",
        "cell.safetensors",
        "train_state.safetensors",
    ] {
        assert_eq!(
            safetensors_tensors(&cont.join(f)),
            safetensors_tensors(&full.join(f)),
            "{f}: tensors differ"
        );
        assert_eq!(
            std::fs::read(cont.join(f)).unwrap(),
            std::fs::read(full.join(f)).unwrap(),
            "{f}: bytes differ"
        );
    }
    assert_eq!(log_without_timing(&cont), log_without_timing(&full));
    assert_eq!(log_records(&full).len(), 8);

    // A resume must not change what defines the run, and a used directory needs --resume.
    let bad = d.path().join("bad");
    let mut a = vec!["--threads", "1", "pretrain", "--data"];
    a.extend(data.iter().map(|p| s(p)));
    a.extend(["--resume", s(&part), "--out", s(&bad), "--lr", "1e-2"]);
    let e = run_err(&a);
    assert!(e.contains("must not change") && e.contains("lr"), "{e}");
    let mut a = vec!["--threads", "1", "pretrain", "--data", s(&data[0])];
    a.extend(["--resume", s(&part), "--out", s(&bad)]);
    let e = run_err(&a);
    assert!(e.contains("--data files differ"), "{e}");
    let a = pretrain_args(&data, &["--init", s(&m0), "--out", s(&part)]);
    let e = run_err(&a);
    assert!(e.contains("already holds a training run"), "{e}");
    // A world of two needs the nccl feature (and CUDA); nothing is written.
    let a = pretrain_args(&data, &["--init", s(&m0), "--out", s(&bad)]);
    let out = common::bin()
        .args(&a)
        .env("RANK", "0")
        .env("WORLD_SIZE", "2")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("world size 2") && (e.contains("nccl") || e.contains("CUDA")),
        "{e}"
    );
    assert!(!bad.join("gene.safetensors").exists());
}

/// With `--trainable encoder-last:1`, every other tensor keeps its bytes and the optimizer state holds
/// only the trained layer.
#[test]
fn frozen_parameters_do_not_change() {
    let d = tmp();
    let data = synthetic_data(d.path());
    let m0 = d.path().join("m0");
    run_ok(&[
        "init",
        "--config",
        s(&micro_config(d.path())),
        "--seed",
        "5",
        "--out",
        s(&m0),
    ]);
    let out = d.path().join("run");
    let a = pretrain_args(
        &data,
        &[
            "--init",
            s(&m0),
            "--out",
            s(&out),
            "--steps",
            "3",
            "--trainable",
            "encoder-last:1",
        ],
    );
    run_ok(&a);
    let before = safetensors_tensors(&m0.join("gene.safetensors"));
    let after = safetensors_tensors(&out.join("gene.safetensors"));
    assert_eq!(before.len(), after.len());
    let mut changed = 0;
    for (name, b) in &before {
        let trained = name.starts_with("encoder.transformer_encoder.1.");
        if trained {
            changed += (after[name] != *b) as usize;
        } else {
            assert_eq!(after[name], *b, "{name} changed although frozen");
        }
    }
    assert!(
        changed >= 10,
        "only {changed} tensors of the trained layer changed"
    );
    let state = safetensors_tensors(&out.join("train_state.safetensors"));
    assert!(!state.is_empty());
    assert!(state
        .keys()
        .all(|k| k.starts_with("m.encoder.transformer_encoder.1.")
            || k.starts_with("v.encoder.transformer_encoder.1.")));
}

/// A reference checkpoint works as a starting point; its performer projections are buffers and stay.
#[test]
fn pretraining_starts_from_a_reference_checkpoint() {
    let d = tmp();
    let out = d.path().join("run");
    let ckpt = common::reference("tiny_models.ckpt");
    let data = common::test_data("pbmc_tiny.h5ad");
    run_ok(&[
        "--threads",
        "1",
        "pretrain",
        "--data",
        s(&data),
        "--init",
        s(&ckpt),
        "--key",
        "cell",
        "--out",
        s(&out),
        "--steps",
        "1",
        "--batch-size",
        "1",
        "--min-genes",
        "10",
        "--val-fraction",
        "0",
        "--warmup",
        "0",
    ]);
    let entry = scfoundation::model::load_entry(&ckpt, "cell").unwrap();
    let after = safetensors_tensors(&out.join("gene.safetensors"));
    assert_eq!(after.len(), entry.tensors.len());
    for (name, t) in &entry.tensors {
        let bytes: Vec<u8> = match t.dtype() {
            DType::F32 => t
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            _ => continue,
        };
        let same = after[name] == bytes;
        if name.ends_with("projection_matrix") {
            assert!(same, "{name} is a buffer and must not train");
        } else if name == "to_final.bias" {
            assert!(!same, "{name} did not train");
        }
    }
    let prov: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("provenance.json")).unwrap())
            .unwrap();
    assert_eq!(prov["run"]["init"]["key"], "cell");
    assert_eq!(
        prov["run"]["init"]["sha256"].as_str().unwrap(),
        sha256(&ckpt)
    );
}

// ---------------------------------------------------------------------------------------------
// Library: objective statistics and gradients

fn synthetic_cell(rng: &mut Rng) -> AlignedCell {
    let mut genes: Vec<u32> = (0..400).map(|_| rng.below(N_GENES as u64) as u32).collect();
    genes.sort();
    genes.dedup();
    let values = genes.iter().map(|_| 1.0 + rng.below(30) as f64).collect();
    AlignedCell {
        genes,
        values,
        given_total: None,
    }
}

/// Masking and downsampling happen at their configured rates (tolerances are > 5 standard errors).
#[test]
fn masking_and_downsampling_follow_their_probabilities() {
    let opts = RdaOptions {
        no_downsample_prob: 0.4,
        downsample_beta: (3.0, 1.0),
        value_mask_prob: 0.25,
        zero_mask_prob: 0.05,
    };
    let mut rng = Rng::seed_from_u64(21);
    let n = 600;
    let (mut kept, mut rates) = (0usize, vec![]);
    let (mut nz, mut nz_masked, mut zeros, mut z_masked) = (0usize, 0usize, 0usize, 0usize);
    let (mut raw_sum, mut in_sum) = (0f64, 0f64);
    for _ in 0..n {
        let cell = synthetic_cell(&mut rng);
        let ex = make_example(&cell, &opts, 102.0, &mut rng).unwrap();
        match ex.rate {
            None => kept += 1,
            Some(r) => {
                rates.push(r);
                // S - T = log10(input total / raw total) estimates the thinning rate.
                let k = ex.full.len();
                raw_sum += r;
                in_sum += 10f64.powf((ex.full[k - 1] - ex.full[k - 2]) as f64);
            }
        }
        nz += ex.n_nonzero;
        nz_masked += ex.n_masked_nonzero;
        zeros += N_GENES - ex.n_nonzero;
        z_masked += ex.masked.len() - ex.n_masked_nonzero;
        assert!(ex.masked.iter().all(|&g| ex.full[g as usize] == 102.0));
    }
    let frac = |a: usize, b: usize| a as f64 / b as f64;
    assert!(
        (frac(kept, n) - 0.4).abs() < 0.08,
        "unchanged fraction {}",
        frac(kept, n)
    );
    // Beta(3, 1) has mean 3/4 and variance 3/80.
    let m = rates.iter().sum::<f64>() / rates.len() as f64;
    assert!((m - 0.75).abs() < 0.05, "mean rate {m}");
    // Binomial thinning keeps each count with probability r: input total / raw total tracks r.
    let k = rates.len() as f64;
    assert!(
        (in_sum / k - raw_sum / k).abs() < 0.01,
        "{} vs {}",
        in_sum / k,
        raw_sum / k
    );
    assert!(
        (frac(nz_masked, nz) - 0.25).abs() < 0.01,
        "nonzero masked {}",
        frac(nz_masked, nz)
    );
    assert!(
        (frac(z_masked, zeros) - 0.05).abs() < 0.002,
        "zero masked {}",
        frac(z_masked, zeros)
    );
}

fn micro_model(dtype: DType, trainable: &Trainable) -> TrainModel {
    let raw = nested_config((16, 2, 2, 8), (8, 1, 2, 4), 10);
    let cfg = scfoundation::model::ModelConfig::from_json(&raw).unwrap();
    let tensors = random_tensors(&cfg, 9).unwrap().into_iter().collect();
    TrainModel::from_tensors(raw, tensors, trainable, dtype, &Device::Cpu).unwrap()
}

fn examples(n: usize, seed: u64) -> Vec<Example> {
    let mut rng = Rng::seed_from_u64(seed);
    let opts = RdaOptions {
        value_mask_prob: 0.5,
        ..Default::default()
    };
    (0..n)
        .map(|_| {
            let mut c = synthetic_cell(&mut rng);
            c.genes.truncate(30 + rng.below(20) as usize);
            c.values.truncate(c.genes.len());
            make_example(&c, &opts, 102.0, &mut rng).unwrap()
        })
        .collect()
}

fn loss_fn(m: &scfoundation::model::MaeAutobin, b: &[Example]) -> anyhow::Result<Option<Tensor>> {
    Ok(masked_sse(m, b, &Device::Cpu)?.map(|(t, _)| t))
}

/// The masked SSE plus the squared predictions at the positions the encoder saw: the encoder reaches
/// masked positions only through the decoder's attention averaged over 19,266 positions, so its
/// gradients under the masked loss alone are near the finite-difference noise floor; scoring seen
/// positions too gives every parameter a substantial gradient to check.
fn fd_loss(m: &scfoundation::model::MaeAutobin, b: &[Example]) -> anyhow::Result<Option<Tensor>> {
    let masked = loss_fn(m, b)?.unwrap();
    let cells: Vec<scfoundation::model::heads::CellInput> = b
        .iter()
        .map(|e| scfoundation::model::heads::CellInput {
            values: &e.values,
            positions: &e.positions,
            full: &e.full,
        })
        .collect();
    let pred = m.predict_expression(&cells, &Device::Cpu)?;
    let n = pred.dim(1)?;
    let idx: Vec<u32> = b
        .iter()
        .enumerate()
        .flat_map(|(i, e)| e.positions.iter().map(move |&p| (i * n) as u32 + p))
        .collect();
    let k = idx.len();
    let seen = pred
        .flatten_all()?
        .index_select(&Tensor::from_vec(idx, k, &Device::Cpu)?, 0)?;
    Ok(Some((masked + seen.sqr()?.sum_all()?)?))
}

/// Autograd gradients equal central finite differences (f64 model), through the whole network.
#[test]
fn gradients_match_finite_differences() {
    let model = micro_model(DType::F64, &Trainable::all());
    let trainer = Trainer::new(
        model,
        TrainerConfig {
            schedule: scfoundation::train::optim::LrSchedule {
                peak: 1e-3,
                min: 0.0,
                warmup: 0,
                total: 1,
            },
            clip_norm: None,
            adamw: Default::default(),
        },
    );
    // Two cells of different lengths (padding in the encoder); accumulation has its own test.
    let ex = examples(2, 4);
    assert_ne!(ex[0].values.len(), ex[1].values.len());
    let micro = vec![MicroBatch {
        units: ex[0].masked.len() + ex[1].masked.len(),
        data: ex.clone(),
    }];
    let (loss, grads) = trainer
        .gradients(&micro, |m, b: &Vec<Example>| fd_loss(m, b))
        .unwrap();
    assert!(loss > 0.0);
    let params = &trainer.model.params;
    let index: HashMap<&str, usize> = params
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), i))
        .collect();
    let masked_gene = ex[0].masked[0] as usize;
    let seen_gene = ex[0].positions[0] as usize;
    let checks: Vec<(&str, usize)> = vec![
        ("to_final.bias", 0),
        ("to_final.weight", 3),
        ("norm.weight", 1),
        ("decoder.performer.net.layers.0.0.fn.to_k.weight", 5),
        ("decoder.performer.net.layers.0.1.fn.fn.w1.bias", 7),
        ("decoder_embed.weight", 11),
        ("encoder.transformer_encoder.1.self_attn.in_proj_weight", 20),
        ("encoder.transformer_encoder.0.linear1.weight", 13),
        ("encoder.norm.bias", 2),
        ("token_emb.emb_mask.weight", 4),
        ("token_emb.mlp.weight", 6),
        ("token_emb.mlp2.bias", 3),
        ("token_emb.emb.weight", 17),
        ("pos_emb.weight", masked_gene * 16 + 1),
        ("pos_emb.weight", seen_gene * 16 + 5),
    ];
    let h = 1e-5;
    let mut substantial = 0;
    for (name, k) in checks {
        let (_, var) = &params[index[name]];
        let orig = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let eval = |delta: f64| {
            let mut w = orig.clone();
            w[k] += delta;
            var.set(&Tensor::from_vec(w, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let total: usize = micro.iter().map(|m| m.units).sum();
            let mut l = 0.0;
            for mb in &micro {
                l += fd_loss(&trainer.model.model, &mb.data)
                    .unwrap()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
            }
            l / total as f64
        };
        let fd = (eval(h) - eval(-h)) / (2.0 * h);
        var.set(&Tensor::from_vec(orig.clone(), var.shape(), &Device::Cpu).unwrap())
            .unwrap();
        let g = grads[index[name]]
            .as_ref()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()[k];
        // Relative 1e-5 plus an absolute floor for the rounding noise of the difference quotient.
        assert!(
            (g - fd).abs() <= 1e-5 * fd.abs() + 1e-8,
            "{name}[{k}]: autograd {g:e}, finite difference {fd:e}"
        );
        substantial += (fd.abs() > 1e-6) as usize;
    }
    assert!(
        substantial >= 13,
        "too many vanishing gradients to test ({substantial})"
    );
}

/// Accumulating two micro-batches gives the gradient of the combined batch.
#[test]
fn accumulation_equals_one_large_batch() {
    let trainer = Trainer::new(
        micro_model(DType::F64, &Trainable::all()),
        TrainerConfig {
            schedule: scfoundation::train::optim::LrSchedule {
                peak: 1e-3,
                min: 0.0,
                warmup: 0,
                total: 1,
            },
            clip_norm: None,
            adamw: Default::default(),
        },
    );
    let ex = examples(4, 8);
    let units = |e: &[Example]| e.iter().map(|x| x.masked.len()).sum::<usize>();
    let split = vec![
        MicroBatch {
            units: units(&ex[..2]),
            data: ex[..2].to_vec(),
        },
        MicroBatch {
            units: units(&ex[2..]),
            data: ex[2..].to_vec(),
        },
    ];
    let whole = vec![MicroBatch {
        units: units(&ex),
        data: ex.clone(),
    }];
    let (la, ga) = trainer
        .gradients(&split, |m, b: &Vec<Example>| loss_fn(m, b))
        .unwrap();
    let (lb, gb) = trainer
        .gradients(&whole, |m, b: &Vec<Example>| loss_fn(m, b))
        .unwrap();
    assert!((la - lb).abs() < 1e-12 * lb.abs(), "{la} {lb}");
    for ((a, b), (name, _)) in ga.iter().zip(&gb).zip(&trainer.model.params) {
        let zero = |t: &Tensor| {
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
                == 0.0
        };
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) => (a, b),
            // A parameter outside one graph (the padding embedding without padding) gets no gradient;
            // in the other graph its gradient must then be zero.
            (Some(t), None) | (None, Some(t)) => {
                assert!(zero(t), "{name}");
                continue;
            }
            (None, None) => continue,
        };
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let m = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d <= 1e-9 * m.max(1e-12), "{d} vs {m}");
    }
}

/// The training forward (each distinct decoder input value embedded once, autograd-friendly ops)
/// predicts what the inference forward predicts.
#[test]
fn training_forward_matches_inference() {
    let mut model = micro_model(DType::F32, &Trainable::all());
    let ex = examples(2, 5);
    let cells: Vec<scfoundation::model::heads::CellInput> = ex
        .iter()
        .map(|e| scfoundation::model::heads::CellInput {
            values: &e.values,
            positions: &e.positions,
            full: &e.full,
        })
        .collect();
    let train = model
        .model
        .predict_expression(&cells, &Device::Cpu)
        .unwrap();
    model.model.set_differentiable(false);
    let infer = model
        .model
        .predict_expression(&cells, &Device::Cpu)
        .unwrap();
    let d = (train - infer)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-5, "{d}");
}

/// Mixed precision (bf16 forward, f32 master weights): gradients arrive in f32 on the master
/// variables and point where the f32 gradients point; training steps still lower the loss.
#[test]
fn mixed_precision_tracks_f32() {
    let cfg = TrainerConfig {
        schedule: scfoundation::train::optim::LrSchedule {
            peak: 3e-3,
            min: 3e-3,
            warmup: 0,
            total: 100,
        },
        clip_norm: Some(1.0),
        adamw: Default::default(),
    };
    let f32_trainer = Trainer::new(micro_model(DType::F32, &Trainable::all()), cfg);
    let mut half = micro_model(DType::F32, &Trainable::all());
    half.set_compute_dtype(DType::BF16).unwrap();
    assert!(half.compute_model().unwrap().is_some());
    let mut bf16_trainer = Trainer::new(half, cfg);
    let ex = examples(6, 21);
    let units = ex.iter().map(|x| x.masked.len()).sum::<usize>();
    let batch = vec![MicroBatch {
        units,
        data: ex.clone(),
    }];
    let (lf, gf) = f32_trainer
        .gradients(&batch, |m, b: &Vec<Example>| loss_fn(m, b))
        .unwrap();
    let (lh, gh) = bf16_trainer
        .gradients(&batch, |m, b: &Vec<Example>| loss_fn(m, b))
        .unwrap();
    assert!((lf - lh).abs() < 0.03 * lf, "loss f32 {lf} bf16 {lh}");
    let flat = |g: &[Option<Tensor>]| -> Vec<f64> {
        g.iter()
            .flatten()
            .flat_map(|t| {
                assert_eq!(
                    t.dtype(),
                    DType::F32,
                    "gradients reach the f32 master weights"
                );
                t.flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            })
            .collect()
    };
    let (a, b) = (flat(&gf), flat(&gh));
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    let cos = dot / (na * nb);
    assert!(cos > 0.98, "gradient cosine f32 vs bf16: {cos}");
    for (_, v) in &bf16_trainer.model.params {
        assert_eq!(v.dtype(), DType::F32);
    }
    // A few steps (bf16 is slow on the CPU) follow the f32 run's descent.
    let mut f32_trainer = f32_trainer;
    let small = vec![MicroBatch {
        units: ex[..2].iter().map(|x| x.masked.len()).sum(),
        data: ex[..2].to_vec(),
    }];
    let (mut first, mut last) = ([0f64; 2], [0f64; 2]);
    for i in 0..6 {
        for (j, t) in [&mut f32_trainer, &mut bf16_trainer]
            .into_iter()
            .enumerate()
        {
            last[j] = t
                .step(&small, |m, b: &Vec<Example>| loss_fn(m, b))
                .unwrap()
                .loss;
            if i == 0 {
                first[j] = last[j];
            }
        }
    }
    assert!(
        last[1] < 0.9 * first[1],
        "bf16 training: {first:?} -> {last:?}"
    );
    assert!(
        (last[1] - last[0]).abs() < 0.05 * first[0],
        "bf16 and f32 runs diverge: {first:?} -> {last:?}"
    );
}
