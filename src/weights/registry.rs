//! The model registry: which named, versioned weights exist, where to get them and what their bytes are.
//! A registry is compiled in; users add entries (their own mirrors, pinned digests) with a JSON file.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

const BUILTIN: &str = include_str!("registry.json");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegistryFile {
    /// Optional name of the file inside the model's cache directory (default: last URL segment).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub urls: Vec<String>,
    /// Accepted as a shorthand for a single mirror.
    #[serde(default, skip_serializing)]
    pub url: Option<String>,
    /// None until someone who holds the file pins it.
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub format: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelEntry {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub license: String,
    pub files: Vec<RegistryFile>,
    /// Directory of the registry file, for relative mirror paths.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
    /// Where the entry was defined (for messages).
    #[serde(skip)]
    pub source: String,
}

impl ModelEntry {
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The weights file (the first file, or the first with a model format).
    pub fn weights_file(&self) -> Result<&RegistryFile> {
        self.files
            .iter()
            .find(|f| matches!(f.format.as_deref(), Some("ckpt" | "safetensors")))
            .or(self.files.first())
            .ok_or_else(|| anyhow!("registry entry {} lists no files", self.id()))
    }
}

impl RegistryFile {
    pub fn mirrors(&self) -> Vec<String> {
        let mut m = self.urls.clone();
        if let Some(u) = &self.url {
            if !m.contains(u) {
                m.push(u.clone());
            }
        }
        m
    }

    pub fn file_name(&self) -> Result<String> {
        if let Some(n) = &self.name {
            return Ok(n.clone());
        }
        let url = self
            .mirrors()
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("registry file has neither name nor urls"))?;
        let last = url
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        if last.is_empty() || last == "." || last == ".." {
            bail!("cannot derive a file name from '{url}'; give the file a 'name'");
        }
        Ok(last)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: Vec<ModelEntry>,
}

/// Accepts the layouts people write: a list of entries, `{"models": [...]}` (or `"entries"`), a single
/// entry, or an object whose values are entries (e.g. keyed by `NAME@VERSION`).
fn entries_of(doc: serde_json::Value) -> Result<Vec<ModelEntry>> {
    use serde_json::Value;
    let list = match doc {
        Value::Array(v) => v,
        Value::Object(mut m) => {
            if let Some(v) = m.remove("models").or_else(|| m.remove("entries")) {
                return entries_of(v);
            }
            if m.contains_key("name") && m.contains_key("files") {
                vec![Value::Object(m)]
            } else {
                m.into_iter().map(|(_, v)| v).collect()
            }
        }
        _ => bail!("a registry is a JSON list of models or an object with a 'models' list"),
    };
    list.into_iter()
        .map(|v| serde_json::from_value(v).map_err(|e| anyhow!("invalid model entry: {e}")))
        .collect()
}

/// Splits `NAME@VERSION` (version optional).
pub fn parse_model_id(id: &str) -> Result<(String, Option<String>)> {
    let (n, v) = match id.split_once('@') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (id, None),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
            && !s.starts_with('.')
    };
    if !valid(n) || v.as_deref().is_some_and(|v| !valid(v)) {
        bail!(
            "invalid model name '{id}': expected NAME or NAME@VERSION (letters, digits, - _ . +)"
        );
    }
    Ok((n.to_string(), v))
}

/// Orders versions by their numeric dot-separated parts, then lexically.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let pa: Vec<&str> = a.split(['.', '-', '+']).collect();
    let pb: Vec<&str> = b.split(['.', '-', '+']).collect();
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

impl Registry {
    /// The compiled-in registry plus an optional user file (its entries win on equal NAME@VERSION).
    pub fn load(user: Option<&Path>) -> Result<Self> {
        let mut r = Self::default();
        r.add_json(BUILTIN, None, "built-in registry")
            .context("built-in registry is corrupt")?;
        if let Some(p) = user {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read registry {}", p.display()))?;
            let base = p
                .canonicalize()
                .ok()
                .and_then(|c| c.parent().map(Path::to_path_buf));
            r.add_json(&text, base, &p.display().to_string())
                .with_context(|| format!("{}: invalid registry", p.display()))?;
        }
        Ok(r)
    }

    fn add_json(&mut self, text: &str, base: Option<PathBuf>, source: &str) -> Result<()> {
        let doc: serde_json::Value = serde_json::from_str(text)?;
        let entries = entries_of(doc)?;
        for mut e in entries {
            parse_model_id(&e.id())?;
            if e.files.is_empty() {
                bail!("entry {} lists no files", e.id());
            }
            for f in &e.files {
                if let Some(h) = &f.sha256 {
                    if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                        bail!("entry {}: '{h}' is not a sha256", e.id());
                    }
                }
                f.file_name()?;
            }
            e.base_dir = base.clone();
            e.source = source.to_string();
            self.entries.retain(|x| x.id() != e.id());
            self.entries.push(e);
        }
        Ok(())
    }

    pub fn entries(&self) -> &[ModelEntry] {
        &self.entries
    }

    /// Finds `NAME@VERSION`, or the newest version of `NAME`.
    pub fn find(&self, id: &str) -> Result<Option<&ModelEntry>> {
        let (name, version) = parse_model_id(id)?;
        let mut candidates: Vec<&ModelEntry> =
            self.entries.iter().filter(|e| e.name == name).collect();
        if let Some(v) = version {
            return Ok(candidates.into_iter().find(|e| e.version == v));
        }
        candidates.sort_by(|a, b| compare_versions(&a.version, &b.version));
        Ok(candidates.pop())
    }

    pub fn known_names(&self) -> String {
        let mut v: Vec<String> = self.entries.iter().map(ModelEntry::id).collect();
        v.sort();
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare_versions("2", "10"), Ordering::Less);
        assert_eq!(compare_versions("1.0", "1.0.1"), Ordering::Less);
    }

    #[test]
    fn builtin_registry_parses_and_newest_wins() {
        let r = Registry::load(None).unwrap();
        assert!(r.find("scfoundation").unwrap().is_some());
        assert!(r.find("scfoundation-tiny@1.0").unwrap().is_some());
        assert!(parse_model_id("../x").is_err());
        assert!(parse_model_id("a@").is_err());
    }

    #[test]
    fn registry_layouts() {
        let e = r#"{"name": "m", "version": "2", "files": [{"url": "https://x/m.ckpt", "sha256": null}]}"#;
        for doc in [
            format!("[{e}]"),
            format!(r#"{{"models": [{e}]}}"#),
            e.to_string(),
            format!(r#"{{"m@2": {e}}}"#),
        ] {
            let mut r = Registry::default();
            r.add_json(&doc, None, "test").unwrap();
            let m = r.find("m@2").unwrap().unwrap();
            assert_eq!(m.weights_file().unwrap().file_name().unwrap(), "m.ckpt");
        }
    }
}
