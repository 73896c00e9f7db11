//! `annotate predict`: cell types for a query file from a head directory written by `annotate train`,
//! with the fine-tuned encoder layers when the head has them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device};
use serde_json::{json, Value};

use super::data::{self, Tokens};
use super::{CellEmbedding, ENCODER_TENSORS, HEAD_FORMAT, HEAD_JSON, HEAD_TENSORS};
use crate::data::batch::BatchSize;
use crate::data::N_GENES;
use crate::fsutil::PendingFile;
use crate::io::h5ad::elem::Block;
use crate::io::h5ad::frame::Column;
use crate::io::h5ad::{Frame, H5adWriter, ObsSource};
use crate::io::MatrixChoice;
use crate::metrics::Classification;
use crate::model::classifier::HEAD_PREFIX;
use crate::model::{load_entry, CellClassifier, ClassifierConfig, MaeAutobin};
use crate::progress::Progress;
use crate::provenance::Provenance;
use crate::train::checkpoint::read_safetensors;
use crate::weights::ModelRef;

pub const LABEL_COLUMN: &str = "scfoundation_label";
pub const CONFIDENCE_COLUMN: &str = "scfoundation_label_confidence";
pub const PROBA_KEY: &str = "obsm/scfoundation_label_proba";
pub const CLASSES_KEY: &str = "scfoundation_label_classes";

#[derive(Debug, Clone, Default)]
pub struct PredictOptions {
    /// obs column with known labels: metrics are written when given.
    pub label_key: Option<String>,
    /// Where the metrics go; default `<output without .h5ad>.metrics.json`.
    pub metrics: Option<PathBuf>,
    pub matrix: MatrixChoice,
    pub min_mapped: Option<f64>,
    /// Cells per forward pass.
    pub batch_size: BatchSize,
}

#[derive(Debug, Clone)]
pub struct PredictSummary {
    pub n_cells: usize,
    pub classes: Vec<String>,
    pub metrics: Option<Classification>,
    pub metrics_path: Option<PathBuf>,
}

/// A head directory, read and checked.
pub struct Head {
    pub dir: PathBuf,
    pub json: Value,
    pub classes: Vec<String>,
    pub cfg: ClassifierConfig,
    pub cell: CellEmbedding,
    pub finetune_layers: usize,
    pub base_sha256: String,
    pub base_name: String,
}

