//! Model hyper-parameters, read from the checkpoint's own config.
//!
//! The reference stores the config nested (`model_config.<model>` + `dataset_config.rnaseq`) and merges
//! it at load time; we accept either the nested or the already merged form.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockConfig {
    pub hidden_dim: usize,
    pub depth: usize,
    pub heads: usize,
    /// Per-head width. Unused by the transformer encoder (it uses hidden_dim / heads), used by the performer.
    #[serde(default)]
    pub dim_head: Option<usize>,
    #[serde(default)]
    pub module_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub encoder: BlockConfig,
    pub decoder: BlockConfig,
    /// Number of input positions: 19,264 genes plus the T and S tokens.
    pub seq_len: usize,
    pub bin_num: usize,
    pub bin_alpha: f64,
    pub pad_token_id: u32,
    pub mask_token_id: u32,
}

impl ModelConfig {
    /// Parses a config in the reference's nested checkpoint form or in merged form.
    pub fn from_json(v: &Value) -> Result<Self> {
        let merged = merge_nested(v)?;
        let cfg: ModelConfig = serde_json::from_value(merged.clone())
            .with_context(|| "model config lacks a required key (encoder, decoder, seq_len, bin_num, bin_alpha, pad_token_id, mask_token_id)".to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        if let Some(t) = &self.encoder.module_type {
            if t != "transformer" {
                bail!("unsupported encoder module_type '{t}' (only 'transformer' is implemented)");
            }
        }
        if let Some(t) = &self.decoder.module_type {
            if t != "performer" {
                bail!("unsupported decoder module_type '{t}' (only 'performer' is implemented)");
            }
        }
        if self.encoder.heads == 0 || !self.encoder.hidden_dim.is_multiple_of(self.encoder.heads) {
            bail!(
                "encoder hidden_dim {} is not divisible by heads {}",
                self.encoder.hidden_dim,
                self.encoder.heads
            );
        }
        if self.seq_len < 3 {
            bail!("seq_len {} is too small", self.seq_len);
        }
        Ok(())
    }

    /// Number of genes the model knows (positions before T and S).
    pub fn n_genes(&self) -> usize {
        self.seq_len - 2
    }

    pub fn decoder_dim_head(&self) -> usize {
        self.decoder
            .dim_head
            .unwrap_or(self.decoder.hidden_dim / self.decoder.heads.max(1))
    }
}

/// Flattens `{model, model_config: {<model>: {...}}, dataset_config: {rnaseq: {...}}}` the way the
/// reference's `convertconfig` does; a config that is already flat passes through.
pub fn merge_nested(v: &Value) -> Result<Value> {
    let obj = v.as_object().context("model config is not a JSON object")?;
    if obj.contains_key("encoder") {
        return Ok(v.clone());
    }
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .context("model config has neither 'encoder' nor 'model' key")?;
    let mut out = serde_json::Map::new();
    if let Some(m) = obj
        .get("model_config")
        .and_then(|mc| mc.get(model))
        .and_then(Value::as_object)
    {
        out.extend(m.clone());
    } else {
        bail!("model config has no model_config.{model} section");
    }
    if let Some(d) = obj
        .get("dataset_config")
        .and_then(|dc| dc.get("rnaseq"))
        .and_then(Value::as_object)
    {
        out.extend(d.clone());
    }
    out.insert("model_type".into(), Value::String(model.to_string()));
    Ok(Value::Object(out))
}
