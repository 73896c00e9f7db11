//! `init`: a randomly initialised model in the layout `convert` writes, which `embed --model DIR` and
//! `pretrain --init DIR` load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::data::N_GENES;
use crate::model::ModelConfig;
use crate::train::checkpoint::{model_files, MODEL_KEYS};
use crate::train::init::{random_tensors, Preset};

/// Model shape: a preset or a config JSON file (the reference's nested form or merged).
#[derive(Debug, Clone, PartialEq)]
pub enum InitConfig {
    Preset(Preset),
    File(PathBuf),
}

impl InitConfig {
    /// `tiny`, `small`, `100m`, or a path to a JSON file.
    pub fn parse(s: &str) -> Self {
        match Preset::parse(s) {
            Some(p) => Self::Preset(p),
            None => Self::File(PathBuf::from(s)),
        }
    }

    /// The raw config and a description for provenance.
    pub fn load(&self) -> Result<(Value, String)> {
        match self {
            Self::Preset(p) => Ok((p.config(), p.name().to_string())),
            Self::File(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "--config {}: neither a preset (tiny, small, mid, 100m) nor a readable JSON file",
                        path.display()
                    )
                })?;
                let v: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{}: not valid JSON", path.display()))?;
                Ok((v, crate::train::data::file_name(path)))
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct InitSummary {
    pub files: Vec<PathBuf>,
    pub n_parameters: usize,
}

pub const PROVENANCE_FILE: &str = "provenance.json";

pub fn init(config: &InitConfig, seed: u64, out: &Path) -> Result<InitSummary> {
    let (raw, name) = config.load()?;
    let cfg = ModelConfig::from_json(&raw).with_context(|| format!("config {name}"))?;
    if cfg.n_genes() != N_GENES {
        bail!(
            "config {name}: seq_len {} gives {} genes; scFoundation has {N_GENES} genes + T + S = {}",
            cfg.seq_len,
            cfg.n_genes(),
            N_GENES + 2
        );
    }
    if out.exists() && !out.is_dir() {
        bail!("{}: exists and is not a directory", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let tensors = random_tensors(&cfg, seed)?;
    let n_parameters: usize = tensors
        .iter()
        .filter(|(n, _)| !crate::train::params::is_buffer(n))
        .map(|(_, t)| t.elem_count())
        .sum();
    let prov = json!({
        "engine": crate::provenance::ENGINE,
        "engine_version": crate::provenance::ENGINE_VERSION,
        "step": "init",
        "config": name,
        "seed": seed,
        "n_parameters": n_parameters,
        "init": "PyTorch default initialisers of the reference modules; performer projection: Gaussian orthogonal random features",
    });
    let meta: BTreeMap<String, String> =
        [("provenance".to_string(), serde_json::to_string(&prov)?)].into();
    let mut files = model_files(out, &MODEL_KEYS, &raw, &tensors, &meta)?;
    let p = crate::fsutil::PendingFile::new(&out.join(PROVENANCE_FILE))?;
    std::fs::write(p.path(), serde_json::to_string_pretty(&prov)? + "\n")?;
    files.push(p);
    let paths: Vec<PathBuf> = files.iter().map(|f| f.target().to_path_buf()).collect();
    crate::fsutil::PendingFile::commit_all(files)?;
    log::info!(
        "{}: random {name} model, {n_parameters} parameters, seed {seed}",
        out.display()
    );
    Ok(InitSummary {
        files: paths,
        n_parameters,
    })
}
