//! Shared machinery of the property-based fuzz harness (`tests/fuzz.rs`): configuration from the
//! environment, a cap on live heap memory, and the watchdog every case runs under.
//!
//! Isolation has three layers, so that one bad input cannot take the other tests down with it:
//! - proptest's fork mode runs the cases of each property in a child process (the test binary run
//!   again on that one test); a crash (abort, stack overflow, segfault) fails only that property, and
//!   proptest keeps shrinking the input in fresh children;
//! - inside the child each case runs on a worker thread; a panic fails the case with its message, a
//!   case that does not finish within the watchdog time prints the case and aborts the child (a hung
//!   thread cannot be stopped, and would eat the CPU of every later case);
//! - the global allocator refuses to hold more than [`mem_cap`] bytes of live heap, so a tiny file
//!   that makes the library size a buffer from a lying header aborts at once ("memory allocation of
//!   N bytes failed") instead of driving the machine into swap or the OOM killer.
#![allow(dead_code)]

pub mod csv_gen;
pub mod h5ad_gen;
pub mod json_gen;
pub mod npy_gen;

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::{self, Debug};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestCaseResult};

/// Cases per property when `SCF_FUZZ_CASES` is not set (sized so that the whole `tests/fuzz.rs`
/// stays well under a minute in release mode on a 2-core machine; see ci/FUZZING.md).
pub const DEFAULT_CASES: u32 = 128;
/// Watchdog per case when `SCF_FUZZ_TIMEOUT_MS` is not set.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Live heap cap when `SCF_FUZZ_MEM_MB` is not set. The inputs are a few KB; the library may read
/// at most 64 MiB per dataset without stored bytes to back it, so 1 GiB is far above any honest need.
pub const DEFAULT_MEM_MB: usize = 1024;

fn env_num<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a number"),
    }
}

pub fn timeout_ms() -> u64 {
    env_num("SCF_FUZZ_TIMEOUT_MS").unwrap_or(DEFAULT_TIMEOUT_MS)
}

pub fn mem_cap() -> usize {
    env_num::<usize>("SCF_FUZZ_MEM_MB").unwrap_or(DEFAULT_MEM_MB) << 20
}

/// The proptest configuration of every fuzz property: `SCF_FUZZ_CASES` cases (per property), no
/// failure persistence (CI never writes into the tree; failures are reported with the minimal
/// input instead), cases in a forked child with a timeout as a backstop to the in-child watchdog.
/// Other `PROPTEST_*` variables (e.g. `PROPTEST_MAX_SHRINK_ITERS`) keep their usual meaning.
pub fn config() -> ProptestConfig {
    CAP.store(mem_cap(), Ordering::Relaxed);
    let base = ProptestConfig::default();
    ProptestConfig {
        cases: env_num("SCF_FUZZ_CASES").unwrap_or(DEFAULT_CASES),
        failure_persistence: None,
        fork: true,
        // The child is killed if no case finishes within this time; the in-child watchdog fires first.
        timeout: (timeout_ms() * 2 + 5_000).min(u32::MAX as u64) as u32,
        max_shrink_iters: if std::env::var_os("PROPTEST_MAX_SHRINK_ITERS").is_some() {
            base.max_shrink_iters
        } else {
            2_000
        },
        ..base
    }
}

/// A configuration that runs exactly one case (the regression tests, whose input is fixed).
pub fn config_once() -> ProptestConfig {
    ProptestConfig {
        cases: 1,
        ..config()
    }
}

// ---------------------------------------------------------------------------------------------
// Memory cap

static LIVE: AtomicUsize = AtomicUsize::new(0);
static CAP: AtomicUsize = AtomicUsize::new(DEFAULT_MEM_MB << 20);

/// The system allocator, refusing requests that would take live heap over the cap (a refused
/// request makes Rust abort with "memory allocation of N bytes failed").
pub struct CappedAlloc;

