//! Random weights for a fresh model: config presets and a seeded initialisation that follows PyTorch's
//! defaults for the reference's module types, so a model from `init` starts where the reference code's
//! `select_model(config)` would.
//!
//! Every tensor draws from its own stream, derived from the seed and the tensor's name, so the result
//! does not depend on the order in which the model asks for its tensors (candle's own initialisers
//! draw from an unseeded generator, hence this module).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use serde_json::{json, Value};

use super::params::nb_features;
use super::rng::Rng;
use crate::model::{MaeAutobin, ModelConfig};

/// Built-in model shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// The test fixture's shape: encoder 32 x 2 layers x 4 heads, decoder 24 x 2 x 4 (dim_head 6).
    Tiny,
    /// About 8.6M parameters: encoder 256 x 4 x 8, decoder 128 x 2 x 4 (dim_head 32). Our own choice;
    /// the paper's 3M and 10M shapes are in a supplement that was not available.
    Small,
    /// Benchmark shape: the released widths with fewer layers, encoder 768 x 4 x 12, decoder 512 x 2 x 8.
    Mid,
    /// The released model: encoder 768 x 12 x 12, decoder 512 x 6 x 8 (dim_head 64), 119,252,285 parameters.
    M100,
}

impl Preset {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tiny" => Some(Self::Tiny),
            "small" => Some(Self::Small),
            "mid" => Some(Self::Mid),
            "100m" | "100M" => Some(Self::M100),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::Small => "small",
            Self::Mid => "mid",
            Self::M100 => "100m",
        }
    }

    /// The config in the reference checkpoint's nested form, with every key the released config has.
    pub fn config(&self) -> Value {
        let (enc, dec) = match self {
            Self::Tiny => ((32, 2, 4, 8), (24, 2, 4, 6)),
            Self::Small => ((256, 4, 8, 32), (128, 2, 4, 32)),
            Self::Mid => ((768, 4, 12, 64), (512, 2, 8, 64)),
            Self::M100 => ((768, 12, 12, 64), (512, 6, 8, 64)),
        };
        nested_config(enc, dec, 100)
    }
}

/// A nested reference-style config: (hidden, depth, heads, dim_head) for encoder and decoder.
pub fn nested_config(
    enc: (usize, usize, usize, usize),
    dec: (usize, usize, usize, usize),
    bin_num: usize,
) -> Value {
    let seq_len = crate::data::N_GENES + 2;
    json!({
        "model": "mae_autobin",
        "model_config": {"mae_autobin": {
            "mask_gene_name": false,
            "gene_num": seq_len,
            "seq_len": seq_len,
            "encoder": {"hidden_dim": enc.0, "depth": enc.1, "heads": enc.2, "dim_head": enc.3,
                        "seq_len": seq_len, "module_type": "transformer", "norm_first": false},
            "decoder": {"hidden_dim": dec.0, "depth": dec.1, "heads": dec.2, "dim_head": dec.3,
                        "module_type": "performer", "seq_len": seq_len, "norm_first": false},
            "n_class": 104,
            "pad_token_id": 103,
            "mask_token_id": 102,
            "bin_num": bin_num,
            "bin_alpha": 1.0,
            "rawcount": true,
            "model": "mae_autobin"
        }},
        "dataset_config": {"rnaseq": {
            "bin_type": "auto_bin",
            "value_mask_prob": 0.3,
            "zero_mask_prob": 0.03,
            "replace_prob": 0.8,
            "random_token_prob": 0.1,
            "mask_ignore_token_ids": [0],
            "decoder_add_zero": true,
            "mae_encoder_max_seq_len": 15000,
            "mask_prob": 0.3
        }}
    })
}

