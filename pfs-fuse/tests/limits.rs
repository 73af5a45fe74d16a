//! The format's limits through a real mount (issue 11): growth beyond the maximum size or the
//! backing file system's free space is refused before anything is written (bug 5), a growth
//! that fails part way leaves the file as it was, embedded paths over 771 bytes are refused
//! with the rule in the log (bug 6), and the `fallocate` modes.
//!
//! Every test that grows files puts its backing directory on a small tmpfs or limits the
//! daemon's file size, so that a regression cannot fill the machine's disk.

mod common;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use common::{ChildMount, TestMount, errno};
use nix::fcntl::FallocateFlags;
use pfs_core::layout::{MAX_PATH_LEN, MAX_WRITABLE_SIZE, host_file_size};

#[test]
fn daemon_entry() {
    common::daemon_entry();
}

/// One petabyte minus one byte: pjdfstest's "larger than the maximum file size".
const PETABYTE: u64 = 999_999_999_999_999;

fn free_bytes(dir: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(dir).unwrap();
    st.blocks_available() as u64 * st.fragment_size() as u64
}

fn open_rw(path: &Path) -> fs::File {
    fs::OpenOptions::new().read(true).write(true).open(path).unwrap()
}

#[test]
fn a_petabyte_truncate_fails_at_once_and_writes_nothing() {
    let mut t = TestMount::on_tmpfs("64m", |_| {});
    fs::write(t.p("f"), b"hello").unwrap();
    let (host_len, free) = (fs::metadata(t.e("f")).unwrap().len(), free_bytes(&t.enc));

    let by_path = nix::unistd::truncate(&t.p("f"), PETABYTE as i64).unwrap_err();
    assert_eq!(by_path as i32, libc::EFBIG);
    let f = open_rw(&t.p("f"));
    assert_eq!(errno(&f.set_len(PETABYTE).unwrap_err()), libc::EFBIG, "ftruncate too");
    assert_eq!(
        errno(&f.set_len(MAX_WRITABLE_SIZE + 1).unwrap_err()),
        libc::EFBIG,
        "one byte beyond the limit"
    );
    drop(f);
    assert!(
        !common::log_lines_with(&["refused (EFBIG)", &format!("at most {MAX_WRITABLE_SIZE} bytes")])
            .is_empty()
    );

    assert_eq!(fs::metadata(t.p("f")).unwrap().len(), 5);
    assert_eq!(fs::read(t.p("f")).unwrap(), b"hello");
    assert_eq!(fs::metadata(t.e("f")).unwrap().len(), host_len, "the host file did not grow");
    assert_eq!(free_bytes(&t.enc), free, "nothing was written");
    t.remount();
    assert_eq!(fs::read(t.p("f")).unwrap(), b"hello");
}

#[test]
fn growth_beyond_the_free_space_is_refused_before_writing() {
    let mut t = TestMount::on_tmpfs("64m", |_| {});
    fs::write(t.p("f"), b"kept as it was").unwrap();
    let (host_len, free) = (fs::metadata(t.e("f")).unwrap().len(), free_bytes(&t.enc));
    let f = open_rw(&t.p("f"));
    assert_eq!(errno(&f.set_len(1 << 30).unwrap_err()), libc::ENOSPC);
    assert!(
        !common::log_lines_with(&["refused (ENOSPC)", "more bytes on the backing file system"]).is_empty()
    );
    assert_eq!(fs::metadata(t.e("f")).unwrap().len(), host_len);
    assert_eq!(free_bytes(&t.enc), free, "nothing was written");
    assert_eq!(fs::read(t.p("f")).unwrap(), b"kept as it was");

    // Growth that fits goes through, zeros and all.
    f.set_len(16 << 20).unwrap();
    drop(f);
    let data = fs::read(t.p("f")).unwrap();
    assert_eq!(data.len(), 16 << 20);
    assert_eq!(&data[..14], b"kept as it was");
    assert!(data[14..].iter().all(|&b| b == 0));
    assert_eq!(fs::metadata(t.e("f")).unwrap().len(), host_file_size(16 << 20));
    t.remount();
    assert_eq!(fs::metadata(t.p("f")).unwrap().len(), 16 << 20);
}