fn reserve(n: usize) -> bool {
    let before = LIVE.fetch_add(n, Ordering::Relaxed);
    if before.saturating_add(n) > CAP.load(Ordering::Relaxed) {
        LIVE.fetch_sub(n, Ordering::Relaxed);
        return false;
    }
    true
}

fn release(n: usize) {
    LIVE.fetch_sub(n, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` with the same layout; the counter only decides whether
// to forward an allocation at all, and a refused one returns null as the GlobalAlloc contract allows.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            release(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            release(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        release(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old {
            if !reserve(new_size - old) {
                return std::ptr::null_mut();
            }
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if p.is_null() {
                release(new_size - old);
            }
            p
        } else {
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                release(old - new_size);
            }
            p
        }
    }
}

#[global_allocator]
static GLOBAL: CappedAlloc = CappedAlloc;

// ---------------------------------------------------------------------------------------------
// Watchdog

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Runs `work` for one case of `target` on a worker thread. A panic fails the case with the panic's
/// message (proptest then shrinks the input); `Err(why)` fails it with `why` (an invariant the
/// target broke without panicking). A case still running after the watchdog time is a hang: the
/// case is printed and the child process aborted, which proptest reports as a failure of that case
/// and shrinks in a fresh child.
pub fn guarded<C, F>(target: &str, case: &C, work: F) -> TestCaseResult
where
    C: Debug,
    F: FnOnce() -> Result<(), String> + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let started = std::time::Instant::now();
    stat(|| format!("begin {target}"));
    let handle = std::thread::Builder::new()
        .name(format!("fuzz-{target}"))
        .spawn(move || {
            let r = work();
            let _ = tx.send(());
            r
        })
        .expect("spawn fuzz worker");
    let ms = timeout_ms();
    match rx.recv_timeout(Duration::from_millis(ms)) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => {
            eprintln!(
                "\n[fuzz] HANG: {target}: case did not finish within {ms} ms (SCF_FUZZ_TIMEOUT_MS); \
                 aborting this child process. Case:\n{case:#?}\n"
            );
            std::process::abort();
        }
    }
    stat(|| {
        let ms = started.elapsed().as_millis();
        if ms > 1000 {
            format!("done {target} {ms} ms SLOW {case:?}")
        } else {
            format!("done {target} {ms} ms")
        }
    });
    match handle.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(TestCaseError::fail(format!("{target}: {why}"))),
        Err(p) => Err(TestCaseError::fail(format!(
            "{target}: PANIC: {}",
            panic_message(p.as_ref())
        ))),
    }
}

/// An `anyhow` result that must be `Ok` or an error that formats (the "clean Err" of the harness).
pub fn ok_or_clean<T>(r: anyhow::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            let _ = format!("{e:#}");
            let _ = format!("{e:?}");
            None
        }
    }
}

/// Appends one line to the file named by `SCF_FUZZ_STATS`, when set (to see which code paths the
/// generated inputs reach: `SCF_FUZZ_STATS=/tmp/stats.txt cargo test --release --test fuzz`).
pub fn stat(line: impl FnOnce() -> String) {
    if let Some(p) = std::env::var_os("SCF_FUZZ_STATS") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            let _ = writeln!(f, "{}", line());
        }
    }
}

/// Short form of a result for the stats file.
pub fn brief<T>(r: &anyhow::Result<T>) -> String {
    match r {
        Ok(_) => "Ok".into(),
        Err(e) => {
            let s = format!("{e:#}");
            let s: String = s.chars().take(160).collect();
            format!("Err({s})")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bytes that print as a Rust byte-string literal, so a failing case can be pasted into a test.

#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("b\"")?;
        for &b in &self.0 {
            for c in std::ascii::escape_default(b) {
                f.write_str(std::str::from_utf8(&[c]).unwrap_or("?"))?;
            }
        }
        f.write_str("\"")
    }
}

/// A fresh temporary directory under the system temp dir (never inside the repository).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("scf-fuzz-")
        .tempdir()
        .expect("create a temporary directory")
}
