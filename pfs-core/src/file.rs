//! [`ProtectedFile`]: random-access reads and writes of one protected file (spec §7–§10).

use std::ops::Range;

use crate::cache::{CacheStats, CachedKind, CachedNode, Exclusive, NodeBuf, NodeCache};
use crate::crypto::{CryptoProvider, Key, Tag};
use crate::error::{Error, HeaderProblem, NodeKind, Result};
use crate::layout::{
    self, DataNode, ENTRY_SIZE, INLINE_DATA_SIZE_U64, KEY_SIZE, MAX_PLAINTEXT_SIZE, METADATA_NODE, MhtNode,
    NODE_SIZE, NODE_SIZE_U64, PhysicalNode, ROOT_MHT_NODE, Span,
};
use crate::metadata::{FormatVersion, Metadata, PlainHeader, check_path_len, set_pending_flag};
use crate::recovery::{self, Decision, Journal, JournalProblem, RECORD_SIZE, encode_record};
use crate::storage::NodeStore;
use std::sync::MutexGuard;

/// Default number of cached nodes per open file. Chosen by measurement (see
/// `docs/PERFORMANCE.md`): larger batches amortise the per-flush cost of re-sealing the
/// MHT path and the metadata, and give the parallel sealer enough work.
pub const DEFAULT_CACHE_NODES: usize = 256;

/// Below this many dirty nodes a flush seals on the calling thread only.
#[cfg(feature = "parallel")]
const PARALLEL_SEAL_MIN_NODES: usize = 32;

/// Most nodes written by one vectored store call (below Linux's IOV_MAX of 1024).
const MAX_WRITE_RUN: usize = 512;

/// Most nodes fetched from storage by one read call when streaming.
const READ_BATCH_NODES: usize = 64;

/// What to do when the v2 pending-write flag (spec §13) is set at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PendingWritePolicy {
    /// Refuse with [`Error::RecoveryNeeded`], as Gramine's LibOS does without a
    /// recovery file. The default: a flag means the last flush may not have completed.
    #[default]
    Refuse,
    /// Ignore the flag, as `gramine-sgx-pf-crypt` does, and read the last state whose
    /// metadata was written. Every node is still authenticated; the flag is cleared by
    /// the next flush.
    Ignore,
}

/// Options for opening or creating a protected file.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    cache_nodes: usize,
    crypto: CryptoProvider,
    pending_write: PendingWritePolicy,
    read_only: bool,
    format: FormatVersion,
    write_barriers: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_nodes: DEFAULT_CACHE_NODES,
            crypto: CryptoProvider::default_provider(),
            pending_write: PendingWritePolicy::default(),
            read_only: false,
            format: FormatVersion::default(),
            write_barriers: true,
        }
    }
}

impl OpenOptions {
    /// Default options: read-write, format 2, [`DEFAULT_CACHE_NODES`] cached nodes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Capacity of the node cache, in 4096-byte nodes (at least 1).
    pub fn cache_nodes(mut self, nodes: usize) -> Self {
        self.cache_nodes = nodes.max(1);
        self
    }

    /// The cipher backend and random source.
    pub fn crypto(mut self, crypto: CryptoProvider) -> Self {
        self.crypto = crypto;
        self
    }

    /// Policy for the pending-write flag.
    pub fn pending_write(mut self, policy: PendingWritePolicy) -> Self {
        self.pending_write = policy;
        self
    }

    /// Open for reading only: writes fail with [`Error::ReadOnly`] and nothing is
    /// ever written to the store.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// With a recovery journal: whether a flush fsyncs between its phases (journal,
    /// flagged metadata, tree nodes, final metadata). With barriers (the default) a
    /// power loss at any point leaves a file that recovers to the last completed flush;
    /// without them only a process crash is covered, and a flush costs no fsync.
    pub fn write_barriers(mut self, barriers: bool) -> Self {
        self.write_barriers = barriers;
        self
    }

    /// Format major version for files made by [`ProtectedFile::create`]. Existing files
    /// keep their version when rewritten, so a v1 file stays readable by Gramine ≤ 1.8.
    pub fn format(mut self, format: FormatVersion) -> Self {
        self.format = format;
        self
    }
}

/// One bad node found by [`ProtectedFile::check`].
#[derive(Debug)]
pub struct NodeProblem {
    /// The failure; names the node and its first plaintext offset.
    pub error: Error,
    /// The plaintext byte ranges that cannot be read because of it.
    pub unreadable: Vec<Range<u64>>,
}

/// A Gramine protected file open for random access.
///
/// Reads and writes go through a per-file LRU cache of decrypted nodes. Changes reach the
/// store on [`flush`](Self::flush), [`sync_all`](Self::sync_all), [`close`](Self::close),
/// when a dirty node must leave the cache, and (best effort, errors lost) on drop.
pub struct ProtectedFile<S: NodeStore> {
    store: S,
    kdk: Key,
    crypto: CryptoProvider,
    read_only: bool,
    version: FormatVersion,
    meta: Metadata,
    meta_dirty: bool,
    /// The last metadata node image, whose padding is carried over on rewrite.
    meta_image: NodeBuf,
    root: NodeBuf,
    root_dirty: bool,
    /// Decrypted nodes and the counters; locked only by shared readers ([`read_at`](Self::read_at)).
    cache: Exclusive<NodeCache>,
    /// Reusable ciphertext buffer for flushes.
    scratch: Vec<u8>,
    /// Set when a flush failed half way; the in-memory tree no longer matches the store.
    poisoned: Option<String>,
    /// Gramine's recovery file, when enabled (spec §13).
    journal: Exclusive<Option<Journal>>,
    /// A flush of this session wrote the journal (it is deleted on close).
    journal_used: bool,
    write_barriers: bool,
    /// Records written back from the journal when this file was opened.
    recovered_nodes: Option<usize>,
}