#[test]
fn a_write_far_past_the_end_is_checked_like_a_truncate() {
    // Without the kernel's writeback cache the write itself gets the answer.
    let t = TestMount::on_tmpfs("64m", |c| c.writeback_cache = false);
    fs::write(t.p("f"), b"start").unwrap();
    let free = free_bytes(&t.enc);
    let f = open_rw(&t.p("f"));
    assert_eq!(errno(&f.write_at(b"x", 1 << 30).unwrap_err()), libc::ENOSPC);
    assert_eq!(errno(&f.write_at(b"x", PETABYTE).unwrap_err()), libc::EFBIG);
    assert_eq!(free_bytes(&t.enc), free, "nothing was written");
    assert_eq!(fs::read(t.p("f")).unwrap(), b"start");
    // A gap that fits is written as zeros.
    f.write_at(b"end", 20 << 20).unwrap();
    drop(f);
    let data = fs::read(t.p("f")).unwrap();
    assert_eq!((data.len(), &data[..5], &data[(20 << 20)..]), ((20 << 20) + 3, &b"start"[..], &b"end"[..]));
}

#[test]
fn with_the_writeback_cache_a_refused_write_fails_at_fsync_and_changes_nothing() {
    let mut t = TestMount::on_tmpfs("64m", |_| {});
    fs::write(t.p("f"), b"start").unwrap();
    let free = free_bytes(&t.enc);
    let f = open_rw(&t.p("f"));
    // The kernel takes the write into its page cache; the daemon refuses it at writeback.
    f.write_at(b"x", 1 << 30).unwrap();
    assert!(f.sync_all().is_err(), "fsync reports the refused write");
    drop(f);
    assert_eq!(free_bytes(&t.enc), free, "nothing was written");
    t.remount();
    assert_eq!(fs::read(t.p("f")).unwrap(), b"start");
}

#[test]
fn a_growth_that_fails_part_way_leaves_the_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (enc, plain) = (dir.path().join("enc"), dir.path().join("plain"));
    fs::create_dir(&enc).unwrap();
    fs::create_dir(&plain).unwrap();
    let log = dir.path().join("daemon.log");
    // The daemon's host writes fail with EFBIG past 24 MiB: a disk that fails half way
    // through a growth to 100 MiB, after the free-space check and the reservation passed.
    let mut mount = ChildMount::spawn_with(&enc, &plain, None, "fsize=25165824", Some(&log));
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    fs::write(plain.join("f"), &data).unwrap();
    let host_len = fs::metadata(enc.join("f")).unwrap().len();

    let f = open_rw(&plain.join("f"));
    assert!(f.set_len(100 << 20).is_err(), "the growth fails");
    assert_eq!(f.metadata().unwrap().len(), data.len() as u64, "the size is back");
    drop(f);
    assert_eq!(fs::read(plain.join("f")).unwrap(), data);
    assert_eq!(fs::metadata(enc.join("f")).unwrap().len(), host_len, "the host file is back");
    let log_text = fs::read_to_string(&log).unwrap();
    assert!(log_text.contains(&format!("the file is back at {} bytes", data.len())), "{log_text}");
    // The file still works, and nothing is left beside it.
    open_rw(&plain.join("f")).write_all_at(b"!", data.len() as u64).unwrap();
    mount.stop();
    let names: Vec<_> = fs::read_dir(&enc).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("f")]);
    let mut want = data.clone();
    want.push(b'!');
    assert_eq!(common::decrypt_file(&enc.join("f"), &common::embedded_of(&enc, "f")), want);
}

/// A relative path of exactly `len` bytes: directories of 200-byte names, then a file name.
fn rel_of_len(len: usize) -> String {
    let mut rel = String::new();
    while len - rel.len() > 201 {
        rel.push_str(&"d".repeat(200));
        rel.push('/');
    }
    rel.push_str(&"f".repeat(len - rel.len()));
    rel
}

