//! Gramine's recovery file (spec §13) for a file of the mount, kept beside the host file
//! and reached only through the backing directory's fd, like every other host access.
//!
//! `pfs_core::FileJournal` names its file by an absolute path, which breaks when the mount
//! sits over its own backing directory and cannot follow a rename. Here the journal knows
//! its host file by a relative name shared with the open file ([`JournalName`]), which
//! rename updates and unlink clears.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard};

use pfs_core::RecoveryJournal;
use pfs_core::recovery::RECORD_SIZE;

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

/// The recovery file of one protected file of the mount.
#[derive(Debug)]
pub struct BackingJournal {
    backing: Arc<Backing>,
    name: JournalName,
    /// Node capacity of the file's cache: how many records a flush can write beyond the
    /// host file's nodes (bounds what `read_all` accepts).
    cache_nodes: usize,
    /// The recovery file, open once a flush has written it.
    file: Option<File>,
}

impl BackingJournal {
    /// The journal of the host file named by `name`, for a file with a cache of
    /// `cache_nodes` nodes. Nothing is created until a flush needs it.
    pub fn new(backing: Arc<Backing>, name: JournalName, cache_nodes: usize) -> Self {
        BackingJournal { backing, name, cache_nodes, file: None }
    }
}

fn errno_to_io(e: fuser::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.code())
}

fn show(rel: &[u8]) -> String {
    String::from_utf8_lossy(rel).into_owned()
}

impl RecoveryJournal for BackingJournal {
    fn replace(&mut self, records: &[u8]) -> io::Result<()> {
        // The name lock is held across the create so that an unlink that detaches the
        // name either precedes it (nothing is created) or follows it (and removes it).
        let name = self.name.lock();
        let Some(rel) = name.as_ref() else {
            self.file = None;
            return Ok(());
        };
        let file = match self.file.take() {
            Some(file) => file,
            None => self.backing.open_recovery_file(rel).map_err(|e| {
                io::Error::new(
                    errno_to_io(e).kind(),
                    format!("creating the recovery file {}: errno {}", show(&recovery_name(rel)), e.code()),
                )
            })?,
        };
        drop(name);
        file.set_len(0)?;
        file.write_all_at(records, 0)?;
        self.file = Some(file);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        match &self.file {
            Some(file) => file.sync_data(),
            None => Ok(()),
        }
    }

    fn read_all(&self) -> io::Result<Option<Vec<u8>>> {
        let Some(rel) = self.name.lock().clone() else { return Ok(None) };
        let journal = recovery_name(&rel);
        let mut file = match self.backing.open_file(&journal, false) {
            Ok(file) => file,
            Err(e) if e.code() == libc::ENOENT => return Ok(None),
            Err(e) => return Err(errno_to_io(e)),
        };
        // A genuine journal holds at most one record per node of the host file plus one
        // per cached node (appended nodes) and the root and metadata; refuse to load more
        // (the file is unauthenticated and could be any size).
        let host_nodes = self.backing.stat(&rel).map(|st| st.st_size.max(0) as u64 / 4096).unwrap_or(0);
        let limit = (host_nodes + self.cache_nodes as u64 + 2).saturating_mul(RECORD_SIZE as u64);
        let len = file.metadata()?.len();
        if len > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "recovery file {} is {len} bytes, more than a file of {host_nodes} nodes can need \
                     ({limit}); remove it to open the file in its last flushed state",
                    show(&journal)
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.by_ref().take(limit).read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    fn remove(&mut self) -> io::Result<()> {
        self.file = None;
        let Some(rel) = self.name.lock().clone() else { return Ok(()) };
        match self.backing.unlink(&recovery_name(&rel), false) {
            Err(e) if e.code() != libc::ENOENT => Err(errno_to_io(e)),
            _ => Ok(()),
        }
    }
}
