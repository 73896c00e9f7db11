//! Which weights a run uses, and proof of their bytes: the registry of named versions, the local cache,
//! downloads with resume, and sha256 checks on every use.

pub mod cache;
pub mod fetch;
pub mod registry;
pub mod verify;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

pub use cache::{Cache, Manifest};
pub use fetch::FetchOptions;
pub use registry::{parse_model_id, ModelEntry, Registry};
pub use verify::sha256_file;

/// The weights a run loads: where they are, what they are called, and their digest.
#[derive(Debug, Clone)]
pub struct ModelRef {
    pub path: PathBuf,
    /// `NAME@VERSION` when resolved through the registry/cache, else the file name.
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

/// Registry + cache + network policy, as configured by flags and environment.
pub struct Weights {
    pub registry: Registry,
    pub cache: Cache,
    pub offline: bool,
    pub fetch: FetchOptions,
}

/// What `--model` names: a local path, or a registry/cache model.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    Path(PathBuf),
    /// `NAME` or `NAME@VERSION`.
    Registry(String),
}

/// One file to fetch into the cache.
struct FetchSpec<'a> {
    name: &'a str,
    version: &'a str,
    file_name: String,
    mirrors: Vec<String>,
    base_dir: Option<&'a Path>,
    sha256: String,
    size: Option<u64>,
    format: Option<String>,
}

impl Weights {
    /// The built-in registry plus an optional user registry file, the default cache, and how to fetch.
    pub fn open(registry: Option<&Path>, offline: bool, fetch: FetchOptions) -> Result<Self> {
        Ok(Self {
            registry: Registry::load(registry)?,
            cache: Cache::open_default()?,
            offline,
            fetch,
        })
    }

    fn entry(&self, id: &str) -> Result<&ModelEntry> {
        self.registry.find(id)?.ok_or_else(|| {
            anyhow!(
                "unknown model '{id}' (registry has: {}; add yours with --registry FILE)",
                self.registry.known_names()
            )
        })
    }

    /// Fetches a registry model into the cache (no-op when already there). `pin` supplies a sha256
    /// for entries that have none.
    pub fn fetch(&self, id: &str, pin: Option<&str>) -> Result<Manifest> {
        let e = self.entry(id)?;
        let f = e.weights_file()?;
        if f.sha256.is_none() && pin.is_none() {
            // An entry without a registry digest is usable once `weights import` pinned it in the cache.
            if let Some(m) = self.cached(&e.name, &e.version)? {
                return Ok(m);
            }
        }
        let sha = match (&f.sha256, pin) {
            (Some(r), Some(p)) if !r.eq_ignore_ascii_case(p) => bail!(
                "{}: --sha256 {p} contradicts the registry's {r}",
                e.id()
            ),
            (Some(r), _) => r.to_ascii_lowercase(),
            (None, Some(p)) => normalise_digest(p)?,
            (None, None) => bail!(
                "{} has no pinned sha256, so it cannot be fetched and verified; pin it with `scfoundation weights import FILE --name {}` after obtaining the file from an official source, with `--sha256 HEX`, or with a user registry (--registry) that lists its sha256",
                e.id(),
                e.id()
            ),
        };
        self.fetch_spec(FetchSpec {
            name: &e.name,
            version: &e.version,
            file_name: f.file_name()?,
            mirrors: f.mirrors(),
            base_dir: e.base_dir.as_deref(),
            sha256: sha,
            size: f.size,
            format: f.format.clone(),
        })
    }

    /// Fetches a one-off file given by URL and digest under `NAME@VERSION`.
    pub fn fetch_url(&self, url: &str, sha256: &str, id: &str) -> Result<Manifest> {
        let (name, version) = parse_model_id(id)?;
        let version = version.ok_or_else(|| anyhow!("--name needs NAME@VERSION, got '{id}'"))?;
        let spec = FetchSpec {
            name: &name,
            version: &version,
            file_name: registry::RegistryFile {
                name: None,
                urls: vec![url.to_string()],
                url: None,
                sha256: None,
                size: None,
                format: None,
            }
            .file_name()?,
            mirrors: vec![url.to_string()],
            base_dir: None,
            sha256: normalise_digest(sha256)?,
            size: None,
            format: None,
        };
        self.fetch_spec(spec)
    }

