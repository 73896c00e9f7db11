//! Weights registry, cache and downloads against a loopback HTTP server started here. Nothing leaves
//! 127.0.0.1.

mod common;
use common::*;

mod weights_support;
use weights_support::*;

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
