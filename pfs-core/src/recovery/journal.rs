//! The recovery file's I/O: [`Journal`] writes, reads and removes it through a
//! [`JournalOpener`], the small seam that says how to reach the one file (a path, a
//! directory fd and a name, memory). Reads are bounded by the host file's size and go
//! record by record, so a hostile recovery file of any size costs no memory.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{JournalProblem, MAX_RECORDS_PAST_END, RECORD_SIZE, RECOVERY_SUFFIX, recovery_file_name};
use crate::error::{Error, Result};
use crate::layout::{MAX_PLAINTEXT_SIZE, METADATA_NODE, NODE_SIZE, PhysicalNode, host_node_count};
use crate::storage::NodeStore;

/// Records read per call while scanning or applying a recovery file (64 KiB).
const RECORDS_PER_READ: usize = 16;

/// An open recovery file: positioned reads and writes, as `std::fs::File` gives them.
pub trait JournalFile: Send {
    /// Its length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Fills `buf` from byte `offset`; an error if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at byte `offset`.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends it to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes its content durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
}

impl JournalFile for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// How to reach the recovery file of one protected file.
pub trait JournalOpener: Send + fmt::Debug {
    /// Opens the existing recovery file for reading; `Ok(None)` if there is none. Must
    /// refuse anything but a regular file (and never block on a FIFO).
    fn open(&self) -> io::Result<Option<Box<dyn JournalFile>>>;
    /// Opens the recovery file for writing, creating it readable by the owner only.
    /// `Ok(None)` when the protected file has no name any more (unlinked while open):
    /// nothing can reopen it, so its flushes go on without a recovery file.
    fn create(&self) -> io::Result<Option<Box<dyn JournalFile>>>;
    /// Deletes the recovery file; no error if there is none.
    fn remove(&self) -> io::Result<()>;
    /// Whether the protected file still has a name (see [`create`](Self::create)).
    fn attached(&self) -> bool {
        true
    }
    /// The recovery file's name, for messages.
    fn describe(&self) -> String;
}

/// The recovery file of one protected file (spec §13), reached through its opener.
pub struct Journal {
    opener: Box<dyn JournalOpener>,
    /// The file as opened by the first write of this session, reused by later writes.
    writer: Option<Box<dyn JournalFile>>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal").field("opener", &self.opener).finish_non_exhaustive()
    }
}

/// What a scan found in a well-formed recovery file.
#[derive(Clone)]
pub struct Scan {
    len: u64,
    records: u64,
    /// The last record of node 0: the one a recovery leaves in place.
    metadata: Option<Box<[u8; NODE_SIZE]>>,
}

impl fmt::Debug for Scan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scan")
            .field("records", &self.records)
            .field("metadata_record", &self.metadata.is_some())
            .finish()
    }
}

impl Scan {
    /// Number of records.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The image of node 0 that applying the file would leave (its last record of node 0).
    pub fn metadata_record(&self) -> Option<&[u8; NODE_SIZE]> {
        self.metadata.as_deref()
    }
}

/// Adds the recovery file's name to an I/O error.
fn context(what: &str, name: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} the recovery file {name}: {e}"))
}

impl Journal {
    /// The recovery file reached through `opener`.
    pub fn new(opener: impl JournalOpener + 'static) -> Self {
        Journal { opener: Box::new(opener), writer: None }
    }

    /// The recovery file beside the host file at `host_path` (see [`PathOpener`]).
    pub fn beside(host_path: &Path) -> Self {
        Self::new(PathOpener::for_host_file(host_path))
    }

    /// The recovery file's name, for messages.
    pub fn describe(&self) -> String {
        self.opener.describe()
    }

    /// Replaces the content with `records` (whole 4104-byte records; empty to empty it).
    pub fn replace(&mut self, records: &[u8]) -> io::Result<()> {
        if !self.opener.attached() {
            self.writer = None;
            return Ok(());
        }
        if self.writer.is_none() {
            match self.opener.create().map_err(|e| context("creating", &self.describe(), e))? {
                Some(file) => self.writer = Some(file),
                None => return Ok(()),
            }
        }
        let name = self.describe();
        let file = self.writer.as_mut().expect("BUG: writer opened above");
        file.set_len(0).map_err(|e| context("truncating", &name, e))?;
        file.write_all_at(records, 0).map_err(|e| context("writing", &name, e))
    }