    fn fetch_spec(&self, s: FetchSpec) -> Result<Manifest> {
        let id = format!("{}@{}", s.name, s.version);
        if let Some(m) = self.cached(s.name, s.version)? {
            if m.sha256 != s.sha256 {
                bail!(
                    "cached {id} has sha256 {} but {} was requested; run `scfoundation weights remove {id}` first",
                    m.sha256,
                    s.sha256
                );
            }
            return Ok(m);
        }
        if self.offline {
            bail!(
                "{id} is not in the cache ({}) and offline mode is on (--offline / SCFOUNDATION_OFFLINE)",
                self.cache.root().display()
            );
        }
        let _lock = self.cache.lock(s.name, s.version)?;
        // Another process may have finished the same fetch while we waited for the lock.
        if let Some(m) = self.cached(s.name, s.version)? {
            if m.sha256 == s.sha256 {
                return Ok(m);
            }
        }
        let dir = self.cache.model_dir(s.name, s.version)?;
        cache::check_name("file name", &s.file_name)?;
        std::fs::create_dir_all(&dir)?;
        let dest = dir.join(&s.file_name);
        let wanted = fetch::Wanted {
            mirrors: &s.mirrors,
            base_dir: s.base_dir,
            sha256: &s.sha256,
            size: s.size,
        };
        if let Err(e) = fetch::download(&wanted, &dest, &self.fetch) {
            self.cache.prune(s.name, s.version);
            return Err(e.context(format!("fetching {id}")));
        }
        let m = Manifest {
            name: s.name.to_string(),
            version: s.version.to_string(),
            file: s.file_name.clone(),
            sha256: s.sha256.clone(),
            size: std::fs::metadata(&dest)?.len(),
            format: s.format.clone(),
            source: s.mirrors.first().cloned().unwrap_or_default(),
        };
        self.cache.write_manifest(&m)?;
        Ok(m)
    }

    /// A cache entry whose manifest and file are both present.
    fn cached(&self, name: &str, version: &str) -> Result<Option<Manifest>> {
        Ok(self
            .cache
            .manifest(name, version)?
            .filter(|m| self.cache.file_path(m).is_ok_and(|p| p.exists())))
    }

    /// Copies a local file into the cache as `NAME@VERSION`, recording its sha256 (this pins an entry
    /// whose registry record has none).
    pub fn import(&self, file: &Path, id: &str, expected: Option<&str>) -> Result<Manifest> {
        let (name, version) = parse_model_id(id)?;
        let version = version.ok_or_else(|| anyhow!("--name needs NAME@VERSION, got '{id}'"))?;
        if !file.is_file() {
            bail!("{}: file not found", file.display());
        }
        crate::model::checkpoint::CheckpointFormat::detect(file)?;
        let sha = sha256_file(file)?;
        if let Some(want) = expected {
            verify::check_digest(file, want, &sha)?;
        }
        if let Some(e) = self.registry.find(id)? {
            if let Some(r) = &e.weights_file()?.sha256 {
                if !r.eq_ignore_ascii_case(&sha) {
                    bail!(
                        "{}: sha256 {sha} does not match the registry's {r} for {id}",
                        file.display()
                    );
                }
            }
        }
        let _lock = self.cache.lock(&name, &version)?;
        let file_name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .ok_or_else(|| anyhow!("{}: no file name", file.display()))?;
        cache::check_name("file name", &file_name)
            .with_context(|| format!("{}: rename the file before importing", file.display()))?;
        let dest = self.cache.model_dir(&name, &version)?.join(&file_name);
        crate::fsutil::write_with(&dest, |tmp| {
            std::fs::copy(file, tmp)
                .map(|_| ())
                .with_context(|| format!("copying {}", file.display()))
        })?;
        let m = Manifest {
            name: name.clone(),
            version: version.clone(),
            file: file_name,
            sha256: sha,
            size: std::fs::metadata(&dest)?.len(),
            format: file.extension().map(|e| e.to_string_lossy().to_string()),
            source: format!("imported from {}", file.display()),
        };
        self.cache.write_manifest(&m)?;
        Ok(m)
    }

    /// Picks `NAME@VERSION`, or for a bare `NAME` the newest version in the registry or cache.
    fn pick_version(&self, id: &str) -> Result<(String, String)> {
        let (name, version) = parse_model_id(id)?;
        if let Some(v) = version {
            return Ok((name, v));
        }
        let mut versions: Vec<String> = self
            .registry
            .entries()
            .iter()
            .filter(|e| e.name == name)
            .map(|e| e.version.clone())
            .collect();
        versions.extend(
            self.cache
                .list()?
                .into_iter()
                .filter(|m| m.name == name)
                .map(|m| m.version),
        );
        versions.sort_by(|a, b| registry::compare_versions(a, b));
        let v = versions.pop().ok_or_else(|| {
            anyhow!(
                "unknown model '{id}' (registry has: {})",
                self.registry.known_names()
            )
        })?;
        Ok((name, v))
    }