impl Head {
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.exists() {
            bail!("{}: head directory not found", dir.display());
        }
        if !dir.is_dir() {
            bail!(
                "{}: not a directory (--head takes the directory written by `annotate train`)",
                dir.display()
            );
        }
        let jp = dir.join(HEAD_JSON);
        if !jp.exists() {
            bail!(
                "{}: not an annotation head (no {HEAD_JSON}; write one with `scfoundation annotate train`)",
                dir.display()
            );
        }
        let text =
            std::fs::read_to_string(&jp).with_context(|| format!("reading {}", jp.display()))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow!("{}: not valid JSON: {e}", jp.display()))?;
        let bad = |what: &str| anyhow!("{}: {what}", jp.display());
        if json["format"].as_str() != Some(HEAD_FORMAT) {
            return Err(bad(&format!("format is not '{HEAD_FORMAT}'")));
        }
        let classes: Vec<String> = json["classes"]
            .as_array()
            .ok_or_else(|| bad("no 'classes' list"))?
            .iter()
            .map(|c| c.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("'classes' must be strings"))?;
        let cfg: ClassifierConfig = serde_json::from_value(json["classifier"].clone())
            .map_err(|e| bad(&format!("bad 'classifier': {e}")))?;
        if cfg.n_classes != classes.len() || classes.len() < 2 {
            return Err(bad(&format!(
                "the classifier has {} outputs for {} classes",
                cfg.n_classes,
                classes.len()
            )));
        }
        let cell = CellEmbedding::from_json(&json["cell_embedding"])
            .map_err(|e| bad(&format!("bad 'cell_embedding': {e}")))?;
        let finetune_layers = json["finetune_layers"]
            .as_u64()
            .ok_or_else(|| bad("no 'finetune_layers'"))? as usize;
        let base_sha256 = json["base_model"]["sha256"]
            .as_str()
            .ok_or_else(|| bad("no base_model.sha256"))?
            .to_string();
        let base_name = json["base_model"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        Ok(Self {
            dir: dir.to_path_buf(),
            json,
            classes,
            cfg,
            cell,
            finetune_layers,
            base_sha256,
            base_name,
        })
    }

    /// Refuses weights other than those the head was trained on.
    pub fn check_model(&self, model: &ModelRef) -> Result<()> {
        if model.sha256 != self.base_sha256 {
            bail!(
                "{}: head was trained on model '{}' (sha256 {}), but --model '{}' has sha256 {}; refusing to predict with different weights",
                self.dir.display(),
                self.base_name,
                self.base_sha256,
                model.name,
                model.sha256
            );
        }
        Ok(())
    }

    /// The base model with the head's fine-tuned encoder layers in place (inference mode).
    pub fn load_model(&self, model: &ModelRef, device: &Device) -> Result<MaeAutobin> {
        let key = &self.cell.key;
        let mut entry = load_entry(&model.path, key)?;
        if entry.config.n_genes() != N_GENES {
            bail!(
                "{}: model expects {} genes, this engine's gene list has {N_GENES}",
                model.path.display(),
                entry.config.n_genes()
            );
        }
        if self.finetune_layers > 0 {
            let p = self.dir.join(ENCODER_TENSORS);
            if !p.exists() {
                bail!(
                    "{}: the head fine-tuned {} encoder layers but the file is missing",
                    p.display(),
                    self.finetune_layers
                );
            }
            let (tensors, _) = read_safetensors(&p)?;
            let mut names: Vec<&String> = tensors.keys().collect();
            names.sort();
            for name in names {
                let t = &tensors[name];
                let Some(base) = entry.tensors.get(name) else {
                    bail!("{}: tensor '{name}' is not part of the model", p.display());
                };
                if base.dims() != t.dims() {
                    bail!(
                        "{}: tensor '{name}' has shape {:?}, the model's {:?}",
                        p.display(),
                        t.dims(),
                        base.dims()
                    );
                }
                entry.tensors.insert(name.clone(), t.to_dtype(DType::F32)?);
            }
        }
        MaeAutobin::load(entry.var_builder(device), &entry.config).map_err(|e| {
            anyhow!(
                "{}: entry '{key}' does not fit its own config: {e}",
                model.path.display()
            )
        })
    }

    pub fn load_classifier(&self, device: &Device) -> Result<CellClassifier> {
        let p = self.dir.join(HEAD_TENSORS);
        if !p.exists() {
            bail!(
                "{}: missing (the head directory is incomplete)",
                p.display()
            );
        }
        let (tensors, _) = read_safetensors(&p)?;
        let tensors: HashMap<String, candle_core::Tensor> = tensors
            .into_iter()
            .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?)))
            .collect::<Result<_>>()?;
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, device);
        CellClassifier::load(vb.pp(HEAD_PREFIX), &self.cfg)
            .map_err(|e| anyhow!("{}: does not fit {HEAD_JSON}: {e}", p.display()))
    }
}

/// The metrics file for `output` when none is given: `out.h5ad` → `out.metrics.json`.
pub fn default_metrics_path(output: &Path) -> PathBuf {
    output.with_extension("metrics.json")
}

