//! `--device cpu|cuda[:N]`.

use anyhow::{bail, Result};
use candle_core::Device;

pub fn parse(spec: &str) -> Result<Device> {
    let s = spec.trim().to_ascii_lowercase();
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => match rest.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => bail!("invalid --device '{spec}': expected cpu, cuda or cuda:N"),
        },
        None => bail!("invalid --device '{spec}': expected cpu, cuda or cuda:N"),
    };
    if !cfg!(feature = "cuda") {
        bail!("--device {spec}: this scfoundation binary was built without CUDA support (rebuild with --features cuda)");
    }
    Ok(Device::new_cuda(ordinal)?)
}

/// Free and total memory of a CUDA device in bytes; `None` on the CPU.
pub fn memory_info(device: &Device) -> Result<Option<(u64, u64)>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        let (free, total) = d
            .cuda_stream()
            .context()
            .mem_get_info()
            .map_err(|e| anyhow::anyhow!("querying free GPU memory: {e}"))?;
        return Ok(Some((free as u64, total as u64)));
    }
    let _ = device;
    Ok(None)
}

/// Whether `e` says the device ran out of memory (CUDA's allocation error), as opposed to any other
/// failure; only then is a smaller batch worth a retry.
pub fn is_out_of_memory(device: &Device, e: &anyhow::Error) -> bool {
    if !device.is_cuda() {
        return false;
    }
    let text = format!("{e:#}");
    text.contains("OUT_OF_MEMORY") || text.contains("out of memory")
}
