//! Reading weights: the reference's nested torch `.ckpt`, our combined or per-key safetensors, and a
//! converted directory. Everything ends as (config, tensors without the `model.` prefix).

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::config::ModelConfig;

/// One checkpoint entry ('gene', 'cell' or 'rde') ready to build a model from.
pub struct CheckpointEntry {
    pub key: String,
    /// The config exactly as stored (nested for reference checkpoints).
    pub raw_config: Value,
    pub config: ModelConfig,
    pub tensors: HashMap<String, Tensor>,
}

/// What kind of file or directory a model path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    TorchCkpt,
    Safetensors,
    ConvertedDir,
}

impl CheckpointFormat {
    pub fn detect(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Ok(Self::ConvertedDir);
        }
        let mut magic = [0u8; 4];
        let mut f = crate::fsutil::open_regular(path)
            .with_context(|| format!("cannot open model file {}", path.display()))?;
        let n = f.read(&mut magic)?;
        if n >= 2 && &magic[..2] == b"PK" {
            return Ok(Self::TorchCkpt);
        }
        if n == 4 && path.extension().is_some_and(|e| e == "safetensors") {
            return Ok(Self::Safetensors);
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("ckpt" | "pt" | "pth") => bail!(
                "{} is not a torch zip checkpoint (legacy non-zip torch files are not supported; re-save with torch>=1.6)",
                path.display()
            ),
            _ => bail!(
                "{} is not a model: expected a torch .ckpt, a .safetensors file or a directory written by `scfoundation convert`",
                path.display()
            ),
        }
    }
}

/// Loads the entry `key` from any supported model path.
pub fn load_entry(path: &Path, key: &str) -> Result<CheckpointEntry> {
    let entry = match CheckpointFormat::detect(path)? {
        CheckpointFormat::TorchCkpt => load_ckpt(path, key),
        CheckpointFormat::Safetensors => load_safetensors(path, key),
        CheckpointFormat::ConvertedDir => {
            let f = converted_file(path, key);
            if !f.exists() {
                bail!(
                    "model directory {} has no entry '{key}' (expected {})",
                    path.display(),
                    f.display()
                );
            }
            load_safetensors(&f, key)
        }
    }
    .with_context(|| format!("loading model entry '{key}' from {}", path.display()))?;
    Ok(entry)
}

/// Lists the entries a model path holds.
pub fn list_entries(path: &Path) -> Result<Vec<String>> {
    match CheckpointFormat::detect(path)? {
        CheckpointFormat::TorchCkpt => {
            let root = read_pickle_root(path)?;
            Ok(as_dict(&root)
                .ok_or_else(|| anyhow!("{}: top level is not a dict", path.display()))?
                .iter()
                .filter_map(|(k, _)| match k {
                    Object::Unicode(s) => Some(s.clone()),
                    _ => None,
                })
                .collect())
        }
        CheckpointFormat::Safetensors => {
            let (meta, _) = safetensors_metadata(path)?;
            let mut keys: Vec<String> = meta
                .keys()
                .filter(|k| *k != "config" && *k != "key")
                .cloned()
                .collect();
            if keys.is_empty() {
                if let Some(k) = meta.get("key") {
                    keys.push(k.clone());
                }
            }
            keys.sort();
            Ok(keys)
        }
        CheckpointFormat::ConvertedDir => {
            let mut keys = vec![];
            for e in std::fs::read_dir(path)? {
                let name = e?.file_name().to_string_lossy().to_string();
                if let Some(k) = name.strip_suffix(".safetensors") {
                    keys.push(k.to_string());
                }
            }
            keys.sort();
            Ok(keys)
        }
    }
}

pub fn converted_file(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.safetensors"))
}

fn read_pickle_root(path: &Path) -> Result<Object> {
    let file = crate::fsutil::open_regular(path)?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .with_context(|| format!("{} is not a torch zip checkpoint", path.display()))?;
    let pkl = find_pkl(&zip)
        .ok_or_else(|| anyhow!("{} has no data.pkl: not a torch checkpoint", path.display()))?;
    let reader = zip.by_name(&pkl)?;
    let mut reader = BufReader::new(reader);
    let mut stack = Stack::empty();
    stack
        .read_loop(&mut reader)
        .with_context(|| format!("cannot parse the pickle in {}", path.display()))?;
    Ok(stack.finalize()?)
}

fn find_pkl<R: std::io::Read + std::io::Seek>(zip: &zip::ZipArchive<R>) -> Option<String> {
    zip.file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("data.pkl"))
}

