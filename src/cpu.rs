//! Process-wide CPU set-up: the allocator's policy for large buffers, and which f32 GEMM the model's
//! matrix products use (OpenBLAS when built with the `openblas` feature, else candle's own).

use std::sync::atomic::{AtomicU8, Ordering};

/// Keeps freed tensor buffers in the heap for reuse. candle allocates a fresh buffer for every op's
/// result; glibc's defaults hand buffers above a few MB back to the kernel on free and map new pages
/// on the next allocation, so each op paid page faults on its output (measured with `bench`, mid
/// model on 2 vCPUs: a quarter of the run's time in the kernel; see README "Benchmarks").
/// Peak RSS is unchanged (the heap holds what was live at the peak). `SCFOUNDATION_MALLOC=system`
/// keeps glibc's defaults (to measure the difference).
pub fn tune_allocator() {
    if allocator() == "system" {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation thresholds; called before any other thread
    // starts. A rejected value (return 0) leaves glibc's default in place, which is still correct.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Hands the heap's free memory back to the kernel (what [`tune_allocator`] otherwise keeps).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `tuned` (see [`tune_allocator`]) or `system` (`SCFOUNDATION_MALLOC=system`).
pub fn allocator() -> &'static str {
    match std::env::var("SCFOUNDATION_MALLOC") {
        Ok(v) if v.trim() == "system" => "system",
        _ => "tuned",
    }
}

/// The f32 GEMM used on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gemm {
    /// candle's built-in kernels (the `gemm` crate).
    Candle,
    /// OpenBLAS `cblas_sgemm` (only with the `openblas` feature).
    Blas,
}

impl Gemm {
    pub fn name(self) -> &'static str {
        match self {
            Gemm::Candle => "candle",
            Gemm::Blas => "openblas",
        }
    }
}

const UNSET: u8 = 0;
static GEMM: AtomicU8 = AtomicU8::new(UNSET);

fn encode(g: Gemm) -> u8 {
    match g {
        Gemm::Candle => 1,
        Gemm::Blas => 2,
    }
}

/// The GEMM in use: set by [`set_gemm`], else `SCFOUNDATION_GEMM` (`openblas` or `candle`), else
/// OpenBLAS when compiled in.
pub fn gemm() -> Gemm {
    match GEMM.load(Ordering::Relaxed) {
        1 => Gemm::Candle,
        2 => Gemm::Blas,
        _ => {
            let default = if cfg!(feature = "openblas") {
                Gemm::Blas
            } else {
                Gemm::Candle
            };
            let g = match std::env::var("SCFOUNDATION_GEMM").as_deref().map(str::trim) {
                Ok("candle") => Gemm::Candle,
                Ok("openblas") if !cfg!(feature = "openblas") => {
                    log::warn!("SCFOUNDATION_GEMM=openblas: built without the openblas feature; using candle");
                    Gemm::Candle
                }
                Ok("openblas") | Ok("") | Err(_) => default,
                Ok(other) => {
                    log::warn!(
                        "SCFOUNDATION_GEMM='{other}' is not openblas or candle; using {}",
                        default.name()
                    );
                    default
                }
            };
            GEMM.store(encode(g), Ordering::Relaxed);
            g
        }
    }
}

/// Chooses the GEMM for the rest of the process (bench compares both in one run).
pub fn set_gemm(g: Gemm) -> anyhow::Result<()> {
    if g == Gemm::Blas && !cfg!(feature = "openblas") {
        anyhow::bail!("this scfoundation binary was built without the openblas feature");
    }
    GEMM.store(encode(g), Ordering::Relaxed);
    Ok(())
}
