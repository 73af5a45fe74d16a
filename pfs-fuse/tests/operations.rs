//! POSIX operations through a real mount, checked against the engine's view of the
//! backing files.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};

use common::{TestMount, decrypt_file, errno};

#[test]
fn files_written_through_the_mount_are_protected_files_bound_to_their_path() {
    let t = TestMount::new();
    fs::write(t.p("hello.txt"), b"hello world").unwrap();
    fs::create_dir(t.p("sub")).unwrap();
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(t.p("sub/big.bin"), &big).unwrap();

    assert_eq!(fs::read(t.p("hello.txt")).unwrap(), b"hello world");
    assert_eq!(fs::metadata(t.p("hello.txt")).unwrap().len(), 11, "getattr reports the plaintext size");
    assert_eq!(fs::metadata(t.p("sub/big.bin")).unwrap().len(), big.len() as u64);
    // On the host: ciphertext, never plaintext.
    let host = fs::read(t.e("hello.txt")).unwrap();
    assert_eq!(&host[..8], b"GRAFS_PF"[..8].as_ref());
    assert!(!host.windows(11).any(|w| w == b"hello world"));
    assert_eq!(t.decrypt_direct("hello.txt"), b"hello world");
    assert_eq!(t.decrypt_direct("sub/big.bin"), big);
}

