//! Resource bounds of the engine: hostile authenticated sizes fail cleanly or read as
//! missing nodes without allocating by the claimed size, and the memory of one open file
//! is bounded by its cache capacity, not by the file size.
//!
//! A counting global allocator measures this test binary's heap. The tests of this file
//! take a lock so that only one runs at a time and the counters see only its allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pfs_core::layout::{MAX_PLAINTEXT_SIZE, NODE_SIZE, PhysicalNode};
use pfs_core::metadata::{Metadata, PlainHeader, set_pending_flag};
use pfs_core::recovery::encode_record;
use pfs_core::{
    CryptoProvider, Error, Journal, Key, MemJournal, MemStore, NodeStore, OpenOptions, PendingWritePolicy,
    ProtectedFile,
};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap use from `start()` on: the peak above the starting level and the largest block.
struct HeapProbe {
    base: usize,
}

impl HeapProbe {
    fn start() -> Self {
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        LARGEST.store(0, Ordering::Relaxed);
        HeapProbe { base }
    }
    fn peak_growth(&self) -> usize {
        PEAK.load(Ordering::Relaxed).saturating_sub(self.base)
    }
    fn largest_block(&self) -> usize {
        LARGEST.load(Ordering::Relaxed)
    }
}

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const PATH: &[u8] = b"/bounds/file";

