//! The model registry: which named, versioned weights exist, where to get them and what their bytes are.
//! A registry is compiled in; users add entries (their own mirrors, pinned digests) with a JSON file.

use std::cmp::Ordering;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::cache::{check_name, MAX_NAME_BYTES};

const BUILTIN: &str = include_str!("registry.json");
/// A registry lists a handful of models; a larger file is a mistake or hostile, and is not read.
pub const MAX_REGISTRY_BYTES: u64 = 16 << 20;

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

    /// The file's name in the cache directory: `name`, else the URL's last segment. Either must be a
    /// plain name (see [`super::cache::plain_name`]), since it is joined to the cache directory.
    pub fn file_name(&self) -> Result<String> {
        if let Some(n) = &self.name {
            check_name("file name", n)?;
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
        check_name("file name", &last)
            .with_context(|| format!("the file name comes from the URL {url}"))?;
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
        .enumerate()
        .map(|(i, v)| serde_json::from_value(v).map_err(|e| anyhow!("model entry #{}: {e}", i + 1)))
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
            && s.len() <= MAX_NAME_BYTES
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
            let text = read_bounded(p)?;
            let base = p
                .canonicalize()
                .ok()
                .and_then(|c| c.parent().map(Path::to_path_buf));
            r.add_json(&text, base, &p.display().to_string())
                .with_context(|| format!("{}: invalid registry", p.display()))?;
        }
        Ok(r)
    }

    /// Adds the entries of one registry document; every name that will become a cache path is
    /// checked here, so a bad entry fails the load (naming it) before anything is fetched.
    fn add_json(&mut self, text: &str, base: Option<PathBuf>, source: &str) -> Result<()> {
        let doc: serde_json::Value = serde_json::from_str(text)?;
        let entries = entries_of(doc)?;
        for (i, mut e) in entries.into_iter().enumerate() {
            let at = format!("model entry #{} ({:?}@{:?})", i + 1, e.name, e.version);
            check_name("model name", &e.name).with_context(|| at.clone())?;
            check_name("model version", &e.version).with_context(|| at.clone())?;
            parse_model_id(&e.id()).with_context(|| at.clone())?;
            if e.files.is_empty() {
                bail!("entry {} lists no files", e.id());
            }
            for (j, f) in e.files.iter().enumerate() {
                let at = format!("entry {} files[{j}]", e.id());
                if let Some(h) = &f.sha256 {
                    if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                        bail!("{at}: sha256 {h:?} is not 64 hex characters");
                    }
                }
                f.file_name().with_context(|| at.clone())?;
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

/// Reads a user registry, refusing one over [`MAX_REGISTRY_BYTES`] before reading it (and while
/// reading, for files whose size is not known up front, such as pipes).
fn read_bounded(p: &Path) -> Result<String> {
    let cannot = || format!("cannot read registry {}", p.display());
    let too_big = || {
        anyhow!(
            "registry {} is larger than {} MiB; refusing to read it",
            p.display(),
            MAX_REGISTRY_BYTES >> 20
        )
    };
    let f = crate::fsutil::open_regular(p).with_context(cannot)?;
    if f.metadata().with_context(cannot)?.len() > MAX_REGISTRY_BYTES {
        return Err(too_big());
    }
    let mut bytes = vec![];
    f.take(MAX_REGISTRY_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(cannot)?;
    if bytes.len() as u64 > MAX_REGISTRY_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|_| anyhow!("registry {} is not UTF-8 text", p.display()))
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

    fn add(doc: &str) -> Result<Registry> {
        let mut r = Registry::default();
        r.add_json(doc, None, "test")?;
        Ok(r)
    }

    #[test]
    fn hostile_documents_are_errors() {
        let entry = |files: &str| format!(r#"{{"name": "m", "version": "1", "files": [{files}]}}"#);
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let deep_models = r#"{"models": "#.repeat(5000) + "[]" + &"}".repeat(5000);
        for doc in [
            deep,
            deep_models,
            entry(r#"{"url": "https://x/m.ckpt", "size": 1e400}"#),
            entry(r#"{"url": "https://x/m.ckpt", "size": 18446744073709551616}"#),
            entry(r#"{"url": "https://x/m.ckpt", "size": -1}"#),
            entry(r#"{"url": "https://x/m.ckpt", "size": "12"}"#),
            entry(r#"{"url": "https://x/m.ckpt", "sha256": "zz"}"#),
            entry(r#"{"url": "https://x/m.ckpt", "sha256": 5}"#),
            entry(r#"{"name": "../../evil", "url": "https://x/m.ckpt"}"#),
            entry(r#"{"name": "manifest.json", "url": "https://x/m.ckpt"}"#),
            entry(r#"{"url": "https://x/m.ckpt.part"}"#),
            r#"{"name": "..", "version": "1", "files": [{"url": "https://x/a"}]}"#.into(),
            r#"{"name": "m", "version": "../1", "files": [{"url": "https://x/a"}]}"#.into(),
            r#"{"name": "m", "version": 1, "files": [{"url": "https://x/a"}]}"#.into(),
            r#"{"name": "m", "version": "1", "files": "x"}"#.into(),
            "42".into(),
            "".into(),
        ] {
            assert!(add(&doc).is_err(), "accepted {}", &doc[..doc.len().min(80)]);
        }
        assert!(add(&entry(
            r#"{"url": "https://x/m.ckpt", "size": 18446744073709551615}"#
        ))
        .is_ok());
    }

    #[test]
    fn oversized_registry_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.json");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(MAX_REGISTRY_BYTES + 1).unwrap();
        let e = format!("{:#}", Registry::load(Some(&p)).unwrap_err());
        assert!(e.contains("larger than 16 MiB"), "{e}");
    }
}
