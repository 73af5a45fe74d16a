//! Sequential write+flush and read throughput of a 64 MiB in-memory file, measured in
//! CPU time (user + system) of this process, so the figure is "per core" even when other
//! work shares the machine. Criterion (`benches/engine.rs`) gives wall-clock figures.
//!
//! Run: `cargo run --release -p pfs-core --example cpu_throughput [-- CACHE_NODES [single]]`
//! (`single` disables the parallel sealer by sealing in batches below its threshold).

use std::time::Duration;

use pfs_core::{Key, MemStore, OpenOptions, ProtectedFile};

fn cpu_time() -> Duration {
    let text = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = text.rsplit(')').next().unwrap().split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at index 11 and 12 after the command name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cache: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(pfs_core::DEFAULT_CACHE_NODES);
    const SIZE: usize = 64 << 20;
    const IO: usize = 1 << 20;
    let rounds = 8;
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 13) as u8).collect();
    let key = Key::from_bytes([7; 16]);
    let options = OpenOptions::new().cache_nodes(cache);

    let start = cpu_time();
    let wall = std::time::Instant::now();
    // One store reused across rounds: `create` truncates it but keeps its allocation,
    // so page faults of the "disk" do not count against the engine.
    let disk = MemStore::from_bytes(Vec::with_capacity(SIZE + SIZE / 64));
    for _ in 0..rounds {
        let mut file = ProtectedFile::create(disk.clone(), &key, b"/bench", &options).unwrap();
        for (i, chunk) in data.chunks(IO).enumerate() {
            file.write_at((i * IO) as u64, chunk).unwrap();
        }
        file.close().unwrap();
    }
    let write_cpu = cpu_time() - start;
    let write_wall = wall.elapsed();

    let mut file = ProtectedFile::open(disk, &key, None, &options).unwrap();
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