#[test]
fn truncate_chmod_chown_utimens_statfs() {
    let t = TestMount::new();
    fs::write(t.p("f"), vec![7u8; 10_000]).unwrap();
    let f = fs::OpenOptions::new().write(true).open(t.p("f")).unwrap();
    f.set_len(5000).unwrap();
    drop(f);
    assert_eq!(fs::metadata(t.p("f")).unwrap().len(), 5000);
    fs::OpenOptions::new().write(true).truncate(true).open(t.p("f")).unwrap();
    assert_eq!(fs::read(t.p("f")).unwrap().len(), 0);
    // grow by truncate
    fs::OpenOptions::new().write(true).open(t.p("f")).unwrap().set_len(9000).unwrap();
    assert_eq!(fs::read(t.p("f")).unwrap(), vec![0u8; 9000]);
    assert_eq!(t.decrypt_direct("f"), vec![0u8; 9000]);

    fs::set_permissions(t.p("f"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(t.p("f")).unwrap().mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(t.e("f")).unwrap().mode() & 0o777, 0o600);
    std::os::unix::fs::chown(t.p("f"), Some(1234), Some(4321)).unwrap();
    let m = fs::metadata(t.p("f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 4321));
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    fs::File::options().write(true).open(t.p("f")).unwrap().set_modified(when).unwrap();
    assert_eq!(fs::metadata(t.p("f")).unwrap().mtime(), 1_600_000_000);

    let st = nix::sys::statvfs::statvfs(&t.plain).unwrap();
    assert!(st.blocks() > 0);
}

#[test]
fn rename_within_and_across_directories_rewrites_the_embedded_path() {
    let t = TestMount::new();
    fs::create_dir_all(t.p("a/deep")).unwrap();
    fs::create_dir(t.p("b")).unwrap();
    fs::write(t.p("a/one"), b"one").unwrap();
    fs::write(t.p("a/deep/two"), b"two").unwrap();
    fs::write(t.p("b/target"), b"old target").unwrap();

    fs::rename(t.p("a/one"), t.p("a/uno")).unwrap();
    assert_eq!(t.decrypt_direct("a/uno"), b"one");
    // Across directories, replacing an existing target.
    fs::rename(t.p("a/uno"), t.p("b/target")).unwrap();
    assert_eq!(fs::read(t.p("b/target")).unwrap(), b"one");
    assert_eq!(t.decrypt_direct("b/target"), b"one");
    // A directory: every file below is rebound.
    fs::rename(t.p("a"), t.p("b/moved")).unwrap();
    assert_eq!(fs::read(t.p("b/moved/deep/two")).unwrap(), b"two");
    assert_eq!(t.decrypt_direct("b/moved/deep/two"), b"two");
    // Rename while open: the handle keeps working and the path follows.
    let mut f = fs::OpenOptions::new().read(true).write(true).open(t.p("b/target")).unwrap();
    fs::rename(t.p("b/target"), t.p("renamed-open")).unwrap();
    f.write_all(b"ONE").unwrap();
    drop(f);
    assert_eq!(fs::read(t.p("renamed-open")).unwrap(), b"ONE");
    assert_eq!(t.decrypt_direct("renamed-open"), b"ONE");
    // rename(2) with RENAME_NOREPLACE
    fs::write(t.p("x"), b"x").unwrap();
    let r = nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &t.p("x"),
        nix::fcntl::AT_FDCWD,
        &t.p("renamed-open"),
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    );
    assert_eq!(r, Err(nix::errno::Errno::EEXIST));
}

#[test]
fn unlink_rmdir_and_unlinked_open_files() {
    let t = TestMount::new();
    fs::create_dir(t.p("d")).unwrap();
    fs::write(t.p("d/f"), b"data").unwrap();
    assert_eq!(fs::remove_dir(t.p("d")).unwrap_err().raw_os_error(), Some(libc::ENOTEMPTY));
    let mut f = fs::File::open(t.p("d/f")).unwrap();
    fs::remove_file(t.p("d/f")).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "data", "an unlinked open file stays readable");
    fs::remove_dir(t.p("d")).unwrap();
    assert!(!t.e("d").exists());
}

#[test]
fn symlinks_pass_through_and_hard_links_are_refused() {
    let t = TestMount::new();
    fs::write(t.p("real"), b"real data").unwrap();
    std::os::unix::fs::symlink("real", t.p("link")).unwrap();
    assert_eq!(fs::read_link(t.p("link")).unwrap().to_str(), Some("real"));
    assert_eq!(fs::read(t.p("link")).unwrap(), b"real data");
    assert!(fs::symlink_metadata(t.e("link")).unwrap().file_type().is_symlink(), "a plain host symlink");
    let e = fs::hard_link(t.p("real"), t.p("hard")).unwrap_err();
    assert_eq!(errno(&e), libc::EPERM);
    assert!(!common::log_lines_with(&["hard links"]).is_empty(), "refusal is logged");
}

#[test]
fn xattrs_answer_without_support_and_o_direct_works() {
    let t = TestMount::new();
    fs::write(t.p("f"), vec![1u8; 8192]).unwrap();
    let r = nix::sys::stat::stat(&t.p("f"));
    assert!(r.is_ok());
    // getxattr: not supported (ENOSYS from the daemon becomes EOPNOTSUPP for the caller).
    let out = std::process::Command::new("getfattr").arg("-n").arg("user.x").arg(t.p("f")).output();
    if let Ok(out) = out {
        assert!(!out.status.success());
    }
    let f =
        fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(t.p("f")).unwrap();
    let mut buf = AlignedBuf::new();
    f.read_at(buf.as_mut(), 4096).unwrap();
    assert!(buf.as_mut().iter().all(|&b| b == 1));
    buf.as_mut().fill(9);
    f.write_at(buf.as_mut(), 0).unwrap();
    drop(f);
    let data = fs::read(t.p("f")).unwrap();
    assert!(data[..4096].iter().all(|&b| b == 9) && data[4096..].iter().all(|&b| b == 1));
}

struct AlignedBuf(Vec<u8>, usize);
impl AlignedBuf {
    fn new() -> Self {
        let v = vec![0u8; 8192];
        let off = v.as_ptr().align_offset(4096);
        AlignedBuf(v, off)
    }
    fn as_mut(&mut self) -> &mut [u8] {
        let o = self.1;
        &mut self.0[o..o + 4096]
    }
}

#[test]
fn recovery_files_are_hidden() {
    let t = TestMount::new();
    fs::write(t.p("f"), b"x").unwrap();
    fs::write(t.e("f.gramine.recovery"), b"shadow").unwrap();
    let names: Vec<String> =
        fs::read_dir(&t.plain).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, vec!["f".to_string()]);
    assert!(fs::metadata(t.p("f.gramine.recovery")).is_err());
    assert!(fs::write(t.p("g.gramine.recovery"), b"x").is_err());
}

