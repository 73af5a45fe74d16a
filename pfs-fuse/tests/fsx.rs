//! fsx-style random operations through the mount, checked against the same operations on
//! a plain temporary file, including mmap reads and writes, reopen and rename. At the end
//! the file is checked after a remount and decrypted with the engine alone.

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{ChildMount, Rng, TestMount};

#[test]
fn daemon_entry() {
    common::daemon_entry();
}

const MAX_SIZE: u64 = 600_000;

struct Pair {
    pfs: File,
    plain: File,
    pfs_path: PathBuf,
    plain_path: PathBuf,
}

fn open_rw(p: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(p).unwrap()
}

fn len(f: &File) -> u64 {
    f.metadata().unwrap().len()
}

fn check_read(pair: &Pair, off: u64, n: usize, op: usize) {
    let mut a = vec![0u8; n];
    let mut b = vec![0u8; n];
    let ra = read_full(&pair.pfs, &mut a, off);
    let rb = read_full(&pair.plain, &mut b, off);
    assert_eq!(ra, rb, "op {op}: short read length differs at {off}+{n}");
    if a[..ra] != b[..rb] {
        let first = a.iter().zip(&b).position(|(x, y)| x != y).unwrap();
        panic!("op {op}: data differs at offset {}", off + first as u64);
    }
}

fn read_full(f: &File, buf: &mut [u8], off: u64) -> usize {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64).unwrap() {
            0 => break,
            n => done += n,
        }
    }
    done
}

/// Maps `[off, off+n)` of both files and compares, or writes `data` through both maps.
fn mmap_op(pair: &Pair, off: u64, data: Option<&[u8]>, n: usize, op: usize) {
    let size = len(&pair.plain);
    if size == 0 || n == 0 {
        return;
    }
    let off = off.min(size - 1);
    let n = n.min((size - off) as usize);
    let page = off & !4095;
    let maplen = (off - page) as usize + n;
    for (f, is_pfs) in [(&pair.pfs, true), (&pair.plain, false)] {
        let mut opts = memmap2::MmapOptions::new();
        opts.offset(page).len(maplen);
        // SAFETY: the test owns both files; nothing else truncates them while mapped.
        let mut map = unsafe { opts.map_mut(f) }.unwrap();
        let at = (off - page) as usize;
        match data {
            Some(d) => {
                map[at..at + n].copy_from_slice(&d[..n]);
                map.flush().unwrap();
            }
            None => {
                if is_pfs {
                    let mut want = vec![0u8; n];
                    read_full(&pair.plain, &mut want, off);
                    assert!(map[at..at + n] == want[..], "op {op}: mmap read differs at {off}+{n}");
                }
            }
        }
    }
}

#[test]
fn random_operations_match_a_plain_file() {
    // The daemon runs in a child process: this test maps files of the mount.
    let mut t = TestMount::new();
    t.unmount();
    let mut daemon = ChildMount::spawn(&t.enc, &t.plain, None);
    let model_dir = tempfile::tempdir().unwrap();
    let seed = std::env::var("PFS_FSX_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_f00d_u64);
    let ops: usize = std::env::var("PFS_FSX_OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(4000);
    eprintln!("fsx seed {seed}, {ops} operations");
    let mut rng = Rng(seed);
    fs::create_dir(t.p("d1")).unwrap();
    fs::create_dir(t.p("d2")).unwrap();
    let names = ["d1/f", "d2/g", "top"];
    let mut name_i = 0;
    let pfs_path = t.p(names[0]);
    let plain_path = model_dir.path().join("model");
    File::create(&pfs_path).unwrap();
    File::create(&plain_path).unwrap();
    let mut pair = Pair { pfs: open_rw(&pfs_path), plain: open_rw(&plain_path), pfs_path, plain_path };

    for op in 0..ops {
        let size = len(&pair.plain);
        assert_eq!(len(&pair.pfs), size, "op {op}: sizes differ");
        match rng.below(100) {
            0..=29 => {
                // write, small or large, sometimes beyond the end (a hole)
                let off = rng.below(MAX_SIZE);
                let n = if rng.below(4) == 0 { rng.below(200_000) } else { rng.below(9000) } as usize;
                let n = n.min((MAX_SIZE - off) as usize).max(1);
                let data = rng.bytes(n);
                pair.pfs.write_all_at(&data, off).unwrap();
                pair.plain.write_all_at(&data, off).unwrap();
            }
            30..=49 => {
                let off = rng.below(size + 5000);
                let n = rng.below(70_000) as usize;
                check_read(&pair, off, n, op);
            }
            50..=57 => {
                let n = rng.below(20_000) as usize + 1;
                let data = rng.bytes(n);
                if size + n as u64 <= MAX_SIZE {
                    pair.pfs.write_all_at(&data, size).unwrap();
                    pair.plain.write_all_at(&data, size).unwrap();
                }
            }
            58..=65 => {
                let new = if rng.below(3) == 0 { rng.below(size + 1) } else { rng.below(MAX_SIZE) };
                pair.pfs.set_len(new).unwrap();
                pair.plain.set_len(new).unwrap();
            }
            66..=72 => {
                // reopen (close flushes), sometimes after fsync
                if rng.below(2) == 0 {
                    pair.pfs.sync_all().unwrap();
                }
                pair.pfs = open_rw(&pair.pfs_path);
            }
            73..=77 => {
                name_i = (name_i + 1) % names.len();
                let to = t.p(names[name_i]);
                fs::rename(&pair.pfs_path, &to).unwrap();
                pair.pfs_path = to;
            }
            78..=86 => {
                let off = rng.below(size.max(1));
                let n = rng.below(30_000) as usize;
                mmap_op(&pair, off, None, n, op);
            }
            87..=93 => {
                let off = rng.below(size.max(1));
                let n = rng.below(20_000) as usize + 1;
                let data = rng.bytes(n);
                mmap_op(&pair, off, Some(&data), n, op);
            }
            _ => {
                check_read(&pair, 0, size as usize, op);
            }
        }
    }
    let want = fs::read(&pair.plain_path).unwrap();
    assert_eq!(fs::read(&pair.pfs_path).unwrap(), want, "final content");
    let rel = names[name_i];
    drop(pair);
    daemon.stop();
    t.mount(|_| {});
    assert_eq!(fs::read(t.p(rel)).unwrap(), want, "content after remount");
    t.unmount();
    assert_eq!(t.decrypt_direct(rel), want, "the engine decrypts it at its embedded path");
}
