//! Output files that appear complete or not at all: written to a hidden temporary file in
//! the destination directory, then renamed over the destination. Dropping an
//! [`AtomicOutput`] without [`commit`](AtomicOutput::commit) deletes the temporary file, so
//! a failed `encrypt` or `decrypt` leaves nothing behind.

use std::fs::{self, File, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::NamedTempFile;

/// A destination file being written through a temporary file beside it.
pub struct AtomicOutput {
    temp: NamedTempFile,
    dest: PathBuf,
}

impl AtomicOutput {
    /// Creates a temporary file (mode 0600) in the directory of `dest`, creating that
    /// directory first if needed.
    pub fn create(dest: &Path) -> Result<Self> {
        let dir = match dest.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".pfs-tmp")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        Ok(AtomicOutput { temp, dest: dest.to_path_buf() })
    }

    /// The temporary file, for writing.
    pub fn file(&self) -> &File {
        self.temp.as_file()
    }

    /// A second handle to the temporary file (e.g. to give to a `FileStore`).
    pub fn clone_file(&self) -> Result<File> {
        self.temp.as_file().try_clone().context("cannot duplicate the temporary file handle")
    }

    /// Sets the permission bits, optionally fsyncs, and renames the temporary file over
    /// the destination (then fsyncs the directory when `sync`).
    pub fn commit(self, mode: Option<u32>, sync: bool) -> Result<()> {
        if let Some(mode) = mode {
            self.temp
                .as_file()
                .set_permissions(Permissions::from_mode(mode & 0o7777))
                .with_context(|| format!("cannot set the mode of the output for {}", self.dest.display()))?;
        }
        if sync {
            self.temp.as_file().sync_all().with_context(|| format!("cannot sync {}", self.dest.display()))?;
        }
        let dest = self.dest;
        self.temp.persist(&dest).map_err(|e| {
            anyhow::Error::new(e.error)
                .context(format!("cannot rename the output into place at {}", dest.display()))
        })?;
        if sync {
            let dir = match dest.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("cannot sync directory {}", dir.display()))?;
        }
        Ok(())
    }
}