/// Records the name and shape of every tensor the model asks for and hands out zeros.
struct Recorder {
    dim_head: usize,
    seen: Arc<Mutex<Vec<(String, Shape)>>>,
}

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.seen
            .lock()
            .expect("lock")
            .push((name.to_string(), s.clone()));
        Tensor::zeros(s, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if !name.ends_with("projection_matrix") {
            candle_core::bail!("unexpected unshaped tensor '{name}'");
        }
        let s = Shape::from((nb_features(self.dim_head), self.dim_head));
        self.get(s, name, candle_nn::Init::Const(0.0), dtype, dev)
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Name and shape of every tensor the model for `cfg` needs, in the order it asks for them.
pub fn tensor_shapes(cfg: &ModelConfig) -> Result<Vec<(String, Vec<usize>)>> {
    let seen = Arc::new(Mutex::new(vec![]));
    let rec = Recorder {
        dim_head: cfg.decoder_dim_head(),
        seen: seen.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(rec), DType::F32, Device::Cpu);
    MaeAutobin::load(vb, cfg).map_err(|e| anyhow!("cannot build the model: {e}"))?;
    let seen = seen.lock().expect("lock");
    Ok(seen
        .iter()
        .map(|(n, s)| (n.clone(), s.dims().to_vec()))
        .collect())
}

/// How PyTorch's default constructors initialise each tensor of the reference model.
fn init_values(
    name: &str,
    shape: &[usize],
    fan_in_of: &HashMap<String, usize>,
    seed: u64,
) -> Result<Vec<f32>> {
    let n: usize = shape.iter().product();
    let mut rng = Rng::derive(seed, &format!("init:{name}"), 0);
    let uniform = |rng: &mut Rng, bound: f64| -> Vec<f32> {
        (0..n)
            .map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32)
            .collect()
    };
    let module = name.rsplit_once('.').map(|(m, _)| m).unwrap_or("");
    let leaf = module.rsplit('.').next().unwrap_or("");
    Ok(if name.ends_with("projection_matrix") {
        gaussian_orthogonal(shape[0], shape[1], &mut rng)
    } else if leaf.starts_with("norm") {
        // LayerNorm: weight 1, bias 0.
        let v = if name.ends_with(".weight") { 1.0 } else { 0.0 };
        vec![v; n]
    } else if matches!(
        name,
        "pos_emb.weight"
            | "token_emb.emb.weight"
            | "token_emb.emb_mask.weight"
            | "token_emb.emb_pad.weight"
    ) {
        // nn.Embedding: N(0, 1).
        (0..n).map(|_| rng.normal() as f32).collect()
    } else if name.ends_with("in_proj_weight") {
        // nn.MultiheadAttention: xavier_uniform over the packed [3d, d] matrix.
        uniform(&mut rng, (6.0 / (shape[0] + shape[1]) as f64).sqrt())
    } else if name.ends_with("in_proj_bias") || name.ends_with("self_attn.out_proj.bias") {
        // nn.MultiheadAttention zeroes its biases.
        vec![0.0; n]
    } else if name.ends_with(".weight") && shape.len() == 2 {
        // nn.Linear: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        uniform(&mut rng, 1.0 / (shape[1] as f64).sqrt())
    } else if name.ends_with(".bias") && shape.len() == 1 {
        let fan_in = fan_in_of
            .get(module)
            .ok_or_else(|| anyhow!("no weight found for bias '{name}'"))?;
        uniform(&mut rng, 1.0 / (*fan_in as f64).sqrt())
    } else {
        bail!("no initialisation rule for '{name}' {shape:?}");
    })
}

/// performer-pytorch's `gaussian_orthogonal_random_matrix(m, d, scaling=0)`: stacked blocks of random
/// orthogonal rows (QR of a Gaussian matrix), each row rescaled to the norm of a Gaussian vector.
pub fn gaussian_orthogonal(rows: usize, cols: usize, rng: &mut Rng) -> Vec<f32> {
    let mut out: Vec<f64> = Vec::with_capacity(rows * cols);
    while out.len() < rows * cols {
        let q = orthogonal_block(cols, rng);
        let take = (rows * cols - out.len()).min(cols * cols);
        out.extend_from_slice(&q[..take]);
    }
    for r in 0..rows {
        let norm = (0..cols).map(|_| rng.normal().powi(2)).sum::<f64>().sqrt();
        for c in 0..cols {
            out[r * cols + c] *= norm;
        }
    }
    out.into_iter().map(|x| x as f32).collect()
}