fn key() -> Key {
    Key::from_bytes([0x3b; 16])
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// A genuine file of `plain` bytes whose metadata (authenticated under the key) is
/// re-sealed to claim `size` bytes, with the genuine root key and tag.
fn file_claiming(plain: &[u8], size: u64) -> MemStore {
    let disk = MemStore::new();
    let mut file = ProtectedFile::create(disk.clone(), &key(), PATH, &OpenOptions::new()).unwrap();
    file.write_at(0, plain).unwrap();
    file.close().unwrap();
    disk.with_bytes(|bytes| {
        let mut node: [u8; NODE_SIZE] = bytes[..NODE_SIZE].try_into().unwrap();
        let header = PlainHeader::parse(&node).unwrap();
        let crypto = CryptoProvider::default_provider();
        let mut meta = Metadata::open(&node, &header, &key(), &crypto).unwrap();
        meta.size = size;
        meta.seal_into(&mut node, header.version, 0, &key(), &crypto).unwrap();
        bytes[..NODE_SIZE].copy_from_slice(&node);
    });
    disk
}

fn read_only() -> OpenOptions {
    OpenOptions::new().read_only(true)
}

#[test]
fn sizes_beyond_the_maximum_are_corrupted_not_allocated() {
    let _serial = serial();
    for size in [MAX_PLAINTEXT_SIZE + 1, 1 << 63, u64::MAX - 4095, u64::MAX] {
        for options in [read_only(), OpenOptions::new()] {
            let disk = file_claiming(&pattern(10_000), size);
            let probe = HeapProbe::start();
            let result = ProtectedFile::open(disk, &key(), Some(PATH), &options);
            assert!(matches!(result, Err(Error::Corrupted(_))), "size {size}: {result:?}");
            assert!(
                probe.largest_block() < 64 << 10,
                "size {size}: a {}-byte allocation",
                probe.largest_block()
            );
        }
    }
}

#[test]
fn the_maximum_size_opens_and_reads_past_the_host_file_are_missing_nodes() {
    let _serial = serial();
    let plain = pattern(20_000);
    for size in [MAX_PLAINTEXT_SIZE, MAX_PLAINTEXT_SIZE - 1, 1 << 40, 1 << 30] {
        let disk = file_claiming(&plain, size);
        let probe = HeapProbe::start();
        let file = ProtectedFile::open(disk.clone(), &key(), Some(PATH), &read_only()).unwrap();
        assert_eq!(file.len(), size);
        // What the host file holds still reads back.
        let mut buf = vec![0u8; plain.len()];
        assert_eq!(file.read_at(0, &mut buf).unwrap(), plain.len());
        assert_eq!(buf, plain);
        // Past it: a missing node, for the last byte and for offsets in between.
        for at in [size - 1, size / 2, size - (64 << 10), 20_480, 3072 + 4096 * 96] {
            let mut buf = [0u8; 8192];
            match file.read_at(at, &mut buf) {
                Err(Error::NodeMissing { .. }) => {}
                other => panic!("size {size}, read at {at}: {other:?}"),
            }
        }
        // A large read buffer is the caller's allocation; the engine adds nothing per byte.
        let mut big = vec![0u8; 1 << 20];
        assert!(matches!(file.read_at(size - (1 << 20), &mut big), Err(Error::NodeMissing { .. })));
        drop(big);
        assert!(probe.largest_block() <= 1 << 20, "size {size}: a {}-byte allocation", probe.largest_block());
        assert!(probe.peak_growth() < 8 << 20, "size {size}: heap grew by {}", probe.peak_growth());
        // The writable open of such a file is fine too, and writing past the host end
        // needs the missing MHT nodes: an error, not a tree of 2^50 nodes.
        let mut file = ProtectedFile::open(disk, &key(), Some(PATH), &OpenOptions::new()).unwrap();
        let probe = HeapProbe::start();
        assert!(file.write_at(size - 1, b"x").is_err());
        assert!(probe.peak_growth() < 8 << 20, "size {size}: heap grew by {}", probe.peak_growth());
        drop(file);
    }
}

/// Reads a whole file of `size` bytes with a cache of `cache` nodes and returns the
/// peak heap growth (beyond the store, which is allocated before) and the cache stats.
fn read_all_peak(size: usize, cache: usize) -> (usize, pfs_core::CacheStats) {
    let disk = MemStore::new();
    let data = pattern(size);
    let mut file = ProtectedFile::create(disk.clone(), &key(), PATH, &OpenOptions::new()).unwrap();
    file.write_at(0, &data).unwrap();
    file.close().unwrap();
    drop(data);
    let mut buf = vec![0u8; 256 << 10];
    let probe = HeapProbe::start();
    let file = ProtectedFile::open(disk, &key(), Some(PATH), &read_only().cache_nodes(cache)).unwrap();
    let mut offset = 0u64;
    while offset < size as u64 {
        offset += file.read_at(offset, &mut buf).unwrap() as u64;
    }
    let stats = file.cache_stats();
    let peak = probe.peak_growth();
    drop(file);
    (peak, stats)
}

#[test]
fn memory_of_an_open_file_is_bounded_by_its_cache() {
    let _serial = serial();
    let cache = 32;
    let (small_peak, small) = read_all_peak(8 << 20, cache);
    let (large_peak, large) = read_all_peak(64 << 20, cache);
    // Cache nodes, spare buffers (at most 80, or the capacity) and one read batch of 64
    // nodes, plus small vectors: well under 2 MiB. The file sizes differ by 56 MiB.
    let bound = 2 << 20;
    assert!(small_peak < bound, "8 MiB file: heap grew by {small_peak}");
    assert!(large_peak < bound, "64 MiB file: heap grew by {large_peak}");
    assert!(
        large_peak < small_peak + (256 << 10),
        "heap growth follows the file size: {small_peak} -> {large_peak}"
    );
    assert!(large.evictions > small.evictions && large.evictions > 10_000, "{large:?}");
    eprintln!(
        "peak heap growth: 8 MiB file {small_peak} B, 64 MiB file {large_peak} B (cache {cache} nodes)"
    );
}

/// Process RSS in KiB, from /proc/self/status.
fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn rss_does_not_follow_the_file_size() {
    let _serial = serial();
    // The same check through the kernel's view, with generous margins: the host file
    // lives on disk (FileStore), so only the engine's memory can show up in RSS.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.pf");
    let size = 96usize << 20;
    {
        let store = pfs_core::FileStore::new(
            std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap(),
        );
        let mut file = ProtectedFile::create(store, &key(), PATH, &OpenOptions::new()).unwrap();
        let chunk = pattern(1 << 20);
        for i in 0..size / chunk.len() {
            file.write_at((i * chunk.len()) as u64, &chunk).unwrap();
        }
        file.close().unwrap();
    }
    let Some(before) = vm_rss_kib() else { return };
    let store = pfs_core::FileStore::new(std::fs::File::open(&path).unwrap());
    let file = ProtectedFile::open(store, &key(), Some(PATH), &read_only().cache_nodes(16)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < size as u64 {
        offset += file.read_at(offset, &mut buf).unwrap() as u64;
    }
    let after = vm_rss_kib().unwrap();
    drop(file);
    // 96 MiB read; allow 24 MiB of noise (allocator arenas, rayon threads' stacks).
    assert!(after.saturating_sub(before) < 24 << 10, "RSS grew from {before} KiB to {after} KiB");
}

/// A store that refuses (and records) any write past the host file's original end.
#[derive(Clone)]
struct FarWriteRecorder {
    inner: MemStore,
    limit: u64,
    far: Arc<Mutex<Vec<u64>>>,
}

impl NodeStore for FarWriteRecorder {
    fn byte_len(&self) -> io::Result<u64> {
        self.inner.byte_len()
    }
    fn read_nodes(&self, first: PhysicalNode, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_nodes(first, buf)
    }
    fn write_nodes(&mut self, first: PhysicalNode, buf: &[u8]) -> io::Result<()> {
        if first.0.saturating_mul(NODE_SIZE as u64).saturating_add(buf.len() as u64) > self.limit {
            self.far.lock().unwrap().push(first.0);
            return Err(io::Error::other("refused: beyond the host file"));
        }
        self.inner.write_nodes(first, buf)
    }
    fn set_node_count(&mut self, nodes: u64) -> io::Result<()> {
        self.inner.set_node_count(nodes)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }
}

/// Found by the `pf_open_journal` fuzz target. The recovery journal is not
/// authenticated, and `recover` (src/file.rs) writes every record back wherever its node
/// number points, up to `host_node_count(MAX_PLAINTEXT_SIZE)` (about 2^50). A record
/// naming node 2^40 makes a `MemStore` resize itself to 4 PiB (abort) and a `FileStore`
/// grow a sparse file of that size, before any node is authenticated.
#[test]
fn recovery_never_writes_beyond_the_host_file() {
    let _serial = serial();
    let disk = MemStore::new();
    let mut file = ProtectedFile::create(disk.clone(), &key(), PATH, &OpenOptions::new()).unwrap();
    file.write_at(0, &pattern(20_000)).unwrap();
    file.close().unwrap();
    let host_len = disk.to_bytes().len() as u64;
    // The pending flag (unauthenticated, as in Gramine) and a journal with a far record,
    // whose node 0 record is the file's own (so the recovery rule lets it be applied).
    let node0: [u8; NODE_SIZE] = disk.to_bytes()[..NODE_SIZE].try_into().unwrap();
    disk.with_bytes(|bytes| set_pending_flag((&mut bytes[..NODE_SIZE]).try_into().unwrap(), true));
    let mut records = Vec::new();
    encode_record(PhysicalNode(1 << 40), &[0xa5; NODE_SIZE], &mut records);
    encode_record(PhysicalNode(0), &node0, &mut records);
    let journal = MemJournal::new();
    journal.set(Some(records));
    let far = Arc::new(Mutex::new(Vec::new()));
    let store = FarWriteRecorder { inner: disk, limit: host_len, far: far.clone() };
    let options = OpenOptions::new().pending_write(PendingWritePolicy::Ignore);
    let result =
        ProtectedFile::open_with_journal(store, Some(Journal::new(journal)), &key(), Some(PATH), &options);
    assert_eq!(result.as_ref().ok().and_then(|f| f.recovered_nodes()), Some(1), "{result:?}");
    assert!(
        far.lock().unwrap().is_empty(),
        "recovery wrote nodes {:?} beyond the host file ({result:?})",
        far.lock().unwrap()
    );
}

/// Found by reading `check` for the `pf_sealed_meta` target: it visits every data node
/// the metadata claims, even far past the end of the host file, so a file claiming
/// 2^62 bytes (authenticated metadata; or a huge genuine file truncated by the host)
/// keeps `check` busy for 2^50 node look-ups.
#[test]
fn check_of_a_short_host_file_claiming_a_huge_size_is_quick() {
    let _serial = serial();
    let disk = file_claiming(&pattern(20_000), MAX_PLAINTEXT_SIZE);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut file = ProtectedFile::open(disk, &key(), Some(PATH), &read_only()).unwrap();
        let problems = file.check();
        let _ = done_tx.send(problems.len());
    });
    let started = Instant::now();
    let problems = done_rx.recv_timeout(Duration::from_secs(10));
    assert!(problems.is_ok(), "check() still running after {:?}", started.elapsed());
    assert!(problems.unwrap() >= 1);
}