impl<S: NodeStore> std::fmt::Debug for ProtectedFile<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtectedFile")
            .field("path", &String::from_utf8_lossy(&self.meta.path))
            .field("size", &self.meta.size)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl<S: NodeStore> ProtectedFile<S> {
    /// Creates a new empty protected file in `store` (whose previous content is
    /// discarded), bound to `path`, and writes its metadata node at once (spec §8).
    pub fn create(store: S, kdk: &Key, path: &[u8], options: &OpenOptions) -> Result<Self> {
        Self::create_with_journal(store, None, kdk, path, options)
    }

    /// [`create`](Self::create) with a recovery journal that later flushes use.
    pub fn create_with_journal(
        mut store: S,
        journal: Option<Journal>,
        kdk: &Key,
        path: &[u8],
        options: &OpenOptions,
    ) -> Result<Self> {
        check_path_len(path)?;
        if options.read_only {
            return Err(Error::ReadOnly);
        }
        store.set_node_count(0).map_err(|e| Error::io(None, e))?;
        let mut file = ProtectedFile {
            store,
            kdk: kdk.clone(),
            crypto: options.crypto,
            read_only: false,
            version: options.format,
            meta: Metadata::new(path)?,
            meta_dirty: true,
            meta_image: NodeBuf::zeroed(),
            root: NodeBuf::zeroed(),
            root_dirty: false,
            cache: Exclusive::new(NodeCache::new(options.cache_nodes)),
            scratch: Vec::new(),
            poisoned: None,
            journal: Exclusive::new(journal),
            journal_used: false,
            write_barriers: options.write_barriers,
            recovered_nodes: None,
        };
        file.flush()?;
        Ok(file)
    }

    /// Opens an existing protected file. With `expected_path`, the embedded path must be
    /// exactly those bytes ([`Error::PathMismatch`] otherwise); with `None` it is not
    /// checked. Node 0 and, for files over 3072 bytes, node 1 are authenticated here;
    /// other nodes when first read.
    pub fn open(store: S, kdk: &Key, expected_path: Option<&[u8]>, options: &OpenOptions) -> Result<Self> {
        Self::open_with_journal(store, None, kdk, expected_path, options)
    }

    /// [`open`](Self::open) with Gramine's recovery file. When a write was interrupted
    /// (the pending-write flag is set, or node 0 fails authentication as a torn final
    /// write leaves it) and the recovery file passes the rule of [`recovery::assess`]
    /// (it is the one the interrupted flush wrote), its records are written back and the
    /// file opens in the state of its last completed flush (see
    /// [`recovered_nodes`](Self::recovered_nodes)); the file must be writable. A recovery
    /// file that fails the rule is never applied: with the flag set the open fails with
    /// [`Error::RecoveryRefused`] (or [`Error::RecoveryNeeded`] when there is none)
    /// unless [`PendingWritePolicy::Ignore`]; with node 0 torn it fails with
    /// [`Error::RecoveryRefused`] when the recovery file proves the key right, else
    /// [`Error::MetadataMac`]. Later flushes journal their in-place writes.
    pub fn open_with_journal(
        mut store: S,
        mut journal: Option<Journal>,
        kdk: &Key,
        expected_path: Option<&[u8]>,
        options: &OpenOptions,
    ) -> Result<Self> {
        if let Some(expected) = expected_path {
            check_path_len(expected)?;
        }
        let host_size = store.byte_len().map_err(|e| Error::io(Some(METADATA_NODE), e))?;
        let mut meta_image = NodeBuf::zeroed();
        let read = store
            .read_nodes(METADATA_NODE, meta_image.bytes_mut())
            .map_err(|e| Error::io(Some(METADATA_NODE), e))?;
        // A foreign file is reported as such before its size is judged (Gramine reports
        // both as INVALID_HEADER; the bad magic is the more useful reason).
        if read == 1 && meta_image.bytes()[..8] != crate::metadata::FILE_ID {
            return Err(Error::InvalidHeader(HeaderProblem::BadMagic));
        }
        if !host_size.is_multiple_of(NODE_SIZE_U64) {
            return Err(Error::InvalidHeader(HeaderProblem::UnalignedHostSize { host_size }));
        }
        if read == 0 {
            return Err(Error::NodeMissing { kind: None, node: METADATA_NODE, offset: 0 });
        }
        let mut header = PlainHeader::parse(meta_image.bytes())?;
        let host_nodes = host_size / NODE_SIZE_U64;
        // A read-only open never writes a recovery back, so it does not consult one.
        let usable = journal.as_ref().filter(|_| !options.read_only);
        let decision = recovery::decide(
            meta_image.bytes(),
            &header,
            host_nodes,
            usable,
            kdk,
            expected_path,
            &options.crypto,
        )?;
        let mut recovered_nodes = None;
        match decision {
            Decision::Intact => {}
            Decision::Apply(scan) => {
                let journal = journal.as_mut().expect("BUG: a recovery decided without a journal");
                recovered_nodes = Some(journal.apply(&mut store, host_nodes, &scan)?);
                meta_image.bytes_mut().fill(0);
                store
                    .read_nodes(METADATA_NODE, meta_image.bytes_mut())
                    .map_err(|e| Error::io(Some(METADATA_NODE), e))?;
                header = PlainHeader::parse(meta_image.bytes())?;
                if header.pending_write() {
                    return Err(Error::RecoveryNeeded);
                }
            }
            Decision::Refuse(problem) => {
                let refused = |pending| Error::RecoveryRefused {
                    journal: journal.as_ref().map(Journal::describe).unwrap_or_default(),
                    pending,
                    problem: problem.clone(),
                };
                if header.pending_write() {
                    match (options.pending_write, &problem) {
                        // Read the last state whose metadata was written, as pf-crypt does.
                        (PendingWritePolicy::Ignore, _) => {}
                        (PendingWritePolicy::Refuse, JournalProblem::Absent) => {
                            return Err(Error::RecoveryNeeded);
                        }
                        (PendingWritePolicy::Refuse, _) => return Err(refused(true)),
                    }
                } else if problem.proves_key() {
                    return Err(refused(false));
                }
                // Otherwise node 0 fails authentication below (wrong key, or damage that
                // no recovery file explains).
            }
        }
        let meta = Metadata::open(meta_image.bytes(), &header, kdk, &options.crypto)?;
        if let Some(expected) = expected_path
            && meta.path != expected
        {
            return Err(Error::PathMismatch { embedded: meta.path.clone(), expected: expected.to_vec() });
        }
        if meta.size > MAX_PLAINTEXT_SIZE {
            return Err(Error::Corrupted(format!(
                "metadata claims a plaintext size of {} bytes, beyond the supported maximum",
                meta.size
            )));
        }
        let mut file = ProtectedFile {
            store,
            kdk: kdk.clone(),
            crypto: options.crypto,
            read_only: options.read_only,
            version: header.version,
            meta,
            meta_dirty: false,
            meta_image,
            root: NodeBuf::zeroed(),
            root_dirty: false,
            cache: Exclusive::new(NodeCache::new(options.cache_nodes)),
            scratch: Vec::new(),
            poisoned: None,
            journal: Exclusive::new(journal),
            // An applied (now empty) journal is deleted on close, as Gramine does.
            journal_used: recovered_nodes.is_some(),
            write_barriers: options.write_barriers,
            recovered_nodes,
        };
        if file.meta.size > INLINE_DATA_SIZE_U64 {
            file.load_root()?;
        }
        Ok(file)
    }

    /// Plaintext size in bytes.
    pub fn len(&self) -> u64 {
        self.meta.size
    }

    /// Whether the plaintext is empty.
    pub fn is_empty(&self) -> bool {
        self.meta.size == 0
    }

    /// The embedded path (raw bytes, without NUL).
    pub fn path(&self) -> &[u8] {
        &self.meta.path
    }

    /// The format major version of this file.
    pub fn version(&self) -> FormatVersion {
        self.version
    }

    /// Depth of the Merkle tree (0 = metadata only, 1 = root only, ...).
    pub fn tree_depth(&self) -> u32 {
        layout::tree_depth(self.meta.size)
    }

    /// How many nodes the recovery journal restored when this file was opened (`None`
    /// if no recovery took place).
    pub fn recovered_nodes(&self) -> Option<usize> {
        self.recovered_nodes
    }

    /// Cache counters since open.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.lock().stats
    }

    /// The node store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Reads up to `buf.len()` bytes at plaintext `offset`. Returns the number of bytes
    /// read, which is short only at the end of the file.
    ///
    /// Takes `&self`: several threads may read one file at once (wrap it in an `RwLock`
    /// to mix in writers). The node cache is locked only to look nodes up, copy cached
    /// plaintext out and insert newly opened nodes; storage reads and decryption of
    /// uncached nodes run unlocked, so concurrent readers decrypt on separate cores.
    /// Reads never flush: when the cache is over capacity they evict clean nodes only
    /// and leave dirty ones to the next write or flush.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.check_usable()?;
        if offset >= self.meta.size {
            return Ok(0);
        }
        let len = (self.meta.size - offset).min(buf.len() as u64) as usize;
        let buf = &mut buf[..len];
        let end = offset + len as u64;
        let mut done = 0;
        let mut spans = layout::spans(offset, len);
        while let Some(span) = spans.next() {
            match span {
                Span::Inline { skip, len } => {
                    buf[done..done + len].copy_from_slice(&self.meta.inline[skip..skip + len]);
                    done += len;
                }
                Span::Data { node, skip, len } => {
                    let mut cache = self.cache.lock();
                    if let Some(cached) = cache.get_mut(node.physical()) {
                        buf[done..done + len].copy_from_slice(&cached.buf.bytes()[skip..skip + len]);
                        done += len;
                        cache.stats.hits += 1;
                        cache.touch_ancestors(node.parent());
                        continue;
                    }
                    // Stream a run of consecutive uncached nodes of one MHT group at once.
                    let last_needed = DataNode::containing(end - 1);
                    let mut run = 1u64;
                    while node.0 + run <= last_needed.0
                        && !(node.0 + run).is_multiple_of(layout::DATA_PER_MHT)
                        && run < READ_BATCH_NODES as u64
                        && !cache.contains(DataNode(node.0 + run).physical())
                    {
                        run += 1;
                    }
                    done += self.read_run(cache, node, run as usize, skip, &mut buf[done..], len)?;
                    // Skip the spans the run already produced.
                    for _ in 1..run {
                        spans.next();
                    }
                }
            }
        }
        debug_assert_eq!(done, len);
        Ok(len)
    }

    /// Writes all of `data` at plaintext `offset`, growing the file (with zeros between
    /// the old end and `offset`) when needed.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_writable()?;
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= MAX_PLAINTEXT_SIZE)
            .ok_or(Error::TooLarge(offset))?;
        if offset > self.meta.size {
            self.write_impl(self.meta.size, offset - self.meta.size, None)?;
        }
        self.write_impl(offset, end - offset, Some(data))
    }

    /// Sets the plaintext size. Growing appends zeros; shrinking flushes, truncates the
    /// host file to the nodes still needed and leaves stale bytes past the new end inside
    /// the last node, exactly as Gramine does (spec §10).
    pub fn set_len(&mut self, size: u64) -> Result<()> {
        self.check_writable()?;
        if size > MAX_PLAINTEXT_SIZE {
            return Err(Error::TooLarge(size));
        }
        if size > self.meta.size {
            return self.write_impl(self.meta.size, size - self.meta.size, None);
        }
        if size == self.meta.size {
            return Ok(());
        }
        self.flush_internal()?;
        self.cache.get().clear();
        self.store.set_node_count(layout::host_node_count(size)).map_err(|e| Error::io(None, e))?;
        self.meta.size = size;
        self.meta_dirty = true;
        Ok(())
    }

    /// Writes every change to the store: data nodes, MHT nodes deepest first, the root,
    /// then the metadata node last (spec §8). Does not fsync; see [`sync_all`](Self::sync_all).
    pub fn flush(&mut self) -> Result<()> {
        self.check_usable()?;
        if self.read_only {
            return Ok(());
        }
        self.flush_internal()
    }

    /// [`flush`](Self::flush), then makes the store durable (fsync).
    pub fn sync_all(&mut self) -> Result<()> {
        self.flush()?;
        if !self.read_only {
            self.store.sync().map_err(|e| Error::io(None, e))?;
        }
        Ok(())
    }

    /// Binds the file to `new_path` and flushes, as Gramine does before it renames the
    /// host file. Renaming the host file itself is the caller's job.
    pub fn rename(&mut self, new_path: &[u8]) -> Result<()> {
        self.check_writable()?;
        check_path_len(new_path)?;
        self.meta.path = new_path.to_vec();
        self.meta_dirty = true;
        self.flush_internal()
    }

    /// Flushes and closes the file, reporting any error (unlike drop). A recovery
    /// journal written by this session is deleted, as Gramine does.
    pub fn close(mut self) -> Result<()> {
        self.flush()?;
        self.remove_journal()
    }

    fn remove_journal(&mut self) -> Result<()> {
        if self.journal_used
            && let Some(journal) = self.journal.get().as_mut()
        {
            journal.remove().map_err(|e| Error::io(None, e))?;
            self.journal_used = false;
        }
        Ok(())
    }

    /// Authenticates every node through the normal read path and reports each bad node
    /// with the plaintext it makes unreadable. Reads only; an empty list means the whole
    /// file is intact.
    pub fn check(&mut self) -> Vec<NodeProblem> {
        let mut problems: Vec<NodeProblem> = Vec::new();
        let mut by_node: std::collections::HashMap<PhysicalNode, usize> = std::collections::HashMap::new();
        let count = layout::data_node_count(self.meta.size);
        // Physical numbers grow with the data node number, so once one data node lies
        // past the host file's end all later ones do: report them as one truncation
        // instead of visiting every node a (possibly hostile) size claims.
        let host_nodes = self.store.byte_len().map(|len| len / NODE_SIZE_U64).unwrap_or(u64::MAX);
        for d in 0..count {
            let node = DataNode(d);
            let start = node.plaintext_offset();
            let range = start..(start + NODE_SIZE_U64).min(self.meta.size);
            if node.physical().0 >= host_nodes && !self.cache.get().contains(node.physical()) {
                let error = Error::NodeMissing {
                    kind: Some(NodeKind::Data(node)),
                    node: node.physical(),
                    offset: start,
                };
                let rest_of_file = start..self.meta.size;
                problems.push(NodeProblem { error, unreadable: vec![rest_of_file] });
                break;
            }
            let result = self.load_data_node(node, false).and_then(|()| self.shrink_cache());
            let Err(error) = result else { continue };
            let key = match &error {
                Error::NodeMac { node, .. } | Error::NodeMissing { node, .. } => *node,
                Error::Io { node: Some(node), .. } => *node,
                _ => PhysicalNode(u64::MAX),
            };
            match by_node.get(&key) {
                Some(&index) => {
                    let ranges = &mut problems[index].unreadable;
                    match ranges.last_mut() {
                        Some(last) if last.end == range.start => last.end = range.end,
                        _ => ranges.push(range),
                    }
                }
                None => {
                    by_node.insert(key, problems.len());
                    problems.push(NodeProblem { error, unreadable: vec![range] });
                }
            }
        }
        problems
    }

    fn check_usable(&self) -> Result<()> {
        match &self.poisoned {
            Some(reason) => {
                Err(Error::Corrupted(format!("an earlier flush failed ({reason}); reopen the file")))
            }
            None => Ok(()),
        }
    }

    fn check_writable(&self) -> Result<()> {
        self.check_usable()?;
        if self.read_only { Err(Error::ReadOnly) } else { Ok(()) }
    }

    fn load_root(&mut self) -> Result<()> {
        let key = self.meta.root_key.clone();
        let tag = self.meta.root_tag;
        let mut root = NodeBuf::zeroed();
        let read = self
            .store
            .read_nodes(ROOT_MHT_NODE, root.bytes_mut())
            .map_err(|e| Error::io(Some(ROOT_MHT_NODE), e))?;
        if read == 0 {
            return Err(Error::NodeMissing {
                kind: Some(NodeKind::RootMht),
                node: ROOT_MHT_NODE,
                offset: INLINE_DATA_SIZE_U64,
            });
        }
        self.crypto.cipher.open_in_place(&key, root.bytes_mut(), &tag).map_err(|_| Error::NodeMac {
            kind: NodeKind::RootMht,
            node: ROOT_MHT_NODE,
            offset: INLINE_DATA_SIZE_U64,
        })?;
        self.root = root;
        Ok(())
    }

    /// The plaintext of MHT node `m`, which must be the root or cached.
    fn mht_bytes(&mut self, m: MhtNode) -> &[u8; NODE_SIZE] {
        mht_bytes_in(&self.root, self.cache.get(), m)
    }

    fn mht_bytes_mut(&mut self, m: MhtNode) -> &mut [u8; NODE_SIZE] {
        if m == MhtNode::ROOT {
            self.root.bytes_mut()
        } else {
            self.cache.get().peek_mut(m.physical()).expect("BUG: MHT node not cached").buf.bytes_mut()
        }
    }

    fn entry(&mut self, parent: MhtNode, entry_offset: usize) -> (Key, Tag) {
        entry_in(&self.root, self.cache.get(), parent, entry_offset)
    }

    fn set_entry(&mut self, parent: MhtNode, entry_offset: usize, key: &Key, tag: &Tag) {
        let bytes = &mut self.mht_bytes_mut(parent)[entry_offset..entry_offset + ENTRY_SIZE];
        bytes[..KEY_SIZE].copy_from_slice(key.as_bytes());
        bytes[KEY_SIZE..].copy_from_slice(tag);
    }

    /// Makes MHT node `m` and its ancestors available (root always is). With
    /// `for_write`, marks the whole chain dirty.
    fn load_mht_chain(&mut self, m: MhtNode, for_write: bool) -> Result<()> {
        self.root_dirty |= for_write;
        load_chain(
            &self.store,
            self.crypto.cipher,
            self.meta.size,
            &self.root,
            self.cache.get(),
            m,
            for_write,
        )
    }

    /// Ensures data node `node` is cached (reading and authenticating it if it exists).
    fn load_data_node(&mut self, node: DataNode, for_write: bool) -> Result<()> {
        let phys = node.physical();
        if self.cache.get().contains(phys) {
            self.cache.get().stats.hits += 1;
            self.load_mht_chain(node.parent(), for_write)?;
            let cached = self.cache.get().get_mut(phys).expect("BUG: node vanished");
            cached.dirty |= for_write;
            self.cache.get().touch_ancestors(node.parent());
            return Ok(());
        }
        self.load_mht_chain(node.parent(), for_write)?;
        let (key, tag) = self.entry(node.parent(), layout::data_entry_offset(node.slot()));
        let offset = node.plaintext_offset();
        let mut buf = self.cache.get().take_buf();
        read_node(&self.store, phys, &mut buf, Some(NodeKind::Data(node)), offset)?;
        if self.crypto.cipher.open_in_place(&key, buf.bytes_mut(), &tag).is_err() {
            self.cache.get().recycle(buf);
            return Err(Error::NodeMac { kind: NodeKind::Data(node), node: phys, offset });
        }
        self.cache.get().stats.misses += 1;
        self.cache.get().insert(phys, CachedNode { kind: CachedKind::Data(node), buf, dirty: for_write });
        self.cache.get().touch_ancestors(node.parent());
        Ok(())
    }

    /// Reads `count` consecutive uncached data nodes starting at `first` (all under one
    /// MHT node) with one storage call, authenticates them, copies the requested bytes
    /// into `out` (starting `skip` bytes into `first`, `first_len` bytes of it) and caches
    /// them. Returns the bytes copied. Ciphertext is read straight into node buffers
    /// and decrypted there, so plaintext never sits in a shared bounce buffer.
    ///
    /// `cache` is held only to find the keys and take buffers, and again to insert the
    /// opened nodes: the storage read and the AES run unlocked, so readers of one file
    /// decrypt on separate cores. Between the two holds no writer can change the tree
    /// (writers take `&mut self`); another reader may cache the same nodes, which is
    /// harmless (same plaintext) and only costs duplicate work.
    fn read_run(
        &self,
        mut cache: MutexGuard<'_, NodeCache>,
        first: DataNode,
        count: usize,
        skip: usize,
        out: &mut [u8],
        first_len: usize,
    ) -> Result<usize> {
        let parent = first.parent();
        load_chain(&self.store, self.crypto.cipher, self.meta.size, &self.root, &mut cache, parent, false)?;
        cache.touch_ancestors(parent);
        let entries: Vec<(Key, Tag)> = (0..count)
            .map(|i| entry_in(&self.root, &cache, parent, layout::data_entry_offset(first.slot() + i)))
            .collect();
        let mut bufs: Vec<NodeBuf> = (0..count).map(|_| cache.take_buf()).collect();
        drop(cache);

        let first_phys = first.physical();
        let read = {
            let mut targets: Vec<&mut [u8; NODE_SIZE]> = bufs.iter_mut().map(NodeBuf::bytes_mut).collect();
            self.store.read_nodes_into(first_phys, &mut targets)
        };
        let (read, mut error) = match read {
            Ok(read) => (read, None),
            Err(e) => (0, Some(Error::io(Some(first_phys), e))),
        };
        let opened = open_nodes(self.crypto.cipher, &mut bufs[..read], &entries[..read]);
        let mut done = 0;
        let mut good = 0;
        for (i, &authentic) in opened.iter().enumerate() {
            if !authentic {
                let node = DataNode(first.0 + i as u64);
                let (phys, offset) = (node.physical(), node.plaintext_offset());
                error = Some(Error::NodeMac { kind: NodeKind::Data(node), node: phys, offset });
                break;
            }
            let (from, len) = if i == 0 { (skip, first_len) } else { (0, (out.len() - done).min(NODE_SIZE)) };
            out[done..done + len].copy_from_slice(&bufs[i].bytes()[from..from + len]);
            done += len;
            good += 1;
        }
        if error.is_none() && read < count {
            let node = DataNode(first.0 + read as u64);
            let (phys, offset) = (node.physical(), node.plaintext_offset());
            error = Some(Error::NodeMissing { kind: Some(NodeKind::Data(node)), node: phys, offset });
        }

        let mut cache = self.cache.lock();
        for (i, buf) in bufs.into_iter().enumerate() {
            if i < good {
                let node = DataNode(first.0 + i as u64);
                cache.stats.misses += 1;
                cache.insert(node.physical(), CachedNode { kind: CachedKind::Data(node), buf, dirty: false });
            } else {
                cache.recycle(buf);
            }
        }
        cache.touch_ancestors(parent);
        cache.shrink_clean();
        match error {
            Some(error) => Err(error),
            None => Ok(done),
        }
    }

    /// Writes `len` bytes at `offset` from `data`, or zeros when `data` is `None`.
    fn write_impl(&mut self, offset: u64, len: u64, data: Option<&[u8]>) -> Result<()> {
        // Bytes past the old end may be stale (spec §10). Callers that grow the file
        // first write zeros from the old end (`data == None`), which clears them.
        let mut pos = offset;
        let len = usize::try_from(len).map_err(|_| Error::TooLarge(offset))?;
        for span in layout::spans(offset, len) {
            let src_at = (pos - offset) as usize;
            match span {
                Span::Inline { skip, len } => {
                    let dst = &mut self.meta.inline[skip..skip + len];
                    match data {
                        Some(data) => dst.copy_from_slice(&data[src_at..src_at + len]),
                        None => dst.fill(0),
                    }
                }
                Span::Data { node, skip, len } => {
                    let phys = node.physical();
                    let exists = node.0 < layout::data_node_count(self.meta.size);
                    let whole = skip == 0 && len == NODE_SIZE;
                    let fresh = !self.cache.get().contains(phys) && (!exists || whole);
                    if fresh {
                        // A new node, or an existing one overwritten whole: no read needed.
                        // The bytes go into the buffer before it enters the cache, which
                        // saves a look-up per node on the streaming path.
                        self.load_mht_chain(node.parent(), true)?;
                        let mut buf = if whole && data.is_some() {
                            self.cache.get().take_buf()
                        } else {
                            self.cache.get().take_zeroed_buf()
                        };
                        if let Some(data) = data {
                            buf.bytes_mut()[skip..skip + len].copy_from_slice(&data[src_at..src_at + len]);
                        }
                        self.cache.get().stats.fresh += 1;
                        self.cache
                            .get()
                            .insert(phys, CachedNode { kind: CachedKind::Data(node), buf, dirty: true });
                        self.cache.get().touch_ancestors(node.parent());
                    } else {
                        self.load_data_node(node, true)?;
                        let cached = self.cache.get().peek_mut(phys).expect("BUG: node vanished");
                        let dst = &mut cached.buf.bytes_mut()[skip..skip + len];
                        match data {
                            Some(data) => dst.copy_from_slice(&data[src_at..src_at + len]),
                            None => dst.fill(0),
                        }
                    }
                }
            }
            pos += span.len() as u64;
            if pos > self.meta.size {
                self.meta.size = pos;
            }
            self.meta_dirty = true;
            self.shrink_cache()?;
        }
        Ok(())
    }

    /// Evicts least recently used nodes beyond the capacity, flushing first when the
    /// next victim is dirty (Gramine's rule: a dirty node is never dropped).
    fn shrink_cache(&mut self) -> Result<()> {
        while self.cache.get().len() > self.cache.get().capacity {
            if self.cache.get().lru_is_dirty() {
                self.cache.get().stats.eviction_flushes += 1;
                self.flush_internal()?;
            }
            self.cache.get().pop_lru();
            self.cache.get().stats.evictions += 1;
        }
        Ok(())
    }

    fn flush_internal(&mut self) -> Result<()> {
        self.check_usable()?;
        if !self.root_dirty && !self.meta_dirty {
            return Ok(());
        }
        match self.flush_nodes() {
            Ok(()) => Ok(()),
            Err(error) => {
                self.poisoned = Some(error.to_string());
                Err(error)
            }
        }
    }

    fn flush_nodes(&mut self) -> Result<()> {
        self.cache.get().stats.flushes += 1;
        let tree = self.root_dirty && self.meta.size > INLINE_DATA_SIZE_U64;
        // Only a flush that overwrites tree nodes in place needs the journal; format 1
        // has no flag byte, so such files are flushed as Gramine ≤ 1.8 does.
        let journaled = tree && self.journal.get().is_some() && self.version == FormatVersion::V2;
        if journaled {
            self.write_journal()?;
        }
        if tree {
            self.seal_and_write_tree()?;
        }
        self.root_dirty = false;
        if journaled && self.write_barriers {
            self.sync_store()?;
        }

        let flags = 0;
        self.meta.seal_into(self.meta_image.bytes_mut(), self.version, flags, &self.kdk, &self.crypto)?;
        self.store
            .write_nodes(METADATA_NODE, self.meta_image.bytes())
            .map_err(|e| Error::io(Some(METADATA_NODE), e))?;
        self.meta_dirty = false;
        if journaled {
            if self.write_barriers {
                self.sync_store()?;
            }
            // The flush is complete: empty the journal. The recovery rule already refuses
            // these records once this flush's metadata is on disk (recovery::assess); an
            // empty file also tells every reader, Gramine included, that nothing is pending.
            let journal = self.journal.get().as_mut().expect("BUG: journaled flush without a journal");
            journal.replace(&[]).map_err(|e| Error::io(None, e))?;
            if self.write_barriers {
                journal.sync().map_err(|e| Error::io(None, e))?;
            }
        }
        Ok(())
    }

    fn sync_store(&mut self) -> Result<()> {
        self.store.sync().map_err(|e| Error::io(None, e))
    }

    /// Phase 1 of a journaled flush (spec §13): save the on-disk image of every node the
    /// flush will overwrite, then the old root and metadata, and mark the metadata node
    /// pending. Nodes beyond the host file's end are not recorded: the old metadata never
    /// references them, so restoring them is not needed (Gramine records zero images).
    fn write_journal(&mut self) -> Result<()> {
        let host_nodes = self.store.byte_len().map_err(|e| Error::io(None, e))? / NODE_SIZE_U64;
        let mut dirty: Vec<PhysicalNode> =
            self.cache.get().map.iter().filter(|(_, n)| n.dirty).map(|(&p, _)| PhysicalNode(p)).collect();
        dirty.push(ROOT_MHT_NODE);
        dirty.sort_unstable();
        let mut records = Vec::new();
        let mut image = NodeBuf::zeroed();
        for node in dirty.into_iter().filter(|p| p.0 < host_nodes) {
            let read =
                self.store.read_nodes(node, image.bytes_mut()).map_err(|e| Error::io(Some(node), e))?;
            if read == 1 {
                encode_record(node, image.bytes(), &mut records);
            }
        }
        encode_record(METADATA_NODE, self.meta_image.bytes(), &mut records);
        let journal = self.journal.get().as_mut().expect("BUG: journaled flush without a journal");
        journal.replace(&records).map_err(|e| Error::io(None, e))?;
        if self.write_barriers {
            journal.sync().map_err(|e| Error::io(None, e))?;
        }
        self.journal_used = true;
        image.bytes_mut().copy_from_slice(self.meta_image.bytes());
        set_pending_flag(image.bytes_mut(), true);
        self.store
            .write_nodes(METADATA_NODE, image.bytes())
            .map_err(|e| Error::io(Some(METADATA_NODE), e))?;
        if self.write_barriers {
            self.sync_store()?;
        }
        self.cache.get().stats.journal_records += (records.len() / RECORD_SIZE) as u64;
        Ok(())
    }

    /// Seals every dirty node with a fresh key, stores keys and tags in the parents
    /// bottom-up, and writes data and MHT nodes in physical order, then the root.
    ///
    /// Dirty data nodes are sealed in place in their own buffers (in parallel when there
    /// are many and the `parallel` feature is on) and leave the cache: keeping their
    /// plaintext would cost one more copy per node, and a node just written is rarely read back through this cache (a FUSE
    /// mount serves such reads from the kernel's page cache). MHT nodes stay cached.
    fn seal_and_write_tree(&mut self) -> Result<()> {
        let mut dirty: Vec<(PhysicalNode, CachedKind)> = self
            .cache
            .get()
            .map
            .iter()
            .filter(|(_, n)| n.dirty)
            .map(|(&p, n)| (PhysicalNode(p), n.kind))
            .collect();
        dirty.sort_unstable_by_key(|(p, _)| *p);
        let mut data: Vec<(DataNode, NodeBuf)> = Vec::with_capacity(dirty.len());
        let mut mht: Vec<MhtNode> = Vec::new();
        for (phys, kind) in &dirty {
            match *kind {
                CachedKind::Data(node) => {
                    let cached = self.cache.get().map.pop(&phys.0).expect("BUG: dirty node not cached");
                    data.push((node, cached.buf));
                }
                CachedKind::Mht(m) => mht.push(m),
            }
        }

        // 1. Data nodes: fresh keys, sealed in place.
        let keys = self.fresh_keys(data.len())?;
        let tags = seal_nodes(self.crypto.cipher, &mut data, &keys);
        for (((node, _), key), tag) in data.iter().zip(&keys).zip(&tags) {
            self.set_entry(node.parent(), layout::data_entry_offset(node.slot()), key, tag);
        }

        // 2. MHT nodes, deepest (highest number) first so children precede parents, then
        //    the root, whose key and tag go into the metadata. Sealed copies go to
        //    `scratch` because the plaintext stays cached.
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize((mht.len() + 1) * NODE_SIZE, 0);
        let mut by_depth: Vec<(MhtNode, usize)> =
            mht.iter().enumerate().map(|(slot, &m)| (m, slot)).collect();
        by_depth.sort_unstable_by_key(|&(m, _)| std::cmp::Reverse(m));
        let keys = self.fresh_keys(mht.len() + 1)?;
        for ((m, slot), key) in by_depth.iter().zip(&keys) {
            let out = &mut scratch[slot * NODE_SIZE..(slot + 1) * NODE_SIZE];
            out.copy_from_slice(self.mht_bytes(*m));
            let tag = self.crypto.cipher.seal_in_place(key, out);
            let parent = m.parent().expect("BUG: non-root MHT node without parent");
            self.set_entry(parent, layout::mht_entry_offset(m.slot()), key, &tag);
        }
        let root_slot = mht.len();
        let root_out = &mut scratch[root_slot * NODE_SIZE..];
        root_out.copy_from_slice(self.root.bytes());
        let root_key = keys.last().expect("BUG: no key for the root").clone();
        self.meta.root_tag = self.crypto.cipher.seal_in_place(&root_key, root_out);
        self.meta.root_key = root_key;

        // 3. Write data and MHT nodes in physical order, consecutive ones in one call.
        let mut nodes: Vec<(PhysicalNode, &[u8; NODE_SIZE])> =
            data.iter().map(|(node, buf)| (node.physical(), buf.bytes())).collect();
        for (slot, m) in mht.iter().enumerate() {
            let bytes: &[u8; NODE_SIZE] =
                scratch[slot * NODE_SIZE..(slot + 1) * NODE_SIZE].try_into().expect("BUG: node slice");
            nodes.push((m.physical(), bytes));
        }
        nodes.sort_unstable_by_key(|(p, _)| *p);
        let mut result = Ok(());
        let mut run_start = 0;
        for i in 1..=nodes.len() {
            if i == nodes.len() || nodes[i].0.0 != nodes[i - 1].0.0 + 1 || i - run_start == MAX_WRITE_RUN {
                let first = nodes[run_start].0;
                let run: Vec<&[u8; NODE_SIZE]> = nodes[run_start..i].iter().map(|(_, b)| *b).collect();
                if let Err(e) = self.store.write_nodes_from(first, &run) {
                    result = Err(Error::io(Some(first), e));
                    break;
                }
                run_start = i;
            }
        }
        drop(nodes);
        if result.is_ok() {
            let root: &[u8] = &scratch[root_slot * NODE_SIZE..];
            result =
                self.store.write_nodes(ROOT_MHT_NODE, root).map_err(|e| Error::io(Some(ROOT_MHT_NODE), e));
        }
        self.scratch = scratch;
        for (_, buf) in data {
            self.cache.get().recycle(buf);
        }
        result?;
        for m in &mht {
            if let Some(node) = self.cache.get().peek_mut(m.physical()) {
                node.dirty = false;
            }
        }
        self.cache.get().stats.nodes_written += dirty.len() as u64 + 1;
        Ok(())
    }

    /// `count` fresh random keys from one draw of the random source.
    fn fresh_keys(&self, count: usize) -> Result<Vec<Key>> {
        let mut bytes = vec![0u8; count * KEY_SIZE];
        self.crypto.random.fill(&mut bytes).map_err(|e| Error::io(None, e))?;
        let keys = bytes
            .chunks_exact(KEY_SIZE)
            .map(|chunk| Key::from_slice(chunk).expect("BUG: key chunk size"))
            .collect();
        crate::cache::wipe(&mut bytes);
        Ok(keys)
    }
}

