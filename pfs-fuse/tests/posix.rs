//! POSIX behaviour that pjdfstest found missing or wrong (issue 11), through real mounts:
//! the caller's umask alone decides a new inode's mode (bug 1), set-ID bits asked for at
//! create are kept (bug 2), a set-group-ID directory gives its group (bug 3); FIFOs,
//! sockets and device nodes pass through; hard links to content-free files;
//! `RENAME_EXCHANGE` and `RENAME_NOREPLACE`.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{ChildMount, TestMount, errno};
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

#[test]
fn daemon_entry() {
    common::daemon_entry();
}

const NOBODY: (u32, u32) = (65534, 65534);
/// Debian's `daemon` group, not a group of root's or nobody's.
const DAEMON_GID: u32 = 1;

/// A daemon child whose own umask is 077 (a strong one, so that applying it would show) and
/// that lets other users in, over a tree other users can enter.
fn child_mount() -> (tempfile::TempDir, std::path::PathBuf, ChildMount) {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (enc, plain) = (dir.path().join("enc"), dir.path().join("plain"));
    fs::create_dir(&enc).unwrap();
    fs::create_dir(&plain).unwrap();
    fs::set_permissions(&enc, fs::Permissions::from_mode(0o777)).unwrap();
    let mount = ChildMount::spawn_with(&enc, &plain, None, "umask=077,allow-other", None);
    (dir, enc, mount)
}

/// Runs a Python snippet in `dir` with `umask`, as `user` (uid, gid) or root.
fn python(dir: &Path, umask: &str, user: Option<(u32, u32)>, script: &str) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("umask {umask} && exec python3 -c \"$0\"")).arg(script).current_dir(dir);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().expect("python3 runs");
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).mode() & 0o7777
}

/// Each name has mode `want` through the mount and on the host.
fn assert_modes(plain: &Path, enc: &Path, modes: &[(&str, u32)]) {
    for &(name, want) in modes {
        assert_eq!(mode(&plain.join(name)), want, "{name} through the mount");
        assert_eq!(mode(&enc.join(name)), want, "{name} on the host");
    }
}

#[test]
fn new_inodes_get_the_mode_asked_for_under_the_callers_umask_only() {
    let (dir, enc, mut mount) = child_mount();
    let plain = dir.path().join("plain");
    python(
        &plain,
        "000",
        None,
        "import os, stat\n\
         os.mkdir('d', 0o777)\n\
         os.close(os.open('f', os.O_CREAT | os.O_WRONLY, 0o666))\n\
         os.mkfifo('p', 0o666)\n\
         os.mknod('s', stat.S_IFSOCK | 0o666)",
    );
    python(
        &plain,
        "002",
        None,
        "import os\n\
         os.mkdir('d2', 0o777)\n\
         os.close(os.open('f2', os.O_CREAT | os.O_WRONLY, 0o666))",
    );
    assert_modes(
        &plain,
        &enc,
        &[("d", 0o777), ("f", 0o666), ("p", 0o666), ("s", 0o666), ("d2", 0o775), ("f2", 0o664)],
    );
    mount.stop();
}

#[test]
fn set_id_bits_asked_for_at_create_are_kept() {
    let (dir, enc, mut mount) = child_mount();
    let plain = dir.path().join("plain");
    python(
        &plain,
        "000",
        None,
        "import os\n\
         for name, mode in [('suid', 0o4755), ('sgid', 0o2755), ('both', 0o6711)]:\n    \
             os.close(os.open(name, os.O_CREAT | os.O_WRONLY, mode))\n\
         os.mkdir('sticky', 0o1777)\n\
         os.mkdir('not-sgid-dir', 0o2775)",
    );
    // A user's own new file keeps its set-user-ID bit too (it is the owner).
    python(
        &plain,
        "000",
        Some(NOBODY),
        "import os\nos.close(os.open('sticky/mine', os.O_CREAT | os.O_WRONLY, 0o4750))",
    );
    // As on ext4, mkdir keeps the sticky bit and ignores set-ID bits (a directory gets
    // S_ISGID from its parent only).
    assert_modes(
        &plain,
        &enc,
        &[
            ("suid", 0o4755),
            ("sgid", 0o2755),
            ("both", 0o6711),
            ("sticky", 0o1777),
            ("not-sgid-dir", 0o775),
            ("sticky/mine", 0o4750),
        ],
    );
    let mine = fs::metadata(plain.join("sticky/mine")).unwrap();
    assert_eq!((mine.uid(), mine.gid()), NOBODY, "the caller owns what it creates");
    mount.stop();
}