/// Issue 13: a hostile `*.gramine.recovery` of any size beside a file whose flag is set
/// must not be read into memory. Longer than the host file can need: refused unread.
/// Within that bound but large (a 64 MiB host file): read record by record.
#[test]
fn a_huge_recovery_file_is_never_read_into_memory() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("f.pf");
    let file =
        std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&host).unwrap();
    let mut pf =
        ProtectedFile::create(pfs_core::FileStore::new(file), &key(), PATH, &OpenOptions::new()).unwrap();
    pf.write_at(0, &pattern(20_000)).unwrap();
    pf.close().unwrap();
    let mut bytes = std::fs::read(&host).unwrap();
    set_pending_flag((&mut bytes[..NODE_SIZE]).try_into().unwrap(), true);
    std::fs::write(&host, &bytes).unwrap();
    let journal_path = pfs_core::PathOpener::for_host_file(&host).path().to_owned();
    let open = || {
        let file = std::fs::File::options().read(true).write(true).open(&host).unwrap();
        ProtectedFile::open_with_journal(
            pfs_core::FileStore::new(file),
            Some(Journal::beside(&host)),
            &key(),
            Some(PATH),
            &OpenOptions::new(),
        )
    };

    // 4 GiB (sparse: no disk space), a whole number of records.
    let records = (4u64 << 30) / 4104;
    let journal = std::fs::File::create(&journal_path).unwrap();
    journal.set_len(records * 4104).unwrap();
    let probe = HeapProbe::start();
    let started = Instant::now();
    let result = open();
    assert!(
        matches!(
            &result,
            Err(Error::RecoveryRefused {
                pending: true,
                problem: pfs_core::recovery::JournalProblem::TooLarge { .. },
                ..
            })
        ),
        "{result:?}"
    );
    assert!(probe.peak_growth() < 1 << 20, "heap grew by {} bytes", probe.peak_growth());
    assert!(started.elapsed() < Duration::from_secs(5), "refusing took {:?}", started.elapsed());

    // A 64 MiB host file (trailing nodes are legal, spec §7) allows a 64 MiB recovery file:
    // every record is read, one chunk at a time (all zero: node 0 records that do not
    // authenticate, so it is refused after the scan).
    let host_file = std::fs::File::options().write(true).open(&host).unwrap();
    host_file.set_len(64 << 20).unwrap();
    journal.set_len(((64 << 20) / 4104) * 4104).unwrap();
    let probe = HeapProbe::start();
    let result = open();
    assert!(
        matches!(
            &result,
            Err(Error::RecoveryRefused {
                problem: pfs_core::recovery::JournalProblem::MetadataDoesNotOpen,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(probe.peak_growth() < 1 << 20, "heap grew by {} bytes", probe.peak_growth());
    assert!(probe.largest_block() <= 128 << 10, "a {}-byte allocation", probe.largest_block());
    assert_eq!(std::fs::read(&host).unwrap()[..NODE_SIZE], bytes[..NODE_SIZE], "a refused recovery wrote");
}
