//! The mount's adapter to pfs-core's recovery file ([`pfs_core::Journal`]): a
//! [`JournalOpener`] that reaches the recovery file of one open file through the backing
//! directory's fd, like every other host access. The format, its bounds and the rule for
//! applying it are pfs-core's; this module only names the file.
//!
//! The recovery file is known by the host file's relative path, shared with the open file
//! ([`JournalName`]), which rename updates and unlink clears: a path-based opener would
//! break when the mount sits over its own backing directory, and could not follow a rename.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use pfs_core::Journal;
use pfs_core::recovery::{JournalFile, JournalOpener};

use crate::backing::{Backing, Rel, recovery_name};

/// Where the recovery file of one open file lives: the host file's relative path, or
/// `None` once the host file has been unlinked or replaced (then its journal is no
/// longer written: nothing can reopen that file).
#[derive(Debug, Clone, Default)]
pub struct JournalName(Arc<Mutex<Option<Rel>>>);

impl JournalName {
    /// The journal of the host file at `rel`.
    pub fn new(rel: &[u8]) -> Self {
        JournalName(Arc::new(Mutex::new(Some(rel.to_vec()))))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Rel>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The host file was renamed to `rel` (its recovery file moved along with it).
    pub fn moved_to(&self, rel: &[u8]) {
        *self.lock() = Some(rel.to_vec());
    }

    /// The host file is gone: stop journaling.
    pub fn detach(&self) {
        *self.lock() = None;
    }
}

/// The recovery file of the host file named by `name`, reached through `backing`.
pub fn backing_journal(backing: Arc<Backing>, name: JournalName) -> Journal {
    Journal::new(BackingOpener { backing, name })
}

/// Opens, creates and removes one recovery file through the backing directory's fd.
#[derive(Debug)]
struct BackingOpener {
    backing: Arc<Backing>,
    name: JournalName,
}

fn errno_to_io(e: fuser::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.code())
}

impl JournalOpener for BackingOpener {
    fn open(&self) -> io::Result<Option<Box<dyn JournalFile>>> {
        let Some(rel) = self.name.lock().clone() else { return Ok(None) };
        match self.backing.open_recovery_file_for_reading(&rel) {
            Ok(file) => Ok(Some(Box::new(file))),
            Err(e) if e == fuser::Errno::ENOENT => Ok(None),
            Err(e) => Err(errno_to_io(e)),
        }
    }

    fn create(&self) -> io::Result<Option<Box<dyn JournalFile>>> {
        // The name lock is held across the create so that an unlink that detaches the
        // name either precedes it (nothing is created) or follows it (and removes it).
        let name = self.name.lock();
        let Some(rel) = name.as_ref() else { return Ok(None) };
        let file = self.backing.open_recovery_file(rel).map_err(errno_to_io)?;
        Ok(Some(Box::new(file)))
    }

    fn remove(&self) -> io::Result<()> {
        let Some(rel) = self.name.lock().clone() else { return Ok(()) };
        match self.backing.unlink(&recovery_name(&rel), false) {
            Err(e) if e != fuser::Errno::ENOENT => Err(errno_to_io(e)),
            _ => Ok(()),
        }
    }

    fn attached(&self) -> bool {
        self.name.lock().is_some()
    }

    fn describe(&self) -> String {
        match self.name.lock().as_ref() {
            Some(rel) => String::from_utf8_lossy(&recovery_name(rel)).into_owned(),
            None => "(the recovery file of an unlinked file)".to_string(),
        }
    }
}
