//! Training checkpoints: the model entries `embed` loads (`<key>.safetensors` + `<key>.config.json`,
//! the layout `convert` writes) and `train_state.safetensors` with the optimizer moments, step, random
//! generator state and data position. All files of a checkpoint are written to temporary names and
//! renamed into place together; every file records the step, and resuming refuses a set whose steps
//! disagree.
//!
//! The safetensors files are written here rather than through the `safetensors` crate, whose header
//! metadata comes from a `HashMap` in random order: these headers are sorted, so equal content gives
//! equal bytes.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

use super::optim::{AdamW, Moments};
use super::params::TrainModel;
use super::rng::Rng;
use crate::fsutil::PendingFile;

pub const STATE_FILE: &str = "train_state.safetensors";
const STATE_FORMAT: &str = "scfoundation-train-state/1";

fn dtype_name(d: DType) -> Result<&'static str> {
    Ok(match d {
        DType::F32 => "F32",
        DType::F64 => "F64",
        DType::I64 => "I64",
        DType::U32 => "U32",
        DType::U8 => "U8",
        other => bail!("cannot save {other:?} tensors"),
    })
}

fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let t = t.to_device(&Device::Cpu)?.flatten_all()?;
    Ok(match t.dtype() {
        DType::F32 => t
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::F64 => t
            .to_vec1::<f64>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::I64 => t
            .to_vec1::<i64>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::U32 => t
            .to_vec1::<u32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::U8 => t.to_vec1::<u8>()?,
        other => bail!("cannot save {other:?} tensors"),
    })
}

