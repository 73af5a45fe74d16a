//! `pfs bench`: throughput and cache hit rate of one access pattern for several node-cache
//! capacities, to tune the cache on the user's own workload shape.

use crate::splitmix::SplitMix64;
use std::fs::{self, OpenOptions as FsOpenOptions};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use pfs_core::layout::NODE_SIZE;
use pfs_core::{CacheStats, FileStore, Key, MemStore, NodeStore, OpenOptions, ProtectedFile};

use crate::Outcome;
use crate::size::{format_size, parse_size};

/// Long help of `pfs bench`.
pub const BENCH_ABOUT: &str = "\
Measure how the node-cache capacity affects one access pattern, to tune the cache for a
workload (Gramine uses 48 nodes; the pfs engine default is 256).

A protected file of --size bytes is made once (not timed), then for every capacity in
--cache it is opened with a cold cache and --ops reads (or writes, with --write) of
--io-size bytes are timed, a final flush included for writes. Patterns:
  sequential  offsets 0, io, 2*io, ... wrapping at the end of the file
  random      uniformly random io-aligned offsets (fixed --seed, so runs compare)
  strided     every --stride bytes, each pass over the file shifted by one io
  reread      the first --working-set bytes read again and again (a hot set)
The table shows the capacity (in 4 KiB nodes), throughput, the cache hit rate (hits
among all node look-ups), evictions, flushes and nodes written. The file lives in memory
by default (crypto and cache only) or on disk with --backing file:DIR.";

/// Examples of `pfs bench`.
pub const BENCH_EXAMPLES: &str = "\
Examples:
  pfs bench                                        # 64 MiB, sequential reads, caches 1..1024
  pfs bench --pattern random --io-size 4KiB --ops 20000
  pfs bench --pattern reread --working-set 2MiB --cache 48,256,1024
  pfs bench --write --pattern random --backing file:/tmp";

/// An access pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pattern {
    /// Consecutive I/Os from offset 0, wrapping at the end.
    Sequential,
    /// Uniformly random io-aligned offsets.
    Random,
    /// One I/O every --stride bytes.
    Strided,
    /// The first --working-set bytes, again and again.
    Reread,
}

/// Arguments of `pfs bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Plaintext size of the test file (e.g. 64MiB, 1GiB).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    size: u64,
    /// Access pattern.
    #[arg(long, value_enum, default_value_t = Pattern::Sequential)]
    pattern: Pattern,
    /// Cache capacities to compare, in 4 KiB nodes, comma-separated.
    #[arg(long, value_name = "N,N,...", value_delimiter = ',', default_value = "1,8,48,256,1024")]
    cache: Vec<usize>,
    /// Bytes per read or write call.
    #[arg(long, value_name = "SIZE", default_value = "4KiB", value_parser = parse_size)]
    io_size: u64,
    /// Number of I/O calls per capacity [default: one file's worth, SIZE / IO_SIZE].
    #[arg(long, value_name = "N")]
    ops: Option<u64>,
    /// Distance between I/Os for --pattern strided.
    #[arg(long, value_name = "SIZE", default_value = "64KiB", value_parser = parse_size)]
    stride: u64,
    /// Hot-set size for --pattern reread.
    #[arg(long, value_name = "SIZE", default_value = "2MiB", value_parser = parse_size)]
    working_set: u64,
    /// Where the protected file lives: `memory` or `file:DIR` (a temporary file in DIR).
    #[arg(long, value_name = "memory|file:DIR", default_value = "memory", value_parser = parse_backing)]
    backing: Backing,
    /// Time writes (followed by a flush) instead of reads.
    #[arg(long)]
    write: bool,
    /// Seed of the random pattern.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Where the benchmark file lives.
#[derive(Debug, Clone)]
pub enum Backing {
    /// A `MemStore`.
    Memory,
    /// A temporary file in this directory.
    Dir(PathBuf),
}

fn parse_backing(text: &str) -> Result<Backing, String> {
    match text {
        "memory" | "mem" => Ok(Backing::Memory),
        _ => match text.strip_prefix("file:") {
            Some(dir) if !dir.is_empty() => Ok(Backing::Dir(PathBuf::from(dir))),
            _ => Err(format!("{text:?} is not a backing; use `memory` or `file:DIR`")),
        },
    }
}

/// One row of the result table.
struct Row {
    capacity: usize,
    elapsed: Duration,
    stats: CacheStats,
}

