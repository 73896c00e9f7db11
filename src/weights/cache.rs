//! The local weights cache: `<home>/models/<name>/<version>/<file>` plus a `manifest.json` saying what
//! the file is (name, version, sha256, size, source). A per-model lock file serialises writers.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
    pub size: u64,
    #[serde(default)]
    pub format: Option<String>,
    /// Where the bytes came from (URL or imported path).
    #[serde(default)]
    pub source: String,
}

impl Manifest {
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

pub struct Cache {
    root: PathBuf,
}

/// `SCFOUNDATION_HOME`, else `$XDG_CACHE_HOME/scfoundation`, else `~/.cache/scfoundation`.
pub fn default_home() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("SCFOUNDATION_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("scfoundation"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".cache").join("scfoundation")),
        None => bail!("cannot locate a cache directory: set SCFOUNDATION_HOME"),
    }
}

/// An exclusive lock on one model's cache directory, released on drop.
pub struct ModelLock {
    _file: File,
}

impl Cache {
    pub fn open_default() -> Result<Self> {
        Ok(Self::new(default_home()?))
    }

    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn model_dir(&self, name: &str, version: &str) -> PathBuf {
        self.root.join("models").join(name).join(version)
    }

    fn manifest_path(&self, name: &str, version: &str) -> PathBuf {
        self.model_dir(name, version).join("manifest.json")
    }

    pub fn manifest(&self, name: &str, version: &str) -> Result<Option<Manifest>> {
        let p = self.manifest_path(name, version);
        if !p.exists() {
            return Ok(None);
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let m: Manifest = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: corrupt cache manifest; remove the model and fetch it again",
                p.display()
            )
        })?;
        Ok(Some(m))
    }

    /// Path of the cached weights file, if the manifest and file are both there.
    pub fn file_path(&self, m: &Manifest) -> PathBuf {
        self.model_dir(&m.name, &m.version).join(&m.file)
    }

    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        let text = serde_json::to_string_pretty(m)? + "\n";
        crate::io::atomic::write_bytes(&self.manifest_path(&m.name, &m.version), text.as_bytes())
    }

    /// Blocks until this process holds the model's lock.
    pub fn lock(&self, name: &str, version: &str) -> Result<ModelLock> {
        let dir = self.model_dir(name, version);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let p = dir.join(".lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .with_context(|| format!("cannot open lock {}", p.display()))?;
        f.lock()
            .with_context(|| format!("cannot lock {}", p.display()))?;
        Ok(ModelLock { _file: f })
    }

    /// All cached models, sorted by name then version.
    pub fn list(&self) -> Result<Vec<Manifest>> {
        let mut out = vec![];
        let models = self.root.join("models");
        let Ok(names) = std::fs::read_dir(&models) else {
            return Ok(out);
        };
        for n in names.flatten() {
            let Ok(versions) = std::fs::read_dir(n.path()) else {
                continue;
            };
            for v in versions.flatten() {
                let (name, version) = (
                    n.file_name().to_string_lossy().to_string(),
                    v.file_name().to_string_lossy().to_string(),
                );
                if let Ok(Some(m)) = self.manifest(&name, &version) {
                    out.push(m);
                }
            }
        }
        out.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(super::registry::compare_versions(&a.version, &b.version))
        });
        Ok(out)
    }

    /// Removes a model's directory; also prunes the name directory when it becomes empty.
    pub fn remove(&self, name: &str, version: &str) -> Result<bool> {
        let dir = self.model_dir(name, version);
        if !dir.exists() {
            return Ok(false);
        }
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
        self.prune(name, version);
        Ok(true)
    }

    /// Removes empty directories left by a failed fetch (only the lock file may remain).
    pub fn prune(&self, name: &str, version: &str) {
        let dir = self.model_dir(name, version);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let only_lock = entries.flatten().all(|e| e.file_name() == ".lock");
            if only_lock {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}
