//! Outputs appear whole or not at all: write a temp file beside the target, then rename.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

/// Temporary outputs in flight, removed by [`remove_pending`] when the process is interrupted.
static IN_FLIGHT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Deletes every temporary output still being written (called from the SIGINT/SIGTERM handler, after
/// which the process exits without running destructors).
pub fn remove_pending() {
    if let Ok(paths) = IN_FLIGHT.lock() {
        for p in paths.iter() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn track(p: &Path, on: bool) {
    if let Ok(mut v) = IN_FLIGHT.lock() {
        if on {
            v.push(p.to_path_buf());
        } else {
            v.retain(|x| x != p);
        }
    }
}

/// A temporary file beside `target` for outputs written incrementally; `commit` renames it into place,
/// dropping it uncommitted deletes it.
pub struct PendingFile {
    tmp: tempfile::TempPath,
    target: PathBuf,
    _tracked: Tracked,
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
        track(&tmp, true);
        Ok(Self {
            _tracked: Tracked(tmp.to_path_buf()),
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

/// Keeps a temporary path on the interrupt list while it lives.
struct Tracked(PathBuf);

impl Drop for Tracked {
    fn drop(&mut self) {
        track(&self.0, false);
    }
}
