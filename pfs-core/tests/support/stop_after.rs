//! Fault-injecting node stores shared by the crash tests of several crates (included with
//! `#[path]`): pfs-core's recovery tests, `pfs check --repair`'s tests and the mount's
//! recovery test.
#![allow(dead_code)]

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

/// Wraps a store so that its first `left` write calls land whole, the next one lands only
/// its first `keep` bytes (a torn write: the rest of its range keeps its old bytes), and
/// every later one fails, writing nothing.
pub struct TearAfter<S> {
    /// The store written through until the crash.
    pub inner: S,
    /// Whole write calls still allowed before the torn one.
    pub left: usize,
    /// Bytes of the torn write that land.
    pub keep: usize,
    /// Set once the torn write has happened.
    pub torn: bool,
}

impl<S: NodeStore> TearAfter<S> {
    fn tear(&mut self, first: PhysicalNode, buf: &[u8]) -> io::Result<()> {
        if self.torn {
            return Err(io::Error::other("injected crash: no more writes"));
        }
        if self.left > 0 {
            self.left -= 1;
            return self.inner.write_nodes(first, buf);
        }
        self.torn = true;
        // Whole nodes of the old content, with the torn prefix of the new bytes on top.
        let mut landed = vec![0u8; buf.len()];
        let read = self.inner.read_nodes(first, &mut landed)?;
        landed[read * NODE_SIZE..].fill(0);
        let keep = self.keep.min(buf.len());
        landed[..keep].copy_from_slice(&buf[..keep]);
        self.inner.write_nodes(first, &landed)?;
        Err(io::Error::other("injected crash: write torn"))
    }
}

impl<S: NodeStore> NodeStore for TearAfter<S> {
    fn byte_len(&self) -> io::Result<u64> {
        self.inner.byte_len()
    }
    fn read_nodes(&self, first: PhysicalNode, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_nodes(first, buf)
    }
    fn write_nodes(&mut self, first: PhysicalNode, buf: &[u8]) -> io::Result<()> {
        self.tear(first, buf)
    }
    fn write_nodes_from(&mut self, first: PhysicalNode, nodes: &[&[u8; NODE_SIZE]]) -> io::Result<()> {
        let buf: Vec<u8> = nodes.iter().flat_map(|n| n.iter().copied()).collect();
        self.tear(first, &buf)
    }
    fn set_node_count(&mut self, nodes: u64) -> io::Result<()> {
        self.inner.set_node_count(nodes)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }
}
