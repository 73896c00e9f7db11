//! Downloading weights: mirrors in order, retries with backoff, HTTP Range resume, sha256 verified
//! before the file is moved into place. `file://` and registry-relative paths serve air-gapped mirrors.

use std::error::Error as StdError;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{StatusCode, Url};

use super::verify::sha256_file;

/// Default for `--timeout` / `SCFOUNDATION_FETCH_TIMEOUT`: the whole download, all mirrors and retries.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// Default for `--stall-timeout` / `SCFOUNDATION_STALL_TIMEOUT`: longest wait for the next bytes.
pub const DEFAULT_STALL: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_REDIRECTS: usize = 5;
/// Byte cap for a file whose registry entry declares no size, so a hostile server cannot fill the disk.
pub const UNDECLARED_SIZE_LIMIT: u64 = 64 << 30;

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Attempts per mirror for transient failures (connection cut, stall, 5xx).
    pub attempts: u32,
    pub backoff: Duration,
    pub progress: bool,
    /// Limit for the whole download (all mirrors and retries); None: no limit.
    pub timeout: Option<Duration>,
    /// Longest wait for response headers or the next body bytes; None: wait forever.
    pub stall: Option<Duration>,
    /// Redirects followed per request before giving up.
    pub max_redirects: usize,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            attempts: 4,
            backoff: Duration::from_millis(500),
            progress: true,
            timeout: Some(DEFAULT_TIMEOUT),
            stall: Some(DEFAULT_STALL),
            max_redirects: DEFAULT_MAX_REDIRECTS,
        }
    }
}

/// Parses a duration: seconds (`90`, `0.5`) or with a unit (`500ms`, `90s`, `30m`, `6h`). `0` means
/// no limit, returned as None.
pub fn parse_limit(s: &str) -> std::result::Result<Option<Duration>, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let bad = || format!("'{s}' is not a duration (e.g. 90, 90s, 30m, 6h; 0 for no limit)");
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    let d = Duration::try_from_secs_f64(v * scale).map_err(|_| bad())?;
    Ok((!d.is_zero()).then_some(d))
}

/// A duration for messages, in the unit it was most likely given in.
pub fn show_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 3600.0 && s % 3600.0 == 0.0 {
        format!("{}h", s / 3600.0)
    } else if s >= 60.0 && s % 60.0 == 0.0 {
        format!("{}m", s / 60.0)
    } else {
        format!("{s}s")
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

impl Wanted<'_> {
    /// Most bytes accepted: the declared size, else [`UNDECLARED_SIZE_LIMIT`].
    fn limit(&self) -> u64 {
        self.size.unwrap_or(UNDECLARED_SIZE_LIMIT)
    }
}

enum Source {
    Http(Url),
    Local(PathBuf),
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Only https leaves the machine; http is allowed for loopback test servers.
fn classify(mirror: &str, base: Option<&Path>) -> Result<Source> {
    if let Ok(url) = Url::parse(mirror) {
        match url.scheme() {
            "https" => return Ok(Source::Http(url)),
            "http" => {
                if !is_loopback(&url) {
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

/// The same rule as [`classify`] for every redirect hop: https anywhere; plain http only from a
/// loopback http server to a loopback host (so a remote server cannot steer us to plain http or to
/// local services); nothing else (no file://).
fn redirect_allowed(from: Option<&Url>, to: &Url) -> std::result::Result<(), String> {
    match to.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(to) && from.is_some_and(|f| f.scheme() == "http" && is_loopback(f)) => {
            Ok(())
        }
        "http" => Err(format!(
            "redirect to {to} refused: plain http is followed only between loopback hosts; use https"
        )),
        s => Err(format!("redirect to {to} refused: unsupported scheme '{s}'")),
    }
}

fn redirect_policy(max: usize) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |a| {
        // `previous` holds every URL requested so far, so its length is the number of this hop.
        if a.previous().len() > max {
            let msg = format!("more than {max} redirects (stopped at {})", a.url());
            return a.error(msg);
        }
        match redirect_allowed(a.previous().last(), a.url()) {
            Ok(()) => a.follow(),
            Err(msg) => a.error(msg),
        }
    })
}

/// Every message in an error's source chain, joined with ": ", so the cause ("connection refused",
/// "redirect ... refused") is shown instead of reqwest's bare "error sending request".
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = vec![];
    let mut cur = Some(e);
    while let Some(x) = cur {
        let m = x.to_string();
        if !m.is_empty() && !parts.last().is_some_and(|p| p.contains(&m)) {
            parts.push(m);
        }
        // io::Error shows its inner error but `source` skips it; step into it explicitly.
        cur = match x
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => inner.source(),
            None => x.source(),
        };
    }
    parts.join(": ")
}

fn reqwest_cause(e: reqwest::Error) -> String {
    chain(&e.without_url())
}

/// Whether a (possibly wrapped) error is a timeout from the HTTP client.
fn is_timeout(e: &(dyn StdError + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if x.downcast_ref::<reqwest::Error>()
            .is_some_and(|r| r.is_timeout())
        {
            return true;
        }
        if let Some(io) = x.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
            if let Some(inner) = io.get_ref() {
                if is_timeout(inner) {
                    return true;
                }
            }
        }
        cur = x.source();
    }
    false
}