/// Writes a safetensors file with a sorted header: tensors by descending alignment then name (the
/// official writer's order), metadata keys sorted. Half-precision tensors are stored as f32.
pub fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let widened: BTreeMap<&String, Tensor> = tensors
        .iter()
        .map(|(n, t)| {
            let t = match t.dtype() {
                DType::BF16 | DType::F16 => t.to_dtype(DType::F32)?,
                _ => t.clone(),
            };
            Ok((n, t))
        })
        .collect::<Result<_>>()?;
    let mut order: Vec<(&String, &Tensor)> = widened.iter().map(|(n, t)| (*n, t)).collect();
    order.sort_by(|(an, at), (bn, bt)| {
        bt.dtype()
            .size_in_bytes()
            .cmp(&at.dtype().size_in_bytes())
            .then_with(|| an.cmp(bn))
    });
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!(metadata));
    let mut offset = 0usize;
    for (name, t) in &order {
        let n = t.elem_count() * t.dtype().size_in_bytes();
        header.insert(
            (*name).clone(),
            json!({"dtype": dtype_name(t.dtype())?, "shape": t.dims(), "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut h = serde_json::to_vec(&Value::Object(header))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::new(f);
    w.write_all(&(h.len() as u64).to_le_bytes())?;
    w.write_all(&h)?;
    for (_, t) in order {
        w.write_all(&tensor_bytes(t)?)?;
    }
    w.into_inner()
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?
        .sync_all()?;
    Ok(())
}

/// Reads every tensor and the metadata of a safetensors file.
pub fn read_safetensors(
    path: &Path,
) -> Result<(HashMap<String, Tensor>, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow!("{}: not a safetensors file: {e}", path.display()))?;
    let metadata: BTreeMap<String, String> = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .with_context(|| format!("{}: reading tensors", path.display()))?;
    Ok((tensors, metadata))
}

/// Model entries written for every checkpoint: `cell` (the default of `embed --mode cell`) and `gene`
/// (the default of `--mode gene|expression`), holding the same weights.
pub const MODEL_KEYS: [&str; 2] = ["cell", "gene"];

/// Pending files (not yet in place) for the model entries `keys` in `dir`.
pub fn model_files(
    dir: &Path,
    keys: &[&str],
    raw_config: &Value,
    tensors: &BTreeMap<String, Tensor>,
    extra_metadata: &BTreeMap<String, String>,
) -> Result<Vec<PendingFile>> {
    let mut out = vec![];
    for key in keys {
        let mut meta = extra_metadata.clone();
        meta.insert("config".into(), serde_json::to_string(raw_config)?);
        meta.insert("key".into(), key.to_string());
        meta.insert("format".into(), "pt".into());
        let st = PendingFile::new(&crate::model::checkpoint::converted_file(dir, key))?;
        write_safetensors(st.path(), tensors, &meta)?;
        out.push(st);
        let cfg = PendingFile::new(&dir.join(format!("{key}.config.json")))?;
        std::fs::write(cfg.path(), serde_json::to_string_pretty(raw_config)? + "\n")?;
        out.push(cfg);
    }
    Ok(out)
}

/// Everything besides the weights that a resumed run needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    pub step: u64,
    pub rng: Rng,
    pub epoch: u64,
    pub index: u64,
    pub cells_seen: u64,
    /// The run's options and data record (compared on resume).
    pub run: Value,
}

fn hex(x: u64) -> String {
    format!("{x:016x}")
}

/// Pending `train_state.safetensors` holding the AdamW moments (`m.<name>`, `v.<name>`) and `state`.
pub fn state_file(
    dir: &Path,
    model: &TrainModel,
    opt: &AdamW,
    state: &TrainState,
) -> Result<PendingFile> {
    let mut tensors = BTreeMap::new();
    let mut steps = serde_json::Map::new();
    for ((name, _), slot) in model.params.iter().zip(&opt.state) {
        if let Some(m) = slot {
            tensors.insert(format!("m.{name}"), m.m.to_dtype(DType::F32)?);
            tensors.insert(format!("v.{name}"), m.v.to_dtype(DType::F32)?);
            steps.insert(name.clone(), json!(m.step));
        }
    }
    let s = json!({
        "format": STATE_FORMAT,
        "step": state.step,
        "rng": state.rng.state().iter().map(|x| hex(*x)).collect::<Vec<_>>(),
        "data_position": {"epoch": state.epoch, "index": state.index},
        "cells_seen": state.cells_seen,
        "adam_steps": steps,
        "adam": {"beta1": opt.config.beta1, "beta2": opt.config.beta2, "eps": opt.config.eps,
                  "weight_decay": opt.config.weight_decay},
        "run": state.run,
    });
    let meta: BTreeMap<String, String> = [("state".to_string(), serde_json::to_string(&s)?)].into();
    let f = PendingFile::new(&dir.join(STATE_FILE))?;
    write_safetensors(f.path(), &tensors, &meta)?;
    Ok(f)
}

/// A checkpoint read back: train state plus optimizer moments by parameter name.
pub struct LoadedState {
    pub state: TrainState,
    pub moments: HashMap<String, Moments>,
}

pub fn read_state(dir: &Path) -> Result<LoadedState> {
    let path = dir.join(STATE_FILE);
    if !path.is_file() {
        bail!(
            "{} has no {STATE_FILE}: not a pretrain output directory",
            dir.display()
        );
    }
    let (tensors, meta) = read_safetensors(&path)?;
    let s: Value = serde_json::from_str(meta.get("state").context("no 'state' metadata")?)
        .context("corrupt train state")?;
    if s["format"] != STATE_FORMAT {
        bail!(
            "{}: unknown train state format {}",
            path.display(),
            s["format"]
        );
    }
    let u = |v: &Value, what: &str| {
        v.as_u64()
            .ok_or_else(|| anyhow!("train state lacks {what}"))
    };
    let rng: Vec<u64> = s["rng"]
        .as_array()
        .context("train state lacks rng")?
        .iter()
        .map(|x| {
            x.as_str()
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .ok_or_else(|| anyhow!("bad rng state"))
        })
        .collect::<Result<_>>()?;
    let rng: [u64; 4] = rng.try_into().map_err(|_| anyhow!("bad rng state"))?;
    let mut moments = HashMap::new();
    if let Some(steps) = s["adam_steps"].as_object() {
        for (name, st) in steps {
            let get = |p: &str| {
                tensors
                    .get(&format!("{p}.{name}"))
                    .cloned()
                    .ok_or_else(|| anyhow!("train state lacks {p}.{name}"))
            };
            moments.insert(
                name.clone(),
                Moments {
                    m: get("m")?,
                    v: get("v")?,
                    step: u(st, "adam step")?,
                },
            );
        }
    }
    Ok(LoadedState {
        state: TrainState {
            step: u(&s["step"], "step")?,
            rng: Rng::from_state(rng),
            epoch: u(&s["data_position"]["epoch"], "epoch")?,
            index: u(&s["data_position"]["index"], "index")?,
            cells_seen: u(&s["cells_seen"], "cells_seen")?,
            run: s["run"].clone(),
        },
        moments,
    })
}

/// Puts loaded moments into the optimizer, in the model's parameter order.
pub fn restore_moments(
    model: &TrainModel,
    opt: &mut AdamW,
    moments: &HashMap<String, Moments>,
) -> Result<()> {
    for ((name, var), slot) in model.params.iter().zip(opt.state.iter_mut()) {
        *slot = match moments.get(name) {
            Some(m) => {
                if m.m.dims() != var.dims() {
                    bail!(
                        "optimizer state for {name} has shape {:?}, the parameter {:?}",
                        m.m.dims(),
                        var.dims()
                    );
                }
                Some(Moments {
                    m: m.m.to_device(&model.device)?.to_dtype(model.dtype)?,
                    v: m.v.to_device(&model.device)?.to_dtype(model.dtype)?,
                    step: m.step,
                })
            }
            None => None,
        };
    }
    let extra: Vec<&String> = moments
        .keys()
        .filter(|n| !model.params.iter().any(|(p, _)| p == *n))
        .collect();
    if !extra.is_empty() {
        bail!("optimizer state holds parameters that are not trainable in this run (e.g. {}); resume with the same --trainable", extra[0]);
    }
    Ok(())
}

/// The step recorded in a model entry written by [`model_files`].
pub fn entry_step(dir: &Path, key: &str) -> Result<Option<u64>> {
    let path = crate::model::checkpoint::converted_file(dir, key);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("train_step"))
        .and_then(|s| s.parse().ok()))
}

