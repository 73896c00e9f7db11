//! Loopback HTTP server and cache sandbox shared by the weights tests. Nothing leaves 127.0.0.1.
#![allow(dead_code)]

use crate::common::*;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const TINY_SHA: &str = "c5083dd4e705f12275bd1da8177f7600a07059b2b40bd4bbfe8e3aaca59b2173";
pub const TINY_SIZE: u64 = 8127077;

/// (path, Range header) of every request, in arrival order.
type RequestLog = Mutex<Vec<(String, Option<String>)>>;

/// A minimal HTTP/1.1 server; the first path segment picks the behaviour:
/// - /ok/F: Range supported; /bad/F: one byte flipped; /slow/F: throttled
/// - /cut/F: first response cut halfway, then normal; /cutnorange/F: same, then Range ignored;
///   /trunc/F: always cut
/// - /flood/F: no Content-Length, the body followed by endless zeros
/// - /stall/F: half of the (range of the) body, then silence; /stallonce/F: that once, then normal
/// - /drip/F: one byte every 50 ms, never silent for long
/// - /redir-http/F: 302 to http://example.invalid/F; /redir-ok/F: 302 to /ok/F;
///   /loop/N/F: 302 to /loop/N+1/F
/// - anything else: 404
pub struct Server {
    pub port: u16,
    log: Arc<RequestLog>,
}

impl Server {
    pub fn start(body: Vec<u8>) -> Self {
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

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self, prefix: &str) -> Vec<Option<String>> {
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
    let mut segs = path.split('/').skip(1);
    let kind = segs.next().unwrap_or("");
    let file = path.rsplit('/').next().unwrap_or("");
    let redirect = |s: &mut TcpStream, to: &str| {
        s.write_all(
            format!(
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
    };
    match kind {
        "redir-http" => return redirect(&mut s, &format!("http://example.invalid/{file}")),
        "redir-ok" => return redirect(&mut s, &format!("/ok/{file}")),
        "loop" => {
            let i: usize = segs.next().and_then(|x| x.parse().ok()).unwrap_or(0);
            return redirect(&mut s, &format!("/loop/{}/{file}", i + 1));
        }
        "flood" => {
            s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            s.write_all(body)?;
            // Bounded so a client that never cuts ends the test with a wrong size, not a full disk.
            let zeros = vec![0u8; 1 << 16];
            for _ in 0..4096 {
                s.write_all(&zeros)?;
            }
            return Ok(());
        }
        _ => {}
    }
    let mut data = body.to_vec();
    if kind == "bad" {
        data[1000] ^= 0xff;
    }
    let stall_now = kind == "stall" || (kind == "stallonce" && n == 1);
    let cut_now = kind == "trunc" || ((kind == "cut" || kind == "cutnorange") && n == 1);
    let honour_range = matches!(kind, "ok" | "cut" | "slow" | "bad" | "stall" | "stallonce");
    let known = [
        "ok",
        "cut",
        "cutnorange",
        "trunc",
        "bad",
        "slow",
        "stall",
        "stallonce",
        "drip",
    ];
    if !known.contains(&kind) {
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
    if stall_now {
        s.write_all(&part[..part.len() / 2])?;
        s.flush()?;
        std::thread::sleep(Duration::from_secs(30));
        return Ok(());
    }
    if kind == "drip" {
        for b in part {
            s.write_all(&[*b])?;
            s.flush()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        return Ok(());
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

/// A temporary directory holding the cache (`home`) and registries, plus a loopback server that
/// serves the tiny reference checkpoint.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub server: Server,
}

impl Env {
    pub fn new() -> Self {
        let body = std::fs::read(reference("tiny_models.ckpt")).unwrap();
        Self {
            dir: tmp(),
            server: Server::start(body),
        }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A user registry listing the tiny model under `name@1.0` with the given mirrors.
    pub fn registry(&self, name: &str, mirrors: &[String], sha: &str) -> PathBuf {
        self.registry_doc(
            name,
            &serde_json::json!({"models": [{
                "name": name, "version": "1.0", "description": "tiny test model", "license": "MIT",
                "files": [{"name": "tiny_models.ckpt", "urls": mirrors, "sha256": sha, "size": TINY_SIZE, "format": "ckpt"}]
            }]})
            .to_string(),
        )
    }

    /// Writes a registry file with the given text.
    pub fn registry_doc(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.registry.json"));
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A registry with one file entry as given (merged over name/version defaults).
    pub fn registry_file(&self, name: &str, version: &str, file: serde_json::Value) -> PathBuf {
        self.registry_doc(
            name,
            &serde_json::json!({"models": [{"name": name, "version": version, "files": [file]}]})
                .to_string(),
        )
    }

    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = bin();
        c.env("SCFOUNDATION_HOME", self.home())
            .env_remove("SCFOUNDATION_OFFLINE")
            .env_remove("SCFOUNDATION_REGISTRY")
            .env_remove("SCFOUNDATION_FETCH_TIMEOUT")
            .env_remove("SCFOUNDATION_STALL_TIMEOUT")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .args(args);
        c
    }

    pub fn cmd(&self, args: &[&str]) -> std::process::Output {
        self.command(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    pub fn err(&self, args: &[&str]) -> String {
        expect_clean_failure(args, &self.cmd(args))
    }

    /// Files under the cache (the lock file excepted).
    pub fn cache_files(&self) -> Vec<String> {
        let mut v = files_under(&self.home());
        v.retain(|f| !f.ends_with("/.lock"));
        v
    }
}

/// Every file below `p`, recursively.
pub fn files_under(p: &Path) -> Vec<String> {
    fn walk(p: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.push(e.path().display().to_string());
                }
            }
        }
    }
    let mut v = vec![];
    walk(p, &mut v);
    v
}

/// Asserts an ordinary error exit (status 1 with the one-line message, not a panic); returns stderr.
pub fn expect_clean_failure(args: &[&str], o: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{args:?} should fail cleanly: {err}"
    );
    assert!(
        err.contains("scfoundation: error:") && !err.contains("panicked"),
        "{args:?}: {err}"
    );
    err
}

pub fn sha_of(p: &str) -> String {
    scfoundation::weights::sha256_file(Path::new(p)).unwrap()
}
