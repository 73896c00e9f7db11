//! The model as trainable variables: the existing `MaeAutobin` built through a `VarBuilder` whose
//! trainable tensors are candle `Var`s held in a `VarMap`, so autograd reaches them; frozen parameters
//! and buffers are plain tensors the graph does not track. There is no second copy of the network.
//!
//! A plain `VarBuilder::from_varmap` cannot serve here: `VarMap` refuses `get_unchecked`, which the
//! performer uses for its stored random-feature projection (a fixed buffer that must not be trained),
//! and it would invent zero tensors for names it lacks instead of failing. [`TrainBackend`] is a
//! `VarMap` plus a table of fixed tensors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use serde_json::Value;

use crate::model::{MaeAutobin, ModelConfig};

/// Which parameters train. Rules combine as a union; fixed buffers (the performer's projection
/// matrices, the redraw counter) never train.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrainRule {
    /// Every parameter.
    All,
    /// The last K encoder layers (`encoder.transformer_encoder.{depth-K..depth}.*`).
    LastEncoderLayers(usize),
    /// Parameters whose name starts with this prefix (e.g. `to_final.`, `encoder.norm.`).
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trainable(pub Vec<TrainRule>);

impl Trainable {
    pub fn all() -> Self {
        Self(vec![TrainRule::All])
    }

    /// No model parameter trains (a frozen model; only parameters added with
    /// [`TrainModel::add_params`] train, e.g. a classifier head).
    pub fn none() -> Self {
        Self(vec![])
    }

    /// `encoder-last:K` for K > 0, [`Trainable::none`] for K = 0.
    pub fn last_encoder_layers(k: usize) -> Self {
        if k == 0 {
            Self::none()
        } else {
            Self(vec![TrainRule::LastEncoderLayers(k)])
        }
    }

    /// `all`, `encoder-last:K`, or name prefixes, comma separated (e.g. `encoder-last:1,encoder.norm.`).
    pub fn parse(s: &str) -> Result<Self> {
        let mut rules = vec![];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                rules.push(TrainRule::All);
            } else if let Some(k) = part.strip_prefix("encoder-last:") {
                let k: usize = k.parse().map_err(|_| {
                    anyhow!("invalid trainable rule '{part}': encoder-last:K needs a whole number")
                })?;
                rules.push(TrainRule::LastEncoderLayers(k));
            } else {
                rules.push(TrainRule::Prefix(part.to_string()));
            }
        }
        if rules.is_empty() {
            bail!("no trainable parameters selected (give all, encoder-last:K or name prefixes)");
        }
        Ok(Self(rules))
    }

    pub fn selects(&self, name: &str, cfg: &ModelConfig) -> bool {
        if is_buffer(name) {
            return false;
        }
        self.0.iter().any(|r| match r {
            TrainRule::All => true,
            TrainRule::LastEncoderLayers(k) => {
                let depth = cfg.encoder.depth;
                (depth.saturating_sub(*k)..depth)
                    .any(|i| name.starts_with(&format!("encoder.transformer_encoder.{i}.")))
            }
            TrainRule::Prefix(p) => name.starts_with(p.as_str()),
        })
    }
}

impl std::fmt::Display for Trainable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match r {
                TrainRule::All => "all".to_string(),
                TrainRule::LastEncoderLayers(k) => format!("encoder-last:{k}"),
                TrainRule::Prefix(p) => p.clone(),
            })
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

/// Tensors that are state, not parameters: never trained, saved unchanged.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("projection_matrix") || name.ends_with("calls_since_last_redraw")
}

/// Number of performer random features for a head width, as performer-pytorch's default
/// `int(dim_head * ln(dim_head))` (266 for 64, 10 for 6).
pub fn nb_features(dim_head: usize) -> usize {
    ((dim_head as f64) * (dim_head as f64).ln()).floor() as usize
}

/// `VarMap` for trainable tensors, fixed tensors for the rest; records every name the model asks for.
pub struct TrainBackend {
    vars: VarMap,
    fixed: HashMap<String, Tensor>,
    requested: Arc<Mutex<BTreeSet<String>>>,
    /// Mixed precision: variables are handed out as a (differentiable) cast to this dtype, so the
    /// forward pass runs in it while gradients reach the master variables in their own dtype.
    cast: Option<DType>,
}