/// Commits a checkpoint's files together.
pub fn commit(files: Vec<PendingFile>) -> Result<()> {
    PendingFile::commit_all(files)
}

/// Paths every checkpoint writes, for listing.
pub fn checkpoint_paths(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = MODEL_KEYS
        .iter()
        .flat_map(|k| {
            [
                crate::model::checkpoint::converted_file(dir, k),
                dir.join(format!("{k}.config.json")),
            ]
        })
        .collect();
    v.push(dir.join(STATE_FILE));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_with_stable_bytes() {
        let d = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let mut t = BTreeMap::new();
        t.insert(
            "b".to_string(),
            Tensor::new(&[1f32, 2.0, 3.0], &dev).unwrap(),
        );
        t.insert("a".to_string(), Tensor::new(7i64, &dev).unwrap());
        t.insert(
            "c".to_string(),
            Tensor::new(&[[1.5f64, -2.0]], &dev).unwrap(),
        );
        let meta: BTreeMap<String, String> =
            [("z".into(), "1".into()), ("config".into(), "{}".into())].into();
        let (p1, p2) = (
            d.path().join("1.safetensors"),
            d.path().join("2.safetensors"),
        );
        write_safetensors(&p1, &t, &meta).unwrap();
        write_safetensors(&p2, &t, &meta).unwrap();
        assert_eq!(std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
        let (back, m) = read_safetensors(&p1).unwrap();
        assert_eq!(m, meta);
        assert_eq!(back["b"].to_vec1::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
        assert_eq!(back["a"].to_scalar::<i64>().unwrap(), 7);
        assert_eq!(back["c"].to_vec2::<f64>().unwrap(), vec![vec![1.5, -2.0]]);
        // The official reader agrees.
        let bytes = std::fs::read(&p1).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.names().len(), 3);
    }
}
