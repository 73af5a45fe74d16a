//! Where encrypted nodes live: a small trait with a file and an in-memory implementation.
//!
//! The engine addresses storage only in whole 4096-byte nodes by physical number, so a
//! store never sees plaintext and never needs to know the format.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::layout::{NODE_SIZE, NODE_SIZE_U64, PhysicalNode};

/// Node-granular storage for one protected file.
pub trait NodeStore: Send {
    /// Size of the host file in bytes (may be unaligned if the file was damaged).
    fn byte_len(&self) -> io::Result<u64>;

    /// Reads consecutive nodes starting at `first` into `buf` (a multiple of 4096 bytes).
    /// Returns how many whole nodes were read; fewer than requested means the host file
    /// ended.
    fn read_nodes(&self, first: PhysicalNode, buf: &mut [u8]) -> io::Result<usize>;

    /// Reads consecutive nodes starting at `first`, one into each buffer of `bufs`.
    /// Returns how many whole nodes were read. Stores override this to avoid a bounce
    /// buffer (`preadv` for files).
    fn read_nodes_into(&self, first: PhysicalNode, bufs: &mut [&mut [u8; NODE_SIZE]]) -> io::Result<usize> {
        for (i, buf) in bufs.iter_mut().enumerate() {
            if self.read_nodes(PhysicalNode(first.0 + i as u64), &mut buf[..])? == 0 {
                return Ok(i);
            }
        }
        Ok(bufs.len())
    }

    /// Writes consecutive nodes starting at `first` from `buf` (a multiple of 4096 bytes).
    fn write_nodes(&mut self, first: PhysicalNode, buf: &[u8]) -> io::Result<()>;

