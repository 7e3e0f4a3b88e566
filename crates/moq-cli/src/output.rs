//! Output files written whole or not at all: the bytes go to a hidden temporary file beside the
//! target (`.moq-*.tmp`), which is renamed over the target once complete. An error, a panic or
//! a signal (SIGINT, SIGTERM, SIGHUP, SIGQUIT) removes the temporary file: no partial file is
//! ever left behind. Only SIGKILL, which no process can catch, can leave one.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use tempfile::NamedTempFile;

/// Temporary files being written, removed by the signal thread before the process exits.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Starts the thread that, on SIGINT, SIGTERM, SIGHUP or SIGQUIT, removes every temporary
/// output file and exits with 128 + the signal's number, as a shell reports a killed command.
pub fn clean_up_on_signals() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
        .context("cannot install the signal handlers")?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            // Taking the lock waits out a rename in progress (see `Output::commit`).
            let pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
            for path in pending.iter() {
                let _ = std::fs::remove_file(path);
            }
            std::process::exit(128 + signal);
        }
    });
    Ok(())
}

/// An output file being written.
pub struct Output {
    path: PathBuf,
    tmp: PathBuf,
    /// `None` once committed.
    writer: Option<BufWriter<NamedTempFile>>,
}

impl Output {
    /// A temporary file in `path`'s folder, to become `path` at [`Output::commit`].
    pub fn create(path: &Path) -> Result<Self> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        let file = tempfile::Builder::new()
            .prefix(".moq-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a file in `{}`", dir.display()))?;
        // Output files are for others to read too (tempfile creates them private).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .with_context(|| format!("cannot write `{}`", path.display()))?;
        }
        let tmp = file.path().to_path_buf();
        pending.push(tmp.clone());
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let path = &self.path;
        self.writer
            .as_mut()
            .context("the output was already committed")?
            .write_all(bytes)
            .with_context(|| format!("cannot write `{}`", path.display()))
    }

    /// Flushes, syncs and renames the file over the target.
    pub fn commit(mut self) -> Result<()> {
        let path = self.path.clone();
        let cannot = || format!("cannot write `{}`", path.display());
        let file = self
            .writer
            .take()
            .context("the output was already committed")?
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(cannot)?;
        file.as_file().sync_all().with_context(cannot)?;
        // Under the lock, so a signal arriving now removes nothing that was renamed.
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        file.persist(&path)
            .map_err(|e| e.error)
            .with_context(cannot)?;
        pending.retain(|p| p != &self.tmp);
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        // `NamedTempFile` removes the file itself when it was not persisted.
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|p| p != &self.tmp);
    }
}

/// Writes `bytes` to `path` whole or not at all.
pub fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut out = Output::create(path)?;
    out.write(bytes)?;
    out.commit()
}
