//! Property tests: random operation sequences on a `ProtectedFile` agree with a plain
//! `Vec<u8>` model, across cache capacities that force eviction and trees of depth 1–3.

use pfs_core::{FormatVersion, Key, MemStore, OpenOptions, ProtectedFile};
use proptest::prelude::*;

const PATH: &[u8] = b"/model/file";

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, len: usize, seed: u8 },
    SetLen(u64),
    Read { offset: u64, len: usize },
    Flush,
    Reopen,
}

/// Offsets cluster around the format's boundaries so every edge is hit often.
fn interesting_offset(max: u64) -> impl Strategy<Value = u64> {
    let edges: Vec<u64> = vec![
        0, 1, 3071, 3072, 3073, 4095, 4096, 7167, 7168, 7169, 396_287, 396_288, 396_289, 400_000, 12_979_199,
        12_979_200, 12_979_201,
    ];
    let edges: Vec<u64> = edges.into_iter().filter(|&e| e <= max).collect();
    prop_oneof![
        3 => proptest::sample::select(edges),
        2 => 0..=max,
        1 => 0u64..20_000,
    ]
}

fn op(max: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (interesting_offset(max), 0usize..20_000, any::<u8>())
            .prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        2 => interesting_offset(max).prop_map(Op::SetLen),
        4 => (interesting_offset(max), 0usize..30_000).prop_map(|(offset, len)| Op::Read { offset, len }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Applies a write of `data` at `offset` to the model of the file's content.
fn model_write(model: &mut Vec<u8>, offset: u64, data: &[u8]) {
    if !data.is_empty() {
        let end = offset as usize + data.len();
        if model.len() < end {
            model.resize(end, 0);
        }
        model[offset as usize..end].copy_from_slice(data);
    }
}

/// Reads `len` bytes at `offset` and checks them against the model.
fn check_read(file: &ProtectedFile<MemStore>, model: &[u8], offset: u64, len: usize) {
    let mut buf = vec![0xee; len];
    let n = file.read_at(offset, &mut buf).unwrap();
    let start = (offset as usize).min(model.len());
    let expected = &model[start..(start + len).min(model.len())];
    assert_eq!(n, expected.len(), "read length at {offset}");
    assert!(buf[..n] == *expected, "read content at {offset}+{len}");
}

fn run(ops: &[Op], cache_nodes: usize, format: FormatVersion) {
    let key = Key::from_bytes([0x42; 16]);
    let disk = MemStore::new();
    let options = OpenOptions::new().cache_nodes(cache_nodes).format(format);
    let mut file = ProtectedFile::create(disk.clone(), &key, PATH, &options).unwrap();
    let mut model: Vec<u8> = Vec::new();
    for op in ops {
        match op {
            Op::Write { offset, len, seed } => {
                let data = bytes(*len, *seed);
                file.write_at(*offset, &data).unwrap();
                model_write(&mut model, *offset, &data);
            }
            Op::SetLen(size) => {
                file.set_len(*size).unwrap();
                model.resize(*size as usize, 0);
            }
            Op::Read { offset, len } => check_read(&file, &model, *offset, *len),
            Op::Flush => file.flush().unwrap(),
            Op::Reopen => {
                file.close().unwrap();
                file = ProtectedFile::open(disk.clone(), &key, Some(PATH), &options).unwrap();
                assert_eq!(file.version(), format);
            }
        }
        assert_eq!(file.len(), model.len() as u64);
    }
    file.close().unwrap();
    // Host file is exactly what Gramine would leave (spec §3): no holes, no extra nodes.
    let host = disk.to_bytes();
    assert_eq!(host.len() as u64, pfs_core::layout::host_node_count(model.len() as u64) * 4096);
    let mut file = ProtectedFile::open(disk, &key, Some(PATH), &options).unwrap();
    let mut all = vec![0u8; model.len()];
    assert_eq!(file.read_at(0, &mut all).unwrap(), model.len());
    assert!(all == model, "final content differs");
    assert!(file.check().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn small_files_with_tiny_caches(ops in proptest::collection::vec(op(420_000), 1..40), cache in 1usize..=3) {
        run(&ops, cache, FormatVersion::V2);
    }

    #[test]
    fn format_1_files(ops in proptest::collection::vec(op(420_000), 1..30)) {
        run(&ops, 2, FormatVersion::V1);
    }

    #[test]
    fn default_cache(ops in proptest::collection::vec(op(420_000), 1..40)) {
        run(&ops, pfs_core::DEFAULT_CACHE_NODES, FormatVersion::V2);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Offsets past 12,979,200 bytes need a three-level tree (MHT nodes ≥ #33).
    #[test]
    fn three_level_trees(ops in proptest::collection::vec(op(13_500_000), 1..12), cache in 1usize..=3) {
        run(&ops, cache, FormatVersion::V2);
    }
}

#[test]
fn three_level_tree_sequential_then_random_rewrites() {
    let ops: Vec<Op> = (0..14)
        .map(|i| Op::Write { offset: i * 1_000_000, len: 1_000_000, seed: i as u8 })
        .chain([
            Op::Reopen,
            Op::Write { offset: 12_979_100, len: 300, seed: 9 },
            Op::SetLen(12_979_201),
            Op::Reopen,
            Op::Read { offset: 12_000_000, len: 1_000_000 },
            Op::SetLen(396_289),
            Op::Write { offset: 13_000_000, len: 10, seed: 1 },
        ])
        .collect();
    for cache in [1, 2, 3, 48] {
        run(&ops, cache, FormatVersion::V2);
    }
}

/// Threads share one file behind an `RwLock`, as pfs-fuse does: readers take the read
/// lock and run `read_at(&self)` at the same time, writers take the write lock. The model
/// lives under the same lock, so every read must see exactly the state the writes before
/// it (in lock order) produced: concurrent reads and writes stay linearizable.
fn run_threaded(threads: &[Vec<Op>], cache_nodes: usize) {
    use std::sync::{Barrier, RwLock};
    let key = Key::from_bytes([0x42; 16]);
    let disk = MemStore::new();
    let options = OpenOptions::new().cache_nodes(cache_nodes);
    let mut file = ProtectedFile::create(disk.clone(), &key, PATH, &options).unwrap();
    // A common starting content, so readers have something to race over from the start.
    let start = bytes(450_000, 7);
    file.write_at(0, &start).unwrap();
    file.flush().unwrap();
    let shared = RwLock::new((file, start));
    let barrier = Barrier::new(threads.len());
    std::thread::scope(|s| {
        for ops in threads {
            let (shared, barrier) = (&shared, &barrier);
            s.spawn(move || {
                barrier.wait();
                for op in ops {
                    match op {
                        Op::Read { offset, len } => {
                            let guard = shared.read().unwrap();
                            let (file, model) = &*guard;
                            check_read(file, model, *offset, *len);
                        }
                        Op::Write { offset, len, seed } => {
                            let mut guard = shared.write().unwrap();
                            let (file, model) = &mut *guard;
                            let data = bytes(*len, *seed);
                            file.write_at(*offset, &data).unwrap();
                            model_write(model, *offset, &data);
                        }
                        Op::SetLen(size) => {
                            let mut guard = shared.write().unwrap();
                            guard.0.set_len(*size).unwrap();
                            guard.1.resize(*size as usize, 0);
                        }
                        // Reopening needs the file by value; under threads it is a flush.
                        Op::Flush | Op::Reopen => shared.write().unwrap().0.flush().unwrap(),
                    }
                }
            });
        }
    });
    let (file, model) = shared.into_inner().unwrap();
    file.close().unwrap();
    let file = ProtectedFile::open(disk, &key, Some(PATH), &options).unwrap();
    let mut all = vec![0u8; model.len()];
    assert_eq!(file.read_at(0, &mut all).unwrap(), model.len());
    assert!(all == model, "final content differs");
}

/// Mostly reads (so readers overlap), some writes, truncations and flushes.
fn threaded_op(max: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (interesting_offset(max), 0usize..20_000, any::<u8>())
            .prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        1 => interesting_offset(max).prop_map(Op::SetLen),
        8 => (interesting_offset(max), 0usize..120_000).prop_map(|(offset, len)| Op::Read { offset, len }),
        1 => Just(Op::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn concurrent_readers_and_writers(
        threads in proptest::collection::vec(proptest::collection::vec(threaded_op(460_000), 1..40), 2..=4),
        cache in prop_oneof![1usize..=3, Just(48usize), Just(pfs_core::DEFAULT_CACHE_NODES)],
    ) {
        run_threaded(&threads, cache);
    }
}

/// Readers only, many rounds over a file larger than the cache: every thread's reads
/// must match, while other threads evict and insert nodes between its lock holds.
#[test]
fn concurrent_readers_only() {
    let reads: Vec<Vec<Op>> = (0..4u64)
        .map(|t| {
            (0..200u64)
                .map(|i| Op::Read {
                    offset: (i * 7_919 + t * 104_729) % 460_000,
                    len: 4096 + (i as usize * 37) % 70_000,
                })
                .collect()
        })
        .collect();
    for cache in [1, 3, 48] {
        run_threaded(&reads, cache);
    }
}