pub fn predict(
    input: &Path,
    head_dir: &Path,
    model_ref: &ModelRef,
    output: &Path,
    opts: &PredictOptions,
    device: &Device,
) -> Result<PredictSummary> {
    if crate::io::Format::of_output(output)? != crate::io::Format::H5ad {
        bail!("{}: annotate predict writes .h5ad", output.display());
    }
    let head = Head::open(head_dir)?;
    head.check_model(model_ref)?;
    let metrics_path = opts.label_key.as_ref().map(|_| {
        opts.metrics
            .clone()
            .unwrap_or_else(|| default_metrics_path(output))
    });
    crate::fsutil::refuse_input_as_output(output, &[input])?;
    if let Some(m) = &metrics_path {
        crate::fsutil::refuse_input_as_output(m, &[input, output])?;
    }
    let labels = match &opts.label_key {
        Some(k) => Some(data::read_labels(input, k)?),
        None => None,
    };
    let mut cell = head.cell.clone();
    cell.matrix = opts.matrix.clone();
    if let Some(m) = opts.min_mapped {
        cell.min_mapped = m;
    }
    cell.batch_size = opts.batch_size;
    let cells = data::read_cells(input, &cell)?;
    let n = cells.tokens.len();
    if let Some(l) = &labels {
        if l.len() != n {
            bail!(
                "{}: obs has {} rows but the matrix {n} cells",
                input.display(),
                l.len()
            );
        }
    }
    let model = head.load_model(model_ref, device)?;
    let width = match cell.pool {
        crate::model::heads::Pool::All => 4 * model.config().encoder.hidden_dim,
        crate::model::heads::Pool::Max => model.config().encoder.hidden_dim,
    };
    if width != head.cfg.in_dim {
        bail!(
            "{}: the classifier takes {}-wide embeddings but the model gives {width}",
            head.dir.join(HEAD_JSON).display(),
            head.cfg.in_dim
        );
    }
    let classifier = head.load_classifier(device)?;
    log::info!(
        "head {} ({} classes, {} fine-tuned encoder layers) on model {} (sha256 {})",
        head.dir.display(),
        head.classes.len(),
        head.finetune_layers,
        model_ref.name,
        model_ref.sha256
    );

    let file = input.display().to_string();
    let mut progress = Progress::new(n as u64, "cells", &file);
    let toks: Vec<&Tokens> = cells.tokens.iter().collect();
    let rows = data::embed_rows(&model, &toks, &cell, device, Some(&mut progress))
        .with_context(|| format!("running the model on {file}"))?;
    progress.finish();
    let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    let probs = data::probabilities(&classifier, &refs, width, device)?;
    let pred: Vec<usize> = probs.iter().map(|p| data::argmax(p)).collect();

    // Metrics on cells whose known label is one of the head's classes.
    let mut metrics = None;
    let mut metrics_json = None;
    if let (Some(labels), Some(key)) = (&labels, &opts.label_key) {
        let class_of: HashMap<&str, usize> = head
            .classes
            .iter()
            .enumerate()
            .map(|(k, c)| (c.as_str(), k))
            .collect();
        let (mut truth, mut p) = (vec![], vec![]);
        let (mut n_missing, mut unknown) = (0usize, std::collections::BTreeMap::new());
        for (i, l) in labels.iter().enumerate() {
            match l {
                None => n_missing += 1,
                Some(l) => match class_of.get(l.as_str()) {
                    Some(&k) => {
                        truth.push(k);
                        p.push(pred[i]);
                    }
                    None => *unknown.entry(l.clone()).or_insert(0usize) += 1,
                },
            }
        }
        if n_missing > 0 {
            log::warn!("{file}: {n_missing} cells have no '{key}' label; left out of the metrics");
        }
        if !unknown.is_empty() {
            log::warn!(
                "{file}: {} cells have labels the head does not know ({}); left out of the metrics",
                unknown.values().sum::<usize>(),
                unknown.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        let m = Classification::new(&truth, &p, head.classes.len());
        let mut j = m.to_json(&head.classes);
        j["label_key"] = json!(key);
        j["input"] = json!(crate::train::data::file_name(input));
        j["head"] = json!(crate::train::data::file_name(head_dir));
        j["n_missing_label"] = json!(n_missing);
        j["unknown_labels"] = json!(unknown);
        log::info!(
            "{file}: macro-F1 {:.4}, accuracy {:.4} on {} labelled cells",
            m.macro_f1,
            m.accuracy,
            m.n
        );
        metrics_json = Some(j);
        metrics = Some(m);
    }

    // Provenance.
    let mut prov = Provenance::new("annotate-predict").with_model(model_ref, &cell.key);
    prov.set("head", crate::train::data::file_name(head_dir));
    prov.set(
        "head_sha256",
        crate::weights::verify::sha256_file(&head.dir.join(HEAD_TENSORS))?,
    );
    if head.finetune_layers > 0 {
        prov.set(
            "head_encoder_sha256",
            crate::weights::verify::sha256_file(&head.dir.join(ENCODER_TENSORS))?,
        );
    }
    prov.set("finetune_layers", head.finetune_layers);
    prov.set("n_classes", head.classes.len());
    prov.set("pool", super::pool_name(cell.pool));
    prov.set("tgthighres", cell.preprocess.tgthighres);
    prov.set(
        "pre_normalized",
        format!("{:?}", cell.preprocess.pre_normalized),
    );
    prov.set(
        "input_type",
        format!("{:?}", cell.preprocess.input_type).to_lowercase(),
    );
    prov.set("input", crate::train::data::file_name(input));
    prov.set("batch_size", cell.batch_size);
    prov.set("min_mapped", cell.min_mapped);
    if let Some(l) = &cell.matrix.layer {
        prov.set("layer", l);
    }
    if cell.matrix.use_raw {
        prov.set("use_raw", "true");
    }
    if let Some(c) = &cell.matrix.gene_column {
        prov.set("gene_column", c);
    }
    prov.set("n_cells", n);
    prov.set("n_input_genes", cells.n_input_genes);
    prov.set("n_genes_mapped", cells.n_genes_mapped);
    prov.set("gene_index_sha256", crate::data::genes::GENE_INDEX_SHA256);
    prov.set("device", crate::steps::embed::device_name(device));

    // obs: the input's, plus the label and its confidence.
    let mut obs = cells.obs.clone().unwrap_or_else(|| Frame {
        index_name: "_index".into(),
        index: cells.ids.clone(),
        columns: vec![],
    });
    for name in [LABEL_COLUMN, CONFIDENCE_COLUMN] {
        if obs.columns.iter().any(|(c, _)| c == name) {
            log::warn!("{file}: obs column '{name}' is replaced by the prediction");
            obs.columns.retain(|(c, _)| c != name);
        }
    }
    obs.columns.push((
        LABEL_COLUMN.to_string(),
        Column::Categorical {
            codes: pred.iter().map(|&k| k as i64).collect(),
            categories: Block::from_strings(&head.classes),
            ordered: false,
        },
    ));
    let conf: Vec<f32> = probs.iter().zip(&pred).map(|(p, &k)| p[k]).collect();
    obs.columns.push((
        CONFIDENCE_COLUMN.to_string(),
        Column::Array(Block::F32(ndarray::ArrayD::from_shape_vec(
            ndarray::IxDyn(&[n]),
            conf,
        )?)),
    ));

    let pending = PendingFile::new(output)?;
    {
        let w = H5adWriter::create(pending.path())?;
        w.write_obs(ObsSource::Frame(&obs))?;
        w.write_var(&[])?;
        w.ensure_dicts()?;
        let flat: Vec<f32> = probs.concat();
        w.create_array(PROBA_KEY, &[n, head.classes.len()])?
            .append_rows(&flat)?;
        w.write_uns_array(CLASSES_KEY, &Block::from_strings(&head.classes))?;
        w.write_uns_strings("scfoundation", prov.entries())?;
        w.close()?;
    }
    let mut files = vec![pending];
    if let (Some(j), Some(mp)) = (&metrics_json, &metrics_path) {
        let p = PendingFile::new(mp)?;
        std::fs::write(p.path(), serde_json::to_string_pretty(j)? + "\n")
            .with_context(|| format!("writing {}", mp.display()))?;
        files.push(p);
    }
    PendingFile::commit_all(files)?;
    log::info!("{}: written ({n} cells)", output.display());
    Ok(PredictSummary {
        n_cells: n,
        classes: head.classes.clone(),
        metrics,
        metrics_path,
    })
}