// Shared reads need the file to be shareable between threads.
const _: fn() = || {
    fn assert_sync<T: Sync>() {}
    assert_sync::<ProtectedFile<crate::storage::FileStore>>();
};

impl<S: NodeStore> Drop for ProtectedFile<S> {
    fn drop(&mut self) {
        if !self.read_only && self.poisoned.is_none() {
            // Best effort, like BufWriter; `close` reports errors.
            if self.flush_internal().is_ok() {
                let _ = self.remove_journal();
            }
        }
    }
}

/// The plaintext of MHT node `m`, which must be the root or cached.
fn mht_bytes_in<'a>(root: &'a NodeBuf, cache: &'a NodeCache, m: MhtNode) -> &'a [u8; NODE_SIZE] {
    if m == MhtNode::ROOT {
        root.bytes()
    } else {
        cache.peek(m.physical()).expect("BUG: MHT node not cached").buf.bytes()
    }
}

/// The key and tag stored at `entry_offset` of MHT node `parent` (root or cached).
fn entry_in(root: &NodeBuf, cache: &NodeCache, parent: MhtNode, entry_offset: usize) -> (Key, Tag) {
    let bytes = &mht_bytes_in(root, cache, parent)[entry_offset..entry_offset + ENTRY_SIZE];
    let mut key = [0u8; KEY_SIZE];
    key.copy_from_slice(&bytes[..KEY_SIZE]);
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&bytes[KEY_SIZE..]);
    (Key::from_bytes(key), tag)
}

