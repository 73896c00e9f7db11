//! Weights registry, cache and downloads against a loopback HTTP server started here. Nothing leaves
//! 127.0.0.1.

mod common;
use common::*;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TINY_SHA: &str = "c5083dd4e705f12275bd1da8177f7600a07059b2b40bd4bbfe8e3aaca59b2173";

/// A minimal HTTP/1.1 server. Paths: /ok/F (Range supported), /cut/F (first response cut halfway, then
/// normal), /cutnorange/F (first cut, then Range ignored), /trunc/F (always cut), /bad/F (one byte
/// flipped), /slow/F (Range supported, throttled), anything else 404.
/// (path, Range header) of every request, in arrival order.
type RequestLog = Mutex<Vec<(String, Option<String>)>>;

struct Server {
    port: u16,
    log: Arc<RequestLog>,
}

impl Server {
    fn start(body: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(vec![]));
        let body = Arc::new(body);
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let l2 = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (body, log, hits) = (body.clone(), l2.clone(), hits.clone());
                std::thread::spawn(move || {
                    let _ = handle(stream, &body, &log, &hits);
                });
            }
        });
        Self { port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self, prefix: &str) -> Vec<Option<String>> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.starts_with(prefix))
            .map(|(_, r)| r.clone())
            .collect()
    }
}

fn handle(
    mut s: TcpStream,
    body: &[u8],
    log: &RequestLog,
    hits: &Mutex<HashMap<String, usize>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range:") {
            range = Some(v.trim().to_string());
        }
    }
    log.lock().unwrap().push((path.clone(), range.clone()));
    let n = {
        let mut m = hits.lock().unwrap();
        let c = m.entry(path.clone()).or_insert(0);
        *c += 1;
        *c
    };
    let kind = path.split('/').nth(1).unwrap_or("");
    let mut data = body.to_vec();
    if kind == "bad" {
        data[1000] ^= 0xff;
    }
    let cut_now = kind == "trunc" || ((kind == "cut" || kind == "cutnorange") && n == 1);
    let honour_range = matches!(kind, "ok" | "cut" | "slow" | "bad");
    if !matches!(kind, "ok" | "cut" | "cutnorange" | "trunc" | "bad" | "slow") {
        return s.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let start = match (&range, honour_range) {
        (Some(r), true) => r
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse::<usize>()
            .unwrap_or(0),
        _ => 0,
    };
    let part = &data[start..];
    let head = if start > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
            part.len(),
            data.len() - 1,
            data.len()
        )
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
            part.len()
        )
    };
    s.write_all(head.as_bytes())?;
    if cut_now {
        s.write_all(&part[..part.len() / 2])?;
        s.flush()?;
        return s.shutdown(std::net::Shutdown::Both);
    }
    if kind == "slow" {
        for chunk in part.chunks(part.len() / 20 + 1) {
            s.write_all(chunk)?;
            std::thread::sleep(Duration::from_millis(30));
        }
        return Ok(());
    }
    s.write_all(part)
}

struct Env {
    dir: tempfile::TempDir,
    server: Server,
}

impl Env {
    fn new() -> Self {
        let body = std::fs::read(reference("tiny_models.ckpt")).unwrap();
        Self {
            dir: tmp(),
            server: Server::start(body),
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A user registry listing the tiny model under `name@1.0` with the given mirrors.
    fn registry(&self, name: &str, mirrors: &[String], sha: &str) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.registry.json"));
        let doc = serde_json::json!({"models": [{
            "name": name, "version": "1.0", "description": "tiny test model", "license": "MIT",
            "files": [{"name": "tiny_models.ckpt", "urls": mirrors, "sha256": sha, "size": 8127077, "format": "ckpt"}]
        }]});
        std::fs::write(&p, doc.to_string()).unwrap();
        p
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        bin()
            .env("SCFOUNDATION_HOME", self.home())
            .env_remove("SCFOUNDATION_OFFLINE")
            .env_remove("SCFOUNDATION_REGISTRY")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn err(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(!o.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&o.stderr).to_string()
    }

    fn cache_files(&self) -> Vec<String> {
        fn walk(p: &Path, out: &mut Vec<String>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    if e.path().is_dir() {
                        walk(&e.path(), out);
                    } else if e.file_name() != ".lock" {
                        out.push(e.path().display().to_string());
                    }
                }
            }
        }
        let mut v = vec![];
        walk(&self.home(), &mut v);
        v
    }
}

fn sha_of(p: &str) -> String {
    scfoundation::weights::sha256_file(Path::new(p)).unwrap()
}

