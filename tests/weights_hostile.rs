//! Registries, cache manifests and servers as untrusted input: names that would escape the cache,
//! oversized or stalling transfers, unsafe redirects, malformed registry JSON, and `NAME@VERSION`
//! shadowing by local files. Every server is a loopback server started here.

mod common;
use common::*;

mod weights_support;
use weights_support::*;

use std::path::Path;
use std::time::{Duration, Instant};

/// Names a registry may not use for a cache file, with a fragment the error must show.
const BAD_FILE_NAMES: &[(&str, &str)] = &[
    ("../../escape.ckpt", "../../escape.ckpt"),
    ("/tmp/abs-escape.ckpt", "/tmp/abs-escape.ckpt"),
    ("sub/escape.ckpt", "sub/escape.ckpt"),
    ("..\\escape.ckpt", "escape.ckpt"),
    ("..", "\"..\""),
    (".", "\".\""),
    ("", "\"\""),
    ("manifest.json", "manifest.json"),
    (".lock", ".lock"),
    ("tiny.ckpt.part", "tiny.ckpt.part"),
    ("nul\u{0}.ckpt", "nul\\0.ckpt"),
    ("line\nbreak.ckpt", "line\\nbreak.ckpt"),
];

#[test]
fn registry_file_names_that_leave_the_cache_are_refused() {
    let env = Env::new();
    let long = "x".repeat(300);
    let mut cases: Vec<(&str, &str)> = BAD_FILE_NAMES.to_vec();
    cases.push((&long, "longer than 255 bytes"));
    for (i, (name, shown)) in cases.iter().enumerate() {
        let reg = env.registry_file(
            &format!("evil{i}"),
            "1.0",
            serde_json::json!({"name": name, "urls": [env.server.url("/ok/tiny_models.ckpt")],
                               "sha256": TINY_SHA, "size": TINY_SIZE}),
        );
        let id = format!("evil{i}@1.0");
        let err = env.err(&["--registry", s(&reg), "weights", "fetch", &id]);
        assert!(
            err.contains(s(&reg)) && err.contains(shown) && err.contains("not a plain name"),
            "{name:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert!(env.server.requests("/").is_empty(), "nothing was fetched");
    assert!(env.cache_files().is_empty(), "{:?}", env.cache_files());
    assert!(!Path::new("/tmp/abs-escape.ckpt").exists());
    let outside: Vec<String> = files_under(env.dir.path())
        .into_iter()
        .filter(|f| f.contains("escape"))
        .collect();
    assert!(outside.is_empty(), "{outside:?}");
}

#[test]
fn registry_model_names_and_versions_are_checked() {
    let env = Env::new();
    let url = env.server.url("/ok/tiny_models.ckpt");
    for (name, version, shown) in [
        ("..", "1.0", "\"..\""),
        ("evil", "../../../x", "../../../x"),
        ("evil", "1/../../x", "1/../../x"),
        ("a/b", "1", "a/b"),
        (".hidden", "1", ".hidden"),
    ] {
        let reg = env.registry_doc(
            "names",
            &serde_json::json!({"models": [{"name": name, "version": version,
                "files": [{"name": "m.ckpt", "urls": [url], "sha256": TINY_SHA}]}]})
            .to_string(),
        );
        let err = env.err(&["--registry", s(&reg), "weights", "list"]);
        assert!(
            err.contains(s(&reg)) && err.contains(shown) && err.contains("not a plain name"),
            "{name:?}@{version:?}: {err}"
        );
    }
    assert!(env.server.requests("/").is_empty());
}

#[test]
fn url_derived_file_name_is_checked() {
    let env = Env::new();
    for file in ["manifest.json", "x.ckpt.part"] {
        let err = env.err(&[
            "weights",
            "fetch",
            "--url",
            &env.server.url(&format!("/ok/{file}")),
            "--sha256",
            TINY_SHA,
            "--name",
            "adhoc@1",
        ]);
        assert!(
            err.contains(file) && err.contains("not a plain name"),
            "{err}"
        );
    }
    assert!(env.server.requests("/").is_empty());
    assert!(env.cache_files().is_empty());
}

#[test]
fn cache_manifest_pointing_outside_is_refused() {
    let env = Env::new();
    // A real checkpoint where the hostile manifest points, so following it would "work".
    let outside = env.dir.path().join("outside.ckpt");
    std::fs::copy(reference("tiny_models.ckpt"), &outside).unwrap();
    let write_manifest = |name: &str, file: &str| {
        let dir = env.home().join("models/evil/1.0");
        std::fs::create_dir_all(&dir).unwrap();
        let m = serde_json::json!({"name": name, "version": "1.0", "file": file,
            "sha256": TINY_SHA, "size": TINY_SIZE, "source": "test"});
        let p = dir.join("manifest.json");
        std::fs::write(&p, m.to_string()).unwrap();
        p
    };
    let input = reference("input_counts_8x19264.csv");
    let out = env.dir.path().join("o.npy");
    for (name, file, shown) in [
        (
            "evil",
            "../../../../outside.ckpt",
            "../../../../outside.ckpt",
        ),
        ("evil", outside.to_str().unwrap(), "outside.ckpt"),
        ("evil", "manifest.json", "manifest.json"),
        ("../../..", "outside.ckpt", "\"../../..\""),
    ] {
        let manifest = write_manifest(name, file);
        for args in [
            vec!["weights", "path", "evil@1.0"],
            vec!["--offline", "weights", "verify", "evil@1.0"],
            vec![
                "--offline",
                "embed",
                "--input",
                s(&input),
                "--model",
                "evil@1.0",
                "--output",
                s(&out),
            ],
        ] {
            let err = env.err(&args);
            assert!(
                err.contains(s(&manifest)) && err.contains(shown),
                "{file:?} {args:?}: {err}"
            );
        }
        assert!(!out.exists());
        // Listing skips the entry instead of failing, and removal still works.
        assert!(!env.ok(&["weights", "list"]).contains("evil@1.0"));
    }
    env.ok(&["weights", "remove", "evil@1.0"]);
    assert!(env.cache_files().is_empty());
    assert!(outside.exists());
}

#[test]
fn content_length_over_declared_size_is_refused_before_writing() {
    let env = Env::new();
    let url = env.server.url("/ok/tiny_models.ckpt");
    let reg = env.registry_file(
        "small",
        "1.0",
        serde_json::json!({"name": "tiny_models.ckpt", "urls": [url], "sha256": TINY_SHA, "size": 1000}),
    );
    let err = env.err(&["--registry", s(&reg), "weights", "fetch", "small@1.0"]);
    assert!(
        err.contains(&url) && err.contains(&format!("announced {TINY_SIZE} bytes")),
        "{err}"
    );
    assert_eq!(env.server.requests("/ok/").len(), 1, "not retried");
    assert!(env.cache_files().is_empty(), "{:?}", env.cache_files());
}

#[test]
fn body_past_declared_size_is_cut_and_removed() {
    let env = Env::new();
    let url = env.server.url("/flood/tiny_models.ckpt");
    let reg = env.registry("flood", std::slice::from_ref(&url), TINY_SHA);
    let err = env.err(&["--registry", s(&reg), "weights", "fetch", "flood@1.0"]);
    assert!(
        err.contains(&url)
            && err.contains("server sent at least")
            && err.contains(&format!("more than the declared size of {TINY_SIZE} bytes")),
        "{err}"
    );
    assert!(env.cache_files().is_empty(), "{:?}", env.cache_files());
}

#[test]
fn stall_is_cut_and_the_download_resumes() {
    let env = Env::new();
    let url = env.server.url("/stallonce/tiny_models.ckpt");
    let reg = env.registry("stall1", std::slice::from_ref(&url), TINY_SHA);
    let t = Instant::now();
    let path = env.ok(&[
        "--registry",
        s(&reg),
        "weights",
        "fetch",
        "stall1@1.0",
        "--stall-timeout",
        "1",
    ]);
    // The server stays silent for 30 s; only the stall timeout makes this quick.
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert_eq!(sha_of(&path), TINY_SHA);
    let reqs = env.server.requests("/stallonce/");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(
        reqs[1]
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-"),
        "{reqs:?}"
    );
}

#[test]
fn always_stalling_server_fails_quickly_from_env_limits() {
    let env = Env::new();
    let url = env.server.url("/stall/tiny_models.ckpt");
    let reg = env.registry("stall2", std::slice::from_ref(&url), TINY_SHA);
    let t = Instant::now();
    let args = ["--registry", s(&reg), "weights", "fetch", "stall2@1.0"];
    let o = env
        .command(&args)
        .env("SCFOUNDATION_STALL_TIMEOUT", "1s")
        .env("SCFOUNDATION_FETCH_TIMEOUT", "4")
        .output()
        .unwrap();
    let err = expect_clean_failure(&args, &o);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(
        err.contains(&url) && err.contains("stalled: no data for 1s") && err.contains("timed out"),
        "{err}"
    );
    let files = env.cache_files();
    assert!(files.iter().all(|f| f.ends_with(".part")), "{files:?}");
}

#[test]
fn slow_drip_hits_the_total_timeout() {
    let env = Env::new();
    let url = env.server.url("/drip/tiny_models.ckpt");
    let reg = env.registry("drip", std::slice::from_ref(&url), TINY_SHA);
    let t = Instant::now();
    let err = env.err(&[
        "--registry",
        s(&reg),
        "weights",
        "fetch",
        "drip@1.0",
        "--timeout",
        "2s",
        "--stall-timeout",
        "5",
    ]);
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(
        err.contains(&url) && err.contains("gave up after 2s") && !err.contains("stalled"),
        "{err}"
    );
    let files = env.cache_files();
    assert!(files.iter().all(|f| f.ends_with(".part")), "{files:?}");
}

#[test]
fn bad_limit_values_are_refused() {
    let env = Env::new();
    let err = env.cmd(&["weights", "fetch", "x@1", "--timeout", "soon"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("not a duration"));
    let args = ["weights", "fetch", "scfoundation-tiny@1.0"];
    let o = env
        .command(&args)
        .env("SCFOUNDATION_STALL_TIMEOUT", "-5")
        .output()
        .unwrap();
    // A bad value is a usage error (clap's exit status 2), naming the variable.
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("SCFOUNDATION_STALL_TIMEOUT") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn redirect_to_plain_http_elsewhere_is_refused() {
    let env = Env::new();
    let url = env.server.url("/redir-http/tiny_models.ckpt");
    let reg = env.registry("redir", std::slice::from_ref(&url), TINY_SHA);
    let err = env.err(&["--registry", s(&reg), "weights", "fetch", "redir@1.0"]);
    assert!(
        err.contains(&url)
            && err.contains("redirect to http://example.invalid/tiny_models.ckpt refused")
            && err.contains("https"),
        "{err}"
    );
    assert_eq!(env.server.requests("/redir-http/").len(), 1, "not retried");
    assert!(env.cache_files().is_empty(), "{:?}", env.cache_files());
}

#[test]
fn redirect_chain_stops_at_the_limit() {
    let env = Env::new();
    let url = env.server.url("/loop/0/tiny_models.ckpt");
    let reg = env.registry("loop", std::slice::from_ref(&url), TINY_SHA);
    let err = env.err(&["--registry", s(&reg), "weights", "fetch", "loop@1.0"]);
    assert!(
        err.contains(&url) && err.contains("more than 5 redirects"),
        "{err}"
    );
    assert_eq!(
        env.server.requests("/loop/").len(),
        6,
        "the first + 5 followed"
    );
    assert!(env.cache_files().is_empty(), "{:?}", env.cache_files());
}

#[test]
fn redirect_between_loopback_servers_is_followed() {
    let env = Env::new();
    let url = env.server.url("/redir-ok/tiny_models.ckpt");
    let reg = env.registry("redirok", &[url], TINY_SHA);
    let path = env.ok(&["--registry", s(&reg), "weights", "fetch", "redirok@1.0"]);
    assert_eq!(sha_of(&path), TINY_SHA);
    assert_eq!(env.server.requests("/ok/").len(), 1);
}

#[test]
fn connection_errors_name_the_url_and_cause() {
    let env = Env::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/gone/tiny_models.ckpt");
    let reg = env.registry("gone", std::slice::from_ref(&url), TINY_SHA);
    let err = env.err(&["--registry", s(&reg), "weights", "fetch", "gone@1.0"]);
    let last = err.trim().lines().last().unwrap_or_default().to_string();
    assert!(
        last.contains(&url) && last.to_ascii_lowercase().contains("connection refused"),
        "{err}"
    );
    assert!(!last.contains("builder error"), "{err}");
}

#[test]
fn local_name_does_not_shadow_the_registry() {
    let env = Env::new();
    // Registry pin (built-in entry) + a cached copy, so everything below runs offline.
    env.ok(&[
        "weights",
        "import",
        s(&reference("tiny_models.ckpt")),
        "--name",
        "scfoundation-tiny@1.0",
    ]);
    let input = reference("input_counts_8x19264.csv");
    for as_dir in [false, true] {
        let cwd = tmp();
        let decoy = cwd.path().join("scfoundation-tiny@1.0");
        if as_dir {
            std::fs::create_dir(&decoy).unwrap();
        } else {
            std::fs::write(&decoy, b"not a checkpoint").unwrap();
        }
        let run = |model: &str| {
            env.command(&[
                "--offline",
                "embed",
                "--input",
                s(&input),
                "--model",
                model,
                "--output",
                "o.npy",
            ])
            .current_dir(cwd.path())
            .output()
            .unwrap()
        };
        let o = run("scfoundation-tiny@1.0");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_close(
            &cwd.path().join("o.npy"),
            &reference("out_cell_pool-all_t4_preF_ce.npy"),
            1e-5,
        );
        let prov = std::fs::read_to_string(cwd.path().join("o.npy.provenance.json")).unwrap();
        assert!(prov.contains("scfoundation-tiny@1.0"), "{prov}");
        // With a path separator it is the local decoy, which is not a model.
        let o = run("./scfoundation-tiny@1.0");
        assert!(!o.status.success());
        let verify = env
            .command(&["--offline", "weights", "verify", "scfoundation-tiny@1.0"])
            .current_dir(cwd.path())
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&verify.stdout);
        assert!(verify.status.success() && out.contains("OK") && out.starts_with(TINY_SHA));
    }
    // A bare NAME the registry knows also wins over a same-named local file, with a warning.
    let cwd = tmp();
    std::fs::write(cwd.path().join("scfoundation-tiny"), b"decoy").unwrap();
    let o = env
        .command(&["--offline", "weights", "verify", "scfoundation-tiny"])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success() && out.contains("OK"), "{out} {err}");
    assert!(err.contains("write ./scfoundation-tiny"), "{err}");
}

#[test]
fn hostile_registry_json_is_a_clean_error() {
    let env = Env::new();
    let entry = |files: &str| {
        format!(r#"{{"models": [{{"name": "m", "version": "1", "files": [{files}]}}]}}"#)
    };
    let url = r#""url": "https://example.invalid/m.ckpt""#;
    let cases: Vec<(String, &str)> = vec![
        (
            "[".repeat(200_000) + &"]".repeat(200_000),
            "recursion limit",
        ),
        (
            r#"{"models": "#.repeat(3000) + "[]" + &"}".repeat(3000),
            "recursion limit",
        ),
        (
            entry(&format!(r#"{{{url}, "size": 1e400}}"#)),
            "out of range",
        ),
        (
            entry(&format!(r#"{{{url}, "size": 99999999999999999999999}}"#)),
            "expected u64",
        ),
        (entry(&format!(r#"{{{url}, "size": -1}}"#)), "-1"),
        (entry(&format!(r#"{{{url}, "size": "big"}}"#)), "big"),
        (entry(&format!(r#"{{{url}, "sha256": "abc"}}"#)), "\"abc\""),
        (
            entry(&format!(r#"{{{url}, "sha256": "{}"}}"#, "g".repeat(64))),
            "64 hex",
        ),
        (
            entry(&format!(r#"{{{url}, "sha256": [1]}}"#)),
            "invalid type",
        ),
        (entry(r#"{"urls": 7}"#), "invalid type"),
        (
            r#"{"models": [{"name": 5, "version": "1", "files": []}]}"#.into(),
            "invalid type",
        ),
        (
            r#"{"models": [{"name": "m", "version": "1", "files": {}}]}"#.into(),
            "invalid type",
        ),
        (
            r#"{"models": [{"name": "m", "version": "1"}]}"#.into(),
            "files",
        ),
        ("\"just a string\"".into(), "a JSON list of models"),
        ("{\"models\": [".into(), "EOF"),
        ("\u{feff}\u{0}".into(), "expected value"),
    ];
    for (i, (doc, want)) in cases.iter().enumerate() {
        let reg = env.registry_doc(&format!("hostile{i}"), doc);
        let err = env.err(&["--registry", s(&reg), "weights", "list"]);
        assert!(
            err.contains(s(&reg)) && err.contains(want),
            "case {i} ({}): {err}",
            &doc[..doc.len().min(60)]
        );
    }
    // Too large: refused from its size, before reading (a sparse file, so nothing is written).
    let big = env.dir.path().join("big.registry.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(17 << 20)
        .unwrap();
    let err = env.err(&["--registry", s(&big), "weights", "list"]);
    assert!(err.contains("larger than 16 MiB"), "{err}");
}