fn as_dict(o: &Object) -> Option<&Vec<(Object, Object)>> {
    match o {
        Object::Dict(d) => Some(d),
        // An OrderedDict with extra state (e.g. `_metadata`) arrives as a Build.
        Object::Build { callable, .. } => as_dict(callable),
        _ => None,
    }
}

fn dict_get<'a>(d: &'a [(Object, Object)], key: &str) -> Option<&'a Object> {
    d.iter()
        .find(|(k, _)| matches!(k, Object::Unicode(s) if s == key))
        .map(|(_, v)| v)
}

fn dict_keys(d: &[(Object, Object)]) -> String {
    d.iter()
        .filter_map(|(k, _)| match k {
            Object::Unicode(s) => Some(format!("'{s}'")),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn load_ckpt(path: &Path, key: &str) -> Result<CheckpointEntry> {
    let root = read_pickle_root(path)?;
    let top = as_dict(&root).ok_or_else(|| anyhow!("top level is not a dict"))?;
    let entry = dict_get(top, key)
        .ok_or_else(|| anyhow!("checkpoint has no key '{key}' (it has {})", dict_keys(top)))?;
    let entry = as_dict(entry).ok_or_else(|| anyhow!("entry '{key}' is not a dict"))?;
    let raw_config = pickle_to_json(
        dict_get(entry, "config").ok_or_else(|| anyhow!("entry '{key}' has no 'config'"))?,
    )?;
    let sd = dict_get(entry, "state_dict")
        .or_else(|| dict_get(entry, "model_state_dict"))
        .ok_or_else(|| anyhow!("entry '{key}' has no 'state_dict'"))?;
    let sd = as_dict(sd).ok_or_else(|| anyhow!("entry '{key}' state_dict is not a dict"))?;

    let file = crate::fsutil::open_regular(path)?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))?;
    let pkl = find_pkl(&zip).ok_or_else(|| anyhow!("no data.pkl"))?;
    let dir = PathBuf::from(pkl.strip_suffix(".pkl").unwrap_or(&pkl));
    let mut tensors = HashMap::new();
    for (name, value) in sd.iter() {
        let Some(info) = value.clone().into_tensor_info(name.clone(), &dir)? else {
            continue;
        };
        let t = read_zip_tensor(&mut zip, &info)
            .with_context(|| format!("reading tensor {}", info.name))?;
        let name = info
            .name
            .strip_prefix("model.")
            .unwrap_or(&info.name)
            .to_string();
        tensors.insert(name, t);
    }
    CheckpointEntry::new(key, raw_config, tensors)
}

/// Reads a tensor's storage and applies its (possibly strided) layout.
fn read_zip_tensor<R: std::io::Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    info: &candle_core::pickle::TensorInfo,
) -> Result<Tensor> {
    let mut raw = vec![];
    zip.by_name(&info.path)?.read_to_end(&mut raw)?;
    let elem = info.dtype.size_in_bytes();
    let n_storage = raw.len() / elem;
    let storage = Tensor::from_raw_buffer(&raw, info.dtype, &[n_storage], &Device::Cpu)?;
    let layout = &info.layout;
    let dims = layout.dims().to_vec();
    let offset = layout.start_offset() / elem;
    if layout.is_contiguous() {
        let numel: usize = dims.iter().product();
        return Ok(storage.narrow(0, offset, numel)?.reshape(dims)?);
    }
    // Strided storage: gather element by element through the strides.
    let strides = layout.stride().to_vec();
    let numel: usize = dims.iter().product();
    let mut idx = Vec::with_capacity(numel);
    let mut counter = vec![0usize; dims.len()];
    for _ in 0..numel {
        let lin: usize = offset
            + counter
                .iter()
                .zip(&strides)
                .map(|(c, s)| c * s)
                .sum::<usize>();
        idx.push(lin as u32);
        for d in (0..dims.len()).rev() {
            counter[d] += 1;
            if counter[d] < dims[d] {
                break;
            }
            counter[d] = 0;
        }
    }
    let idx = Tensor::from_vec(idx, numel, &Device::Cpu)?;
    Ok(storage.index_select(&idx, 0)?.reshape(dims)?)
}

fn pickle_to_json(o: &Object) -> Result<Value> {
    Ok(match o {
        Object::Int(i) => Value::from(*i),
        Object::Long(i) => Value::from(*i),
        Object::Float(f) => Value::from(*f),
        Object::Unicode(s) => Value::from(s.clone()),
        Object::Bool(b) => Value::from(*b),
        Object::None => Value::Null,
        Object::List(v) | Object::Tuple(v) => {
            Value::Array(v.iter().map(pickle_to_json).collect::<Result<_>>()?)
        }
        Object::Dict(_) | Object::Build { .. } => {
            let d = as_dict(o).ok_or_else(|| anyhow!("unsupported config object"))?;
            let mut m = serde_json::Map::new();
            for (k, v) in d {
                let k = match k {
                    Object::Unicode(s) => s.clone(),
                    Object::Int(i) => i.to_string(),
                    Object::Long(i) => i.to_string(),
                    other => bail!("unsupported config key {other:?}"),
                };
                m.insert(k, pickle_to_json(v)?);
            }
            Value::Object(m)
        }
        other => bail!("unsupported object in checkpoint config: {other:?}"),
    })
}

