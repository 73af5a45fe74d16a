//! Sequential write+flush and read throughput of a 64 MiB in-memory file, measured in
//! CPU time (user + system) of this process, so the figure is "per core" even when other
//! work shares the machine. Criterion (`benches/engine.rs`) gives wall-clock figures.
//!
//! Run: `cargo run --release -p pfs-core --example cpu_throughput [-- CACHE_NODES [ROUNDS]]`
//! (ROUNDS defaults to 8; 1 keeps a run under `valgrind --tool=callgrind` short).

use std::time::Duration;

use pfs_core::{Key, MemStore, OpenOptions, ProtectedFile};

/// CPU time (user + system) of the whole process, to the nanosecond: `/proc/self/stat`
/// counts 10 ms ticks, which quantised a 0.25 s run into steps of 4 %.
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cache: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(pfs_core::DEFAULT_CACHE_NODES);
    const SIZE: usize = 64 << 20;
    const IO: usize = 1 << 20;
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(8);
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 13) as u8).collect();
    let key = Key::from_bytes([7; 16]);
    let options = OpenOptions::new().cache_nodes(cache);

    // One store reused across rounds: `create` truncates it but keeps its allocation. An
    // untimed first round faults its pages in (a file "held in memory" is resident), so
    // the kernel's page-fault and zeroing cost of the "disk" does not count against the
    // engine; it was about a tenth of the first round's CPU time.
    let disk = MemStore::from_bytes(Vec::with_capacity(SIZE + SIZE / 64));
    let write_round = || {
        let mut file = ProtectedFile::create(disk.clone(), &key, b"/bench", &options).unwrap();
        for (i, chunk) in data.chunks(IO).enumerate() {
            file.write_at((i * IO) as u64, chunk).unwrap();
        }
        file.close().unwrap();
    };
    write_round();

    let start = cpu_time();
    let wall = std::time::Instant::now();
    for _ in 0..rounds {
        write_round();
    }
    let write_cpu = cpu_time() - start;
    let write_wall = wall.elapsed();

    let file = ProtectedFile::open(disk, &key, None, &options).unwrap();
    let mut buf = vec![0u8; IO];
    let start = cpu_time();
    let wall = std::time::Instant::now();
    for _ in 0..rounds {
        let mut offset = 0u64;
        while offset < SIZE as u64 {
            offset += file.read_at(offset, &mut buf).unwrap() as u64;
        }
    }
    let read_cpu = cpu_time() - start;
    let read_wall = wall.elapsed();
    let total = (SIZE * rounds) as f64;
    let gbps = |d: Duration| total / d.as_secs_f64() / 1e9;
    println!(
        "cache {cache}: write+flush {:.2} GB/s per CPU-second ({:.2} GB/s wall), read {:.2} GB/s per CPU-second ({:.2} GB/s wall)",
        gbps(write_cpu),
        gbps(write_wall),
        gbps(read_cpu),
        gbps(read_wall)
    );
}