    /// Makes the last [`replace`](Self::replace) durable.
    pub fn sync(&mut self) -> io::Result<()> {
        let name = self.describe();
        match &mut self.writer {
            Some(file) => file.sync_data().map_err(|e| context("syncing", &name, e)),
            None => Ok(()),
        }
    }

    /// Deletes the recovery file (no error if there is none).
    pub fn remove(&mut self) -> io::Result<()> {
        self.writer = None;
        self.opener.remove().map_err(|e| context("removing", &self.describe(), e))
    }

    /// Whether a recovery file exists.
    pub fn exists(&self) -> io::Result<bool> {
        Ok(self.opener.open().map_err(|e| context("opening", &self.describe(), e))?.is_some())
    }

    /// Reads the recovery file of a host file of `host_nodes` nodes record by record and
    /// checks its form: present, non-empty, whole records, no longer than such a host file
    /// can need (one record per node plus [`MAX_RECORDS_PAST_END`]; a longer file is not
    /// read at all), every node number inside the largest file. The outer error is an I/O
    /// failure, the inner one why the file is unusable.
    pub fn scan(&self, host_nodes: u64) -> io::Result<std::result::Result<Scan, JournalProblem>> {
        let name = self.describe();
        let Some(file) = self.opener.open().map_err(|e| context("opening", &name, e))? else {
            return Ok(Err(JournalProblem::Absent));
        };
        let len = file.size().map_err(|e| context("reading", &name, e))?;
        let limit = host_nodes.saturating_add(MAX_RECORDS_PAST_END).saturating_mul(RECORD_SIZE as u64);
        if len == 0 {
            return Ok(Err(JournalProblem::Empty));
        }
        if !len.is_multiple_of(RECORD_SIZE as u64) {
            return Ok(Err(JournalProblem::BadLength { len }));
        }
        if len > limit {
            return Ok(Err(JournalProblem::TooLarge { len, host_nodes, limit }));
        }
        let max_node = host_node_count(MAX_PLAINTEXT_SIZE);
        let mut metadata: Option<Box<[u8; NODE_SIZE]>> = None;
        let mut bad = None;
        let records = len / RECORD_SIZE as u64;
        for_each_record(file.as_ref(), records, |index, node, image| {
            if node.0 > max_node {
                bad = Some(JournalProblem::BadNode { index, node: node.0 });
                return false;
            }
            if node == METADATA_NODE {
                metadata.get_or_insert_with(|| Box::new([0; NODE_SIZE])).copy_from_slice(image);
            }
            true
        })
        .map_err(|e| context("reading", &name, e))?;
        if let Some(problem) = bad {
            return Ok(Err(problem));
        }
        Ok(Ok(Scan { len, records, metadata }))
    }

    /// Writes the records of the recovery file `scan` examined back into `store`, syncs
    /// it, then empties the recovery file and syncs that. Returns how many records were
    /// written. Records for nodes at or past the host file's end (`host_nodes`) are
    /// skipped: the state being restored references none of them (Gramine records zero
    /// images for nodes it was about to append), and a hostile record can never make the
    /// host file grow.
    pub(crate) fn apply<S: NodeStore>(
        &mut self,
        store: &mut S,
        host_nodes: u64,
        scan: &Scan,
    ) -> Result<usize> {
        let name = self.describe();
        let io = |what: &str, e: io::Error| Error::io(None, context(what, &name, e));
        let Some(file) = self.opener.open().map_err(|e| io("opening", e))? else {
            return Err(io("reading", io::Error::new(io::ErrorKind::NotFound, "it vanished")));
        };
        if file.size().map_err(|e| io("reading", e))? != scan.len {
            return Err(io("reading", io::Error::other("it changed while it was being applied")));
        }
        let mut restored = 0;
        let mut failed = None;
        for_each_record(file.as_ref(), scan.records, |_, node, image| {
            if node.0 >= host_nodes {
                return true;
            }
            match store.write_nodes(node, image) {
                Ok(()) => {
                    restored += 1;
                    true
                }
                Err(e) => {
                    failed = Some(Error::io(Some(node), e));
                    false
                }
            }
        })
        .map_err(|e| io("reading", e))?;
        if let Some(error) = failed {
            return Err(error);
        }
        store.sync().map_err(|e| Error::io(None, e))?;
        // Applied and durable: empty the recovery file. Left usable, a later torn write of
        // node 0 could never make it pass the rule again (node 0 is rewritten under a fresh
        // nonce), but an empty file also reads for certain as "nothing to recover".
        self.replace(&[]).map_err(|e| Error::io(None, e))?;
        self.sync().map_err(|e| Error::io(None, e))?;
        Ok(restored)
    }
}

