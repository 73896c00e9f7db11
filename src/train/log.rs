//! The training log: one JSON object per line (`step`, `loss`, `lr`, `grad_norm`, `cells`,
//! `cells_per_s`, and `val_loss` where measured), appended as training goes, and its loss curve.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

pub const LOG_FILE: &str = "train_log.jsonl";
pub const PLOT_FILE: &str = "loss.png";

pub struct TrainLog {
    path: PathBuf,
    file: std::fs::File,
}

impl TrainLog {
    /// Starts `dir/train_log.jsonl` with `history` (lines of an earlier run up to the resumed step).
    pub fn create(dir: &Path, history: &[String]) -> Result<Self> {
        let path = dir.join(LOG_FILE);
        let mut text = String::new();
        for l in history {
            text.push_str(l);
            text.push('\n');
        }
        crate::fsutil::write_bytes(&path, text.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { path, file })
    }

    pub fn append(&mut self, record: &Value) -> Result<()> {
        let line = serde_json::to_string(record)? + "\n";
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .with_context(|| format!("writing {}", self.path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Lines of `dir/train_log.jsonl` whose step is at most `step` (a run may have logged past its last
/// checkpoint before it stopped). Missing file: no lines.
pub fn history(dir: &Path, step: u64) -> Result<Vec<String>> {
    let path = dir.join(LOG_FILE);
    if !path.exists() {
        return Ok(vec![]);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .map(str::to_string)
        .collect())
}

/// Points of a curve: (step, value).
pub type Curve = Vec<(f64, f64)>;

/// The training (`loss`) and validation (`val_loss`) curves of a log.
pub fn curves(path: &Path) -> Result<(Curve, Curve)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (mut train, mut val) = (vec![], vec![]);
    for l in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        let Some(step) = v["step"].as_f64() else {
            continue;
        };
        if let Some(x) = v["loss"].as_f64() {
            train.push((step, x));
        }
        if let Some(x) = v["val_loss"].as_f64() {
            val.push((step, x));
        }
    }
    Ok((train, val))
}

/// Redraws `dir/loss.png` from the log.
pub fn plot(dir: &Path) -> Result<()> {
    let (train, val) = curves(&dir.join(LOG_FILE))?;
    super::plot::loss_curve(&dir.join(PLOT_FILE), &train, &val)
}
