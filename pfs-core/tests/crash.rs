//! Fault injection on the storage seam: a flush of a multi-level tree is interrupted at
//! every write in turn — the process stops, a node write is torn in half, or (power
//! loss) writes not yet covered by an fsync are dropped or applied in random order. The
//! next open, with Gramine's recovery journal, must give the old or the new content,
//! never an error that loses both; and the new one whenever the flush had returned.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

use pfs_core::layout::{NODE_SIZE, PhysicalNode};
use pfs_core::recovery::{JournalFile, JournalOpener};
use pfs_core::{Journal, Key, MemJournal, MemStore, NodeStore, OpenOptions, ProtectedFile};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// The process dies at the N-th write: it and every later write never happen.
    Stop,
    /// The N-th write lands only half, then the process dies.
    Tear,
    /// Power loss at the N-th write: synced data survives; of the writes since the last
    /// fsync, a random subset survives, in any order.
    Reorder(u64),
}

#[derive(Clone)]
enum Op {
    Store {
        offset: usize,
        bytes: Vec<u8>,
    },
    StoreLen(usize),
    /// The recovery file is created (empty, if absent).
    JournalCreate,
    JournalRemove,
    JournalLen(usize),
    JournalWrite {
        offset: usize,
        bytes: Vec<u8>,
    },
}

impl Op {
    fn is_journal(&self) -> bool {
        !matches!(self, Op::Store { .. } | Op::StoreLen(_))
    }
}

#[derive(Default)]
struct Disk {
    /// What a reader sees while running (page cache).
    store: Vec<u8>,
    journal: Option<Vec<u8>>,
    /// What survives a power loss for sure.
    durable_store: Vec<u8>,
    durable_journal: Option<Vec<u8>>,
    pending: Vec<Op>,
    writes: usize,
    crash_at: Option<(usize, Fault)>,
    crashed: bool,
}

fn apply(store: &mut Vec<u8>, journal: &mut Option<Vec<u8>>, op: &Op) {
    match op {
        Op::Store { offset, bytes } => {
            if store.len() < offset + bytes.len() {
                store.resize(offset + bytes.len(), 0);
            }
            store[*offset..offset + bytes.len()].copy_from_slice(bytes);
        }
        Op::StoreLen(len) => store.resize(*len, 0),
        Op::JournalCreate => {
            journal.get_or_insert_with(Vec::new);
        }
        Op::JournalRemove => *journal = None,
        Op::JournalLen(len) => {
            if let Some(journal) = journal {
                journal.resize(*len, 0);
            }
        }
        Op::JournalWrite { offset, bytes } => {
            if let Some(journal) = journal {
                if journal.len() < offset + bytes.len() {
                    journal.resize(offset + bytes.len(), 0);
                }
                journal[*offset..offset + bytes.len()].copy_from_slice(bytes);
            }
        }
    }
}

impl Disk {
    /// Counts a write; returns false (and records the crash) if it must not happen.
    fn write(&mut self, op: Op) -> io::Result<()> {
        if self.crashed {
            return Err(io::Error::other("crashed"));
        }
        self.writes += 1;
        if let Some((n, fault)) = self.crash_at
            && self.writes == n
        {
            self.crashed = true;
            if fault == Fault::Tear
                && let Op::Store { offset, bytes } = &op
            {
                // The first half of the write lands; the rest of the range keeps its old
                // bytes (zeros past the old end: the file system allocated whole blocks).
                let mut torn = bytes.clone();
                let half = bytes.len() / 2;
                for (i, byte) in torn.iter_mut().enumerate().skip(half) {
                    *byte = self.store.get(offset + i).copied().unwrap_or(0);
                }
                let torn = Op::Store { offset: *offset, bytes: torn };
                apply(&mut self.store, &mut self.journal, &torn);
                self.pending.push(torn);
            }
            return Err(io::Error::other("crashed"));
        }
        apply(&mut self.store, &mut self.journal, &op);
        self.pending.push(op);
        Ok(())
    }

