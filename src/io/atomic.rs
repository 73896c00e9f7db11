//! Outputs appear whole or not at all: write a temp file beside the target, then rename.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

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
            // Like any created file (the umask applies), not tempfile's private 0600.
            .permissions(perms_0666())
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
        if let Err(e) = self.tmp.persist(&target) {
            // Dropping the returned path deletes the temporary file now: an error travelling up to
            // `process::exit` would otherwise keep it alive and leave it behind.
            let cause = e.error.to_string();
            drop(e.path);
            bail!("cannot move output into place at {}: {cause}", target.display());
        }
        Ok(())
    }

    /// Commits several files as one output: if any rename fails, or the process is interrupted
    /// meanwhile, the ones already in place are removed too.
    pub fn commit_all(files: Vec<PendingFile>) -> Result<()> {
        let targets: Vec<PathBuf> = files.iter().map(|f| f.target.clone()).collect();
        for t in &targets {
            track(t, true);
        }
        let mut done = 0;
        let mut result = Ok(());
        for f in files {
            if result.is_err() {
                drop(f);
                continue;
            }
            result = f.commit();
            if result.is_ok() {
                done += 1;
            }
        }
        if result.is_err() {
            for t in &targets[..done] {
                let _ = std::fs::remove_file(t);
            }
        }
        for t in &targets {
            track(t, false);
        }
        result
    }
}

/// Unix only, like the HDF5 and CUDA stacks this engine is built on.
fn perms_0666() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o666)
}


/// Keeps a temporary path on the interrupt list while it lives.
struct Tracked(PathBuf);

impl Drop for Tracked {
    fn drop(&mut self) {
        track(&self.0, false);
    }
}

/// Whether two paths name the same file (same device and inode; for a target that does not exist yet,
/// the same canonical location).
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        return x.dev() == y.dev() && x.ino() == y.ino();
    }
    let canon = |p: &Path| -> Option<PathBuf> {
        let dir = parent_dir(p).canonicalize().ok()?;
        Some(dir.join(p.file_name()?))
    };
    matches!((canon(a), canon(b)), (Some(x), Some(y)) if x == y)
}

/// Refuses an output that would overwrite one of the inputs (the input would be destroyed while
/// still being read, or silently replaced).
pub fn refuse_input_as_output(output: &Path, inputs: &[&Path]) -> Result<()> {
    for i in inputs {
        if same_file(output, i) {
            bail!(
                "{}: the output is the input file {}; choose another output path",
                output.display(),
                i.display()
            );
        }
    }
    Ok(())
}

/// Checks that `name` is a plain file name (no directory part, no `..`), for names that users or
/// files supply and that become part of an output path.
pub fn plain_name(name: &str, what: &str) -> Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\\')
        || name.chars().any(char::is_control)
        || name.len() > 200
    {
        bail!("invalid {what} '{}': expected a plain file name without '/' or '..'", name.escape_debug());
    }
    Ok(())
}
