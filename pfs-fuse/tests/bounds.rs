//! Resource bounds of the daemon (issue 6): 10,000 files created, written, closed,
//! reopened, read, closed and partly unlinked through a mount served by a child process,
//! whose descriptor count and resident memory must stay bounded.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use common::{ChildMount, Rng, TestMount};

#[test]
fn daemon_entry() {
    common::daemon_entry();
}

/// Open descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Resident memory of process `pid`, in KiB (`VmRSS` in /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn content(i: usize, rng: &mut Rng) -> Vec<u8> {
    // Mostly small files (node 0 only); every fourth one has a tree and so writes and
    // removes a recovery file on each close.
    let len = if i.is_multiple_of(4) { 3073 + rng.below(40_000) as usize } else { rng.below(3000) as usize };
    rng.bytes(len)
}

fn cycle(plain: &Path, range: std::ops::Range<usize>, rng: &mut Rng) {
    for i in range {
        let dir = plain.join(format!("d{:02}", i % 50));
        let path = dir.join(format!("f{i:05}"));
        let data = content(i, rng);
        let mut f = fs::File::create(&path).unwrap();
        f.write_all(&data).unwrap();
        drop(f);
        let mut back = Vec::new();
        fs::File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        assert!(back == data, "{} read back differently", path.display());
        if i.is_multiple_of(3) {
            fs::remove_file(&path).unwrap();
        }
    }
}

#[test]
fn ten_thousand_files_keep_descriptors_and_memory_bounded() {
    let mut t = TestMount::new();
    t.unmount();
    let mut daemon = ChildMount::spawn(&t.enc, &t.plain, None);
    let pid = daemon.pid();
    for d in 0..50 {
        fs::create_dir(t.plain.join(format!("d{d:02}"))).unwrap();
    }
    let mut rng = Rng(0x5eed_b0b5);
    // Warm-up: thread stacks, allocator arenas and the first cache buffers exist after it.
    cycle(&t.plain, 0..500, &mut rng);
    let (fds0, rss0) = (fd_count(pid), rss_kib(pid));
    cycle(&t.plain, 500..10_000, &mut rng);
    let (fds1, rss1) = (fd_count(pid), rss_kib(pid));
    eprintln!("bounds: daemon fds {fds0} -> {fds1}, VmRSS {rss0} KiB -> {rss1} KiB after 10,000 files");
    // Every file is closed: the daemon holds only its own descriptors (backing directory,
    // /dev/fuse clones, std streams). One leaked descriptor per file would show thousands.
    assert!(fds1 <= fds0 + 4, "daemon descriptors grew from {fds0} to {fds1}");
    // What may grow: the inode table and the plaintext-size cache, about 200 bytes per
    // file the kernel still remembers (10,000 × 200 B ≈ 2 MiB), and allocator slack. One
    // open file's node cache is at most 1024 × 4 KiB = 4 MiB; 2 workers can hold two. A
    // leak of one cache buffer (4 KiB) per file would add 38 MiB; 24 MiB is the bound.
    let growth = rss1.saturating_sub(rss0);
    assert!(growth < 24 * 1024, "daemon VmRSS grew by {growth} KiB ({rss0} -> {rss1})");
    daemon.stop();
    // Nothing left behind: no recovery file for any closed file.
    let leftovers: Vec<_> = walk(&t.enc).into_iter().filter(|p| p.ends_with(".gramine.recovery")).collect();
    assert!(leftovers.is_empty(), "recovery files left: {leftovers:?}");
    let kept = walk(&t.enc).len();
    assert_eq!(kept, 10_000 - 10_000usize.div_ceil(3), "files kept");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push(entry.path().to_string_lossy().into_owned());
        }
    }
    out
}
