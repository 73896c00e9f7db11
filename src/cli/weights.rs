use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Subcommand;

use super::GlobalArgs;
use crate::weights::ModelSpec;

#[derive(Debug, Subcommand)]
pub enum WeightsCommand {
    /// List registry models and what is in the cache.
    List,
    /// Download a model into the cache (resumes interrupted downloads, verifies sha256 before use).
    Fetch {
        /// NAME or NAME@VERSION from the registry (omit with --url).
        model: Option<String>,
        /// One-off download URL (https, file://, or http on loopback); needs --sha256 and --name.
        #[arg(long, requires_all = ["sha256", "name"])]
        url: Option<String>,
        /// Expected sha256 (also pins a registry entry that has none).
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// NAME@VERSION to cache a --url download under.
        #[arg(long)]
        name: Option<String>,
    },
    /// Re-hash a cached model (NAME[@VERSION]) or any file (PATH) and compare with its recorded sha256.
    /// NAME@VERSION always means the cache, even if a local file has that name; write ./NAME for it.
    Verify {
        model: String,
        /// Expected sha256 when verifying a PATH.
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
    },
    /// Print the path of a cached model's weights file.
    Path { model: String },
    /// Copy a local weights file into the cache as NAME@VERSION, recording its sha256.
    Import {
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// Refuse unless the file has this sha256.
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
    },
    /// Delete a cached model.
    Remove { model: String },
}

/// Registry text shown on a terminal: control characters (escape sequences) are replaced.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

pub fn run(cmd: WeightsCommand, global: &GlobalArgs) -> Result<()> {
    let w = global.weights()?;
    match cmd {
        WeightsCommand::List => {
            let cached = w.cache.list()?;
            outln!("# registry");
            for e in w.registry.entries() {
                let f = e.weights_file()?;
                let state = if cached.iter().any(|m| m.id() == e.id()) {
                    "cached"
                } else {
                    "-"
                };
                outln!(
                    "{}\t{}\tsha256={}\t{}\tlicense: {}",
                    e.id(),
                    state,
                    f.sha256.as_deref().unwrap_or("unpinned"),
                    printable(&e.description),
                    printable(&e.license)
                );
            }
            outln!("# cache {}", w.cache.root().display());
            for m in &cached {
                outln!(
                    "{}\t{}\tsha256={}\t{} bytes",
                    m.id(),
                    w.cache.file_path(m)?.display(),
                    printable(&m.sha256),
                    m.size
                );
            }
        }
        WeightsCommand::Fetch {
            model,
            url,
            sha256,
            name,
        } => {
            let m = match (model, url) {
                (Some(_), Some(_)) => bail!("give either a registry model or --url, not both"),
                (None, Some(u)) => w.fetch_url(&u, sha256.as_deref().unwrap_or_default(), name.as_deref().unwrap_or_default())?,
                (Some(id), None) => w.fetch(&id, sha256.as_deref())?,
                (None, None) => bail!("give a registry model (NAME[@VERSION]) or --url URL --sha256 HEX --name NAME@VERSION"),
            };
            outln!("{}", w.cache.file_path(&m)?.display());
        }
        WeightsCommand::Verify { model, sha256 } => match w.model_spec(&model) {
            ModelSpec::Path(p) => {
                let actual = crate::weights::sha256_file(&p)?;
                if let Some(want) = sha256 {
                    crate::weights::verify::check_digest(&p, &want, &actual)?;
                }
                outln!("{actual}  {}", p.display());
            }
            ModelSpec::Registry(id) => {
                let (m, path) = w.verify_cached(&id)?;
                if let Some(want) = sha256 {
                    crate::weights::verify::check_digest(&path, &want, &m.sha256)?;
                }
                outln!("{}  {}\tOK", m.sha256, path.display());
            }
        },
        WeightsCommand::Path { model } => outln!("{}", w.cached_path(&model)?.display()),
        WeightsCommand::Import { file, name, sha256 } => {
            let m = w.import(&file, &name, sha256.as_deref())?;
            outln!("{}\t{}", m.sha256, w.cache.file_path(&m)?.display());
        }
        WeightsCommand::Remove { model } => {
            let (name, version) = crate::weights::parse_model_id(&model)?;
            let Some(version) = version else {
                bail!("remove needs NAME@VERSION, got '{model}'");
            };
            if !w.cache.remove(&name, &version)? {
                bail!(
                    "{name}@{version} is not in the cache ({})",
                    w.cache.root().display()
                );
            }
            outln!("removed {name}@{version}");
        }
    }
    Ok(())
}
