//! The local weights cache: `<home>/models/<name>/<version>/<file>` plus a `manifest.json` saying what
//! the file is (name, version, sha256, size, source). A per-model lock file serialises writers.
//!
//! Every name that becomes a path component (model name, version, file name) comes from a registry
//! or a manifest on disk, so it is checked by [`plain_name`] before use: no path can leave the cache.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The cache's own files inside a model directory, which a weights file must never be named like.
pub const MANIFEST: &str = "manifest.json";
pub const LOCK: &str = ".lock";
/// Suffix of the resumable partial download beside the weights file.
pub const PART_SUFFIX: &str = ".part";
/// Longest accepted name component, in bytes (the usual file-system limit).
pub const MAX_NAME_BYTES: usize = 255;
/// A manifest is a few hundred bytes; anything far larger is not ours.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Checks that `s` is a single plain file or directory name that stays inside the directory it is
/// joined to and cannot collide with the cache's metadata; the error says why not.
pub fn plain_name(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if s.len() > MAX_NAME_BYTES {
        return Err(format!("longer than {MAX_NAME_BYTES} bytes"));
    }
    if s.contains(['/', '\\']) {
        return Err("contains a path separator".into());
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    if s == "." || s == ".." {
        return Err("a relative directory reference".into());
    }
    // Hidden names are reserved: the lock file and the atomic writer's temporaries start with '.'.
    if s.starts_with('.') {
        return Err("starts with '.', which is reserved for the cache's own files".into());
    }
    if s.eq_ignore_ascii_case(MANIFEST) || s.to_ascii_lowercase().ends_with(PART_SUFFIX) {
        return Err(format!(
            "reserved for the cache's own files: {MANIFEST}, *{PART_SUFFIX}"
        ));
    }
    // Belt and braces for platform path syntax (drive prefixes, roots).
    let mut comps = Path::new(s).components();
    if !matches!(
        (comps.next(), comps.next()),
        (Some(Component::Normal(_)), None)
    ) {
        return Err("not a single relative path component".into());
    }
    Ok(())
}

/// [`plain_name`] with an error naming what the value is (e.g. "file name", "version").
pub fn check_name(what: &str, s: &str) -> Result<()> {
    plain_name(s).map_err(|why| anyhow!("{what} {s:?} is not a plain name ({why})"))
}

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

    /// `<root>/models/<name>/<version>`; refuses names that are not plain names.
    pub fn model_dir(&self, name: &str, version: &str) -> Result<PathBuf> {
        check_name("model name", name)?;
        check_name("model version", version)?;
        Ok(self.root.join("models").join(name).join(version))
    }

    fn manifest_path(&self, name: &str, version: &str) -> Result<PathBuf> {
        Ok(self.model_dir(name, version)?.join(MANIFEST))
    }

    /// The manifest of `name@version`, checked to describe that model and a plain file name.
    pub fn manifest(&self, name: &str, version: &str) -> Result<Option<Manifest>> {
        let p = self.manifest_path(name, version)?;
        if !p.exists() {
            return Ok(None);
        }
        let fix = format!(
            "remove the model (`scfoundation weights remove {name}@{version}`) and fetch it again"
        );
        let mut text = String::new();
        crate::fsutil::open_regular(&p)
            .and_then(|f| f.take(MAX_MANIFEST_BYTES + 1).read_to_string(&mut text))
            .with_context(|| format!("reading {}", p.display()))?;
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            bail!(
                "{}: cache manifest larger than {MAX_MANIFEST_BYTES} bytes; {fix}",
                p.display()
            );
        }
        let m: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: corrupt cache manifest; {fix}", p.display()))?;
        if m.name != name || m.version != version {
            bail!(
                "{}: cache manifest describes {:?}@{:?}, not {name}@{version}; {fix}",
                p.display(),
                m.name,
                m.version
            );
        }
        if let Err(why) = plain_name(&m.file) {
            bail!(
                "{}: file {:?} is not a plain name ({why}); {fix}",
                p.display(),
                m.file
            );
        }
        Ok(Some(m))
    }

    /// Path of the cached weights file named by a manifest (checked like [`Cache::manifest`]).
    pub fn file_path(&self, m: &Manifest) -> Result<PathBuf> {
        check_name("file", &m.file)?;
        Ok(self.model_dir(&m.name, &m.version)?.join(&m.file))
    }

    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        check_name("file", &m.file)?;
        let text = serde_json::to_string_pretty(m)? + "\n";
        crate::fsutil::write_bytes(&self.manifest_path(&m.name, &m.version)?, text.as_bytes())
    }

    /// Blocks until this process holds the model's lock.
    pub fn lock(&self, name: &str, version: &str) -> Result<ModelLock> {
        let dir = self.model_dir(name, version)?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let p = dir.join(LOCK);
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
                match self.manifest(&name, &version) {
                    Ok(Some(m)) => out.push(m),
                    Ok(None) => {}
                    Err(e) => log::warn!("skipping cache entry {name}/{version}: {e:#}"),
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
        let dir = self.model_dir(name, version)?;
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
        let Ok(dir) = self.model_dir(name, version) else {
            return;
        };
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let only_lock = entries.flatten().all(|e| e.file_name() == LOCK);
            if only_lock {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names() {
        for ok in [
            "models.ckpt",
            "tiny_models.ckpt",
            "1.0",
            "a..b",
            "x.partial",
            "v1+cu",
        ] {
            assert!(plain_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc/passwd",
            "a\\b",
            "C:\\x",
            "x\0y",
            "x\ny",
            ".lock",
            ".hidden",
            "manifest.json",
            "MANIFEST.JSON",
            "w.ckpt.part",
            long.as_str(),
        ] {
            assert!(plain_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn model_dir_refuses_traversal() {
        let c = Cache::new(PathBuf::from("/cache"));
        assert!(c.model_dir("..", "1").is_err());
        assert!(c.model_dir("m", "../../x").is_err());
        assert_eq!(
            c.model_dir("m", "1").unwrap(),
            Path::new("/cache/models/m/1")
        );
    }
}