#[test]
fn a_set_group_id_directory_gives_its_group_to_new_inodes() {
    let (dir, enc, mut mount) = child_mount();
    let plain = dir.path().join("plain");
    fs::create_dir(plain.join("shared")).unwrap();
    std::os::unix::fs::chown(plain.join("shared"), None, Some(DAEMON_GID)).unwrap();
    fs::set_permissions(plain.join("shared"), fs::Permissions::from_mode(0o2777)).unwrap();
    fs::create_dir(plain.join("open")).unwrap();
    fs::set_permissions(plain.join("open"), fs::Permissions::from_mode(0o777)).unwrap();
    let create = "import os\n\
                  os.close(os.open('f', os.O_CREAT | os.O_WRONLY, 0o644))\n\
                  os.mkdir('d', 0o755)\n\
                  os.mkfifo('p', 0o644)\n\
                  os.symlink('f', 'l')";
    python(&plain.join("shared"), "022", None, create);
    python(&plain.join("open"), "022", Some(NOBODY), create);
    python(
        &plain.join("shared"),
        "022",
        Some(NOBODY),
        "import os\nos.close(os.open('n', os.O_CREAT | os.O_WRONLY, 0o644))",
    );
    python(
        &plain.join("shared/d"),
        "022",
        None,
        "import os\nos.close(os.open('g', os.O_CREAT | os.O_WRONLY, 0o644))",
    );
    for root in [&plain, &enc] {
        for name in ["f", "d", "p", "l"] {
            let m = fs::symlink_metadata(root.join("shared").join(name)).unwrap();
            assert_eq!((m.uid(), m.gid()), (0, DAEMON_GID), "shared/{name} under {}", root.display());
            let m = fs::symlink_metadata(root.join("open").join(name)).unwrap();
            assert_eq!((m.uid(), m.gid()), NOBODY, "open/{name} under {}", root.display());
        }
        // A new directory inherits the bit, so the group passes on down.
        assert_eq!(mode(&root.join("shared/d")), 0o2755);
        assert_eq!(mode(&root.join("open/d")), 0o755);
        let n = fs::metadata(root.join("shared/n")).unwrap();
        assert_eq!((n.uid(), n.gid()), (NOBODY.0, DAEMON_GID), "another user's file gets the group too");
        let g = fs::metadata(root.join("shared/d/g")).unwrap();
        assert_eq!((g.uid(), g.gid()), (0, DAEMON_GID));
    }
    mount.stop();
}

