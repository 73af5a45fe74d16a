//! Decrypted-node buffers and the per-file LRU cache that holds them (spec §9).

use std::sync::{Mutex, MutexGuard, PoisonError};

use lru::LruCache;

use crate::layout::{DataNode, MhtNode, NODE_SIZE, PhysicalNode};

/// Node buffers kept for reuse at least (one read batch).
const SPARE_BUFFERS: usize = 80;

/// A 4096-byte plaintext node buffer, wiped when dropped.
pub(crate) struct NodeBuf(Box<[u8; NODE_SIZE]>);

impl NodeBuf {
    pub(crate) fn zeroed() -> Self {
        // Allocate on the heap directly; a [u8; 4096] temporary would go through the stack.
        let boxed: Box<[u8]> = vec![0u8; NODE_SIZE].into_boxed_slice();
        NodeBuf(boxed.try_into().expect("BUG: node buffer has NODE_SIZE bytes"))
    }

    pub(crate) fn bytes(&self) -> &[u8; NODE_SIZE] {
        &self.0
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8; NODE_SIZE] {
        &mut self.0
    }
}

impl Drop for NodeBuf {
    fn drop(&mut self) {
        wipe(&mut self.0[..]);
    }
}

/// Overwrites plaintext with zeros in a way the optimiser must keep. `zeroize` writes
/// byte by byte with volatile stores (about 1 µs per node); a plain `fill` followed by
/// `black_box` costs about 50 ns and cannot be removed as a dead store either.
pub(crate) fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

/// What a cached node is, by its logical number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CachedKind {
    Data(DataNode),
    Mht(MhtNode),
}

pub(crate) struct CachedNode {
    pub(crate) kind: CachedKind,
    pub(crate) buf: NodeBuf,
    pub(crate) dirty: bool,
}

/// Counters of one file's node cache, for tuning (`pfs bench`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Node look-ups served from the cache.
    pub hits: u64,
    /// Node look-ups that read and decrypted a node from storage.
    pub misses: u64,
    /// Node look-ups that created a new zero node or skipped the read of a node
    /// about to be overwritten whole.
    pub fresh: u64,
    /// Clean nodes dropped to respect the capacity.
    pub evictions: u64,
    /// Flushes forced because the least recently used node was dirty.
    pub eviction_flushes: u64,
    /// Flushes in total.
    pub flushes: u64,
    /// Nodes encrypted and written by flushes (data, MHT and root nodes).
    pub nodes_written: u64,
    /// Records written to the recovery journal.
    pub journal_records: u64,
}

impl CacheStats {
    /// Fraction of node look-ups served from the cache (0 when there were none).
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses + self.fresh;
        if total == 0 { 0.0 } else { self.hits as f64 / total as f64 }
    }
}

/// The LRU of decrypted data and non-root MHT nodes, keyed by physical node number.
/// Capacity is enforced by the owner (`ProtectedFile::shrink_cache`), because evicting
/// a dirty node needs a flush of the whole file first.
pub(crate) struct NodeCache {
    pub(crate) map: LruCache<u64, CachedNode>,
    pub(crate) capacity: usize,
    spare: Vec<NodeBuf>,
    /// Counters, kept here so shared readers update them under the cache's lock.
    pub(crate) stats: CacheStats,
}

impl NodeCache {
    pub(crate) fn new(capacity: usize) -> Self {
        NodeCache {
            map: LruCache::unbounded(),
            capacity: capacity.max(1),
            spare: Vec::new(),
            stats: CacheStats::default(),
        }
    }

    /// Marks the MHT chain from `m` up to the root most recently used, so data nodes
    /// leave the cache before the nodes that hold their keys, and children before
    /// parents (the load path relies on a cached node's ancestors being cached).
    pub(crate) fn touch_ancestors(&mut self, m: MhtNode) {
        let mut node = m;
        while node != MhtNode::ROOT {
            self.map.promote(&node.physical().0);
            node = node.parent().expect("BUG: non-root MHT node without parent");
        }
    }