#[test]
fn fetch_from_registry_then_use_offline() {
    let env = Env::new();
    let reg = env.registry(
        "tinyok",
        &[env.server.url("/ok/tiny_models.ckpt")],
        TINY_SHA,
    );
    let path = env.ok(&["--registry", s(&reg), "weights", "fetch", "tinyok@1.0"]);
    assert_eq!(sha_of(&path), TINY_SHA);
    assert!(path.contains("models/tinyok/1.0/"));
    assert_eq!(
        env.ok(&["--registry", s(&reg), "weights", "path", "tinyok"]),
        path
    );
    assert!(env
        .ok(&["--registry", s(&reg), "weights", "verify", "tinyok@1.0"])
        .contains("OK"));
    assert!(env
        .ok(&["--registry", s(&reg), "weights", "list"])
        .contains("tinyok@1.0\tcached"));

    // Offline run from the cache: same numbers as the path-based run, provenance names the version.
    let before = env.server.requests("/").len();
    let out = env.dir.path().join("o.npy");
    let o = bin()
        .env("SCFOUNDATION_HOME", env.home())
        .env("SCFOUNDATION_OFFLINE", "1")
        .args([
            "--registry",
            s(&reg),
            "embed",
            "--input",
            s(&reference("input_counts_8x19264.csv")),
            "--model",
            "tinyok@1.0",
            "--output",
            s(&out),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_close(&out, &reference("out_cell_pool-all_t4_preF_ce.npy"), 1e-5);
    let prov = std::fs::read_to_string(out.with_extension("npy.provenance.json")).unwrap();
    assert!(
        prov.contains("tinyok@1.0") && prov.contains(TINY_SHA),
        "{prov}"
    );
    assert_eq!(
        env.server.requests("/").len(),
        before,
        "offline run touched the network"
    );

    // Tampering with the cached file is caught at use.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[5000] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = env.err(&[
        "--registry",
        s(&reg),
        "--offline",
        "embed",
        "--input",
        s(&reference("input_counts_8x19264.csv")),
        "--model",
        "tinyok@1.0",
        "--output",
        s(&env.dir.path().join("t.npy")),
    ]);
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(!env.dir.path().join("t.npy").exists());
    env.ok(&["weights", "remove", "tinyok@1.0"]);
    assert!(env.cache_files().is_empty());
}

#[test]
fn resume_after_cut_connection_uses_range() {
    let env = Env::new();
    let reg = env.registry(
        "tinycut",
        &[env.server.url("/cut/tiny_models.ckpt")],
        TINY_SHA,
    );
    let path = env.ok(&["--registry", s(&reg), "weights", "fetch", "tinycut@1.0"]);
    assert_eq!(sha_of(&path), TINY_SHA);
    let reqs = env.server.requests("/cut/");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0], None);
    assert_eq!(
        reqs[1].as_deref(),
        Some(&*format!("bytes={}-", 8127077 / 2))
    );
}

#[test]
fn server_ignoring_range_restarts_from_zero() {
    let env = Env::new();
    let reg = env.registry(
        "tinynr",
        &[env.server.url("/cutnorange/tiny_models.ckpt")],
        TINY_SHA,
    );
    let path = env.ok(&["--registry", s(&reg), "weights", "fetch", "tinynr@1.0"]);
    assert_eq!(sha_of(&path), TINY_SHA);
    assert_eq!(env.server.requests("/cutnorange/").len(), 2);
}

#[test]
fn mirror_failover_after_404() {
    let env = Env::new();
    let reg = env.registry(
        "tinyfo",
        &[
            env.server.url("/missing/tiny_models.ckpt"),
            env.server.url("/ok/tiny_models.ckpt"),
        ],
        TINY_SHA,
    );
    let path = env.ok(&["--registry", s(&reg), "weights", "fetch", "tinyfo"]);
    assert_eq!(sha_of(&path), TINY_SHA);
    assert_eq!(
        env.server.requests("/missing/").len(),
        1,
        "404 is not retried"
    );
}

#[test]
fn corrupted_or_truncated_downloads_leave_nothing() {
    let env = Env::new();
    let reg = env.registry(
        "tinybad",
        &[env.server.url("/bad/tiny_models.ckpt")],
        TINY_SHA,
    );
    let err = env.err(&["--registry", s(&reg), "weights", "fetch", "tinybad@1.0"]);
    assert!(
        err.contains("sha256 mismatch") && err.contains(TINY_SHA),
        "{err}"
    );
    assert!(env.cache_files().is_empty(), "{:?}", env.cache_files());

    let err = env.err(&[
        "weights",
        "fetch",
        "--url",
        &env.server.url("/bad/tiny_models.ckpt"),
        "--sha256",
        TINY_SHA,
        "--name",
        "x@1",
    ]);
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(env.cache_files().is_empty());
}