/// Rows of Q^T for a Gaussian d x d matrix (modified Gram-Schmidt on its columns, f64).
fn orthogonal_block(d: usize, rng: &mut Rng) -> Vec<f64> {
    let a: Vec<f64> = (0..d * d).map(|_| rng.normal()).collect();
    // Column j of A is a[i * d + j]; Q's columns become the rows of the result.
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(d);
    for j in 0..d {
        let mut v: Vec<f64> = (0..d).map(|i| a[i * d + j]).collect();
        for u in &q {
            let dot: f64 = u.iter().zip(&v).map(|(x, y)| x * y).sum();
            for (vi, ui) in v.iter_mut().zip(u) {
                *vi -= dot * ui;
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        q.push(v.into_iter().map(|x| x / norm).collect());
    }
    q.into_iter().flatten().collect()
}

/// Fresh random weights for `cfg`, every tensor the model needs plus the performer's redraw counter
/// (so the key set equals a reference checkpoint's).
pub fn random_tensors(cfg: &ModelConfig, seed: u64) -> Result<BTreeMap<String, Tensor>> {
    let shapes = tensor_shapes(cfg)?;
    let fan_in_of: HashMap<String, usize> = shapes
        .iter()
        .filter(|(n, s)| n.ends_with(".weight") && s.len() == 2)
        .map(|(n, s)| (n.trim_end_matches(".weight").to_string(), s[1]))
        .collect();
    let mut out = BTreeMap::new();
    for (name, shape) in &shapes {
        let v = init_values(name, shape, &fan_in_of, seed)?;
        out.insert(
            name.clone(),
            Tensor::from_vec(v, shape.as_slice(), &Device::Cpu)?,
        );
    }
    out.insert(
        "decoder.performer.calls_since_last_redraw".to_string(),
        Tensor::new(0i64, &Device::Cpu)?,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_shape_has_the_reference_parameter_count() {
        let cfg = ModelConfig::from_json(&Preset::M100.config()).unwrap();
        let shapes = tensor_shapes(&cfg).unwrap();
        let params: usize = shapes
            .iter()
            .filter(|(n, _)| !n.ends_with("projection_matrix"))
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        // The reference code instantiates 119,252,285 parameters at full size.
        assert_eq!(params, 119_252_285);
        let pm = shapes
            .iter()
            .find(|(n, _)| n.ends_with("projection_matrix"))
            .unwrap();
        assert_eq!(pm.1, vec![266, 64]);
    }

    #[test]
    fn tiny_preset_matches_the_fixture_config() {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("test-data/reference/tiny_models.safetensors");
        let entry = crate::model::load_entry(&fixture, "gene").unwrap();
        let ours = ModelConfig::from_json(&Preset::Tiny.config()).unwrap();
        assert_eq!(ours, entry.config);
        let mut theirs: Vec<(String, Vec<usize>)> = entry
            .tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.dims().to_vec()))
            .collect();
        theirs.sort();
        let mut mine: Vec<(String, Vec<usize>)> = random_tensors(&ours, 1)
            .unwrap()
            .iter()
            .map(|(n, t)| (n.clone(), t.dims().to_vec()))
            .collect();
        mine.sort();
        assert_eq!(
            mine, theirs,
            "same tensor names and shapes as the reference checkpoint"
        );
    }

    #[test]
    fn init_is_seeded_and_follows_torch_defaults() {
        let cfg = ModelConfig::from_json(&Preset::Tiny.config()).unwrap();
        let a = random_tensors(&cfg, 5).unwrap();
        let b = random_tensors(&cfg, 5).unwrap();
        let c = random_tensors(&cfg, 6).unwrap();
        let v = |m: &BTreeMap<String, Tensor>, n: &str| {
            m[n].flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        for n in a.keys().filter(|n| !n.ends_with("redraw")) {
            assert_eq!(v(&a, n), v(&b, n), "{n}");
        }
        assert_ne!(v(&a, "pos_emb.weight"), v(&c, "pos_emb.weight"));
        assert!(v(&a, "encoder.norm.weight").iter().all(|x| *x == 1.0));
        assert!(
            v(&a, "encoder.transformer_encoder.0.self_attn.in_proj_bias")
                .iter()
                .all(|x| *x == 0.0)
        );
        let w = v(&a, "encoder.transformer_encoder.0.linear2.weight"); // [32, 128]
        let bound = 1.0 / 128f32.sqrt();
        assert!(w.iter().all(|x| x.abs() <= bound) && w.iter().any(|x| x.abs() > 0.9 * bound));
        let e = v(&a, "pos_emb.weight");
        let m = e.iter().sum::<f32>() / e.len() as f32;
        let var = e.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / e.len() as f32;
        assert!(m.abs() < 0.01 && (var - 1.0).abs() < 0.02, "{m} {var}");
    }

    #[test]
    fn projection_rows_are_orthogonal_within_a_block() {
        let mut rng = Rng::seed_from_u64(2);
        let (rows, d) = (10, 6);
        let p = gaussian_orthogonal(rows, d, &mut rng);
        let row = |i: usize| &p[i * d..(i + 1) * d];
        for i in 0..d {
            for j in 0..i {
                let dot: f32 = row(i).iter().zip(row(j)).map(|(a, b)| a * b).sum();
                let ni: f32 = row(i).iter().map(|a| a * a).sum::<f32>().sqrt();
                let nj: f32 = row(j).iter().map(|a| a * a).sum::<f32>().sqrt();
                assert!((dot / (ni * nj)).abs() < 1e-5, "rows {i} {j}");
            }
        }
    }
}
