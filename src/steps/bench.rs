//! `bench`: throughput of each inference path on a random model and synthetic cells, beside the
//! machine's matrix-multiply ceiling measured in the same run with the same backend, so figures come
//! with the ratio that says how far from the hardware they are.
//!
//! FLOP counts (a multiply-add is 2 FLOP; L = expressed genes + 2 tokens, N = 19,266 decoder
//! positions, d / d' encoder / decoder widths, h heads of width e, m = floor(e ln e) random features,
//! b bins):
//! - value embedding: 2·n·(b + b² + b·d) for n values (Linear(1,b), Linear(b,b), bins × d);
//! - encoder layer: 24·L·d² (QKV, output, 4× FFN) + 4·L²·d (scores and weighted sum);
//! - decoder layer (Performer): 24·N·d'² + 8·N·h·e·m (feature maps of q and k, kᵀv, q·context);
//! - cell path = embedding + encoder; gene path = cell path + decoder input (N values embedded at
//!   width d, 2·N·d·d' projection) + decoder; expression = gene path + 2·N·d' (the output head).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

use crate::data::preprocess::{preprocess, AlignedCell, DatasetStats, PreprocessOptions};
use crate::data::N_GENES;
use crate::model::heads::{CellInput, GeneHead, Pool};
use crate::model::{MaeAutobin, ModelConfig};
use crate::train::init::random_tensors;
use crate::train::params::nb_features;
use crate::train::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchPath {
    Cell,
    Gene,
    Expression,
}

impl BenchPath {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Cell => "cell",
            Self::Gene => "gene",
            Self::Expression => "expression",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Raw config (a preset's or a file's) and its name.
    pub config: Value,
    pub config_name: String,
    /// Expressed genes per synthetic cell.
    pub nnz: usize,
    /// Cells timed per path (after one warm-up batch).
    pub cells: usize,
    pub batch_size: usize,
    pub paths: Vec<BenchPath>,
    pub dtype: DType,
    pub seed: u64,
    /// Seconds spent measuring each GEMM ceiling.
    pub ceiling_seconds: f64,
    /// With a precision other than f32: cells (the first timed ones) also run through an f32 model
    /// of the same weights, reporting the per-cell cosine and the largest absolute difference.
    pub accuracy_cells: usize,
}

fn f(x: usize) -> f64 {
    x as f64
}

/// FLOP of one cell with `nnz` expressed genes on `path` (formulas in the module docs).
pub fn flop_per_cell(cfg: &ModelConfig, nnz: usize, path: BenchPath) -> f64 {
    let l = f(nnz + 2);
    let (d, dd) = (f(cfg.encoder.hidden_dim), f(cfg.decoder.hidden_dim));
    let b = f(cfg.bin_num);
    let emb = |n: f64, width: f64| 2.0 * n * (b + b * b + b * width);
    let enc_layer = 24.0 * l * d * d + 4.0 * l * l * d;
    let cell = emb(l, d) + f(cfg.encoder.depth) * enc_layer;
    if path == BenchPath::Cell {
        return cell;
    }
    let n = f(cfg.seq_len);
    let h = cfg.decoder.heads;
    let e = cfg
        .decoder
        .dim_head
        .unwrap_or(cfg.decoder.hidden_dim / h.max(1));
    let m = f(nb_features(e));
    let dec_layer = 24.0 * n * dd * dd + 8.0 * n * f(h) * f(e) * m;
    // Decoder input: N values embedded at the encoder width, then projected to the decoder's.
    let gene = cell + emb(n, d) + 2.0 * n * d * dd + f(cfg.decoder.depth) * dec_layer;
    match path {
        BenchPath::Expression => gene + 2.0 * n * dd,
        _ => gene,
    }
}

/// Peak resident memory of this process since the last reset, MiB (Linux; `None` elsewhere).
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Resets the peak-RSS counter (Linux: writing 5 to clear_refs), so each path reports its own peak;
/// first the heap's free memory goes back to the kernel (the tuned allocator keeps it otherwise).
fn reset_peak_rss() {
    crate::cpu::release_free_memory();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Device memory in use (MiB), sampled: CUDA only.
fn device_used_mib(device: &Device) -> Option<f64> {
    let (free, total) = crate::device::memory_info(device).ok()??;
    Some((total - free) as f64 / (1024.0 * 1024.0))
}

/// Best sustained n×n×n GEMM rate (TFLOP/s) in `dtype`, over about `seconds`, with the GEMM the model
/// uses (see `crate::cpu::gemm`).
pub fn gemm_ceiling(device: &Device, dtype: DType, n: usize, seconds: f64) -> Result<f64> {
    let a = Tensor::randn(0f32, 1.0, (n, n), device)?.to_dtype(dtype)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), device)?.to_dtype(dtype)?;
    let mm = crate::model::matmul::matmul;
    let _ = mm(&a, &b)?;
    device.synchronize()?;
    let flop = 2.0 * f(n).powi(3);
    let (mut best, t_all) = (0f64, Instant::now());
    while t_all.elapsed().as_secs_f64() < seconds || best == 0.0 {
        let t = Instant::now();
        let reps = 4;
        for _ in 0..reps {
            let c = mm(&a, &b)?;
            drop(c);
        }
        device.synchronize()?;
        best = best.max(reps as f64 * flop / t.elapsed().as_secs_f64() / 1e12);
    }
    Ok(best)
}