    /// Writes consecutive nodes starting at `first`, one from each buffer of `nodes`.
    /// Stores override this to avoid a bounce buffer (`pwritev` for files).
    fn write_nodes_from(&mut self, first: PhysicalNode, nodes: &[&[u8; NODE_SIZE]]) -> io::Result<()> {
        for (i, node) in nodes.iter().enumerate() {
            self.write_nodes(PhysicalNode(first.0 + i as u64), &node[..])?;
        }
        Ok(())
    }

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
    fn read_nodes_into(&self, first: PhysicalNode, bufs: &mut [&mut [u8; NODE_SIZE]]) -> io::Result<usize> {
        (**self).read_nodes_into(first, bufs)
    }
    fn write_nodes(&mut self, first: PhysicalNode, buf: &[u8]) -> io::Result<()> {
        (**self).write_nodes(first, buf)
    }
    fn write_nodes_from(&mut self, first: PhysicalNode, nodes: &[&[u8; NODE_SIZE]]) -> io::Result<()> {
        (**self).write_nodes_from(first, nodes)
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

    /// Fills `buf` from `offset`; `false` if the file ended first.
    fn read_exact_or_eof(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => return Ok(false),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
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

    fn read_nodes_into(&self, first: PhysicalNode, bufs: &mut [&mut [u8; NODE_SIZE]]) -> io::Result<usize> {
        let offset = node_offset(first)?;
        let mut done_nodes = 0;
        while done_nodes < bufs.len() {
            let mut slices: Vec<io::IoSliceMut<'_>> =
                bufs[done_nodes..].iter_mut().map(|b| io::IoSliceMut::new(&mut b[..])).collect();
            let at = offset + (done_nodes * NODE_SIZE) as u64;
            match rustix::io::preadv(&self.file, &mut slices, at) {
                Ok(0) => break,
                Ok(n) if n % NODE_SIZE == 0 => done_nodes += n / NODE_SIZE,
                // A short read inside a node: finish that node with plain reads.
                Ok(n) => {
                    done_nodes += n / NODE_SIZE;
                    let partial = n % NODE_SIZE;
                    let node = &mut bufs[done_nodes];
                    let rest = self.read_exact_or_eof(&mut node[partial..], at + n as u64)?;
                    if !rest {
                        break;
                    }
                    done_nodes += 1;
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(done_nodes)
    }

    fn write_nodes(&mut self, first: PhysicalNode, buf: &[u8]) -> io::Result<()> {
        debug_assert_eq!(buf.len() % NODE_SIZE, 0);
        self.file.write_all_at(buf, node_offset(first)?)
    }

    fn write_nodes_from(&mut self, first: PhysicalNode, nodes: &[&[u8; NODE_SIZE]]) -> io::Result<()> {
        let offset = node_offset(first)?;
        let total = nodes.len() * NODE_SIZE;
        let mut done = 0;
        while done < total {
            let (skip_nodes, skip_bytes) = (done / NODE_SIZE, done % NODE_SIZE);
            let mut slices: Vec<io::IoSlice<'_>> = Vec::with_capacity(nodes.len() - skip_nodes);
            slices.push(io::IoSlice::new(&nodes[skip_nodes][skip_bytes..]));
            slices.extend(nodes[skip_nodes + 1..].iter().map(|n| io::IoSlice::new(&n[..])));
            match rustix::io::pwritev(&self.file, &slices, offset + done as u64) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn set_node_count(&mut self, nodes: u64) -> io::Result<()> {
        let len = node_offset(PhysicalNode(nodes))?;
        // Skip a truncation that changes nothing (`create` on a new, empty file): on ext4,
        // truncating to size 0 marks the file for writeback at close ("auto_da_alloc"), which
        // made the `close` of every newly encrypted file start writing it back on the
        // caller's thread (≈ 9 % of `pfs encrypt`'s main-thread time, `perf record`).
        if self.file.metadata()?.len() == len {
            return Ok(());
        }
        self.file.set_len(len)
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
    bytes: Arc<RwLock<Vec<u8>>>,
}

impl MemStore {
    /// An empty store (a zero-length host file).
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding a copy of `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        MemStore { bytes: Arc::new(RwLock::new(bytes)) }
    }

    /// A copy of the current host bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.read().clone()
    }

    /// Runs `f` on the host bytes, for tests that damage a file in place.
    pub fn with_bytes<R>(&self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        f(&mut self.lock())
    }

    fn lock(&self) -> RwLockWriteGuard<'_, Vec<u8>> {
        self.bytes.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Shared access, so readers of one file on several threads copy at once.
    fn read(&self) -> RwLockReadGuard<'_, Vec<u8>> {
        self.bytes.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl NodeStore for MemStore {
    fn byte_len(&self) -> io::Result<u64> {
        Ok(self.read().len() as u64)
    }

    fn read_nodes(&self, first: PhysicalNode, buf: &mut [u8]) -> io::Result<usize> {
        let bytes = self.read();
        let start = usize::try_from(node_offset(first)?).unwrap_or(usize::MAX);
        if start >= bytes.len() {
            return Ok(0);
        }
        let available = (bytes.len() - start).min(buf.len()) / NODE_SIZE * NODE_SIZE;
        buf[..available].copy_from_slice(&bytes[start..start + available]);
        Ok(available / NODE_SIZE)
    }

    fn read_nodes_into(&self, first: PhysicalNode, bufs: &mut [&mut [u8; NODE_SIZE]]) -> io::Result<usize> {
        let bytes = self.read();
        let mut at = usize::try_from(node_offset(first)?).unwrap_or(usize::MAX);
        for (i, buf) in bufs.iter_mut().enumerate() {
            match at.checked_add(NODE_SIZE).and_then(|end| bytes.get(at..end)) {
                Some(node) => buf.copy_from_slice(node),
                None => return Ok(i),
            }
            at += NODE_SIZE;
        }
        Ok(bufs.len())
    }

    fn write_nodes(&mut self, first: PhysicalNode, buf: &[u8]) -> io::Result<()> {
        let mut bytes = self.lock();
        let start = usize::try_from(node_offset(first)?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large for memory"))?;
        let end = start + buf.len();
        if bytes.len() < start {
            bytes.resize(start, 0);
        }
        // Overwrite what exists, append the rest (no zero fill of the appended part).
        let overlap = bytes.len().min(end) - start;
        bytes[start..start + overlap].copy_from_slice(&buf[..overlap]);
        bytes.extend_from_slice(&buf[overlap..]);
        Ok(())
    }

    fn write_nodes_from(&mut self, first: PhysicalNode, nodes: &[&[u8; NODE_SIZE]]) -> io::Result<()> {
        let mut bytes = self.lock();
        let start = usize::try_from(node_offset(first)?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large for memory"))?;
        if bytes.len() < start {
            bytes.resize(start, 0);
        }
        for (i, node) in nodes.iter().enumerate() {
            let at = start + i * NODE_SIZE;
            if at < bytes.len() {
                let overlap = (bytes.len() - at).min(NODE_SIZE);
                bytes[at..at + overlap].copy_from_slice(&node[..overlap]);
                bytes.extend_from_slice(&node[overlap..]);
            } else {
                bytes.extend_from_slice(&node[..]);
            }
        }
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
