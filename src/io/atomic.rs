//! Outputs appear whole or not at all: write a temp file beside the target, then rename.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Runs `write` on a temporary path in the target's directory and renames it into place on success.
/// On failure the temporary file is removed and the target is untouched.
pub fn write_with<F>(target: &Path, write: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    let pending = PendingFile::new(target)?;
    write(pending.path())?;
    pending.commit()
}

pub fn write_bytes(target: &Path, bytes: &[u8]) -> Result<()> {
    write_with(target, |p| {
        std::fs::write(p, bytes).with_context(|| format!("writing {}", p.display()))
    })
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temporary file beside `target` for outputs written incrementally; `commit` renames it into place,
/// dropping it uncommitted deletes it.
pub struct PendingFile {
    tmp: tempfile::TempPath,
    target: PathBuf,
}

impl PendingFile {
    pub fn new(target: &Path) -> Result<Self> {
        let dir = parent_dir(target);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create output directory {}", dir.display()))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "out".into());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(&dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?
            .into_temp_path();
        Ok(Self {
            tmp,
            target: target.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn commit(self) -> Result<()> {
        let target = self.target.clone();
        self.tmp
            .persist(&target)
            .with_context(|| format!("cannot move output into place at {}", target.display()))?;
        Ok(())
    }
}
