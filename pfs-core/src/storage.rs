//! Where encrypted nodes live: a small trait with a file and an in-memory implementation.
//!
//! The engine addresses storage only in whole 4096-byte nodes by physical number, so a
//! store never sees plaintext and never needs to know the format.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::Mutex;

use crate::layout::{NODE_SIZE, NODE_SIZE_U64, PhysicalNode};

/// Node-granular storage for one protected file.
pub trait NodeStore: Send {
    /// Size of the host file in bytes (may be unaligned if the file was damaged).
    fn byte_len(&self) -> io::Result<u64>;

    /// Reads consecutive nodes starting at `first` into `buf` (a multiple of 4096 bytes).
    /// Returns how many whole nodes were read; fewer than requested means the host file
    /// ended.
    fn read_nodes(&self, first: PhysicalNode, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes consecutive nodes starting at `first` from `buf` (a multiple of 4096 bytes).
    fn write_nodes(&mut self, first: PhysicalNode, buf: &[u8]) -> io::Result<()>;

    /// Truncates or extends the host file to exactly `nodes` nodes.
    fn set_node_count(&mut self, nodes: u64) -> io::Result<()>;

    /// Makes every completed write durable (fsync for files).
    fn sync(&mut self) -> io::Result<()>;
}

impl<S: NodeStore + ?Sized> NodeStore for Box<S> {
    fn byte_len(&self) -> io::Result<u64> {
        (**self).byte_len()
    }
    fn read_nodes(&self, first: PhysicalNode, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_nodes(first, buf)
    }
    fn write_nodes(&mut self, first: PhysicalNode, buf: &[u8]) -> io::Result<()> {
        (**self).write_nodes(first, buf)
    }
    fn set_node_count(&mut self, nodes: u64) -> io::Result<()> {
        (**self).set_node_count(nodes)
    }
    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }
}

fn node_offset(node: PhysicalNode) -> io::Result<u64> {
    node.0
        .checked_mul(NODE_SIZE_U64)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "node number overflows a file offset"))
}

/// A host file accessed with positional reads and writes (`pread`/`pwrite`).
#[derive(Debug)]
pub struct FileStore {
    file: File,
}

impl FileStore {
    /// Uses an open file; it must be readable, and writable for write access.
    pub fn new(file: File) -> Self {
        FileStore { file }
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Gives the file back.
    pub fn into_inner(self) -> File {
        self.file
    }
}

impl NodeStore for FileStore {
    fn byte_len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_nodes(&self, first: PhysicalNode, buf: &mut [u8]) -> io::Result<usize> {
        debug_assert_eq!(buf.len() % NODE_SIZE, 0);
        let offset = node_offset(first)?;
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done / NODE_SIZE)
    }

    fn write_nodes(&mut self, first: PhysicalNode, buf: &[u8]) -> io::Result<()> {
        debug_assert_eq!(buf.len() % NODE_SIZE, 0);
        self.file.write_all_at(buf, node_offset(first)?)
    }

    fn set_node_count(&mut self, nodes: u64) -> io::Result<()> {
        self.file.set_len(node_offset(PhysicalNode(nodes))?)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// An in-memory host file, for tests, benchmarks and callers that keep ciphertext in RAM.
///
/// Clones share the same bytes, so a test can keep a handle to inspect or damage the
/// "disk" while a `ProtectedFile` owns another.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl MemStore {
    /// An empty store (a zero-length host file).
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding a copy of `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        MemStore { bytes: Arc::new(Mutex::new(bytes)) }
    }

    /// A copy of the current host bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.lock().clone()
    }

    /// Runs `f` on the host bytes, for tests that damage a file in place.
    pub fn with_bytes<R>(&self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        f(&mut self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl NodeStore for MemStore {
    fn byte_len(&self) -> io::Result<u64> {
        Ok(self.lock().len() as u64)
    }

    fn read_nodes(&self, first: PhysicalNode, buf: &mut [u8]) -> io::Result<usize> {
        let bytes = self.lock();
        let start = usize::try_from(node_offset(first)?).unwrap_or(usize::MAX);
        if start >= bytes.len() {
            return Ok(0);
        }
        let available = (bytes.len() - start).min(buf.len()) / NODE_SIZE * NODE_SIZE;
        buf[..available].copy_from_slice(&bytes[start..start + available]);
        Ok(available / NODE_SIZE)
    }

    fn write_nodes(&mut self, first: PhysicalNode, buf: &[u8]) -> io::Result<()> {
        let mut bytes = self.lock();
        let start = usize::try_from(node_offset(first)?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large for memory"))?;
        let end = start + buf.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn set_node_count(&mut self, nodes: u64) -> io::Result<()> {
        let len = usize::try_from(node_offset(PhysicalNode(nodes))?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large for memory"))?;
        self.lock().resize(len, 0);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}
