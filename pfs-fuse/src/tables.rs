//! The inode table and the open-file table.
//!
//! Lock order, where locks meet: `Fs::namespace` → an open-file slot → an
//! `OpenFile::pf` → the inode table or the open-file table. The two tables are only ever
//! held long enough to clone an `Arc` or update a map entry.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use fuser::Errno;
use pfs_core::{FileStore, ProtectedFile};

use crate::backing::Rel;

/// FUSE inode number of the mount root.
pub const ROOT_INO: u64 = 1;

/// What identifies one version of a host file: if it is unchanged, so is the plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostStamp {
    /// Host inode number.
    pub ino: u64,
    /// Host size in bytes.
    pub size: u64,
    /// Host mtime in nanoseconds.
    pub mtime_ns: i128,
    /// Host ctime in nanoseconds.
    pub ctime_ns: i128,
}

impl HostStamp {
    /// The stamp of a `stat` result.
    pub fn of(st: &nix::sys::stat::FileStat) -> Self {
        HostStamp {
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime_ns: st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128,
            ctime_ns: st.st_ctime as i128 * 1_000_000_000 + st.st_ctime_nsec as i128,
        }
    }
}

/// One inode known to the kernel.
#[derive(Debug)]
pub struct Inode {
    /// Its names under the backing directory, the first one used to reach it; empty once
    /// unlinked or replaced. Only a content-free file (symlink, FIFO, socket, device) has
    /// more than one: a protected file is bound to one path, so it is never hard-linked.
    names: Vec<Rel>,
    /// The host inode, for a content-free file with hard links (see [`Inodes::lookup_linked`]).
    host: Option<u64>,
    /// The kernel's lookup count.
    pub lookups: u64,
    /// The host file as this daemon last left it (for `FOPEN_KEEP_CACHE`).
    pub cached_stamp: Option<HostStamp>,
}

impl Inode {
    fn new(rel: &[u8], host: Option<u64>) -> Self {
        Inode { names: vec![rel.to_vec()], host, lookups: 1, cached_stamp: None }
    }
}

/// Inode numbers ↔ relative paths. Numbers are never reused within a mount.
#[derive(Debug)]
pub struct Inodes {
    by_ino: HashMap<u64, Inode>,
    by_path: HashMap<Rel, u64>,
    /// Host inode → inode, for the hard-linked content-free files the kernel knows, so that
    /// every name of one host inode is one inode of the mount (same `st_ino`, one
    /// attribute cache).
    by_host: HashMap<u64, u64>,
    next: u64,
}

impl Inodes {
    /// A table holding only the root.
    pub fn new() -> Self {
        let mut by_ino = HashMap::new();
        let mut root = Inode::new(b"", None);
        root.lookups = u64::MAX / 2;
        by_ino.insert(ROOT_INO, root);
        let mut by_path = HashMap::new();
        by_path.insert(Vec::new(), ROOT_INO);
        Inodes { by_ino, by_path, by_host: HashMap::new(), next: ROOT_INO + 1 }
    }

    /// The relative path of `ino` (its first name), or ENOENT.
    pub fn rel(&self, ino: u64) -> Result<Rel, Errno> {
        self.by_ino.get(&ino).and_then(|i| i.names.first().cloned()).ok_or(Errno::ENOENT)
    }

    /// The inode at `rel`, if the kernel knows it.
    pub fn ino_of(&self, rel: &[u8]) -> Option<u64> {
        self.by_path.get(rel).copied()
    }

    /// An inode.
    pub fn get(&self, ino: u64) -> Option<&Inode> {
        self.by_ino.get(&ino)
    }

    /// Mutable access to an inode.
    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Inode> {
        self.by_ino.get_mut(&ino)
    }

    /// Counts one kernel lookup of `rel`, allocating an inode number if needed.
    pub fn lookup(&mut self, rel: &[u8]) -> u64 {
        if let Some(&ino) = self.by_path.get(rel)
            && let Some(inode) = self.by_ino.get_mut(&ino)
        {
            inode.lookups = inode.lookups.saturating_add(1);
            return ino;
        }
        self.allocate(rel, None)
    }

    /// The inode the kernel knows for host inode `host` (a hard-linked content-free file),
    /// with its first name, for the caller to confirm before [`lookup_linked`](Self::lookup_linked).
    pub fn linked_name(&self, host: u64) -> Option<(u64, Rel)> {
        let ino = *self.by_host.get(&host)?;
        let name = self.by_ino.get(&ino)?.names.first()?.clone();
        Some((ino, name))
    }

