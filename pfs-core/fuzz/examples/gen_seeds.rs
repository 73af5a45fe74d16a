//! Writes the synthetic seed inputs of the pfs-core fuzz targets into `corpus/`:
//! crash states with their recovery journals (`pf_open_journal`) and hostile-metadata
//! headers (`pf_sealed_meta`). The Gramine interop vectors are copied with the shell
//! commands in docs/RELIABILITY.md ("Seed corpora"). Deterministic apart from the random
//! keys and nonces of the engine.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

#[path = "../../tests/support/gramine_writer.rs"]
mod gramine_writer;

use gramine_writer::{Crash, GramineFile};
use pfs_core::layout::{NODE_SIZE, PhysicalNode};
use pfs_core::{Journal, Key, MemJournal, MemStore, NodeStore, OpenOptions, ProtectedFile};

const KEY: [u8; 16] =
    [0x6c, 0xe2, 0x2a, 0x07, 0x1d, 0x53, 0xb9, 0xdd, 0x19, 0x32, 0x40, 0x53, 0xce, 0xa8, 0x1f, 0x4b];

/// A store that accepts `budget` writes and then fails every write (a process crash).
#[derive(Clone)]
struct StopStore {
    inner: MemStore,
    budget: Arc<Mutex<usize>>,
}

impl NodeStore for StopStore {
    fn byte_len(&self) -> io::Result<u64> {
        self.inner.byte_len()
    }
    fn read_nodes(&self, first: PhysicalNode, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_nodes(first, buf)
    }
    fn write_nodes(&mut self, first: PhysicalNode, buf: &[u8]) -> io::Result<()> {
        let mut budget = self.budget.lock().unwrap();
        if *budget == 0 {
            return Err(io::Error::other("crash"));
        }
        *budget -= 1;
        self.inner.write_nodes(first, buf)
    }
    fn set_node_count(&mut self, nodes: u64) -> io::Result<()> {
        self.inner.set_node_count(nodes)
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn journal_input(flags: u8, journal: &[u8], host: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&(journal.len() as u32).to_le_bytes());
    out.extend_from_slice(journal);
    out.extend_from_slice(host);
    out
}

fn main() {
    let key = Key::from_bytes(KEY);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let journal_dir = root.join("pf_open_journal");
    std::fs::create_dir_all(&journal_dir).unwrap();

    // A 3-data-node file rewritten in place; the second flush crashes after `n` writes.
    let old: Vec<u8> = (0..14_000u32).map(|i| (i % 251) as u8).collect();
    for n in [0usize, 1, 2, 3, 4, 5] {
        let mem = MemStore::new();
        let store = StopStore { inner: mem.clone(), budget: Arc::new(Mutex::new(usize::MAX)) };
        let journal = MemJournal::new();
        let mut file = ProtectedFile::create_with_journal(
            store.clone(),
            Some(Journal::new(journal.clone())),
            &key,
            b"seed",
            &OpenOptions::new(),
        )
        .unwrap();
        file.write_at(0, &old).unwrap();
        file.flush().unwrap();
        *store.budget.lock().unwrap() = n;
        file.write_at(5000, &[0xee; 6000]).unwrap();
        let flushed = file.flush();
        drop(file);
        let host = mem.to_bytes();
        let journal = journal.snapshot().unwrap_or_default();
        println!("crash after {n} writes: flush {flushed:?}, journal {} bytes", journal.len());
        std::fs::write(
            journal_dir.join(format!("crash_after_{n}_writes")),
            journal_input(1, &journal, &host),
        )
        .unwrap();
        if n == 2 {
            // The same state read-only, and with the default (refusing) policy.
            std::fs::write(journal_dir.join("crash_read_only"), journal_input(3, &journal, &host)).unwrap();
            std::fs::write(journal_dir.join("crash_refuse"), journal_input(5, &journal, &host)).unwrap();
            // A journal with a torn (unaligned) tail.
            let torn = &journal[..journal.len().saturating_sub(100)];
            std::fs::write(journal_dir.join("crash_torn_journal"), journal_input(1, torn, &host)).unwrap();
        }
    }
    std::fs::write(journal_dir.join("no_journal_empty"), journal_input(0, &[], &[])).unwrap();

    // Files and recovery files as Gramine leaves them (issue 13), by the spec-derived
    // writer of the pfs-core tests: a flush interrupted before its final write and torn in
    // it (the recovery rule applies the file), and a recovery file kept after a completed
    // flush under a torn metadata-only write (the rule refuses it).
    let gramine = |seed: u64| {
        let mut g = GramineFile::create(KEY, b"seed", seed);
        g.write(0, &old);
        g.close();
        g.write(0, &[0x11; 6000]);
        assert!(g.flush(Crash::None), "the eviction-like flush");
        g.write(9000, &[0x22; 4000]);
        g
    };
    let mut g = gramine(1);
    let last = g.writes_of_next_flush();
    assert!(!g.flush(Crash::Before(last)));
    let name = "gramine_interrupted_before_final_write";
    std::fs::write(journal_dir.join(name), journal_input(1, g.journal.as_ref().unwrap(), &g.disk)).unwrap();
    let mut g = gramine(2);
    let last = g.writes_of_next_flush();
    assert!(!g.flush(Crash::Tear { write: last, keep: 2048 }));
    let name = "gramine_final_write_torn";
    std::fs::write(journal_dir.join(name), journal_input(1, g.journal.as_ref().unwrap(), &g.disk)).unwrap();
    let mut g = gramine(3);
    assert!(g.flush(Crash::None), "Gramine keeps the recovery file");
    g.write(0, &[0x33; 100]);
    assert!(!g.flush(Crash::Tear { write: 1, keep: 2048 }));
    let name = "gramine_stale_journal_torn_metadata";
    std::fs::write(journal_dir.join(name), journal_input(5, g.journal.as_ref().unwrap(), &g.disk)).unwrap();

    // pf_sealed_meta: flags, size, probe offset, root key, root tag, payload.
    let sealed_dir = root.join("pf_sealed_meta");
    std::fs::create_dir_all(&sealed_dir).unwrap();
    let seeds: [(&str, u8, u64, u64, usize); 8] = [
        ("small_raw", 0, 100, 0, 100),
        ("size_u64_max", 0, u64::MAX, 0, 0),
        ("size_2_63", 0, 1 << 63, 0, 0),
        ("size_max_plaintext", 0, 1 << 62, 1 << 40, 0),
        ("genuine_exact", 4, 20_000, 9_000, 20_000),
        ("genuine_claims_more", 4, 1 << 30, 1 << 29, 20_000),
        ("genuine_claims_max", 4, 1 << 62, u64::MAX, 8_000),
        ("genuine_v1_pending", 7, 10_000, 4_000, 10_000),
    ];
    for (name, flags, size, probe, payload) in seeds {
        let mut out = vec![flags];
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&probe.to_le_bytes());
        out.extend_from_slice(&[0x11; 32]);
        out.extend((0..payload).map(|i| (i % 253) as u8));
        if flags & 4 == 0 && payload > 0 {
            out.resize(out.len() + NODE_SIZE, 0);
        }
        std::fs::write(sealed_dir.join(name), out).unwrap();
    }
}
