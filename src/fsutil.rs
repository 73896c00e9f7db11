//! File-system helpers every module uses: outputs appear whole or not at all (a temp file beside the
//! target, then rename), inputs must be regular files, names that become paths are plain names.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

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

/// Temporary outputs in flight, removed by [`remove_pending`] when the process is interrupted. Files
/// are created, renamed and listed only while holding this lock, and the interrupt handler keeps it
/// until the process exits, so no file can appear or move between its clean-up and the exit.
static IN_FLIGHT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static SEQ: AtomicU64 = AtomicU64::new(0);

fn in_flight() -> MutexGuard<'static, Vec<PathBuf>> {
    IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deletes every temporary output still being written (called from the SIGINT/SIGTERM handler, after
/// which the process exits without running destructors). The lock is never released.
pub fn remove_pending() {
    let guard = in_flight();
    for p in guard.iter() {
        let _ = std::fs::remove_file(p);
    }
    std::mem::forget(guard);
}

/// A temporary file beside `target` for outputs written incrementally; `commit` renames it into place,
/// dropping it uncommitted deletes it.
pub struct PendingFile {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl PendingFile {
    pub fn new(target: &Path) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = parent_dir(target);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create output directory {}", dir.display()))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "out".into());
        let mut list = in_flight();
        loop {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
            // 0666 like any created file (the umask applies); exclusive, so nothing is clobbered.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o666)
                .open(&tmp)
            {
                Ok(_) => {
                    list.push(tmp.clone());
                    return Ok(Self {
                        tmp,
                        target: target.to_path_buf(),
                        committed: false,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < u64::MAX => continue,
                Err(e) => bail!("cannot create a temporary file in {}: {e}", dir.display()),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn commit(self) -> Result<()> {
        Self::commit_all(vec![self])
    }

    /// Commits several files as one output: all renames happen under the interrupt lock (an interrupt
    /// waits for them), and if one fails the ones already in place are removed again.
    pub fn commit_all(mut files: Vec<PendingFile>) -> Result<()> {
        let mut result = Ok(());
        {
            let mut list = in_flight();
            let mut done: Vec<PathBuf> = vec![];
            for f in files.iter_mut() {
                if let Err(e) = std::fs::rename(&f.tmp, &f.target) {
                    result = Err(anyhow::anyhow!(
                        "cannot move output into place at {}: {e}",
                        f.target.display()
                    ));
                    break;
                }
                f.committed = true;
                list.retain(|p| *p != f.tmp);
                done.push(f.target.clone());
            }
            if result.is_err() {
                for t in &done {
                    let _ = std::fs::remove_file(t);
                }
            }
        }
        drop(files);
        result
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            let mut list = in_flight();
            let _ = std::fs::remove_file(&self.tmp);
            list.retain(|p| *p != self.tmp);
        }
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
        bail!(
            "invalid {what} '{}': expected a plain file name without '/' or '..'",
            name.escape_debug()
        );
    }
    Ok(())
}

/// Opens a regular file for reading. A FIFO, device or directory is refused at once: reading one
/// would block forever or never end (a hashed model, a registry, an input).
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    std::fs::File::open(path)
}