impl SimpleBackend for TrainBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.requested
            .lock()
            .expect("lock")
            .insert(name.to_string());
        if let Some(t) = self.fixed.get(name) {
            if t.shape() != &s {
                candle_core::bail!("{name}: shape {:?}, the model expects {s:?}", t.shape());
            }
            return t.to_device(dev)?.to_dtype(dtype);
        }
        let vars = self.vars.data().lock().expect("lock");
        match vars.get(name) {
            Some(v) => {
                if v.shape() != &s {
                    candle_core::bail!("{name}: shape {:?}, the model expects {s:?}", v.shape());
                }
                if let Some(c) = self.cast {
                    return v.as_tensor().to_dtype(c);
                }
                if v.dtype() != dtype {
                    candle_core::bail!("{name}: variable is {:?}, not {dtype:?}", v.dtype());
                }
                Ok(v.as_tensor().clone())
            }
            None => candle_core::bail!("the weights lack '{name}'"),
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.requested
            .lock()
            .expect("lock")
            .insert(name.to_string());
        match self.fixed.get(name) {
            Some(t) => t.to_device(dev)?.to_dtype(dtype),
            None => candle_core::bail!("the weights lack buffer '{name}'"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.fixed.contains_key(name) || self.vars.data().lock().expect("lock").contains_key(name)
    }
}

/// The network with its trainable variables, frozen parameters and buffers.
pub struct TrainModel {
    pub model: MaeAutobin,
    pub config: ModelConfig,
    /// The config exactly as stored in the checkpoint (written back unchanged).
    pub raw_config: Value,
    /// The trainable variables; also listed in `params` (sorted by name, the order every loop uses:
    /// `VarMap` is a `HashMap`, whose order changes between processes).
    pub varmap: VarMap,
    pub params: Vec<(String, Var)>,
    /// Frozen parameters and buffers, kept in their stored dtype on the CPU for saving.
    pub fixed: BTreeMap<String, Tensor>,
    pub dtype: DType,
    pub device: Device,
    /// Forward-pass dtype (mixed precision when it differs from `dtype`, the master weights').
    compute_dtype: DType,
    /// Frozen parameters and buffers on the device, cast to `compute_dtype` (rebuilding the
    /// half-precision model each step reuses them).
    fixed_compute: HashMap<String, Tensor>,
}

impl TrainModel {
    /// Builds the model from checkpoint tensors; parameters `trainable` selects become variables of
    /// `dtype` on `device`. Fails on a tensor the model does not use (other than known buffers) or one it
    /// needs but the weights lack.
    pub fn from_tensors(
        raw_config: Value,
        tensors: HashMap<String, Tensor>,
        trainable: &Trainable,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let config = ModelConfig::from_json(&raw_config)?;
        let varmap = VarMap::new();
        let mut fixed_dev = HashMap::new();
        let mut fixed = BTreeMap::new();
        let mut params = vec![];
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        for name in names {
            let t = &tensors[name];
            let float = matches!(
                t.dtype(),
                DType::F32 | DType::F64 | DType::BF16 | DType::F16
            );
            if float && trainable.selects(name, &config) {
                let v = Var::from_tensor(&t.to_device(device)?.to_dtype(dtype)?)?;
                varmap
                    .data()
                    .lock()
                    .expect("lock")
                    .insert(name.clone(), v.clone());
                params.push((name.clone(), v));
            } else {
                if float {
                    fixed_dev.insert(name.clone(), t.to_device(device)?.to_dtype(dtype)?);
                }
                fixed.insert(name.clone(), t.to_device(&Device::Cpu)?);
            }
        }
        let requested = Arc::new(Mutex::new(BTreeSet::new()));
        let backend = TrainBackend {
            vars: varmap.clone(),
            fixed: fixed_dev.clone(),
            requested: requested.clone(),
            cast: None,
        };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        let mut model = MaeAutobin::load(vb, &config)
            .map_err(|e| anyhow!("weights do not fit their config: {e}"))?;
        model.set_differentiable(true);
        let requested = requested.lock().expect("lock").clone();
        let unused: Vec<&String> = tensors
            .keys()
            .filter(|n| !requested.contains(*n) && !is_buffer(n))
            .collect();
        if !unused.is_empty() {
            let mut unused: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            unused.sort();
            bail!(
                "the weights hold tensors the model does not use: {}",
                unused.join(", ")
            );
        }
        if params.is_empty() && !trainable.0.is_empty() {
            bail!("the trainable selection '{trainable}' matches no parameter");
        }
        Ok(Self {
            model,
            config,
            raw_config,
            varmap,
            params,
            fixed,
            dtype,
            device: device.clone(),
            compute_dtype: dtype,
            fixed_compute: fixed_dev,
        })
    }

    /// Runs the forward pass in `compute` (e.g. bf16) while the variables, their gradients and the
    /// optimiser stay in the master dtype: mixed precision. Buffers keep their master dtype when they
    /// are integer-valued counters; float buffers are cast once here.
    pub fn set_compute_dtype(&mut self, compute: DType) -> Result<()> {
        if compute == self.compute_dtype {
            return Ok(());
        }
        let mut fixed = HashMap::new();
        for (name, t) in &self.fixed_compute {
            fixed.insert(name.clone(), t.to_dtype(compute)?);
        }
        self.fixed_compute = fixed;
        self.compute_dtype = compute;
        Ok(())
    }

    pub fn compute_dtype(&self) -> DType {
        self.compute_dtype
    }

    /// The network for a forward pass: `None` means `self.model` (same precision as the master
    /// weights); under mixed precision a fresh model whose weights are this step's casts of the
    /// variables (candle is eager, so a cast taken once would not follow later updates).
    pub fn compute_model(&self) -> Result<Option<MaeAutobin>> {
        if self.compute_dtype == self.dtype {
            return Ok(None);
        }
        let backend = TrainBackend {
            vars: self.varmap.clone(),
            fixed: self.fixed_compute.clone(),
            requested: Arc::new(Mutex::new(BTreeSet::new())),
            cast: Some(self.compute_dtype),
        };
        let vb =
            VarBuilder::from_backend(Box::new(backend), self.compute_dtype, self.device.clone());
        let mut model = MaeAutobin::load(vb, &self.config)
            .map_err(|e| anyhow!("building the {:?} model: {e}", self.compute_dtype))?;
        model.set_differentiable(true);
        Ok(Some(model))
    }

    /// Adds parameters that are not part of the network (a task head) to the same variable set, so
    /// one optimiser updates them with the model's trainable parameters. Names must be new; `params`
    /// stays sorted by name. Build the head through [`TrainModel::extra_var_builder`]. Call before
    /// creating the [`super::Trainer`] (its optimiser sizes its state from `params`).
    pub fn add_params(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        for (name, t) in tensors {
            if self.fixed.contains_key(name) || self.params.iter().any(|(n, _)| n == name) {
                bail!("parameter '{name}' already exists");
            }
            let v = Var::from_tensor(&t.to_device(&self.device)?.to_dtype(self.dtype)?)?;
            self.varmap
                .data()
                .lock()
                .expect("lock")
                .insert(name.clone(), v.clone());
            self.params.push((name.clone(), v));
        }
        self.params.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(())
    }

    /// A `VarBuilder` over the trainable variables only (no fixed tensors): builds modules from
    /// parameters added with [`TrainModel::add_params`], sharing the variables (no copy).
    pub fn extra_var_builder(&self) -> VarBuilder<'static> {
        let backend = TrainBackend {
            vars: self.varmap.clone(),
            fixed: HashMap::new(),
            requested: Arc::new(Mutex::new(BTreeSet::new())),
            cast: None,
        };
        VarBuilder::from_backend(Box::new(backend), self.dtype, self.device.clone())
    }

    /// Current values of the named trainable parameters (f32, CPU).
    pub fn param_tensors(&self, names: impl Fn(&str) -> bool) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (name, v) in self.params.iter().filter(|(n, _)| names(n)) {
            out.insert(
                name.clone(),
                // A copy: a `Var` is updated in place, so a shallow clone would follow later steps.
                v.as_tensor()
                    .detach()
                    .to_dtype(DType::F32)?
                    .to_device(&Device::Cpu)?
                    .copy()?,
            );
        }
        Ok(out)
    }

    pub fn vars(&self) -> Vec<Var> {
        self.params.iter().map(|(_, v)| v.clone()).collect()
    }

    pub fn n_trainable(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Every tensor (trainable ones as f32), on the CPU, by name: what a checkpoint entry holds.
    pub fn tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = self.fixed.clone();
        for (name, v) in &self.params {
            out.insert(
                name.clone(),
                v.as_tensor()
                    .to_dtype(DType::F32)?
                    .to_device(&Device::Cpu)
                    .with_context(|| format!("copying {name} off the device"))?,
            );
        }
        Ok(out)
    }

    /// Overwrites the trainable variables with `tensors` (same names and shapes).
    pub fn set_params(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (name, v) in &self.params {
            let t = tensors
                .get(name)
                .ok_or_else(|| anyhow!("checkpoint lacks parameter '{name}'"))?;
            v.set(&t.to_device(&self.device)?.to_dtype(self.dtype)?)
                .with_context(|| format!("restoring {name}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::BlockConfig;

    fn cfg() -> ModelConfig {
        let block = |d, depth, h| BlockConfig {
            hidden_dim: d,
            depth,
            heads: h,
            dim_head: None,
            module_type: None,
        };
        ModelConfig {
            encoder: block(16, 3, 4),
            decoder: block(8, 1, 2),
            seq_len: 19266,
            bin_num: 10,
            bin_alpha: 1.0,
            pad_token_id: 103,
            mask_token_id: 102,
        }
    }

    #[test]
    fn trainable_rules() {
        let c = cfg();
        let t = Trainable::parse("encoder-last:1,to_final.").unwrap();
        assert!(t.selects("encoder.transformer_encoder.2.linear1.weight", &c));
        assert!(!t.selects("encoder.transformer_encoder.1.linear1.weight", &c));
        assert!(!t.selects("encoder.transformer_encoder.12.linear1.weight", &c));
        assert!(t.selects("to_final.bias", &c));
        assert!(!t.selects("encoder.norm.weight", &c));
        let all = Trainable::parse("all").unwrap();
        assert!(all.selects("pos_emb.weight", &c));
        assert!(!all.selects(
            "decoder.performer.net.layers.0.0.fn.fast_attention.projection_matrix",
            &c
        ));
        assert!(Trainable::parse("encoder-last:x").is_err());
        assert!(Trainable::parse(" , ").is_err());
        assert_eq!(t.to_string(), "encoder-last:1,to_final.");
    }

    #[test]
    fn performer_feature_count() {
        assert_eq!(nb_features(64), 266);
        assert_eq!(nb_features(6), 10);
    }
}