fn safetensors_metadata(path: &Path) -> Result<(HashMap<String, String>, Vec<String>)> {
    let mut f = crate::fsutil::open_regular(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .with_context(|| format!("{} is too short to be a safetensors file", path.display()))?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        bail!(
            "{} is not a safetensors file (header length {n})",
            path.display()
        );
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .with_context(|| format!("{} is truncated (safetensors header)", path.display()))?;
    let v: Value = serde_json::from_slice(&header)
        .with_context(|| format!("{} has a corrupt safetensors header", path.display()))?;
    let obj = v
        .as_object()
        .context("safetensors header is not an object")?;
    let meta = obj
        .get("__metadata__")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let names = obj
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    Ok((meta, names))
}

/// Two safetensors layouts: combined (`<key>.<name>` tensors, metadata `<key>` = config JSON) and
/// single-entry (plain names, metadata `config` and `key`), which `convert` writes.
fn load_safetensors(path: &Path, key: &str) -> Result<CheckpointEntry> {
    let (meta, _) = safetensors_metadata(path)?;
    let all = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("cannot read tensors from {}", path.display()))?;
    let (config_json, tensors) = if let Some(c) = meta.get(key) {
        let prefix = format!("{key}.");
        let t: HashMap<String, Tensor> = all
            .into_iter()
            .filter_map(|(n, t)| n.strip_prefix(&prefix).map(|s| (s.to_string(), t)))
            .collect();
        (c.clone(), t)
    } else if let Some(c) = meta.get("config") {
        if let Some(k) = meta.get("key") {
            if k != key {
                bail!("file holds entry '{k}', not '{key}'");
            }
        }
        (c.clone(), all)
    } else {
        let keys: Vec<_> = meta.keys().cloned().collect();
        bail!(
            "has no entry '{key}' (metadata keys: {})",
            if keys.is_empty() {
                "none".to_string()
            } else {
                keys.join(", ")
            }
        );
    };
    let raw_config: Value =
        serde_json::from_str(&config_json).context("config metadata is not valid JSON")?;
    CheckpointEntry::new(key, raw_config, tensors)
}

impl CheckpointEntry {
    fn new(key: &str, raw_config: Value, tensors: HashMap<String, Tensor>) -> Result<Self> {
        if tensors.is_empty() {
            bail!("entry '{key}' holds no tensors");
        }
        let config = ModelConfig::from_json(&raw_config)?;
        Ok(Self {
            key: key.to_string(),
            raw_config,
            config,
            tensors,
        })
    }

    /// Writes this entry as a single-entry safetensors file (config in metadata) plus `<key>.config.json`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let meta: HashMap<String, String> = [
            (
                "config".to_string(),
                serde_json::to_string(&self.raw_config)?,
            ),
            ("key".to_string(), self.key.clone()),
            ("format".to_string(), "pt".to_string()),
        ]
        .into_iter()
        .collect();
        let mut names: Vec<&String> = self.tensors.keys().collect();
        names.sort();
        let data: Vec<(&str, &Tensor)> = names
            .iter()
            .map(|n| (n.as_str(), &self.tensors[*n]))
            .collect();
        let target = converted_file(dir, &self.key);
        crate::fsutil::write_with(&target, |p| {
            safetensors::serialize_to_file(data.clone(), Some(meta.clone()), p)
                .map_err(|e| anyhow!("{e}"))
        })?;
        let cfg = serde_json::to_string_pretty(&self.raw_config)? + "\n";
        crate::fsutil::write_bytes(
            &dir.join(format!("{}.config.json", self.key)),
            cfg.as_bytes(),
        )
    }

    /// Checks every tensor the model needs against the config before building.
    pub fn var_builder(&self, device: &Device) -> candle_nn::VarBuilder<'static> {
        self.var_builder_as(device, DType::F32)
    }

    /// The weights cast to `dtype` (bf16 for mixed-precision inference).
    pub fn var_builder_as(&self, device: &Device, dtype: DType) -> candle_nn::VarBuilder<'static> {
        candle_nn::VarBuilder::from_tensors(self.tensors.clone(), dtype, device)
    }
}