#[test]
fn truncated_download_fails_then_a_later_run_resumes_it() {
    let env = Env::new();
    let reg = env.registry(
        "tinytr",
        &[env.server.url("/trunc/tiny_models.ckpt")],
        TINY_SHA,
    );
    let err = env.err(&["--registry", s(&reg), "weights", "fetch", "tinytr@1.0"]);
    assert!(err.contains("tinytr@1.0") && err.contains("bytes"), "{err}");
    let files = env.cache_files();
    assert!(
        files.iter().all(|f| f.ends_with(".part")),
        "only a partial file may remain: {files:?}"
    );
    assert!(env
        .err(&["--registry", s(&reg), "weights", "path", "tinytr@1.0"])
        .contains("not in the cache"));
    // The same model from a healthy mirror continues where the cut left off.
    let reg = env.registry(
        "tinytr",
        &[env.server.url("/ok/tiny_models.ckpt")],
        TINY_SHA,
    );
    let path = env.ok(&["--registry", s(&reg), "weights", "fetch", "tinytr@1.0"]);
    assert_eq!(sha_of(&path), TINY_SHA);
    let ranges = env.server.requests("/ok/");
    assert_eq!(ranges.len(), 1);
    assert!(
        ranges[0]
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-"),
        "{ranges:?}"
    );
}

#[test]
fn one_off_url_mismatch_leaves_nothing() {
    let env = Env::new();
    let err = env.err(&[
        "weights",
        "fetch",
        "--url",
        &env.server.url("/bad/tiny_models.ckpt"),
        "--sha256",
        TINY_SHA,
        "--name",
        "x@1",
    ]);
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(env.cache_files().is_empty());
}

#[test]
fn one_off_url_and_file_url() {
    let env = Env::new();
    let p = env.ok(&[
        "weights",
        "fetch",
        "--url",
        &env.server.url("/ok/tiny_models.ckpt"),
        "--sha256",
        TINY_SHA,
        "--name",
        "adhoc@2",
    ]);
    assert_eq!(sha_of(&p), TINY_SHA);
    let file_url = format!(
        "file://{}",
        reference("tiny_models.ckpt")
            .canonicalize()
            .unwrap()
            .display()
    );
    let p = env.ok(&[
        "weights", "fetch", "--url", &file_url, "--sha256", TINY_SHA, "--name", "local@1",
    ]);
    assert_eq!(sha_of(&p), TINY_SHA);
    // Plain http to a non-loopback host is refused before any connection.
    let err = env.err(&[
        "weights",
        "fetch",
        "--url",
        "http://example.org/x.ckpt",
        "--sha256",
        TINY_SHA,
        "--name",
        "y@1",
    ]);
    assert!(err.contains("https"), "{err}");
}

#[test]
fn offline_mode_never_fetches() {
    let env = Env::new();
    let reg = env.registry(
        "tinyoff",
        &[env.server.url("/ok/tiny_models.ckpt")],
        TINY_SHA,
    );
    let err = env.err(&[
        "--offline",
        "--registry",
        s(&reg),
        "weights",
        "fetch",
        "tinyoff@1.0",
    ]);
    assert!(err.contains("offline"), "{err}");
    assert!(env.server.requests("/").is_empty());
}

#[test]
fn concurrent_fetches_share_one_download() {
    let env = Env::new();
    let reg = env.registry(
        "tinyconc",
        &[env.server.url("/slow/tiny_models.ckpt")],
        TINY_SHA,
    );
    let spawn = || {
        bin()
            .env("SCFOUNDATION_HOME", env.home())
            .args(["--registry", s(&reg), "weights", "fetch", "tinyconc@1.0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(sha_of(String::from_utf8_lossy(&o.stdout).trim()), TINY_SHA);
    }
    assert_eq!(
        env.server.requests("/slow/").len(),
        1,
        "the second process waits and reuses the first download"
    );
}

#[test]
fn unpinned_entry_needs_import() {
    let env = Env::new();
    let err = env.err(&["weights", "fetch", "scfoundation@1.0"]);
    assert!(
        err.contains("no pinned sha256") && err.contains("weights import"),
        "{err}"
    );
    let out = env.ok(&[
        "weights",
        "import",
        s(&reference("tiny_models.ckpt")),
        "--name",
        "scfoundation@1.0",
    ]);
    assert!(out.starts_with(TINY_SHA));
    assert!(env
        .ok(&["--offline", "weights", "verify", "scfoundation"])
        .contains("OK"));
    let path = env.ok(&["--offline", "weights", "fetch", "scfoundation@1.0"]);
    assert!(
        path.ends_with("models/scfoundation/1.0/tiny_models.ckpt"),
        "{path}"
    );
}