enum Attempt {
    Done,
    /// Worth retrying the same mirror (the partial file is kept for resuming).
    Transient(anyhow::Error),
    /// Give up on this mirror.
    Fatal(anyhow::Error),
    /// The overall `--timeout` ran out: give up on every mirror (the partial file is kept).
    OutOfTime(anyhow::Error),
}

fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(super::cache::PART_SUFFIX);
    PathBuf::from(s)
}

/// Time left before the overall deadline (None: no deadline).
fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Downloads into `dest` (atomically, verified). `dest` only ever appears with the right bytes; a
/// partial `dest.part` may remain after a cut connection or a timeout, to be resumed by the next run.
/// Wrong bytes (too many, wrong size or digest) are deleted.
pub fn download(w: &Wanted, dest: &Path, opts: &FetchOptions) -> Result<()> {
    if w.mirrors.is_empty() {
        bail!("no download URL");
    }
    let part = part_path(dest);
    let deadline = opts.timeout.and_then(|t| Instant::now().checked_add(t));
    let mut errors = vec![];
    // The blocking client's timeout bounds each wait (headers, then every read): a stall timeout.
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(opts.stall)
        .redirect(redirect_policy(opts.max_redirects))
        .user_agent(concat!("scfoundation/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| anyhow!("cannot create HTTP client: {}", reqwest_cause(e)))?;
    let out_of_time = |errors: &[String]| {
        let t = opts.timeout.map(show_duration).unwrap_or_default();
        anyhow!(
            "download timed out: gave up after {t} (--timeout / SCFOUNDATION_FETCH_TIMEOUT); any partial file is kept for the next run to resume: {}",
            errors.join("; ")
        )
    };
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
                let wait = opts
                    .backoff
                    .saturating_mul(1u32 << (attempt - 1).min(16))
                    .min(remaining(deadline).unwrap_or(Duration::MAX));
                std::thread::sleep(wait);
            }
            if remaining(deadline).is_some_and(|r| r.is_zero()) {
                if let (true, Err(e)) = (attempt > 0, &result) {
                    errors.push(format!("{mirror}: {e:#}"));
                }
                return Err(out_of_time(&errors));
            }
            let r = match &source {
                Source::Http(url) => HttpAttempt {
                    client: &client,
                    url,
                    part: &part,
                    size: w.size,
                    limit: w.limit(),
                    opts,
                    deadline,
                }
                .run(),
                Source::Local(p) => local_attempt(p, &part, w.limit()),
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
                Attempt::OutOfTime(e) => {
                    // The previous attempt's failure (e.g. a stall) says more than the timeout itself.
                    if let (true, Err(prev)) = (attempt > 0, &result) {
                        errors.push(format!("{mirror}: {prev:#}"));
                    }
                    errors.push(format!("{mirror}: {e:#}"));
                    return Err(out_of_time(&errors));
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
    // wrong bytes were already deleted.
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

/// Copies a local mirror, reading at most one byte past `limit` (a mirror such as a device file
/// cannot fill the disk).
fn local_attempt(src: &Path, part: &Path, limit: u64) -> Attempt {
    let copy = || -> std::io::Result<u64> {
        let from = crate::fsutil::open_regular(src)?;
        let mut to = File::create(part)?;
        let n = std::io::copy(&mut from.take(limit.saturating_add(1)), &mut to)?;
        to.flush()?;
        Ok(n)
    };
    match copy() {
        Ok(n) if n > limit => {
            let _ = std::fs::remove_file(part);
            Attempt::Fatal(anyhow!(
                "{} is larger than the declared size of {limit} bytes",
                src.display()
            ))
        }
        Ok(_) => Attempt::Done,
        Err(e) => {
            let _ = std::fs::remove_file(part);
            Attempt::Fatal(anyhow!("cannot copy {}: {e}", src.display()))
        }
    }
}

/// One HTTP request for the rest of the file.
struct HttpAttempt<'a> {
    client: &'a reqwest::blocking::Client,
    url: &'a Url,
    part: &'a Path,
    /// Declared size, if any.
    size: Option<u64>,
    /// Most bytes accepted (the declared size, or a cap).
    limit: u64,
    opts: &'a FetchOptions,
    deadline: Option<Instant>,
}

impl HttpAttempt<'_> {
    /// Too many bytes: the partial file is deleted and this mirror abandoned.
    fn oversized(&self, what: String) -> Attempt {
        let _ = std::fs::remove_file(self.part);
        let declared = match self.size {
            Some(_) => "the declared size",
            None => "the limit for files of undeclared size",
        };
        Attempt::Fatal(anyhow!(
            "{what}, more than {declared} of {} bytes; download stopped and partial file removed",
            self.limit
        ))
    }

    fn timed_out(&self, written: u64) -> Attempt {
        if remaining(self.deadline).is_some_and(|r| r.is_zero()) {
            return Attempt::OutOfTime(anyhow!("still downloading after {written} bytes"));
        }
        let stall = self.opts.stall.map(show_duration).unwrap_or_default();
        Attempt::Transient(anyhow!(
            "stalled: no data for {stall} after {written} bytes (--stall-timeout / SCFOUNDATION_STALL_TIMEOUT)"
        ))
    }

    fn run(&self) -> Attempt {
        let (url, part) = (self.url, self.part);
        let mut have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if have > self.limit {
            // Left by an older run against a different declared size: useless for resuming.
            let _ = std::fs::remove_file(part);
            have = 0;
        }
        if have > 0 && self.size == Some(have) {
            return Attempt::Done;
        }
        let mut req = self.client.get(url.clone());
        if have > 0 {
            req = req.header(RANGE, format!("bytes={have}-"));
        }
        // Near the deadline, bound this request's waits by the time left rather than the stall limit.
        if let Some(left) = remaining(self.deadline) {
            if self.opts.stall.is_none_or(|s| left < s) {
                req = req.timeout(left.max(Duration::from_millis(1)));
            }
        }
        let mut resp = match req.send() {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return self.timed_out(0),
            Err(e) if e.is_redirect() => return Attempt::Fatal(anyhow!("{}", reqwest_cause(e))),
            Err(e) => return Attempt::Transient(anyhow!("request failed: {}", reqwest_cause(e))),
        };
        let status = resp.status();
        let at = if resp.url() == url {
            String::new()
        } else {
            format!(" (redirected to {})", resp.url())
        };
        let declared_len = resp.content_length();
        let resuming = status == StatusCode::PARTIAL_CONTENT && have > 0;
        if status.is_success() {
            let start = if resuming { have } else { 0 };
            if let Some(len) = declared_len {
                if start.saturating_add(len) > self.limit {
                    return self.oversized(format!(
                        "server announced {len} bytes{}{at}",
                        if start > 0 {
                            format!(" after byte {start}")
                        } else {
                            String::new()
                        }
                    ));
                }
            }
        }
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
                        "server answered an unexpected range{at}; restarting"
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
                    Err(e) => {
                        return Attempt::Fatal(anyhow!("cannot create {}: {e}", part.display()))
                    }
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let _ = std::fs::remove_file(part);
                return Attempt::Transient(anyhow!("range not satisfiable{at}; restarting"));
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                return Attempt::Transient(anyhow!("HTTP {s}{at}"))
            }
            s => return Attempt::Fatal(anyhow!("HTTP {s}{at}")),
        };
        let total = declared_len
            .and_then(|l| l.checked_add(start))
            .or(self.size);
        let pb = if self.opts.progress {
            let pb = crate::progress::bytes_bar(total.unwrap_or(0));
            pb.set_position(start);
            Some(pb)
        } else {
            None
        };
        let mut buf = vec![0u8; 1 << 16];
        let mut written = start;
        loop {
            if remaining(self.deadline).is_some_and(|r| r.is_zero()) {
                let _ = file.flush();
                return self.timed_out(written);
            }
            match resp.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // Cut as soon as the server goes past the size it may send (no disk filling).
                    if written.saturating_add(n as u64) > self.limit {
                        drop(file);
                        return self.oversized(format!(
                            "server sent at least {} bytes{at}",
                            written.saturating_add(n as u64)
                        ));
                    }
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
                    if is_timeout(&e) {
                        return self.timed_out(written);
                    }
                    return Attempt::Transient(anyhow!(
                        "connection lost after {written} bytes{at}: {}",
                        chain(&e)
                    ));
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
                return Attempt::Transient(anyhow!("body ended after {written} of {t} bytes{at}"));
            }
        }
        Attempt::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse() {
        assert_eq!(parse_limit("90"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse_limit("90s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse_limit("30m"), Ok(Some(Duration::from_secs(1800))));
        assert_eq!(parse_limit("6h"), Ok(Some(DEFAULT_TIMEOUT)));
        assert_eq!(parse_limit("250ms"), Ok(Some(Duration::from_millis(250))));
        assert_eq!(parse_limit("0"), Ok(None));
        for bad in ["", "-1", "x", "1e300h", "NaN", "inf", "5d"] {
            assert!(parse_limit(bad).is_err(), "{bad}");
        }
        assert_eq!(show_duration(DEFAULT_TIMEOUT), "6h");
        assert_eq!(show_duration(DEFAULT_STALL), "1m");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn redirect_rules() {
        let u = |s: &str| Url::parse(s).unwrap();
        let remote = u("https://example.org/a");
        let local = u("http://127.0.0.1:8000/a");
        assert!(redirect_allowed(Some(&remote), &u("https://mirror.example/b")).is_ok());
        assert!(redirect_allowed(Some(&local), &u("https://mirror.example/b")).is_ok());
        assert!(redirect_allowed(Some(&local), &u("http://localhost:9/b")).is_ok());
        // A remote https server may not send us to plain http, loopback included.
        assert!(redirect_allowed(Some(&remote), &u("http://example.org/b")).is_err());
        assert!(redirect_allowed(Some(&remote), &u("http://127.0.0.1/b")).is_err());
        assert!(redirect_allowed(Some(&local), &u("http://example.invalid/b")).is_err());
        assert!(redirect_allowed(Some(&local), &u("file:///etc/passwd")).is_err());
        assert!(redirect_allowed(None, &u("http://127.0.0.1/b")).is_err());
    }

    #[test]
    fn local_mirror_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, vec![7u8; 100]).unwrap();
        let part = dir.path().join("dst.part");
        assert!(matches!(local_attempt(&src, &part, 99), Attempt::Fatal(_)));
        assert!(!part.exists());
        assert!(matches!(local_attempt(&src, &part, 100), Attempt::Done));
        assert_eq!(std::fs::metadata(&part).unwrap().len(), 100);
    }
}