/// Calls `each(index, node, image)` for the first `records` records of `file`, in order,
/// until it returns false; reads [`RECORDS_PER_READ`] records per call.
fn for_each_record(
    file: &dyn JournalFile,
    records: u64,
    mut each: impl FnMut(u64, PhysicalNode, &[u8; NODE_SIZE]) -> bool,
) -> io::Result<()> {
    let mut buf = vec![0u8; RECORDS_PER_READ * RECORD_SIZE];
    let mut index = 0u64;
    while index < records {
        let count = (records - index).min(RECORDS_PER_READ as u64) as usize;
        let chunk = &mut buf[..count * RECORD_SIZE];
        file.read_exact_at(chunk, index * RECORD_SIZE as u64)?;
        for record in chunk.chunks_exact(RECORD_SIZE) {
            let (number, image) = record.split_at(8);
            let node = PhysicalNode(u64::from_le_bytes(number.try_into().expect("BUG: 8-byte slice")));
            if !each(index, node, image.try_into().expect("BUG: record image size")) {
                return Ok(());
            }
            index += 1;
        }
    }
    Ok(())
}

/// The recovery file at a path: by default beside the host file, named by
/// [`recovery_file_name`](super::recovery_file_name).
#[derive(Debug, Clone)]
pub struct PathOpener {
    path: PathBuf,
}

impl PathOpener {
    /// The recovery file of the host file at `host_path`, in the same directory.
    pub fn for_host_file(host_path: &Path) -> Self {
        use std::os::unix::ffi::OsStrExt;
        let path = match host_path.file_name() {
            Some(name) => {
                host_path.with_file_name(std::ffi::OsStr::from_bytes(&recovery_file_name(name.as_bytes())))
            }
            // No final component ("/", ".."): Gramine's rule on the whole path.
            None => {
                let mut whole = host_path.as_os_str().to_owned();
                whole.push(RECOVERY_SUFFIX);
                PathBuf::from(whole)
            }
        };
        PathOpener { path }
    }

