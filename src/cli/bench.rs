//! `bench`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::DType;
use clap::Args;

use crate::cpu::Gemm;
use crate::steps::bench::{bench, BenchOptions, BenchPath};
use crate::steps::init::InitConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CliBenchPath {
    Cell,
    Gene,
    Expression,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CliBenchPrecision {
    F32,
    Bf16,
}

/// Throughput per inference path on a random model and synthetic cells, with the machine's GEMM
/// ceiling measured in the same run (FLOP formulas: src/steps/bench.rs and the README).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
scfoundation bench --config mid --nnz 2000 --cells 8\n  \
scfoundation bench --config 100m --nnz 850 --cells 2048 --batch-size 256 --device cuda:0 --precision bf16 --json bench.json")]
pub struct BenchArgs {
    /// Model shape: tiny, small, mid (released widths, 4+2 layers), 100m, or a config JSON file.
    #[arg(long, default_value = "mid", value_name = "tiny|small|mid|100m|FILE")]
    pub config: String,
    /// Expressed genes per synthetic cell.
    #[arg(long, default_value_t = 2000, value_parser = super::count_in::<1, 19264>)]
    pub nnz: usize,
    /// Cells timed per path (one more batch is run first as warm-up).
    #[arg(long, default_value_t = 8, value_parser = super::count_in::<1, 10_000_000>)]
    pub cells: usize,
    #[arg(long, default_value_t = 1, value_parser = super::count_in::<1, 4096>)]
    pub batch_size: usize,
    /// Paths to time, comma separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "cell,expression"
    )]
    pub paths: Vec<CliBenchPath>,
    /// cpu, or cuda / cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weights and activations in f32, or bf16 (LayerNorm, softmax and the decoder's attention core in f32).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: CliBenchPrecision,
    /// Seed of the random weights and the synthetic cells.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Seconds spent measuring each GEMM ceiling.
    #[arg(long, default_value_t = 2.0)]
    pub ceiling_seconds: f64,
    /// With --precision bf16: this many of the timed cells also run through an f32 model of the same
    /// weights; the report gives the lowest per-cell cosine and the largest absolute difference.
    #[arg(long, default_value_t = 4, value_parser = super::count_in::<0, 10_000_000>)]
    pub accuracy_cells: usize,
    /// CPU f32 products: openblas and/or candle, comma separated (default: openblas when built with it).
    /// With both, every path runs with each in this run and the report gives the speed ratio of the
    /// first to the second.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub gemm: Vec<CliGemm>,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CliGemm {
    Openblas,
    Candle,
}

pub fn run_bench(a: BenchArgs) -> Result<()> {
    let device = crate::device::parse(&a.device)?;
    if !(a.ceiling_seconds.is_finite() && (0.0..=600.0).contains(&a.ceiling_seconds)) {
        anyhow::bail!("--ceiling-seconds must be between 0 and 600");
    }
    let (config, config_name) = InitConfig::parse(&a.config).load()?;
    let opts = BenchOptions {
        config,
        config_name,
        nnz: a.nnz,
        cells: a.cells,
        batch_size: a.batch_size,
        paths: a
            .paths
            .iter()
            .map(|p| match p {
                CliBenchPath::Cell => BenchPath::Cell,
                CliBenchPath::Gene => BenchPath::Gene,
                CliBenchPath::Expression => BenchPath::Expression,
            })
            .collect(),
        dtype: match a.precision {
            CliBenchPrecision::F32 => DType::F32,
            CliBenchPrecision::Bf16 => DType::BF16,
        },
        seed: a.seed,
        ceiling_seconds: a.ceiling_seconds,
        accuracy_cells: a.accuracy_cells,
    };
    let gemms: Vec<Gemm> = if a.gemm.is_empty() {
        vec![crate::cpu::gemm()]
    } else {
        a.gemm
            .iter()
            .map(|g| match g {
                CliGemm::Openblas => Gemm::Blas,
                CliGemm::Candle => Gemm::Candle,
            })
            .collect()
    };
    let mut reports = vec![];
    for &g in &gemms {
        crate::cpu::set_gemm(g)?;
        let report = bench(&opts, &device)?;
        print_report(&report, &a)?;
        reports.push(report);
    }
    let mut report = reports.remove(0);
    if !reports.is_empty() {
        let mut ratios = serde_json::Map::new();
        for p in report["paths"].as_array().into_iter().flatten() {
            let name = p["path"].as_str().unwrap_or("?");
            let base = reports[0]["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|q| q["path"] == p["path"])
                .and_then(|q| q["cells_per_s"].as_f64());
            if let (Some(x), Some(y)) = (p["cells_per_s"].as_f64(), base) {
                outln!(
                    "{name}: {} {x:.4} cells/s vs {} {y:.4}: {:.2}x",
                    report["gemm"].as_str().unwrap_or("?"),
                    reports[0]["gemm"].as_str().unwrap_or("?"),
                    x / y
                );
                ratios.insert(name.to_string(), serde_json::json!(x / y));
            }
        }
        report["compared_with"] = serde_json::Value::Array(reports);
        report["speed_ratio_to_compared"] = serde_json::Value::Object(ratios);
    }
    if let Some(path) = &a.json {
        let f = crate::fsutil::PendingFile::new(path)?;
        let text = serde_json::to_string_pretty(&report)? + "\n";
        std::fs::write(f.path(), text).with_context(|| format!("writing {}", path.display()))?;
        f.commit()?;
    }
    Ok(())
}

fn print_report(report: &serde_json::Value, a: &BenchArgs) -> Result<()> {
    outln!(
        "scfoundation bench: {} ({} parameters), {} genes/cell, batch {}, {} on {}, {} threads, {} GEMM; {}",
        report["config"].as_str().unwrap_or("?"),
        report["parameters"],
        a.nnz,
        a.batch_size,
        report["precision"].as_str().unwrap_or("?"),
        report["device"].as_str().unwrap_or("?"),
        report["threads"],
        report["gemm"].as_str().unwrap_or("?"),
        report["machine"]["cpu"].as_str().unwrap_or("?"),
    );
    for (k, v) in report["gemm_ceiling_tflops"]
        .as_object()
        .into_iter()
        .flatten()
    {
        outln!(
            "GEMM ceiling {k} ({}³): {:.4} TFLOP/s",
            report["gemm_ceiling_size"],
            v.as_f64().unwrap_or(f64::NAN)
        );
    }
    outln!("path        cells/s   GFLOP/cell   TFLOP/s   of ceiling   peak RSS MiB   device MiB");
    for p in report["paths"].as_array().into_iter().flatten() {
        let num = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
        outln!(
            "{:<10} {:>9.4} {:>12.2} {:>9.4} {:>11.1}% {:>14.0} {:>12}",
            p["path"].as_str().unwrap_or("?"),
            num("cells_per_s"),
            num("gflop_per_cell"),
            num("tflops"),
            100.0 * num("fraction_of_ceiling"),
            num("peak_rss_mib"),
            p["device_memory_used_mib"]
                .as_f64()
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "-".into())
        );
        if let Some(acc) = p["accuracy_vs_f32"].as_object() {
            outln!(
                "           vs f32 ({} cells): min cosine {:.6}, max abs difference {:.3e}",
                acc["cells"],
                acc["min_cosine_to_f32"].as_f64().unwrap_or(f64::NAN),
                acc["max_abs_diff"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(())
}
