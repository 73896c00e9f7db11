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
