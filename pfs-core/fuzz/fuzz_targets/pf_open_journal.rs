//! `ProtectedFile::open_with_journal` with a hostile host file *and* a hostile recovery
//! journal (Gramine 1.9's `.gramine.recovery` file, unauthenticated by design), which
//! exercises `recovery::Journal::scan`, the recovery rule (`recovery::assess`) and the
//! write-back of records at open.
//!
//! Input: `flags: u8`, `journal_len: u32 LE` (clamped), the journal bytes, then the host
//! file. `flags` bit 0: a journal exists; bit 1: open read-only; bit 2: refuse a pending
//! flag (default policy) instead of ignoring it.
//!
//! Invariant checked besides "no panic": recovery never grows the host file beyond what
//! the input could justify (host bytes plus one node per journal record); a journal
//! naming node 2^40 must not turn into a multi-terabyte host file or allocation.
//! With `PFS_FUZZ_TOLERATE_FAR_WRITES=1` in the environment such a write fails with an
//! I/O error instead (as a real file system's size limit would), so a long run can go on
//! exploring the rest of the recovery path while that engine bug is open
//! (docs/RELIABILITY.md, "Findings").
#![no_main]

use std::io;

use libfuzzer_sys::fuzz_target;
use pfs_core::layout::{NODE_SIZE, PhysicalNode};
use pfs_core::recovery::RECORD_SIZE;
use pfs_core::{Journal, Key, MemJournal, MemStore, NodeStore, OpenOptions, PendingWritePolicy, ProtectedFile};

const KEY: [u8; 16] =
    [0x6c, 0xe2, 0x2a, 0x07, 0x1d, 0x53, 0xb9, 0xdd, 0x19, 0x32, 0x40, 0x53, 0xce, 0xa8, 0x1f, 0x4b];
const READ_CAP: u64 = 64 << 20;

static TOLERATE: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("PFS_FUZZ_TOLERATE_FAR_WRITES").is_some_and(|v| v == "1"));

/// A `MemStore` that panics (a fuzz finding) when the engine writes past `limit` bytes.
struct BoundedStore {
    inner: MemStore,
    limit: u64,
    tolerate: bool,
}

impl BoundedStore {
    fn check(&self, first: PhysicalNode, len: usize) -> io::Result<()> {
        let end = first.0.saturating_mul(NODE_SIZE as u64).saturating_add(len as u64);
        if end <= self.limit {
            return Ok(());
        }
        if self.tolerate {
            return Err(io::Error::other("file too large (PFS_FUZZ_TOLERATE_FAR_WRITES)"));
        }
        panic!(
            "engine wrote host bytes up to {end} (node {}), beyond the {} bytes the input justifies",
            first.0, self.limit
        );
    }
}

impl NodeStore for BoundedStore {
    fn byte_len(&self) -> io::Result<u64> {
        self.inner.byte_len()
    }
    fn read_nodes(&self, first: PhysicalNode, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_nodes(first, buf)
    }
    fn read_nodes_into(&self, first: PhysicalNode, bufs: &mut [&mut [u8; NODE_SIZE]]) -> io::Result<usize> {
        self.inner.read_nodes_into(first, bufs)
    }
    fn write_nodes(&mut self, first: PhysicalNode, buf: &[u8]) -> io::Result<()> {
        self.check(first, buf.len())?;
        self.inner.write_nodes(first, buf)
    }
    fn set_node_count(&mut self, nodes: u64) -> io::Result<()> {
        self.check(PhysicalNode(nodes), 0)?;
        self.inner.set_node_count(nodes)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    if rest.len() < 4 {
        return;
    }
    let (len, rest) = rest.split_at(4);
    let journal_len = (u32::from_le_bytes(len.try_into().unwrap()) as usize).min(rest.len());
    let (journal_bytes, host) = rest.split_at(journal_len);

    let journal = MemJournal::new();
    if flags & 1 != 0 {
        journal.set(Some(journal_bytes.to_vec()));
    }
    let records = journal_bytes.len() / RECORD_SIZE;
    // Host bytes rounded up to whole nodes, plus one node per record.
    let limit = (host.len().div_ceil(NODE_SIZE) + records) as u64 * NODE_SIZE as u64;
    let mem = MemStore::from_bytes(host.to_vec());
    let store = BoundedStore { inner: mem.clone(), limit: limit.max(NODE_SIZE as u64), tolerate: *TOLERATE };
    let policy = if flags & 4 != 0 { PendingWritePolicy::Refuse } else { PendingWritePolicy::Ignore };
    let options = OpenOptions::new().read_only(flags & 2 != 0).pending_write(policy).cache_nodes(8);
    let key = Key::from_bytes(KEY);

    let opened =
        ProtectedFile::open_with_journal(store, Some(Journal::new(journal.clone())), &key, None, &options);
    let Ok(mut file) = opened else { return };
    let size = file.len();
    let mut buf = vec![0u8; 64 << 10];
    let mut offset = 0u64;
    let mut complete = true;
    while offset < size.min(READ_CAP) {
        match file.read_at(offset, &mut buf) {
            Ok(0) => panic!("short read at {offset} of a {size}-byte file"),
            Ok(n) => offset += n as u64,
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    if size <= READ_CAP {
        let problems = file.check();
        if complete {
            assert!(problems.is_empty(), "full read succeeded but check() reports {problems:?}");
        }
    }
    // A recovered, writable, intact file takes a journaled write and reads it back.
    if complete && size <= READ_CAP && flags & 2 == 0 && size > 3072 {
        let at = size / 2;
        if file.write_at(at, b"fuzz").is_ok() && file.close().is_ok() {
            let reopen = OpenOptions::new().read_only(true).pending_write(PendingWritePolicy::Refuse);
            let mut again = ProtectedFile::open(mem, &key, None, &reopen).expect("a closed file reopens");
            let mut out = [0u8; 4];
            assert_eq!(again.read_at(at, &mut out).expect("written bytes read back"), 4);
            assert_eq!(&out, b"fuzz");
        }
    }
});