fn synthetic_cells(n: usize, nnz: usize, seed: u64) -> Vec<AlignedCell> {
    let mut rng = Rng::derive(seed, "bench-cells", 0);
    (0..n)
        .map(|_| {
            // nnz distinct genes (partial Fisher-Yates), counts 1 + geometric-like tail.
            let mut pool: Vec<u32> = (0..N_GENES as u32).collect();
            for i in 0..nnz {
                let j = i + rng.below((N_GENES - i) as u64) as usize;
                pool.swap(i, j);
            }
            let mut genes = pool[..nnz].to_vec();
            genes.sort_unstable();
            let values = genes
                .iter()
                .map(|_| 1.0 + (-(1.0 - rng.uniform()).ln() * 1.5).floor())
                .collect();
            AlignedCell {
                genes,
                values,
                given_total: None,
            }
        })
        .collect()
}

/// Runs the benchmark; returns the JSON report (also what the CLI prints as a table).
pub fn bench(opts: &BenchOptions, device: &Device) -> Result<Value> {
    if opts.nnz == 0 || opts.nnz > N_GENES {
        bail!("--nnz must be between 1 and {N_GENES}");
    }
    if opts.cells == 0 || opts.batch_size == 0 {
        bail!("--cells and --batch-size must be at least 1");
    }
    let cfg = ModelConfig::from_json(&opts.config)?;
    if cfg.n_genes() != N_GENES {
        bail!("the config has {} genes, not {N_GENES}", cfg.n_genes());
    }
    let tensors: HashMap<String, Tensor> = random_tensors(&cfg, opts.seed)?.into_iter().collect();
    let n_params: usize = tensors.values().map(|t| t.elem_count()).sum();
    let reference = if opts.dtype != DType::F32 && opts.accuracy_cells > 0 {
        let vb = candle_nn::VarBuilder::from_tensors(tensors.clone(), DType::F32, device);
        Some(MaeAutobin::load(vb, &cfg)?)
    } else {
        None
    };
    let vb = candle_nn::VarBuilder::from_tensors(tensors, opts.dtype, device);
    let model = MaeAutobin::load(vb, &cfg)?;

    let prep = PreprocessOptions {
        input_type: crate::data::InputType::SingleCell,
        pre_normalized: crate::data::PreNormalized::F,
        tgthighres: crate::data::TargetResolution::Fixed(4.0),
    };
    let raw = synthetic_cells(opts.cells + opts.batch_size, opts.nnz, opts.seed);
    let tokens = raw
        .iter()
        .map(|c| preprocess(c, &prep, &DatasetStats::default(), "synthetic cell"))
        .collect::<Result<Vec<_>>>()?;
    let gathered: Vec<(Vec<f32>, Vec<u32>)> = tokens.iter().map(|t| t.gathered()).collect();
    let dense: Vec<Vec<f32>> = tokens.iter().map(|t| t.dense()).collect();

    let ceiling_dtypes: Vec<DType> = if !device.is_cpu() {
        vec![DType::BF16, DType::F32]
    } else if opts.dtype != DType::F32 {
        vec![opts.dtype, DType::F32]
    } else {
        vec![DType::F32]
    };
    let gemm_n = if device.is_cpu() { 1024 } else { 8192 };
    let mut ceilings = serde_json::Map::new();
    for &dt in &ceiling_dtypes {
        let t = gemm_ceiling(device, dt, gemm_n, opts.ceiling_seconds)?;
        log::info!("{dt:?} GEMM ceiling ({gemm_n}³): {t:.3} TFLOP/s");
        ceilings.insert(format!("{dt:?}").to_lowercase(), json!(t));
    }
    let ceiling = ceilings
        .get(&format!("{:?}", opts.dtype).to_lowercase())
        .and_then(Value::as_f64)
        .or_else(|| ceilings.get("f32").and_then(Value::as_f64))
        .unwrap_or(f64::NAN);

    let mut results = vec![];
    for &path in &opts.paths {
        let run_on = |model: &MaeAutobin,
                      range: std::ops::Range<usize>,
                      keep: bool|
         -> Result<Vec<Vec<f32>>> {
            let mut kept = vec![];
            for chunk in range.collect::<Vec<_>>().chunks(opts.batch_size) {
                let cells: Vec<CellInput> = chunk
                    .iter()
                    .map(|&k| CellInput {
                        values: &gathered[k].0,
                        positions: &gathered[k].1,
                        full: &dense[k],
                    })
                    .collect();
                let out = match path {
                    BenchPath::Cell => model.cell_embeddings(&cells, Pool::All, device)?,
                    BenchPath::Gene => {
                        model.gene_outputs(&cells, GeneHead::Hidden, N_GENES, device)?
                    }
                    BenchPath::Expression => {
                        model.gene_outputs(&cells, GeneHead::Expression, N_GENES, device)?
                    }
                };
                if keep {
                    kept.extend(out);
                }
            }
            device.synchronize()?;
            Ok(kept)
        };
        let run = |range: std::ops::Range<usize>| run_on(&model, range, false).map(|_| ());
        // Warm-up on cells not timed (kernels compiled, buffers allocated).
        run(opts.cells..opts.cells + opts.batch_size)?;
        reset_peak_rss();
        let mut dev_peak = device_used_mib(device);
        let t = Instant::now();
        run(0..opts.cells)?;
        let secs = t.elapsed().as_secs_f64();
        if let (Some(p), Some(now)) = (dev_peak, device_used_mib(device)) {
            dev_peak = Some(p.max(now));
        }
        let cells_per_s = opts.cells as f64 / secs;
        let flop: f64 = gathered[..opts.cells]
            .iter()
            .map(|g| flop_per_cell(&cfg, g.0.len(), path))
            .sum();
        let tflops = flop / secs / 1e12;
        let accuracy = match &reference {
            Some(r) => {
                let k = opts.accuracy_cells.min(opts.cells);
                let ours = run_on(&model, 0..k, true)?;
                let exact = run_on(r, 0..k, true)?;
                let (mut min_cos, mut max_abs) = (f64::INFINITY, 0f64);
                for (a, b) in ours.iter().zip(&exact) {
                    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
                    let na = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                    let nb = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                    min_cos = min_cos.min(dot / (na * nb).max(1e-30));
                    for (x, y) in a.iter().zip(b) {
                        max_abs = max_abs.max((*x as f64 - *y as f64).abs());
                    }
                }
                log::info!(
                    "{} vs f32 over {k} cells: min cosine {min_cos:.6}, max abs {max_abs:.3e}",
                    path.name()
                );
                json!({"cells": k, "min_cosine_to_f32": min_cos, "max_abs_diff": max_abs})
            }
            None => Value::Null,
        };
        log::info!(
            "{}: {:.3} cells/s, {:.3} TFLOP/s",
            path.name(),
            cells_per_s,
            tflops
        );
        results.push(json!({
            "path": path.name(),
            "cells": opts.cells,
            "seconds": secs,
            "cells_per_s": cells_per_s,
            "gflop_per_cell": flop / opts.cells as f64 / 1e9,
            "tflops": tflops,
            "fraction_of_ceiling": tflops / ceiling,
            "peak_rss_mib": peak_rss_mib(),
            "device_memory_used_mib": dev_peak,
            "accuracy_vs_f32": accuracy,
        }));
    }
    Ok(json!({
        "engine": crate::provenance::ENGINE,
        "machine": machine(),
        "device": format!("{device:?}"),
        "precision": format!("{:?}", opts.dtype).to_lowercase(),
        "config": opts.config_name,
        "parameters": n_params,
        "nnz": opts.nnz,
        "batch_size": opts.batch_size,
        "threads": candle_core::utils::get_num_threads(),
        "gemm": if device.is_cpu() { crate::cpu::gemm().name() } else { "device" },
        "allocator": crate::cpu::allocator(),
        "fused_kernels": crate::model::kernels::enabled(),
        "gemm_ceiling_tflops": ceilings,
        "gemm_ceiling_size": gemm_n,
        "paths": results,
    }))
}

/// CPU model and core count (Linux), for the report.
fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    json!({"cpu": cpu, "logical_cpus": cores})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flop_formula_matches_the_issue_figure() {
        // 100M model, 850 genes per cell: about 171 GFLOP per cell on the cell path.
        let cfg = ModelConfig::from_json(&crate::train::init::Preset::M100.config()).unwrap();
        let g = flop_per_cell(&cfg, 850, BenchPath::Cell) / 1e9;
        assert!((170.0..173.0).contains(&g), "{g}");
        let e = flop_per_cell(&cfg, 850, BenchPath::Expression);
        let gene = flop_per_cell(&cfg, 850, BenchPath::Gene);
        assert!(e > gene && gene > g * 1e9);
    }

    #[test]
    fn synthetic_cells_have_nnz_distinct_genes() {
        let cells = synthetic_cells(3, 50, 1);
        for c in &cells {
            assert_eq!(c.genes.len(), 50);
            assert!(c.genes.windows(2).all(|w| w[0] < w[1]));
            assert!(c.values.iter().all(|&v| v >= 1.0));
        }
        assert_eq!(synthetic_cells(3, 50, 1)[2].genes, cells[2].genes);
    }
}