    fn sync(&mut self, journal: bool) -> io::Result<()> {
        if self.crashed {
            return Err(io::Error::other("crashed"));
        }
        let (keep, flush): (Vec<Op>, Vec<Op>) =
            self.pending.drain(..).partition(|op| op.is_journal() != journal);
        for op in &flush {
            apply(&mut self.durable_store, &mut self.durable_journal, op);
        }
        self.pending = keep;
        Ok(())
    }

    /// The bytes a reboot or restart finds.
    fn after_crash(&self, fault: Fault) -> (Vec<u8>, Option<Vec<u8>>) {
        match fault {
            Fault::Stop | Fault::Tear => (self.store.clone(), self.journal.clone()),
            Fault::Reorder(seed) => {
                let (mut store, mut journal) = (self.durable_store.clone(), self.durable_journal.clone());
                let mut state = seed | 1;
                let mut next = move || {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state
                };
                let mut ops = self.pending.clone();
                for i in (1..ops.len()).rev() {
                    ops.swap(i, (next() % (i as u64 + 1)) as usize);
                }
                for op in ops.iter().filter(|_| next() % 2 == 0) {
                    apply(&mut store, &mut journal, op);
                }
                (store, journal)
            }
        }
    }
}

#[derive(Clone)]
struct FaultyStore(Arc<Mutex<Disk>>);
#[derive(Clone)]
struct FaultyJournal(Arc<Mutex<Disk>>);

impl FaultyStore {
    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.0.lock().unwrap()
    }
}

impl NodeStore for FaultyStore {
    fn byte_len(&self) -> io::Result<u64> {
        Ok(self.disk().store.len() as u64)
    }
    fn read_nodes(&self, first: PhysicalNode, buf: &mut [u8]) -> io::Result<usize> {
        let disk = self.disk();
        let start = first.0 as usize * NODE_SIZE;
        let available = disk.store.len().saturating_sub(start).min(buf.len()) / NODE_SIZE * NODE_SIZE;
        buf[..available].copy_from_slice(&disk.store[start..start + available]);
        Ok(available / NODE_SIZE)
    }
    fn write_nodes(&mut self, first: PhysicalNode, buf: &[u8]) -> io::Result<()> {
        self.disk().write(Op::Store { offset: first.0 as usize * NODE_SIZE, bytes: buf.to_vec() })
    }
    fn set_node_count(&mut self, nodes: u64) -> io::Result<()> {
        self.disk().write(Op::StoreLen(nodes as usize * NODE_SIZE))
    }
    fn sync(&mut self) -> io::Result<()> {
        self.disk().sync(false)
    }
}

impl fmt::Debug for FaultyJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FaultyJournal")
    }
}

/// The recovery file on the faulty disk: its writes and syncs go through the same crash
/// model as the host file's.
impl JournalOpener for FaultyJournal {
    fn open(&self) -> io::Result<Option<Box<dyn JournalFile>>> {
        let exists = self.0.lock().unwrap().journal.is_some();
        Ok(exists.then(|| Box::new(self.clone()) as Box<dyn JournalFile>))
    }
    fn create(&self) -> io::Result<Option<Box<dyn JournalFile>>> {
        self.0.lock().unwrap().write(Op::JournalCreate)?;
        Ok(Some(Box::new(self.clone())))
    }
    fn remove(&self) -> io::Result<()> {
        self.0.lock().unwrap().write(Op::JournalRemove)
    }
    fn describe(&self) -> String {
        "the faulty disk's recovery file".to_string()
    }
}

impl JournalFile for FaultyJournal {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.lock().unwrap().journal.as_ref().map_or(0, |j| j.len() as u64))
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let disk = self.0.lock().unwrap();
        let journal = disk.journal.as_deref().unwrap_or_default();
        let src =
            journal.get(offset as usize..offset as usize + buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.lock().unwrap().write(Op::JournalWrite { offset: offset as usize, bytes: buf.to_vec() })
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.lock().unwrap().write(Op::JournalLen(len as usize))
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.lock().unwrap().sync(true)
    }
}

