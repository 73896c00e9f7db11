//! Which weights a run uses, and proof of their bytes (sha256).

pub mod verify;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

pub use verify::sha256_file;

/// The weights a run loads: where they are, what they are called, and their digest.
#[derive(Debug, Clone)]
pub struct ModelRef {
    pub path: PathBuf,
    /// `NAME@VERSION` when resolved through a registry, else the file name.
    pub name: String,
    /// sha256 of the checkpoint file (for a converted directory: of the entry's safetensors file).
    pub sha256: String,
}

/// Resolves `--model` given as a path. `expected_sha256` (from `--model-sha256`) must match.
pub fn resolve_path(model: &Path, key: &str, expected_sha256: Option<&str>) -> Result<ModelRef> {
    if !model.exists() {
        bail!("{}: model not found", model.display());
    }
    let hashed = if model.is_dir() {
        crate::model::checkpoint::converted_file(model, key)
    } else {
        model.to_path_buf()
    };
    if !hashed.exists() {
        bail!(
            "model directory {} has no entry '{key}' ({} is missing)",
            model.display(),
            hashed.display()
        );
    }
    let sha256 = sha256_file(&hashed)?;
    if let Some(want) = expected_sha256 {
        verify::check_digest(&hashed, want, &sha256)?;
    }
    Ok(ModelRef {
        path: model.to_path_buf(),
        name: model
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        sha256,
    })
}