    /// Evicts the least recently used *clean* nodes beyond the capacity. Shared readers
    /// cannot flush, so they leave dirty nodes for the next writer, whose eviction
    /// flushes them; the cache then holds at most the capacity plus one read batch.
    /// Scanning from the LRU end keeps children leaving before their parents (a dirty
    /// node's ancestors are dirty, so no clean parent of a dirty child is dropped).
    pub(crate) fn shrink_clean(&mut self) {
        while self.map.len() > self.capacity {
            if self.lru_is_dirty() {
                let victim = self.map.iter().rev().find(|(_, n)| !n.dirty).map(|(&p, _)| p);
                match victim.and_then(|p| self.map.pop(&p)) {
                    Some(node) => self.recycle(node.buf),
                    None => return,
                }
            } else {
                self.pop_lru();
            }
            self.stats.evictions += 1;
        }
    }

    /// A buffer for a node about to be inserted: recycled when possible. Its content is
    /// unspecified (the caller overwrites all of it or asks for `zeroed`).
    pub(crate) fn take_buf(&mut self) -> NodeBuf {
        self.spare.pop().unwrap_or_else(NodeBuf::zeroed)
    }

    pub(crate) fn take_zeroed_buf(&mut self) -> NodeBuf {
        match self.spare.pop() {
            Some(mut buf) => {
                buf.bytes_mut().fill(0);
                buf
            }
            None => NodeBuf::zeroed(),
        }
    }

    pub(crate) fn recycle(&mut self, buf: NodeBuf) {
        // Buffers move between the cache and this list, so keeping up to `capacity`
        // spares never holds more than the cache itself may, and streaming (which evicts
        // a whole flush batch at once) never goes back to the allocator.
        if self.spare.len() < self.capacity.max(SPARE_BUFFERS) {
            self.spare.push(buf);
        }
    }

    pub(crate) fn insert(&mut self, node: PhysicalNode, entry: CachedNode) {
        if let Some(old) = self.map.put(node.0, entry) {
            self.recycle(old.buf);
        }
    }

    pub(crate) fn contains(&self, node: PhysicalNode) -> bool {
        self.map.contains(&node.0)
    }

    /// Looks up a node and marks it most recently used.
    pub(crate) fn get_mut(&mut self, node: PhysicalNode) -> Option<&mut CachedNode> {
        self.map.get_mut(&node.0)
    }

    /// Looks up a node without changing its recency.
    pub(crate) fn peek(&self, node: PhysicalNode) -> Option<&CachedNode> {
        self.map.peek(&node.0)
    }

    pub(crate) fn peek_mut(&mut self, node: PhysicalNode) -> Option<&mut CachedNode> {
        self.map.peek_mut(&node.0)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn lru_is_dirty(&self) -> bool {
        self.map.peek_lru().is_some_and(|(_, n)| n.dirty)
    }

    pub(crate) fn pop_lru(&mut self) {
        if let Some((_, node)) = self.map.pop_lru() {
            self.recycle(node.buf);
        }
    }

    /// Drops every node (all must be clean).
    pub(crate) fn clear(&mut self) {
        while let Some((_, node)) = self.map.pop_lru() {
            debug_assert!(!node.dirty, "BUG: dropping a dirty node");
            self.recycle(node.buf);
        }
    }
}

/// A value that exclusive owners reach without locking ([`get`](Self::get) through
/// `&mut`) and shared readers reach through a lock, so `&self` reads of one file run on
/// several threads while `&mut self` paths pay nothing.
pub(crate) struct Exclusive<T>(Mutex<T>);

impl<T> Exclusive<T> {
    pub(crate) fn new(value: T) -> Self {
        Exclusive(Mutex::new(value))
    }

    /// The value, without locking (the borrow proves no one else holds it).
    pub(crate) fn get(&mut self) -> &mut T {
        self.0.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value, locked against other shared users.
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