    /// [`lookup`](Self::lookup) of a content-free file whose host inode `host` has more
    /// than one name. A name not seen yet joins inode `confirmed`: the inode of another
    /// name of `host`, which the caller checked is still that host inode (a name may have
    /// been removed outside the mount, and its host inode number reused).
    pub fn lookup_linked(&mut self, rel: &[u8], host: u64, confirmed: Option<u64>) -> u64 {
        if self.by_path.contains_key(rel) {
            return self.lookup(rel);
        }
        if let Some(ino) = confirmed
            && self.by_host.get(&host) == Some(&ino)
            && let Some(inode) = self.by_ino.get_mut(&ino)
        {
            inode.names.push(rel.to_vec());
            inode.lookups = inode.lookups.saturating_add(1);
            self.by_path.insert(rel.to_vec(), ino);
            return ino;
        }
        self.allocate(rel, Some(host))
    }

    /// A new hard link `rel` to `ino` (made through the mount): one more name, one more
    /// kernel lookup.
    pub fn link(&mut self, ino: u64, rel: &[u8], host: u64) {
        self.detach(rel);
        let Some(inode) = self.by_ino.get_mut(&ino) else { return };
        inode.names.push(rel.to_vec());
        inode.lookups = inode.lookups.saturating_add(1);
        if inode.host.is_none() {
            inode.host = Some(host);
        }
        self.by_host.insert(host, ino);
        self.by_path.insert(rel.to_vec(), ino);
    }

    fn allocate(&mut self, rel: &[u8], host: Option<u64>) -> u64 {
        let ino = self.next;
        self.next += 1;
        self.by_ino.insert(ino, Inode::new(rel, host));
        self.by_path.insert(rel.to_vec(), ino);
        if let Some(host) = host {
            self.by_host.insert(host, ino);
        }
        ino
    }

    /// The kernel forgot `n` lookups of `ino`.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let Some(inode) = self.by_ino.get_mut(&ino) else { return };
        inode.lookups = inode.lookups.saturating_sub(n);
        if inode.lookups == 0
            && let Some(inode) = self.by_ino.remove(&ino)
        {
            for name in &inode.names {
                if self.by_path.get(name) == Some(&ino) {
                    self.by_path.remove(name);
                }
            }
            self.forget_host(inode.host, ino);
        }
    }

    fn forget_host(&mut self, host: Option<u64>, ino: u64) {
        if let Some(host) = host
            && self.by_host.get(&host) == Some(&ino)
        {
            self.by_host.remove(&host);
        }
    }

    /// `rel` no longer names the inode it named (unlink, rmdir, replaced by rename).
    pub fn detach(&mut self, rel: &[u8]) {
        if let Some(ino) = self.by_path.remove(rel)
            && let Some(inode) = self.by_ino.get_mut(&ino)
        {
            inode.names.retain(|n| n.as_slice() != rel);
            if inode.names.is_empty() {
                let host = inode.host;
                self.forget_host(host, ino);
            }
        }
    }

    /// Moves `from` (and everything below it) to `to`.
    pub fn rename(&mut self, from: &[u8], to: &[u8]) {
        self.detach(to);
        self.move_names(from, to);
    }

    /// Swaps the names `a` and `b` (and everything below each), for `RENAME_EXCHANGE`.
    pub fn exchange(&mut self, a: &[u8], b: &[u8]) {
        // Through a name that neither tree uses: `a` and `b` are siblings or unrelated, and
        // NUL never occurs in a host name.
        let parking = b"\0exchange".to_vec();
        self.move_names(a, &parking);
        self.move_names(b, a);
        self.move_names(&parking, b);
    }

    fn move_names(&mut self, from: &[u8], to: &[u8]) {
        let mut prefix = from.to_vec();
        prefix.push(b'/');
        let moved: Vec<(Rel, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.as_slice() == from || p.starts_with(&prefix))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        for (old, ino) in moved {
            self.by_path.remove(&old);
            let mut new = to.to_vec();
            new.extend_from_slice(&old[from.len()..]);
            if let Some(inode) = self.by_ino.get_mut(&ino)
                && let Some(name) = inode.names.iter_mut().find(|n| **n == old)
            {
                *name = new.clone();
            }
            self.by_path.insert(new, ino);
        }
    }
}

impl Default for Inodes {
    fn default() -> Self {
        Self::new()
    }
}

