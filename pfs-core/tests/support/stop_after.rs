//! A fault-injecting node store shared by the crash tests of several crates (included with
//! `#[path]`): pfs-core's recovery tests, `pfs check --repair`'s tests and the mount's
//! recovery test.

use std::io;

use pfs_core::NodeStore;
use pfs_core::layout::{NODE_SIZE, PhysicalNode};

/// Wraps a store so that its write calls fail, writing nothing, after the first `left`
/// ones: what was written before the "crash" is in `inner`, nothing after it. Each call
/// counts once, whether it writes one node or a run of them, as one system call would.
pub struct StopAfter<S> {
    /// The store written through until the crash.
    pub inner: S,
    /// Write calls still allowed.
    pub left: usize,
}

impl<S> StopAfter<S> {
    fn take_one(&mut self) -> io::Result<()> {
        if self.left == 0 {
            return Err(io::Error::other("injected crash: no more writes"));
        }
        self.left -= 1;
        Ok(())
    }
}

impl<S: NodeStore> NodeStore for StopAfter<S> {
    fn byte_len(&self) -> io::Result<u64> {
        self.inner.byte_len()
    }
    fn read_nodes(&self, first: PhysicalNode, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_nodes(first, buf)
    }
    fn write_nodes(&mut self, first: PhysicalNode, buf: &[u8]) -> io::Result<()> {
        self.take_one()?;
        self.inner.write_nodes(first, buf)
    }
    fn write_nodes_from(&mut self, first: PhysicalNode, nodes: &[&[u8; NODE_SIZE]]) -> io::Result<()> {
        self.take_one()?;
        self.inner.write_nodes_from(first, nodes)
    }
    fn set_node_count(&mut self, nodes: u64) -> io::Result<()> {
        self.inner.set_node_count(nodes)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }
}