    /// Where the recovery file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl JournalOpener for PathOpener {
    fn open(&self) -> io::Result<Option<Box<dyn JournalFile>>> {
        use std::os::unix::fs::OpenOptionsExt;
        // No following a symlink planted in its place, no blocking on a FIFO.
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
        match File::options().read(true).custom_flags(flags.bits() as i32).open(&self.path) {
            Ok(file) => {
                if !file.metadata()?.is_file() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
                }
                Ok(Some(Box::new(file)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create(&self) -> io::Result<Option<Box<dyn JournalFile>>> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&self.path)?;
        Ok(Some(Box::new(file)))
    }

    fn remove(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

type MemInode = Arc<Mutex<Vec<u8>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A recovery file in memory, for tests and in-memory stores. Clones share the file; a
/// removed file stays writable through a handle opened before, like an unlinked one.
#[derive(Debug, Clone, Default)]
pub struct MemJournal {
    entry: Arc<Mutex<Option<MemInode>>>,
}

impl MemJournal {
    /// An absent recovery file.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the content (`None` when there is no file).
    pub fn snapshot(&self) -> Option<Vec<u8>> {
        lock(&self.entry).as_ref().map(|inode| lock(inode).clone())
    }

    /// Replaces the file (`None` removes it), as a test staging a crash does.
    pub fn set(&self, bytes: Option<Vec<u8>>) {
        *lock(&self.entry) = bytes.map(|b| Arc::new(Mutex::new(b)));
    }
}

struct MemFile(MemInode);

impl JournalFile for MemFile {
    fn size(&self) -> io::Result<u64> {
        Ok(lock(&self.0).len() as u64)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let bytes = lock(&self.0);
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match bytes.get(start..).and_then(|rest| rest.get(..buf.len())) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
        }
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut bytes = lock(&self.0);
        let start = usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let end = start + buf.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[start..end].copy_from_slice(buf);
        Ok(())
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        lock(&self.0).resize(len, 0);
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl JournalOpener for MemJournal {
    fn open(&self) -> io::Result<Option<Box<dyn JournalFile>>> {
        Ok(lock(&self.entry).clone().map(|inode| Box::new(MemFile(inode)) as Box<dyn JournalFile>))
    }
    fn create(&self) -> io::Result<Option<Box<dyn JournalFile>>> {
        let inode = lock(&self.entry).get_or_insert_with(MemInode::default).clone();
        Ok(Some(Box::new(MemFile(inode))))
    }
    fn remove(&self) -> io::Result<()> {
        *lock(&self.entry) = None;
        Ok(())
    }
    fn describe(&self) -> String {
        "(in-memory recovery file)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode_record;
    use super::*;

    fn two_records() -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_record(PhysicalNode(7), &[0xab; NODE_SIZE], &mut bytes);
        encode_record(METADATA_NODE, &[0x01; NODE_SIZE], &mut bytes);
        bytes
    }

    #[test]
    fn scan_reads_whole_records_and_refuses_malformed_files() {
        let mem = MemJournal::new();
        let journal = Journal::new(mem.clone());
        assert_eq!(journal.scan(10).unwrap().unwrap_err(), JournalProblem::Absent);
        mem.set(Some(Vec::new()));
        assert_eq!(journal.scan(10).unwrap().unwrap_err(), JournalProblem::Empty);
        let bytes = two_records();
        mem.set(Some(bytes[..4000].to_vec()));
        assert_eq!(journal.scan(10).unwrap().unwrap_err(), JournalProblem::BadLength { len: 4000 });
        mem.set(Some(bytes.clone()));
        let scan = journal.scan(10).unwrap().unwrap();
        assert_eq!(scan.records(), 2);
        assert_eq!(scan.metadata_record().unwrap()[0], 0x01);
        let mut bad = bytes.clone();
        bad[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        mem.set(Some(bad));
        assert!(matches!(journal.scan(10).unwrap(), Err(JournalProblem::BadNode { index: 0, .. })));
    }

    #[test]
    fn scan_refuses_a_file_longer_than_the_host_file_can_need() {
        let mem = MemJournal::new();
        let journal = Journal::new(mem.clone());
        let host_nodes = 3;
        let fits = (host_nodes + MAX_RECORDS_PAST_END) as usize;
        let mut bytes = Vec::new();
        for _ in 0..fits {
            encode_record(PhysicalNode(2), &[0; NODE_SIZE], &mut bytes);
        }
        mem.set(Some(bytes.clone()));
        assert_eq!(journal.scan(host_nodes).unwrap().unwrap().records(), fits as u64);
        encode_record(PhysicalNode(2), &[0; NODE_SIZE], &mut bytes);
        mem.set(Some(bytes));
        assert!(matches!(journal.scan(host_nodes).unwrap(), Err(JournalProblem::TooLarge { .. })));
    }

    #[test]
    fn replace_and_remove_through_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("data.bin");
        let opener = PathOpener::for_host_file(&host);
        assert_eq!(opener.path(), dir.path().join("data.bin.gramine.recovery"));
        let mut journal = Journal::new(opener.clone());
        assert!(!journal.exists().unwrap());
        journal.replace(&[1; RECORD_SIZE]).unwrap();
        journal.sync().unwrap();
        journal.replace(&two_records()).unwrap();
        assert_eq!(std::fs::read(opener.path()).unwrap(), two_records());
        assert_eq!(journal.scan(10).unwrap().unwrap().records(), 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(opener.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "node images are readable by the owner only");
        journal.remove().unwrap();
        assert!(!journal.exists().unwrap());
        journal.remove().unwrap();
    }

    #[test]
    fn a_path_opener_refuses_symlinks_and_fifos() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("f");
        let opener = PathOpener::for_host_file(&host);
        let target = dir.path().join("victim");
        std::fs::write(&target, b"keep me").unwrap();
        std::os::unix::fs::symlink(&target, opener.path()).unwrap();
        assert!(Journal::new(opener.clone()).scan(1).is_err());
        assert!(Journal::new(opener.clone()).replace(&[]).is_err(), "followed a planted symlink");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        std::fs::remove_file(opener.path()).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            opener.path(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            0,
        )
        .unwrap();
        // Returns (an error) instead of waiting for a writer.
        let err = Journal::new(opener).scan(1).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_removed_memory_file_stays_writable_through_an_open_handle() {
        let mem = MemJournal::new();
        let mut journal = Journal::new(mem.clone());
        journal.replace(&two_records()).unwrap();
        assert_eq!(mem.snapshot(), Some(two_records()));
        mem.set(None);
        journal.replace(&[]).unwrap();
        assert_eq!(mem.snapshot(), None, "writing an unlinked file must not bring it back");
    }
}
