//! Criterion benchmarks of the engine: node sealing per backend, and sequential
//! write+flush / read of a 64 MiB file held in memory, per backend and cache capacity,
//! and 1, 2 and 4 threads reading one 256 MiB file at once through `read_at(&self)`.
//!
//! Run: `cargo bench -p pfs-core --bench engine --features rustcrypto`
//! (the `rustcrypto` feature adds the pure-Rust backend next to ring).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pfs_core::crypto::{CryptoProvider, NodeCipher};
use pfs_core::{Key, MemStore, OpenOptions, ProtectedFile};

const FILE_SIZE: usize = 64 << 20;
const IO_SIZE: usize = 1 << 20;

fn providers() -> Vec<(&'static str, CryptoProvider)> {
    CryptoProvider::available_ciphers()
        .into_iter()
        .map(|cipher: &'static dyn NodeCipher| {
            (cipher.name(), CryptoProvider { cipher, ..CryptoProvider::default_provider() })
        })
        .collect()
}

fn seal_node(c: &mut Criterion) {
    let mut group = c.benchmark_group("node");
    group.throughput(Throughput::Bytes(4096));
    for (name, provider) in providers() {
        let mut buf = vec![0x5au8; 4096];
        group.bench_function(BenchmarkId::new("seal_fresh_key", name), |b| {
            b.iter(|| {
                let key = provider.fresh_key().unwrap();
                provider.cipher.seal_in_place(&key, &mut buf)
            })
        });
        let key = Key::from_bytes([1; 16]);
        let mut sealed = vec![0x5au8; 4096];
        let tag = provider.cipher.seal_in_place(&key, &mut sealed);
        group.bench_function(BenchmarkId::new("open", name), |b| {
            b.iter(|| {
                let mut copy = sealed.clone();
                provider.cipher.open_in_place(&key, &mut copy, &tag).unwrap();
                copy
            })
        });
    }
    group.finish();
}

/// Writes `data` as a new protected file into `disk` (which `create` truncates, keeping its
/// allocation: a reused store is resident, so the timed loop measures the engine and not
/// the kernel faulting in and zeroing 64 MiB of fresh "disk" on every iteration).
fn write_file(disk: &MemStore, options: &OpenOptions, data: &[u8]) {
    let key = Key::from_bytes([7; 16]);
    let mut file = ProtectedFile::create(disk.clone(), &key, b"/bench/file", options).unwrap();
    for (i, chunk) in data.chunks(IO_SIZE).enumerate() {
        file.write_at((i * IO_SIZE) as u64, chunk).unwrap();
    }
    file.close().unwrap();
}

fn sequential(c: &mut Criterion) {
    let data: Vec<u8> = (0..FILE_SIZE).map(|i| (i * 13) as u8).collect();
    let mut group = c.benchmark_group("sequential_64MiB");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(FILE_SIZE as u64));
    for (name, provider) in providers() {
        for cache in [48usize, 256, 1024] {
            let options = OpenOptions::new().crypto(provider).cache_nodes(cache);
            let id = format!("{name}/cache{cache}");
            let disk = MemStore::from_bytes(Vec::with_capacity(FILE_SIZE + FILE_SIZE / 64));
            group.bench_function(BenchmarkId::new("write_flush", &id), |b| {
                b.iter(|| write_file(&disk, &options, &data))
            });
            write_file(&disk, &options, &data);
            let key = Key::from_bytes([7; 16]);
            let file = ProtectedFile::open(disk, &key, None, &options).unwrap();
            let mut buf = vec![0u8; IO_SIZE];
            group.bench_function(BenchmarkId::new("read", &id), |b| {
                b.iter(|| {
                    let mut offset = 0u64;
                    while offset < FILE_SIZE as u64 {
                        offset += file.read_at(offset, &mut buf).unwrap() as u64;
                    }
                })
            });
        }
    }
    group.finish();
}

/// Size of the file that concurrent readers share.
const SHARED_FILE_SIZE: usize = 256 << 20;

/// 1, 2 and 4 threads read one 256 MiB file held in memory, in 1 MiB requests: the
/// file is cut into 1 MiB chunks dealt round-robin to the threads, as the kernel's
/// readahead and parallel readers of one FUSE file do. Throughput is of the whole file
/// (the same bytes for every thread count), so the ratio to 1 thread is the scaling.
fn concurrent_read(c: &mut Criterion) {
    let data: Vec<u8> = (0..SHARED_FILE_SIZE).map(|i| (i * 13) as u8).collect();
    let options = OpenOptions::new();
    let disk = MemStore::from_bytes(Vec::with_capacity(SHARED_FILE_SIZE + SHARED_FILE_SIZE / 64));
    write_file(&disk, &options, &data);
    drop(data);
    let key = Key::from_bytes([7; 16]);
    let file = ProtectedFile::open(disk, &key, None, &options).unwrap();
    let chunks = SHARED_FILE_SIZE / IO_SIZE;
    let mut group = c.benchmark_group("concurrent_read_256MiB");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(SHARED_FILE_SIZE as u64));
    for threads in [1usize, 2, 4] {
        group.bench_function(BenchmarkId::new("threads", threads), |b| {
            b.iter(|| {
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let file = &file;
                        s.spawn(move || {
                            let mut buf = vec![0u8; IO_SIZE];
                            for chunk in (t..chunks).step_by(threads) {
                                let n = file.read_at((chunk * IO_SIZE) as u64, &mut buf).unwrap();
                                assert_eq!(n, IO_SIZE);
                            }
                        });
                    }
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, seal_node, sequential, concurrent_read);
criterion_main!(benches);