/// Makes MHT node `m` and its ancestors cached (the root always is), reading and
/// authenticating the missing ones from `store`; with `for_write`, marks the chain dirty.
/// The caller marks the root dirty. Works on a bare cache so that exclusive writers and
/// shared readers (under the cache's lock) use one load path.
fn load_chain<S: NodeStore>(
    store: &S,
    cipher: &'static dyn crate::crypto::NodeCipher,
    size: u64,
    root: &NodeBuf,
    cache: &mut NodeCache,
    m: MhtNode,
    for_write: bool,
) -> Result<()> {
    // Fast path. Ancestors are always more recently used than their descendants, so a
    // cached node's ancestors are cached; and marking a node dirty marks its whole
    // chain, so a dirty node's ancestors are dirty.
    if m == MhtNode::ROOT {
        return Ok(());
    }
    if let Some(cached) = cache.get_mut(m.physical())
        && (!for_write || cached.dirty)
    {
        return Ok(());
    }
    let existing = layout::mht_node_count(size);
    for node in m.path_from_root() {
        if node == MhtNode::ROOT {
            continue;
        }
        let phys = node.physical();
        if let Some(cached) = cache.get_mut(phys) {
            cached.dirty |= for_write;
            continue;
        }
        let buf = if node.0 >= existing {
            cache.stats.fresh += 1;
            cache.take_zeroed_buf()
        } else {
            let parent = node.parent().expect("BUG: non-root MHT node without parent");
            let (key, tag) = entry_in(root, cache, parent, layout::mht_entry_offset(node.slot()));
            let offset = node.first_data_node().plaintext_offset();
            let mut buf = cache.take_buf();
            let opened = read_node(store, phys, &mut buf, Some(NodeKind::Mht(node)), offset).and_then(|()| {
                cipher.open_in_place(&key, buf.bytes_mut(), &tag).map_err(|_| Error::NodeMac {
                    kind: NodeKind::Mht(node),
                    node: phys,
                    offset,
                })
            });
            if let Err(error) = opened {
                cache.recycle(buf);
                // The nodes above were inserted root first: restore children-before-
                // parents recency so none of them outlives its parent in the cache.
                cache.touch_ancestors(node);
                return Err(error);
            }
            cache.stats.misses += 1;
            buf
        };
        let dirty = for_write || node.0 >= existing;
        cache.insert(phys, CachedNode { kind: CachedKind::Mht(node), buf, dirty });
    }
    Ok(())
}

