//! sha256 of weight files.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = crate::fsutil::open_regular(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(to_hex(&h.finalize()))
}

/// Normalises a user-supplied digest and compares it with the actual one.
pub fn check_digest(path: &Path, expected: &str, actual: &str) -> Result<()> {
    let want = expected.trim().to_ascii_lowercase();
    if want.len() != 64 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("'{expected}' is not a sha256 digest (64 hex characters)");
    }
    if want != actual {
        bail!(
            "{}: sha256 mismatch: expected {want}, actual {actual}",
            path.display()
        );
    }
    Ok(())
}