/// The state shared by every handle of one open file: one engine object, one node cache.
#[derive(Debug)]
pub struct OpenFile {
    /// FUSE inode number.
    pub ino: u64,
    /// The protected file: shared by reads (which run in parallel, each decrypting on its
    /// own thread), exclusive for the whole of a write, truncate, rename or flush.
    pf: RwLock<ProtectedFile<FileStore>>,
    /// A second descriptor of the host file, for `fstat` without taking `pf`.
    pub host: File,
    /// Plaintext size, updated after every write or truncate.
    pub size: AtomicU64,
    /// Where the last read ended, to recognise a sequential reader.
    last_read_end: AtomicU64,
    /// Names the file's recovery journal, when it has one (rename and unlink update it).
    pub journal: Option<crate::journal::JournalName>,
}

/// How far ahead of a sequential reader the host is asked to read, in bytes.
const BACKING_READAHEAD: i64 = 4 << 20;

impl OpenFile {
    /// Wraps an open protected file and the name of its recovery journal, if any.
    pub fn new(
        ino: u64,
        pf: ProtectedFile<FileStore>,
        journal: Option<crate::journal::JournalName>,
    ) -> Result<Self, Errno> {
        let host = pf.store().file().try_clone().map_err(Errno::from)?;
        let size = AtomicU64::new(pf.len());
        Ok(OpenFile {
            ino,
            pf: RwLock::new(pf),
            host,
            size,
            last_read_end: AtomicU64::new(u64::MAX),
            journal,
        })
    }

    /// The protected file for reading; other readers may hold it at the same time.
    pub fn pf(&self) -> RwLockReadGuard<'_, ProtectedFile<FileStore>> {
        self.pf.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The protected file for writing, exclusive of every reader and writer.
    pub fn pf_mut(&self) -> RwLockWriteGuard<'_, ProtectedFile<FileStore>> {
        self.pf.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Plaintext size.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// After a read of `[offset, offset+len)`: if it continues the previous one, asks the
    /// host to start reading the backing nodes of the next few MiB (`POSIX_FADV_WILLNEED`),
    /// so disk reads overlap with decryption instead of alternating with it.
    pub fn readahead_backing(&self, offset: u64, len: usize) {
        let end = offset + len as u64;
        let prev = self.last_read_end.swap(end, Ordering::Relaxed);
        if prev != offset || len == 0 {
            return;
        }
        // Plaintext offset → host offset: 3072 bytes live in node 0, then every 96 data
        // nodes follow one MHT node (spec §3). An estimate is enough for a hint.
        let node = end.saturating_sub(3072) / 4096;
        let host = (node + node / 96 + 2) * 4096;
        let _ = nix::fcntl::posix_fadvise(
            &self.host,
            host as i64,
            BACKING_READAHEAD,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
        );
    }

    /// Records a new plaintext size.
    pub fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }
}

/// A per-inode slot: opening a file serialises on it, not on the whole table.
pub type Slot = Arc<Mutex<Weak<OpenFile>>>;

/// Handles → open files, inodes → the one open file of that inode.
#[derive(Debug, Default)]
pub struct OpenFiles {
    by_fh: HashMap<u64, Arc<OpenFile>>,
    by_ino: HashMap<u64, Slot>,
    next_fh: u64,
}

impl OpenFiles {
    /// The slot of `ino`, created if needed.
    pub fn slot(&mut self, ino: u64) -> Slot {
        self.by_ino.entry(ino).or_default().clone()
    }

    /// The open file of `ino`, if any handle or operation holds it.
    pub fn live(&self, ino: u64) -> Option<Slot> {
        self.by_ino.get(&ino).cloned()
    }

    /// Registers a new handle.
    pub fn insert(&mut self, file: Arc<OpenFile>) -> u64 {
        self.next_fh += 1;
        let fh = self.next_fh;
        self.by_fh.insert(fh, file);
        fh
    }

    /// The file of handle `fh`, which must belong to `ino` (EBADF otherwise).
    pub fn get(&self, fh: u64, ino: u64) -> Result<Arc<OpenFile>, Errno> {
        match self.by_fh.get(&fh) {
            Some(f) if f.ino == ino => Ok(f.clone()),
            _ => Err(Errno::EBADF),
        }
    }

    /// Removes a handle and returns its file.
    pub fn remove(&mut self, fh: u64) -> Option<Arc<OpenFile>> {
        self.by_fh.remove(&fh)
    }

    /// Drops the slot of `ino` if no open file is left in it.
    pub fn prune(&mut self, ino: u64) {
        if let Some(slot) = self.by_ino.get(&ino)
            && Arc::strong_count(slot) == 1
            && slot.try_lock().map(|w| w.strong_count() == 0).unwrap_or(false)
        {
            self.by_ino.remove(&ino);
        }
    }

    /// Every open file (for the final flush).
    pub fn all(&self) -> Vec<Arc<OpenFile>> {
        self.by_fh.values().cloned().collect()
    }
}