/// Reads node `phys` of `store` into `buf`; a node past the host file's end is
/// [`Error::NodeMissing`].
fn read_node<S: NodeStore>(
    store: &S,
    phys: PhysicalNode,
    buf: &mut NodeBuf,
    kind: Option<NodeKind>,
    offset: u64,
) -> Result<()> {
    let read = store.read_nodes(phys, buf.bytes_mut()).map_err(|e| Error::io(Some(phys), e))?;
    if read == 0 {
        return Err(Error::NodeMissing { kind, node: phys, offset });
    }
    Ok(())
}

/// Seals each data node in place under its key; returns the tags in order.
fn seal_nodes(
    cipher: &'static dyn crate::crypto::NodeCipher,
    nodes: &mut [(DataNode, NodeBuf)],
    keys: &[Key],
) -> Vec<Tag> {
    let seal = |((_, buf), key): (&mut (DataNode, NodeBuf), &Key)| cipher.seal_in_place(key, buf.bytes_mut());
    #[cfg(feature = "parallel")]
    if nodes.len() >= PARALLEL_SEAL_MIN_NODES {
        use rayon::prelude::*;
        return nodes.par_iter_mut().zip(keys.par_iter()).map(seal).collect();
    }
    nodes.iter_mut().zip(keys.iter()).map(seal).collect()
}

/// Opens each node buffer in place; returns whether each authenticated.
fn open_nodes(
    cipher: &'static dyn crate::crypto::NodeCipher,
    nodes: &mut [NodeBuf],
    entries: &[(Key, Tag)],
) -> Vec<bool> {
    let open = |(buf, (key, tag)): (&mut NodeBuf, &(Key, Tag))| {
        cipher.open_in_place(key, buf.bytes_mut(), tag).is_ok()
    };
    #[cfg(feature = "parallel")]
    if entries.len() >= PARALLEL_SEAL_MIN_NODES {
        use rayon::prelude::*;
        return nodes.par_iter_mut().zip(entries.par_iter()).map(open).collect();
    }
    nodes.iter_mut().zip(entries.iter()).map(open).collect()
}