#[test]
fn fifos_sockets_and_devices_pass_through_as_host_special_files() {
    let mut t = TestMount::new();
    nix::unistd::mkfifo(&t.p("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(t.p("sock")).unwrap();
    let devices = [
        ("null", nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::makedev(1, 3)),
        ("loop", nix::sys::stat::SFlag::S_IFBLK, nix::sys::stat::makedev(7, 0)),
        // Beyond 8 minor bits and 8 major bits, where device encodings differ.
        ("wide", nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::makedev(300, 70_000)),
    ];
    for (name, kind, dev) in devices {
        nix::sys::stat::mknod(&t.p(name), kind, nix::sys::stat::Mode::from_bits_truncate(0o600), dev)
            .unwrap();
    }
    let check = |t: &TestMount| {
        for root in [&t.plain, &t.enc] {
            let ft = |n: &str| fs::symlink_metadata(root.join(n)).unwrap().file_type();
            assert!(ft("fifo").is_fifo() && ft("sock").is_socket(), "under {}", root.display());
            assert!(
                ft("null").is_char_device() && ft("loop").is_block_device() && ft("wide").is_char_device()
            );
            for (name, _, dev) in devices {
                assert_eq!(
                    fs::symlink_metadata(root.join(name)).unwrap().rdev(),
                    dev,
                    "{name} under {}",
                    root.display()
                );
            }
            assert_eq!(mode(&root.join("fifo")), 0o640);
        }
        let mut listed: Vec<(String, bool)> = fs::read_dir(&t.plain)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().into_string().unwrap(), e.file_type().unwrap().is_fifo()))
            .collect();
        listed.sort();
        assert_eq!(listed.len(), 5);
        assert!(listed.contains(&("fifo".into(), true)));
    };
    check(&t);

    // A socket bound through the mount takes connections through the mount.
    drop(std::os::unix::net::UnixStream::connect(t.p("sock")).unwrap());
    // The FIFO works between two openers through the mount.
    let path = t.p("fifo");
    let writer = std::thread::spawn(move || fs::write(path, b"through the pipe").unwrap());
    assert_eq!(fs::read(t.p("fifo")).unwrap(), b"through the pipe");
    writer.join().unwrap();
    // The mount is nodev: a device node made through it does not open as a device there.
    assert_eq!(errno(&fs::File::open(t.p("null")).unwrap_err()), libc::EACCES);
    // chmod and chown reach the special file itself.
    fs::set_permissions(t.p("fifo"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::lchown(t.p("sock"), Some(1234), Some(4321)).unwrap();
    assert_eq!(mode(&t.e("fifo")), 0o600);
    assert_eq!(fs::symlink_metadata(t.e("sock")).unwrap().uid(), 1234);
    fs::set_permissions(t.p("fifo"), fs::Permissions::from_mode(0o640)).unwrap();
    drop(listener);

    t.remount();
    check(&t);
    for name in ["fifo", "sock", "null", "loop", "wide"] {
        fs::remove_file(t.p(name)).unwrap();
        assert!(fs::symlink_metadata(t.e(name)).is_err(), "{name} removed from the host");
    }
}

#[test]
fn content_free_files_are_hard_linked_and_regular_files_are_refused() {
    let mut t = TestMount::new();
    let plain = t.plain.clone();
    let link = |a: &str, b: &str| {
        nix::unistd::linkat(AT_FDCWD, &plain.join(a), AT_FDCWD, &plain.join(b), nix::fcntl::AtFlags::empty())
    };
    nix::unistd::mkfifo(&t.p("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    std::os::unix::fs::symlink("somewhere", t.p("sym")).unwrap();
    nix::sys::stat::mknod(
        &t.p("dev"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    for name in ["fifo", "sym", "dev"] {
        let other = format!("{name}2");
        link(name, &other).unwrap();
        let (a, b) = (fs::symlink_metadata(t.p(name)).unwrap(), fs::symlink_metadata(t.p(&other)).unwrap());
        assert_eq!((a.nlink(), b.nlink()), (2, 2), "{name}: both names count two links");
        assert_eq!(a.ino(), b.ino(), "{name}: one inode of the mount");
        let (ha, hb) = (fs::symlink_metadata(t.e(name)).unwrap(), fs::symlink_metadata(t.e(&other)).unwrap());
        assert_eq!(ha.ino(), hb.ino(), "{name}: one host inode");
    }
    assert_eq!(fs::read_link(t.p("sym2")).unwrap(), Path::new("somewhere"));
    // A change through one name shows at once through the other (one inode, one cache).
    fs::set_permissions(t.p("fifo2"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(mode(&t.p("fifo")), 0o600);
    fs::remove_file(t.p("fifo2")).unwrap();
    assert_eq!(fs::symlink_metadata(t.p("fifo")).unwrap().nlink(), 1, "unlink of one name shows at once");

    // After a remount the kernel knows no name; a lookup of each still finds one inode.
    link("sym", "sym3").unwrap();
    t.remount();
    let inos: Vec<u64> =
        ["sym", "sym2", "sym3"].iter().map(|n| fs::symlink_metadata(t.p(n)).unwrap().ino()).collect();
    assert!(inos.iter().all(|&i| i == inos[0]), "{inos:?}");
    assert_eq!(fs::symlink_metadata(t.p("sym2")).unwrap().nlink(), 3);

    // A protected file is bound to one path: no second name.
    fs::write(t.p("data"), b"bound to one path").unwrap();
    let e = link("data", "data2").unwrap_err();
    assert_eq!(e as i32, pfs_fuse::REGULAR_FILE_LINK_ERRNO.code());
    assert!(fs::symlink_metadata(t.p("data2")).is_err() && fs::symlink_metadata(t.e("data2")).is_err());
    assert!(
        !common::log_lines_with(&["\"data2\"", "hard links to regular files are not supported"]).is_empty()
    );
    assert_eq!(fs::read(t.p("data")).unwrap(), b"bound to one path");
}

#[test]
fn rename_exchange_swaps_two_files_and_rebinds_both() {
    let mut t = TestMount::new();
    let a_data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    fs::write(t.p("a"), &a_data).unwrap();
    fs::write(t.p("b"), b"the b file").unwrap();
    fs::create_dir_all(t.p("dir/sub")).unwrap();
    fs::write(t.p("dir/sub/x"), b"below a directory").unwrap();
    std::os::unix::fs::symlink("a", t.p("link")).unwrap();
    let exchange =
        |x: &str, y: &str| renameat2(AT_FDCWD, &t.p(x), AT_FDCWD, &t.p(y), RenameFlags::RENAME_EXCHANGE);

    // An open descriptor follows its file across the exchange.
    let open = fs::OpenOptions::new().write(true).open(t.p("b")).unwrap();
    exchange("a", "b").unwrap();
    std::os::unix::fs::FileExt::write_all_at(&open, b"THE", 0).unwrap();
    drop(open);
    assert_eq!(fs::read(t.p("a")).unwrap(), b"THE b file");
    assert_eq!(fs::read(t.p("b")).unwrap(), a_data);
    // A file and a directory: the files below the directory are rebound too.
    exchange("a", "dir").unwrap();
    assert_eq!(fs::read(t.p("dir")).unwrap(), b"THE b file");
    assert_eq!(fs::read(t.p("a/sub/x")).unwrap(), b"below a directory");
    // A symlink and a file.
    exchange("link", "b").unwrap();
    assert_eq!(fs::read_link(t.p("b")).unwrap(), Path::new("a"));
    assert_eq!(fs::read(t.p("link")).unwrap(), a_data);

    assert_eq!(exchange("link", "missing").unwrap_err() as i32, libc::ENOENT);
    assert_eq!(exchange("a", "a/sub").unwrap_err() as i32, libc::EINVAL);
    let noreplace =
        |x: &str, y: &str| renameat2(AT_FDCWD, &t.p(x), AT_FDCWD, &t.p(y), RenameFlags::RENAME_NOREPLACE);
    assert_eq!(noreplace("link", "dir").unwrap_err() as i32, libc::EEXIST);
    noreplace("link", "moved").unwrap();
    assert_eq!(fs::read(t.p("moved")).unwrap(), a_data);
    let hidden: Vec<_> =
        fs::read_dir(&t.enc).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert!(hidden.iter().all(|n| !n.to_string_lossy().ends_with(".gramine.recovery")), "{hidden:?}");

    // Each file is bound to where it now is: the engine opens it there, outside the mount.
    t.unmount();
    assert_eq!(t.decrypt_direct("moved"), a_data);
    assert_eq!(t.decrypt_direct("dir"), b"THE b file");
    assert_eq!(t.decrypt_direct("a/sub/x"), b"below a directory");
    t.mount(|_| {});
}

#[test]
fn rename_keeps_the_modification_time() {
    let t = TestMount::new();
    fs::create_dir(t.p("d")).unwrap();
    fs::write(t.p("d/f"), b"content").unwrap();
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    fs::File::options().write(true).open(t.p("d/f")).unwrap().set_modified(old).unwrap();
    fs::rename(t.p("d/f"), t.p("d/g")).unwrap();
    fs::rename(t.p("d"), t.p("e")).unwrap();
    // Only the embedded path changed: the content's mtime stays, on the host too.
    assert_eq!(fs::metadata(t.p("e/g")).unwrap().mtime(), 1_500_000_000);
    assert_eq!(fs::metadata(t.e("e/g")).unwrap().mtime(), 1_500_000_000);
    assert_eq!(fs::read(t.p("e/g")).unwrap(), b"content");
}
