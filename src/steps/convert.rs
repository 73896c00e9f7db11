//! `convert`: a reference `models.ckpt` (or combined safetensors) → one safetensors file per entry plus
//! its config JSON, so later runs memory-map plain safetensors.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::model::checkpoint::{list_entries, load_entry};

/// Converts the given entries (all when empty); returns the files written.
pub fn convert(model: &Path, out_dir: &Path, keys: &[String]) -> Result<Vec<PathBuf>> {
    let available = list_entries(model)?;
    let keys: Vec<String> = if keys.is_empty() {
        available.clone()
    } else {
        keys.to_vec()
    };
    for k in &keys {
        if !available.contains(k) {
            bail!(
                "{}: no entry '{k}' (it has {})",
                model.display(),
                available.join(", ")
            );
        }
    }
    std::fs::create_dir_all(out_dir)?;
    let mut written = vec![];
    for k in &keys {
        let entry = load_entry(model, k)?;
        entry.save(out_dir)?;
        log::info!(
            "{}: wrote entry '{k}' ({} tensors)",
            out_dir.display(),
            entry.tensors.len()
        );
        written.push(crate::model::checkpoint::converted_file(out_dir, k));
    }
    Ok(written)
}