#[test]
fn remount_keeps_everything_and_unmount_leaves_nothing_mounted() {
    let mut t = TestMount::new();
    fs::create_dir(t.p("dir")).unwrap();
    let mut f = fs::File::create(t.p("dir/file")).unwrap();
    f.write_all(b"persisted").unwrap();
    drop(f);
    t.remount();
    assert_eq!(fs::read(t.p("dir/file")).unwrap(), b"persisted");
    t.unmount();
    assert!(!common::mounted_at(&t.plain));
    assert_eq!(decrypt_file(&t.e("dir/file"), &t.embedded("dir/file")), b"persisted");
}

/// Readers of one file (two threads on one descriptor, one on its own) read with
/// O_DIRECT, so every read reaches the daemon, while a writer rewrites whole 4 KiB
/// blocks. Each block names its index and generation; a read must see a whole block of
/// one generation, and never an older generation than an earlier read of that block saw
/// (reads and writes of one file stay linearizable with shared reads in the daemon).
#[test]
fn parallel_readers_of_one_file_see_consistent_blocks_during_writes() {
    const BLOCKS: usize = 2048; // 8 MiB
    const READ: usize = 64 << 10;
    fn block(i: usize, generation: u32) -> Vec<u8> {
        let mut b = vec![(i as u8).wrapping_mul(7).wrapping_add(generation as u8); 4096];
        b[..4].copy_from_slice(&(i as u32).to_le_bytes());
        b[4..8].copy_from_slice(&generation.to_le_bytes());
        b
    }
    fn aligned(len: usize) -> (Vec<u8>, usize) {
        let v = vec![0u8; len + 4096];
        let off = v.as_ptr().align_offset(4096);
        (v, off)
    }
    let t = TestMount::new();
    let initial: Vec<u8> = (0..BLOCKS).flat_map(|i| block(i, 0)).collect();
    fs::write(t.p("shared"), &initial).unwrap();
    let open = || fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(t.p("shared")).unwrap();
    let shared_fd = open();
    let own_fd = open();
    let reader = |f: &fs::File, seed: u64| {
        let mut rng = common::Rng(seed);
        let mut seen = vec![0u32; BLOCKS];
        let (mut v, off) = aligned(READ);
        for _ in 0..150 {
            let first = rng.below((BLOCKS - READ / 4096) as u64) as usize;
            let buf = &mut v[off..off + READ];
            assert_eq!(f.read_at(buf, (first * 4096) as u64).unwrap(), READ);
            for (k, b) in buf.chunks(4096).enumerate() {
                let i = first + k;
                let index = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
                let generation = u32::from_le_bytes(b[4..8].try_into().unwrap());
                assert_eq!(index, i, "block {i} holds block {index}'s bytes");
                assert!(b == block(i, generation).as_slice(), "block {i} is torn (generation {generation})");
                assert!(
                    generation >= seen[i],
                    "block {i} went back from generation {} to {generation}",
                    seen[i]
                );
                seen[i] = generation;
            }
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let f =
                fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(t.p("shared")).unwrap();
            let mut rng = common::Rng(99);
            let mut generation = vec![0u32; BLOCKS];
            let (mut v, off) = aligned(4096);
            for _ in 0..400 {
                let i = rng.below(BLOCKS as u64) as usize;
                generation[i] += 1;
                v[off..off + 4096].copy_from_slice(&block(i, generation[i]));
                f.write_at(&v[off..off + 4096], (i * 4096) as u64).unwrap();
            }
        });
        s.spawn(|| reader(&shared_fd, 1));
        s.spawn(|| reader(&shared_fd, 2));
        s.spawn(|| reader(&own_fd, 3));
    });
}