const PATH: &[u8] = b"/crash/file";

fn key() -> Key {
    Key::from_bytes([0x5c; 16])
}

/// Old content: `size` bytes. New content: scattered rewrites in every MHT group, a
/// rewrite of the inline area, and growth into a new MHT node.
fn contents(size: usize) -> (Vec<u8>, Vec<u8>) {
    let old: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    let mut new = old.clone();
    for (n, offset) in (100..size).step_by(150_001).enumerate() {
        let end = (offset + 9000).min(new.len());
        new[offset..end].fill(n as u8 ^ 0xa5);
    }
    new.extend((0..200_000).map(|i| (i % 7) as u8));
    new[0..100].fill(0x77);
    (old, new)
}

fn apply_changes(file: &mut ProtectedFile<FaultyStore>, old: &[u8], new: &[u8]) -> pfs_core::Result<()> {
    for offset in (100..old.len()).step_by(150_001) {
        let end = (offset + 9000).min(new.len());
        file.write_at(offset as u64, &new[offset..end])?;
    }
    file.write_at(old.len() as u64, &new[old.len()..])?;
    file.write_at(0, &new[..100])?;
    file.flush()
}

/// The old file, written and synced once per size.
fn old_file(size: usize) -> Vec<u8> {
    static CACHE: Mutex<Vec<(usize, Vec<u8>)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap();
    if let Some((_, bytes)) = cache.iter().find(|(s, _)| *s == size) {
        return bytes.clone();
    }
    let (old, _) = contents(size);
    let disk = MemStore::new();
    let mut file = ProtectedFile::create(disk.clone(), &key(), PATH, &OpenOptions::new()).unwrap();
    file.write_at(0, &old).unwrap();
    file.close().unwrap();
    cache.push((size, disk.to_bytes()));
    disk.to_bytes()
}

/// Opens the old file (durable on disk) and runs the changing flush with a crash at
/// `crash_at`. Returns whether the flush returned, the number of writes the flush
/// issued, and the on-disk state after the crash.
fn run(size: usize, crash_at: Option<(usize, Fault)>) -> (bool, usize, Vec<u8>, Option<Vec<u8>>) {
    let (old, new) = contents(size);
    let base = old_file(size);
    let disk =
        Arc::new(Mutex::new(Disk { store: base.clone(), durable_store: base, crash_at, ..Disk::default() }));
    let options = OpenOptions::new().cache_nodes(4096);
    let store = FaultyStore(disk.clone());
    let journal = FaultyJournal(disk.clone());
    let mut file =
        ProtectedFile::open_with_journal(store, Some(Journal::new(journal)), &key(), Some(PATH), &options)
            .unwrap();
    let returned = apply_changes(&mut file, &old, &new).is_ok();
    // The process is gone: nothing it would do afterwards (drop, close) reaches the disk.
    disk.lock().unwrap().crashed = true;
    drop(file);
    let d = disk.lock().unwrap();
    let writes = d.writes;
    let (store, journal) = match crash_at {
        Some((_, fault)) => d.after_crash(fault),
        None => (d.store.clone(), d.journal.clone()),
    };
    (returned, writes, store, journal)
}

fn reopen(store: Vec<u8>, journal: Option<Vec<u8>>) -> Result<Vec<u8>, pfs_core::Error> {
    let mem_journal = MemJournal::new();
    mem_journal.set(journal);
    let file = ProtectedFile::open_with_journal(
        MemStore::from_bytes(store),
        Some(Journal::new(mem_journal)),
        &key(),
        Some(PATH),
        &OpenOptions::new(),
    )?;
    // Reading everything authenticates every node on the way.
    let mut out = vec![0u8; file.len() as usize];
    let n = file.read_at(0, &mut out)?;
    out.truncate(n);
    Ok(out)
}