/// Runs `pfs bench`.
pub fn bench(args: &BenchArgs) -> Result<Outcome> {
    if args.io_size == 0 || args.size == 0 {
        bail!("--size and --io-size must be greater than zero");
    }
    if args.io_size > args.size {
        bail!("--io-size {} is larger than --size {}", format_size(args.io_size), format_size(args.size));
    }
    if args.cache.is_empty() || args.cache.contains(&0) {
        bail!("--cache needs one or more capacities of at least 1 node");
    }
    let io_size = usize::try_from(args.io_size).context("--io-size is too large for this machine")?;
    let ops = args.ops.unwrap_or(args.size / args.io_size).max(1);
    let key = Key::from_bytes(*b"pfs-bench-key-16");
    let direction = if args.write { "writes + flush" } else { "reads" };
    let place = match &args.backing {
        Backing::Memory => "in memory".to_string(),
        Backing::Dir(dir) => format!("in a file in {}", dir.display()),
    };
    println!(
        "pfs bench: {} {direction} of {}, {ops} ops over a {} protected file {place}",
        args.pattern.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default(),
        format_size(args.io_size),
        format_size(args.size),
    );

    let rows = match &args.backing {
        Backing::Memory => {
            let store = MemStore::new();
            prepare(store.clone(), &key, args.size)?;
            run_all(args, &key, ops, io_size, || Ok(store.clone()))?
        }
        Backing::Dir(dir) => {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let temp = tempfile::Builder::new()
                .prefix(".pfs-bench-")
                .tempfile_in(dir)
                .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
            let path = temp.path().to_path_buf();
            let open = || -> Result<FileStore> {
                let file = FsOpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                Ok(FileStore::new(file))
            };
            prepare(open()?, &key, args.size)?;
            run_all(args, &key, ops, io_size, open)?
        }
    };

    println!(
        "{:>13} {:>10} {:>10} {:>9} {:>10} {:>8} {:>13}",
        "cache (nodes)", "cache size", "MiB/s", "hit rate", "evictions", "flushes", "nodes written"
    );
    let bytes = ops as f64 * args.io_size as f64;
    for row in &rows {
        let mib_s = bytes / row.elapsed.as_secs_f64().max(1e-9) / (1 << 20) as f64;
        println!(
            "{:>13} {:>10} {:>10.1} {:>8.1}% {:>10} {:>8} {:>13}",
            row.capacity,
            format_size((row.capacity * NODE_SIZE) as u64),
            mib_s,
            row.stats.hit_rate() * 100.0,
            row.stats.evictions,
            row.stats.flushes,
            row.stats.nodes_written,
        );
    }
    Ok(Outcome::Success)
}

/// Writes `size` bytes into a fresh protected file in `store` (not timed).
fn prepare<S: NodeStore>(store: S, key: &Key, size: u64) -> Result<()> {
    let options = OpenOptions::new().cache_nodes(1024);
    let mut pf =
        ProtectedFile::create(store, key, b"pfs-bench", &options).context("cannot create the bench file")?;
    let chunk: Vec<u8> = (0..4 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut offset = 0;
    while offset < size {
        let n = (size - offset).min(chunk.len() as u64) as usize;
        pf.write_at(offset, &chunk[..n]).context("cannot write the bench file")?;
        offset += n as u64;
    }
    pf.close().context("cannot write the bench file")?;
    Ok(())
}

fn run_all<S: NodeStore>(
    args: &BenchArgs,
    key: &Key,
    ops: u64,
    io_size: usize,
    mut open_store: impl FnMut() -> Result<S>,
) -> Result<Vec<Row>> {
    let offsets = Offsets::new(args);
    let mut buf = vec![0x5au8; io_size];
    let mut rows = Vec::new();
    for &capacity in &args.cache {
        let options = OpenOptions::new().cache_nodes(capacity);
        let mut pf = ProtectedFile::open(open_store()?, key, Some(b"pfs-bench"), &options)
            .context("cannot open the bench file")?;
        let mut rng = SplitMix64(args.seed);
        let start = Instant::now();
        for i in 0..ops {
            let offset = offsets.at(i, &mut rng);
            if args.write {
                pf.write_at(offset, &buf).with_context(|| format!("write at {offset} failed"))?;
            } else {
                pf.read_at(offset, &mut buf).with_context(|| format!("read at {offset} failed"))?;
            }
        }
        if args.write {
            pf.flush().context("flush failed")?;
        }
        let elapsed = start.elapsed();
        rows.push(Row { capacity, elapsed, stats: pf.cache_stats() });
        pf.close().context("cannot close the bench file")?;
    }
    Ok(rows)
}

/// Offsets of the I/O calls of a pattern (all io-aligned and inside the file).
struct Offsets {
    pattern: Pattern,
    io: u64,
    /// Number of io-sized slots in the file.
    slots: u64,
    /// Slots between strided I/Os.
    stride_slots: u64,
    /// Slots in the reread working set.
    hot_slots: u64,
}

impl Offsets {
    fn new(args: &BenchArgs) -> Self {
        let io = args.io_size;
        let slots = (args.size / io).max(1);
        Offsets {
            pattern: args.pattern,
            io,
            slots,
            stride_slots: (args.stride / io).max(1),
            hot_slots: (args.working_set.min(args.size) / io).max(1),
        }
    }

    fn at(&self, i: u64, rng: &mut SplitMix64) -> u64 {
        let slot = match self.pattern {
            Pattern::Sequential => i % self.slots,
            Pattern::Random => rng.next() % self.slots,
            Pattern::Strided => {
                let pos = i.wrapping_mul(self.stride_slots);
                (pos % self.slots + pos / self.slots) % self.slots
            }
            Pattern::Reread => i % self.hot_slots,
        };
        slot * self.io
    }
}
