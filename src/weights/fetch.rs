//! Downloading weights: mirrors in order, retries with backoff, HTTP Range resume, sha256 verified
//! before the file is moved into place. `file://` and registry-relative paths serve air-gapped mirrors.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;

use super::verify::sha256_file;

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Attempts per mirror for transient failures (connection cut, 5xx).
    pub attempts: u32,
    pub backoff: Duration,
    pub progress: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            attempts: 4,
            backoff: Duration::from_millis(500),
            progress: true,
        }
    }
}

/// What to download and what it must be.
pub struct Wanted<'a> {
    pub mirrors: &'a [String],
    /// Directory relative mirror paths are resolved against (the registry file's).
    pub base_dir: Option<&'a Path>,
    pub sha256: &'a str,
    pub size: Option<u64>,
}

enum Source {
    Http(reqwest::Url),
    Local(PathBuf),
}

/// Only https leaves the machine; http is allowed for loopback test servers.
fn classify(mirror: &str, base: Option<&Path>) -> Result<Source> {
    if let Ok(url) = reqwest::Url::parse(mirror) {
        match url.scheme() {
            "https" => return Ok(Source::Http(url)),
            "http" => {
                let loopback = match url.host() {
                    Some(url::Host::Domain(d)) => d == "localhost",
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    None => false,
                };
                if !loopback {
                    bail!("{mirror}: refusing plain http for a non-loopback host; use https");
                }
                return Ok(Source::Http(url));
            }
            "file" => {
                return url
                    .to_file_path()
                    .map(Source::Local)
                    .map_err(|_| anyhow!("{mirror}: not a local file URL"))
            }
            s if s.len() > 1 => bail!("{mirror}: unsupported URL scheme '{s}'"),
            _ => {}
        }
    }
    let p = PathBuf::from(mirror);
    Ok(Source::Local(match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p,
    }))
}

enum Attempt {
    Done,
    /// Worth retrying the same mirror (the partial file is kept for resuming).
    Transient(anyhow::Error),
    /// Give up on this mirror.
    Fatal(anyhow::Error),
}

fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// Downloads into `dest` (atomically, verified). `dest` only ever appears with the right bytes; a
/// partial `dest.part` may remain after a cut connection, to be resumed by the next run.
pub fn download(w: &Wanted, dest: &Path, opts: &FetchOptions) -> Result<()> {
    if w.mirrors.is_empty() {
        bail!("no download URL");
    }
    let part = part_path(dest);
    let mut errors = vec![];
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(None)
        .user_agent(concat!("scfoundation/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot create HTTP client")?;
    for mirror in w.mirrors {
        let source = match classify(mirror, w.base_dir) {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("{e:#}"));
                continue;
            }
        };
        let mut result = Err(anyhow!("not attempted"));
        for attempt in 0..opts.attempts.max(1) {
            if attempt > 0 {
                std::thread::sleep(opts.backoff * 2u32.pow(attempt - 1));
            }
            let r = match &source {
                Source::Http(url) => http_attempt(&client, url, &part, w.size, opts.progress),
                Source::Local(p) => local_attempt(p, &part),
            };
            match r {
                Attempt::Done => {
                    result = Ok(());
                    break;
                }
                Attempt::Transient(e) => {
                    log::warn!("{mirror}: attempt {} failed: {e:#}", attempt + 1);
                    result = Err(e);
                }
                Attempt::Fatal(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        match result.and_then(|_| verify_part(&part, w)) {
            Ok(()) => {
                std::fs::rename(&part, dest)
                    .with_context(|| format!("cannot move download into {}", dest.display()))?;
                return Ok(());
            }
            Err(e) => {
                log::warn!("{mirror}: {e:#}");
                errors.push(format!("{mirror}: {e:#}"));
            }
        }
    }
    // A partial file that failed only for transient reasons stays, so the next run resumes it;
    // wrong bytes were already deleted by the verification.
    bail!("download failed from every mirror: {}", errors.join("; "))
}

/// Size and sha256 of a complete partial file; a wrong file is deleted.
fn verify_part(part: &Path, w: &Wanted) -> Result<()> {
    let len = std::fs::metadata(part)?.len();
    if let Some(size) = w.size {
        if len != size {
            let _ = std::fs::remove_file(part);
            bail!("size mismatch: expected {size} bytes, got {len}");
        }
    }
    let actual = sha256_file(part)?;
    if actual != w.sha256 {
        let _ = std::fs::remove_file(part);
        bail!("sha256 mismatch: expected {}, actual {actual}", w.sha256);
    }
    Ok(())
}

fn local_attempt(src: &Path, part: &Path) -> Attempt {
    match std::fs::copy(src, part) {
        Ok(_) => Attempt::Done,
        Err(e) => Attempt::Fatal(anyhow!("cannot copy {}: {e}", src.display())),
    }
}

fn http_attempt(
    client: &reqwest::blocking::Client,
    url: &reqwest::Url,
    part: &Path,
    size: Option<u64>,
    progress: bool,
) -> Attempt {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if have > 0 && size == Some(have) {
        return Attempt::Done;
    }
    let mut req = client.get(url.clone());
    if have > 0 {
        req = req.header(RANGE, format!("bytes={have}-"));
    }
    let mut resp = match req.send() {
        Ok(r) => r,
        Err(e) => return Attempt::Transient(anyhow!("request failed: {e}")),
    };
    let status = resp.status();
    let (mut file, start) = match status {
        StatusCode::PARTIAL_CONTENT if have > 0 => {
            let ok = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes {have}-")));
            if !ok {
                let _ = std::fs::remove_file(part);
                return Attempt::Transient(anyhow!(
                    "server answered an unexpected range; restarting"
                ));
            }
            match OpenOptions::new().append(true).open(part) {
                Ok(f) => (f, have),
                Err(e) => {
                    return Attempt::Fatal(anyhow!("cannot append to {}: {e}", part.display()))
                }
            }
        }
        s if s.is_success() => {
            if have > 0 {
                log::info!("{url}: server ignored the range request; restarting from byte 0");
            }
            match File::create(part) {
                Ok(f) => (f, 0),
                Err(e) => return Attempt::Fatal(anyhow!("cannot create {}: {e}", part.display())),
            }
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            let _ = std::fs::remove_file(part);
            return Attempt::Transient(anyhow!("range not satisfiable; restarting"));
        }
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
            return Attempt::Transient(anyhow!("HTTP {s}"))
        }
        s => return Attempt::Fatal(anyhow!("HTTP {s}")),
    };
    let total = resp.content_length().map(|l| l + start).or(size);
    let pb = if progress {
        let pb = crate::progress::bytes_bar(total.unwrap_or(0));
        pb.set_position(start);
        Some(pb)
    } else {
        None
    };
    let mut buf = vec![0u8; 1 << 16];
    let mut written = start;
    loop {
        match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Err(e) = file.write_all(&buf[..n]) {
                    return Attempt::Fatal(anyhow!("writing {}: {e}", part.display()));
                }
                written += n as u64;
                if let Some(pb) = &pb {
                    pb.set_position(written);
                }
            }
            Err(e) => {
                let _ = file.flush();
                return Attempt::Transient(anyhow!("connection lost after {written} bytes: {e}"));
            }
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    if let Err(e) = file.flush() {
        return Attempt::Fatal(anyhow!("writing {}: {e}", part.display()));
    }
    if let Some(t) = total {
        if written < t {
            return Attempt::Transient(anyhow!("body ended after {written} of {t} bytes"));
        }
    }
    Attempt::Done
}
