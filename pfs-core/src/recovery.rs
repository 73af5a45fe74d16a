//! Gramine 1.9's optional recovery ("shadow") file (spec §13): before a flush overwrites
//! tree nodes in place, the previous image of each such node is saved as a record, and
//! the metadata node carries the pending-write flag until the flush completes. After a
//! crash, writing the records back restores the last completed flush.
//!
//! Format: a sequence of 4104-byte records, each a u64 LE physical node number followed
//! by the 4096-byte node image. No header, no authentication (every restored node is
//! authenticated again by the normal open).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::layout::{NODE_SIZE, PhysicalNode};

/// Suffix Gramine appends to a host file's name for its recovery file.
pub const RECOVERY_SUFFIX: &str = ".gramine.recovery";
/// Size of one record: node number (8 bytes) and node image (4096 bytes).
pub const RECORD_SIZE: usize = 8 + NODE_SIZE;

/// The recovery file of one protected file.
pub trait RecoveryJournal: Send {
    /// Replaces the journal's content with `records` (whole 4104-byte records).
    fn replace(&mut self, records: &[u8]) -> io::Result<()>;
    /// Makes the last `replace` durable.
    fn sync(&mut self) -> io::Result<()>;
    /// The journal's content, or `None` when there is no journal.
    fn read_all(&self) -> io::Result<Option<Vec<u8>>>;
    /// Deletes the journal (no error if there is none).
    fn remove(&mut self) -> io::Result<()>;
}

/// Appends one record to `out`.
pub fn encode_record(node: PhysicalNode, image: &[u8; NODE_SIZE], out: &mut Vec<u8>) {
    out.extend_from_slice(&node.0.to_le_bytes());
    out.extend_from_slice(image);
}

/// Why a recovery file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JournalProblem {
    /// The file is empty.
    #[error("the recovery file is empty")]
    Empty,
    /// The length is not a multiple of 4104 bytes.
    #[error("the recovery file is {len} bytes, not a multiple of {RECORD_SIZE}")]
    BadLength {
        /// Its length in bytes.
        len: usize,
    },
    /// A record names a node number no file can have.
    #[error("record {index} names node {node}, beyond any protected file")]
    BadNode {
        /// Index of the record.
        index: usize,
        /// The node number found.
        node: u64,
    },
}

/// Splits a recovery file into (node, image) records, refusing malformed files.
pub fn parse_records(bytes: &[u8]) -> Result<Vec<(PhysicalNode, &[u8; NODE_SIZE])>, JournalProblem> {
    if bytes.is_empty() {
        return Err(JournalProblem::Empty);
    }
    if !bytes.len().is_multiple_of(RECORD_SIZE) {
        return Err(JournalProblem::BadLength { len: bytes.len() });
    }
    let max_node = crate::layout::host_node_count(crate::layout::MAX_PLAINTEXT_SIZE);
    bytes
        .chunks_exact(RECORD_SIZE)
        .enumerate()
        .map(|(index, record)| {
            let (number, image) = record.split_at(8);
            let node = u64::from_le_bytes(number.try_into().expect("BUG: 8-byte slice"));
            if node > max_node {
                return Err(JournalProblem::BadNode { index, node });
            }
            Ok((PhysicalNode(node), image.try_into().expect("BUG: record image size")))
        })
        .collect()
}

/// The recovery file beside a host file: `<host path>.gramine.recovery`.
#[derive(Debug)]
pub struct FileJournal {
    path: PathBuf,
    file: Option<File>,
}

impl FileJournal {
    /// The journal for the host file at `host_path` (nothing is created yet).
    pub fn for_host_file(host_path: &Path) -> Self {
        let mut name = host_path.as_os_str().to_owned();
        name.push(RECOVERY_SUFFIX);
        FileJournal { path: PathBuf::from(name), file: None }
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl RecoveryJournal for FileJournal {
    fn replace(&mut self, records: &[u8]) -> io::Result<()> {
        let file = match self.file.take() {
            Some(file) => file,
            None => {
                use std::os::unix::fs::OpenOptionsExt;
                File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&self.path)?
            }
        };
        file.set_len(0)?;
        use std::os::unix::fs::FileExt;
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
        match File::open(&self.path) {
            Ok(mut file) => {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes)?;
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn remove(&mut self) -> io::Result<()> {
        self.file = None;
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// An in-memory journal; clones share the same bytes (for tests and in-memory stores).
#[derive(Debug, Clone, Default)]
pub struct MemJournal {
    bytes: Arc<Mutex<Option<Vec<u8>>>>,
}

impl MemJournal {
    /// An absent journal.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<u8>>> {
        self.bytes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the journal's content.
    pub fn snapshot(&self) -> Option<Vec<u8>> {
        self.lock().clone()
    }

    /// Replaces the content (for tests that stage a crash).
    pub fn set(&self, bytes: Option<Vec<u8>>) {
        *self.lock() = bytes;
    }
}

impl RecoveryJournal for MemJournal {
    fn replace(&mut self, records: &[u8]) -> io::Result<()> {
        *self.lock() = Some(records.to_vec());
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn read_all(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.lock().clone())
    }
    fn remove(&mut self) -> io::Result<()> {
        *self.lock() = None;
        Ok(())
    }
}

impl<J: RecoveryJournal + ?Sized> RecoveryJournal for Box<J> {
    fn replace(&mut self, records: &[u8]) -> io::Result<()> {
        (**self).replace(records)
    }
    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }
    fn read_all(&self) -> io::Result<Option<Vec<u8>>> {
        (**self).read_all()
    }
    fn remove(&mut self) -> io::Result<()> {
        (**self).remove()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_malformed_files_are_refused() {
        let mut bytes = Vec::new();
        encode_record(PhysicalNode(7), &[0xab; NODE_SIZE], &mut bytes);
        encode_record(PhysicalNode(0), &[0x01; NODE_SIZE], &mut bytes);
        assert_eq!(bytes.len(), 2 * 4104);
        assert_eq!(&bytes[..8], &7u64.to_le_bytes());
        let records = parse_records(&bytes).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].0, PhysicalNode(7));
        assert_eq!(records[1].1[0], 0x01);
        assert_eq!(parse_records(&[]), Err(JournalProblem::Empty));
        assert_eq!(parse_records(&bytes[..4000]), Err(JournalProblem::BadLength { len: 4000 }));
        let mut bad = bytes.clone();
        bad[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(parse_records(&bad), Err(JournalProblem::BadNode { index: 0, .. })));
    }

    #[test]
    fn file_journal_lives_beside_the_host_file() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("data.bin");
        let mut journal = FileJournal::for_host_file(&host);
        assert_eq!(journal.path(), dir.path().join("data.bin.gramine.recovery"));
        assert_eq!(journal.read_all().unwrap(), None);
        journal.replace(&[1; RECORD_SIZE]).unwrap();
        journal.sync().unwrap();
        journal.replace(&[2; RECORD_SIZE]).unwrap();
        assert_eq!(journal.read_all().unwrap(), Some(vec![2; RECORD_SIZE]));
        journal.remove().unwrap();
        assert_eq!(journal.read_all().unwrap(), None);
        journal.remove().unwrap();
    }
}
