use std::path::PathBuf;
use std::time::Duration;

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
        /// Give up the download after this long in total, across all mirrors and retries (a partial
        /// file is kept and the next fetch resumes it). Seconds, or with a unit: 90s, 30m, 6h; 0 for
        /// no limit [default: 6h] [env: SCFOUNDATION_FETCH_TIMEOUT].
        #[arg(long, value_name = "DURATION", value_parser = parse_limit)]
        timeout: Option<Limit>,
        /// Treat the connection as stalled after this long without a byte (or without response
        /// headers), then retry, resuming; same units, 0 to wait forever [default: 60s]
        /// [env: SCFOUNDATION_STALL_TIMEOUT].
        #[arg(long, value_name = "DURATION", value_parser = parse_limit)]
        stall_timeout: Option<Limit>,
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

/// A duration limit; None inside means "no limit" (given as 0).
#[derive(Debug, Clone, Copy)]
pub struct Limit(Option<Duration>);

fn parse_limit(s: &str) -> Result<Limit, String> {
    crate::weights::fetch::parse_limit(s).map(Limit)
}

/// Registry text shown on a terminal: control characters (escape sequences) are replaced.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

pub fn run(cmd: WeightsCommand, global: &GlobalArgs) -> Result<()> {
    let mut w = global.weights()?;
    match cmd {
        WeightsCommand::List => {
            let cached = w.cache.list()?;
            println!("# registry");
            for e in w.registry.entries() {
                let f = e.weights_file()?;
                let state = if cached.iter().any(|m| m.id() == e.id()) {
                    "cached"
                } else {
                    "-"
                };
                println!(
                    "{}\t{}\tsha256={}\t{}\tlicense: {}",
                    e.id(),
                    state,
                    f.sha256.as_deref().unwrap_or("unpinned"),
                    printable(&e.description),
                    printable(&e.license)
                );
            }
            println!("# cache {}", w.cache.root().display());
            for m in &cached {
                println!(
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
            timeout,
            stall_timeout,
        } => {
            if let Some(Limit(t)) = timeout {
                w.fetch.timeout = t;
            }
            if let Some(Limit(t)) = stall_timeout {
                w.fetch.stall = t;
            }
            let m = match (model, url) {
                (Some(_), Some(_)) => bail!("give either a registry model or --url, not both"),
                (None, Some(u)) => w.fetch_url(&u, sha256.as_deref().unwrap_or_default(), name.as_deref().unwrap_or_default())?,
                (Some(id), None) => w.fetch(&id, sha256.as_deref())?,
                (None, None) => bail!("give a registry model (NAME[@VERSION]) or --url URL --sha256 HEX --name NAME@VERSION"),
            };
            println!("{}", w.cache.file_path(&m)?.display());
        }
        WeightsCommand::Verify { model, sha256 } => match w.model_spec(&model) {
            ModelSpec::Path(p) => {
                let actual = crate::weights::sha256_file(&p)?;
                if let Some(want) = sha256 {
                    crate::weights::verify::check_digest(&p, &want, &actual)?;
                }
                println!("{actual}  {}", p.display());
            }
            ModelSpec::Registry(id) => {
                let (m, path) = w.verify_cached(&id)?;
                if let Some(want) = sha256 {
                    crate::weights::verify::check_digest(&path, &want, &m.sha256)?;
                }
                println!("{}  {}\tOK", m.sha256, path.display());
            }
        },
        WeightsCommand::Path { model } => println!("{}", w.cached_path(&model)?.display()),
        WeightsCommand::Import { file, name, sha256 } => {
            let m = w.import(&file, &name, sha256.as_deref())?;
            println!("{}\t{}", m.sha256, w.cache.file_path(&m)?.display());
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
            println!("removed {name}@{version}");
        }
    }
    Ok(())
}