    /// Re-hashes a cached model against its manifest (and the registry's pin, if any).
    pub fn verify_cached(&self, id: &str) -> Result<(Manifest, PathBuf)> {
        let (name, version) = self.pick_version(id)?;
        let m = self.cached(&name, &version)?.ok_or_else(|| {
            anyhow!(
                "{name}@{version} is not in the cache ({})",
                self.cache.root().display()
            )
        })?;
        let path = self.cache.file_path(&m)?;
        let actual = sha256_file(&path)?;
        if actual != m.sha256 {
            bail!(
                "{}: sha256 mismatch: expected {}, actual {actual} (the cached file was modified; remove and fetch again)",
                path.display(),
                m.sha256
            );
        }
        if let Some(e) = self.registry.find(&m.id())? {
            if let Some(r) = &e.weights_file()?.sha256 {
                if !r.eq_ignore_ascii_case(&actual) {
                    bail!(
                        "{}: sha256 {actual} differs from the registry's {r}",
                        path.display()
                    );
                }
            }
        }
        Ok((m, path))
    }

    pub fn cached_path(&self, id: &str) -> Result<PathBuf> {
        let (name, version) = self.pick_version(id)?;
        let m = self
            .cached(&name, &version)?
            .ok_or_else(|| anyhow!("{name}@{version} is not in the cache; run `scfoundation weights fetch {name}@{version}`"))?;
        self.cache.file_path(&m)
    }

    /// Decides what `--model` (or a `weights verify` argument) names:
    /// - with a path separator (`./x`, `/data/m.ckpt`): a path;
    /// - `NAME@VERSION`: always the registry/cache, whatever exists in the current directory;
    /// - a bare `NAME` the registry or cache knows: that model (a same-named local file is ignored
    ///   with a warning; write `./NAME` for it);
    /// - anything else: a path if it exists or ends in .ckpt/.safetensors, else a registry name.
    pub fn model_spec(&self, model: &str) -> ModelSpec {
        let p = Path::new(model);
        if model.chars().any(std::path::is_separator) {
            return ModelSpec::Path(p.to_path_buf());
        }
        match parse_model_id(model) {
            Ok((_, Some(_))) => ModelSpec::Registry(model.to_string()),
            Ok((name, None)) => {
                let known = self.registry.entries().iter().any(|e| e.name == name)
                    || self
                        .cache
                        .list()
                        .is_ok_and(|l| l.iter().any(|m| m.name == name));
                if known {
                    if p.exists() {
                        log::warn!("'{model}' is a registry model; ignoring the local path of the same name (write ./{model} to use it)");
                    }
                    ModelSpec::Registry(model.to_string())
                } else if p.exists()
                    || p.extension()
                        .is_some_and(|e| e == "ckpt" || e == "safetensors")
                {
                    ModelSpec::Path(p.to_path_buf())
                } else {
                    ModelSpec::Registry(model.to_string())
                }
            }
            Err(_) => ModelSpec::Path(p.to_path_buf()),
        }
    }

    /// Resolves `--model` (see [`Weights::model_spec`]): a path, or `NAME[@VERSION]` through cache and
    /// registry (fetched unless offline). The file is hashed once here; any mismatch is an error.
    pub fn resolve(&self, model: &str, key: &str, expected: Option<&str>) -> Result<ModelRef> {
        let model = match self.model_spec(model) {
            ModelSpec::Path(p) => return resolve_path(&p, key, expected),
            ModelSpec::Registry(id) => id,
        };
        let (name, version) = self.pick_version(&model)?;
        let id = format!("{name}@{version}");
        let m = match self.cached(&name, &version)? {
            Some(m) => m,
            None => self.fetch(&id, expected)?,
        };
        let (m, path) = self.verify_cached(&m.id())?;
        if let Some(want) = expected {
            verify::check_digest(&path, want, &m.sha256)?;
        }
        Ok(ModelRef {
            path,
            name: id,
            sha256: m.sha256,
        })
    }
}

fn normalise_digest(d: &str) -> Result<String> {
    let d = d.trim().to_ascii_lowercase();
    if d.len() != 64 || !d.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("'{d}' is not a sha256 digest (64 hex characters)");
    }
    Ok(d)
}
