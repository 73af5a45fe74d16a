//! `pfs mount` / `pfs umount` as a user runs them (real mounts; CI is root with /dev/fuse).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pfs"))
}

fn mounted_at(path: &Path) -> bool {
    let want = path.canonicalize().unwrap().to_string_lossy().into_owned();
    fs::read_to_string("/proc/mounts").unwrap().lines().any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

struct Cleanup<'a>(&'a Path);
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if mounted_at(self.0) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("owner.key");
    fs::write(&key, [0x42u8; 16]).unwrap();
    let enc = dir.path().join("enc");
    let plain = dir.path().join("plain");
    fs::create_dir(&enc).unwrap();
    fs::create_dir(&plain).unwrap();
    (dir, key, enc, plain)
}

#[test]
fn mount_detaches_once_ready_and_umount_flushes_and_unmounts() {
    let (_dir, key, enc, plain) = setup();
    let _guard = Cleanup(&plain);
    let st = pfs().arg("mount").arg("-w").arg(&key).arg(&enc).arg(&plain).status().unwrap();
    assert!(st.success(), "pfs mount failed (needs /dev/fuse and root)");
    assert!(mounted_at(&plain), "mounted when the command returns");
    fs::write(plain.join("input.csv"), b"a,b\n1,2\n").unwrap();
    fs::create_dir(plain.join("sub")).unwrap();
    fs::write(plain.join("sub/model.bin"), vec![3u8; 100_000]).unwrap();
    let st = pfs().arg("umount").arg(&plain).status().unwrap();
    assert!(st.success());
    assert!(!mounted_at(&plain), "nothing left mounted");
    assert!(fs::read_dir(&plain).unwrap().next().is_none());
    // The host holds protected files only.
    let host = fs::read(enc.join("input.csv")).unwrap();
    assert_eq!(host.len(), 4096);
    assert!(!host.windows(4).any(|w| w == b"a,b\n"));
    // Remount read-only and read back; fusermount3 -u also unmounts.
    let st = pfs().args(["mount", "--read-only", "-w"]).arg(&key).arg(&enc).arg(&plain).status().unwrap();
    assert!(st.success());
    assert_eq!(fs::read(plain.join("sub/model.bin")).unwrap(), vec![3u8; 100_000]);
    assert!(fs::write(plain.join("new"), b"x").is_err(), "read-only mount refuses writes");
    let st = Command::new("fusermount3").arg("-u").arg(&plain).status().unwrap();
    assert!(st.success());
    assert!(!mounted_at(&plain));
}

#[test]
fn foreground_mount_unmounts_cleanly_on_sigterm() {
    let (_dir, key, enc, plain) = setup();
    let _guard = Cleanup(&plain);
    let mut child = pfs()
        .args(["mount", "-f", "--path-prefix", "/data", "-w"])
        .arg(&key)
        .arg(&enc)
        .arg(&plain)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !mounted_at(&plain) {
        assert!(Instant::now() < deadline, "foreground mount did not appear");
        assert!(child.try_wait().unwrap().is_none(), "pfs mount -f exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::write(plain.join("x"), b"written in the foreground").unwrap();
    nix_kill(child.id(), 15);
    let st = child.wait().unwrap();
    assert!(st.success(), "exit status after SIGTERM: {st}");
    assert!(!mounted_at(&plain));
    // The file is bound to the --path-prefix path.
    let f = fs::File::open(enc.join("x")).unwrap();
    let key = pfs_core::Key::from_bytes([0x42; 16]);
    let pf = pfs_core::ProtectedFile::open(
        pfs_core::FileStore::new(f),
        &key,
        Some(b"/data/x"),
        &pfs_core::OpenOptions::new().read_only(true),
    )
    .unwrap();
    let mut buf = vec![0u8; pf.len() as usize];
    pf.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, b"written in the foreground");
}

#[test]
fn mount_reports_a_bad_key_file_and_a_missing_backing_directory() {
    let (dir, key, enc, plain) = setup();
    let short = dir.path().join("short.key");
    fs::write(&short, [1u8; 8]).unwrap();
    let out = pfs().arg("mount").arg("-w").arg(&short).arg(&enc).arg(&plain).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exactly 16 raw bytes"));
    let out =
        pfs().arg("mount").arg("-w").arg(&key).arg(dir.path().join("nope")).arg(&plain).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("backing directory"));
    assert!(!mounted_at(&plain));
}

fn nix_kill(pid: u32, sig: i32) {
    let st = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
    assert!(st.success());
}

#[test]
fn mount_keeps_recovery_files_unless_told_not_to() {
    let help = pfs().args(["mount", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--no-recovery") && help.contains("recovery file"), "{help}");
    for (flags, journaled) in [(&[][..], true), (&["--no-recovery"][..], false)] {
        let (_dir, key, enc, plain) = setup();
        let _guard = Cleanup(&plain);
        let st = pfs().arg("mount").args(flags).arg("-w").arg(&key).arg(&enc).arg(&plain).status().unwrap();
        assert!(st.success(), "pfs mount {flags:?} failed (needs /dev/fuse and root)");
        let mut f = fs::File::create(plain.join("big.bin")).unwrap();
        std::io::Write::write_all(&mut f, &vec![9u8; 300_000]).unwrap();
        f.sync_all().unwrap();
        // While the file is open after a flush of its tree, its journal exists (hidden).
        assert_eq!(enc.join("big.bin.gramine.recovery").exists(), journaled, "pfs mount {flags:?}");
        let names: Vec<_> = fs::read_dir(&plain).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("big.bin")]);
        drop(f);
        let st = pfs().arg("umount").arg(&plain).status().unwrap();
        assert!(st.success());
        assert!(!enc.join("big.bin.gramine.recovery").exists(), "removed once the file is closed");
        assert_eq!(fs::read(enc.join("big.bin")).unwrap().len() % 4096, 0);
    }
}