fn every_crash_point(size: usize, faults: &[Fault]) {
    let (old, new) = contents(size);
    let (returned, writes, store, journal) = run(size, None);
    assert!(returned);
    assert!(writes >= 6, "the flush should issue several writes, got {writes}");
    assert!(reopen(store, journal).unwrap() == new);
    let mut outcomes = [0usize; 2];
    for &fault in faults {
        for n in 1..=writes + 1 {
            let (returned, _, store, journal) = run(size, Some((n, fault)));
            let got = reopen(store, journal)
                .unwrap_or_else(|e| panic!("{fault:?} at write {n}/{writes}: both states lost: {e}"));
            if returned {
                assert!(got == new, "{fault:?} at write {n}: flush returned but the new content is gone");
            }
            if got == new {
                outcomes[1] += 1;
            } else {
                assert!(got == old, "{fault:?} at write {n}/{writes}: content is neither old nor new");
                outcomes[0] += 1;
            }
        }
    }
    // Both outcomes must occur, or the test did not cross the commit point.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "outcomes old/new = {outcomes:?}");
}

#[test]
fn two_level_tree_survives_a_crash_at_every_write() {
    every_crash_point(1_200_000, &[Fault::Stop, Fault::Tear]);
}

#[test]
fn two_level_tree_survives_power_loss_with_reordered_writes() {
    let faults: Vec<Fault> = (1..=6).map(Fault::Reorder).collect();
    every_crash_point(1_200_000, &faults);
}

#[test]
fn three_level_tree_survives_a_crash_at_every_write() {
    every_crash_point(13_000_000, &[Fault::Stop, Fault::Tear, Fault::Reorder(99)]);
}

#[test]
fn without_a_journal_a_pending_flag_is_refused_by_default() {
    // Writes 1-3 create and fill the journal, 4 sets the flag; the crash is at the first
    // tree write.
    let (_, _, store, journal) = run(1_200_000, Some((5, Fault::Stop)));
    assert!(journal.is_some());
    assert_eq!(store[58] & 1, 1, "the flag should be set");
    let err =
        ProtectedFile::open(MemStore::from_bytes(store.clone()), &key(), Some(PATH), &OpenOptions::new())
            .unwrap_err();
    assert!(matches!(err, pfs_core::Error::RecoveryNeeded), "{err}");
    // Read-only opens never write the journal back.
    let mem_journal = MemJournal::new();
    mem_journal.set(journal);
    let err = ProtectedFile::open_with_journal(
        MemStore::from_bytes(store),
        Some(Journal::new(mem_journal)),
        &key(),
        Some(PATH),
        &OpenOptions::new().read_only(true),
    )
    .unwrap_err();
    assert!(matches!(err, pfs_core::Error::RecoveryNeeded), "{err}");
}

#[test]
fn close_deletes_the_journal_and_recovery_is_reported() {
    let (_, _, store, journal) = run(1_200_000, Some((6, Fault::Stop)));
    assert_eq!(store[58] & 1, 1, "the flag should be set");
    let mem_journal = MemJournal::new();
    mem_journal.set(journal);
    let disk = MemStore::from_bytes(store);
    let file = ProtectedFile::open_with_journal(
        disk.clone(),
        Some(Journal::new(mem_journal.clone())),
        &key(),
        Some(PATH),
        &OpenOptions::new(),
    )
    .unwrap();
    assert!(file.recovered_nodes().unwrap() >= 2);
    file.close().unwrap();
    // The journal from the crashed session stays until a flush of ours rewrites it.
    let mut file = ProtectedFile::open_with_journal(
        disk,
        Some(Journal::new(mem_journal.clone())),
        &key(),
        Some(PATH),
        &OpenOptions::new(),
    )
    .unwrap();
    assert_eq!(file.recovered_nodes(), None);
    file.write_at(500_000, b"x").unwrap();
    file.close().unwrap();
    assert_eq!(mem_journal.snapshot(), None);
}