#[test]
fn embedded_paths_over_771_bytes_are_refused_with_the_rule_in_the_log() {
    let t = TestMount::new();
    // embedded(REL) = normalize(BACKING)/REL.
    let room = MAX_PATH_LEN - (t.embedded("x").len() - 1);
    let fits = rel_of_len(room);
    let too_long = rel_of_len(room + 1);
    assert_eq!(t.embedded(&fits).len(), MAX_PATH_LEN);
    for rel in [&fits, &too_long] {
        fs::create_dir_all(t.p(rel).parent().unwrap()).unwrap();
    }
    fs::write(t.p(&fits), b"at the limit").unwrap();
    assert_eq!(fs::read(t.p(&fits)).unwrap(), b"at the limit");
    assert_eq!(errno(&fs::write(t.p(&too_long), b"x").unwrap_err()), libc::ENAMETOOLONG);
    assert!(fs::symlink_metadata(t.e(&too_long)).is_err(), "no host file is left");
    let lines = common::log_lines_with(&[
        "refused (ENAMETOOLONG)",
        &format!("at most {MAX_PATH_LEN}"),
        &format!("at most {room} bytes"),
    ]);
    assert!(!lines.is_empty(), "the log gives the rule");

    // A rename that would take a file, or a file below a directory, past the limit.
    fs::write(t.p("short"), b"stays").unwrap();
    assert_eq!(errno(&fs::rename(t.p("short"), t.p(&too_long)).unwrap_err()), libc::ENAMETOOLONG);
    assert_eq!(fs::read(t.p("short")).unwrap(), b"stays");
    let (deep_dir, _) = too_long.rsplit_once('/').unwrap();
    fs::create_dir(t.p("mv")).unwrap();
    fs::write(t.p("mv/f"), b"below").unwrap();
    let target = format!("{deep_dir}/{}", "m".repeat(too_long.len() - deep_dir.len() - 3));
    assert_eq!(t.embedded(&format!("{target}/f")).len(), MAX_PATH_LEN + 1);
    assert_eq!(errno(&fs::rename(t.p("mv"), t.p(&target)).unwrap_err()), libc::ENAMETOOLONG);
    assert_eq!(fs::read(t.p("mv/f")).unwrap(), b"below");
    assert_eq!(t.decrypt_direct("mv/f"), b"below", "still bound to its old path");
    // Directories, symlinks and FIFOs carry no embedded path.
    std::os::unix::fs::symlink("x", t.p(&too_long)).unwrap();
}

#[test]
fn fallocate_grows_reserves_and_zeroes_and_refuses_hole_punching() {
    let mut t = TestMount::on_tmpfs("64m", |_| {});
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8 + 1).collect();
    fs::write(t.p("f"), &data).unwrap();
    let f = open_rw(&t.p("f"));
    let fallocate = |mode: FallocateFlags, offset: u64, len: u64| {
        nix::fcntl::fallocate(&f, mode, offset as i64, len as i64)
    };
    // Mode 0 inside the file changes nothing; past the end it grows the file with zeros.
    fallocate(FallocateFlags::empty(), 0, 1000).unwrap();
    fallocate(FallocateFlags::empty(), 90_000, 20_000).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 110_000);
    // KEEP_SIZE past the end reserves host space and leaves the size alone.
    let host_len = fs::metadata(t.e("f")).unwrap().len();
    assert!(fs::metadata(t.e("f")).unwrap().blocks() * 512 < host_file_size(4 << 20));
    fallocate(FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, 4 << 20).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 110_000);
    let host = fs::metadata(t.e("f")).unwrap();
    assert_eq!(host.len(), host_len);
    assert!(
        host.blocks() * 512 >= host_file_size(4 << 20),
        "host space for 4 MiB reserved: {} blocks",
        host.blocks()
    );
    // ZERO_RANGE inside the file, then across its end.
    fallocate(FallocateFlags::FALLOC_FL_ZERO_RANGE, 10_000, 5_000).unwrap();
    fallocate(FallocateFlags::FALLOC_FL_ZERO_RANGE, 105_000, 10_000).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 115_000);
    fallocate(FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE, 114_000, 10_000)
        .unwrap();
    assert_eq!(f.metadata().unwrap().len(), 115_000);
    // The format has no holes: punching one would free nothing.
    let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    assert_eq!(fallocate(punch, 0, 4096).unwrap_err() as i32, libc::EOPNOTSUPP);
    assert_eq!(
        fallocate(FallocateFlags::FALLOC_FL_COLLAPSE_RANGE, 0, 4096).unwrap_err() as i32,
        libc::EOPNOTSUPP
    );
    assert_eq!(fallocate(FallocateFlags::empty(), 0, PETABYTE).unwrap_err() as i32, libc::EFBIG);
    drop(f);

    let mut want = data.clone();
    want.resize(115_000, 0);
    want[10_000..15_000].fill(0);
    assert_eq!(fs::read(t.p("f")).unwrap(), want);
    t.unmount();
    assert_eq!(t.decrypt_direct("f"), want);
    t.mount(|_| {});
}
