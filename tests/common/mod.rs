//! Helpers for the end-to-end tests of `pfs run` with encrypted mounts (real namespaces,
//! real FUSE, real Python).
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `pfs` binary under test.
pub fn pfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pfs")
}

/// Runs `pfs ARGS` in `dir`.
pub fn pfs(dir: &Path, args: &[&str]) -> Output {
    Command::new(pfs_bin()).args(args).current_dir(dir).output().unwrap()
}

/// Status, stdout and stderr of a finished command, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `pfs run MANIFEST` in `dir` and checks that the launcher left no mount and no
/// staging directory behind (the view's mounts live in the launcher's namespace only; this
/// checks that nothing leaked into the host's).
pub fn pfs_run(dir: &Path, manifest: &str) -> Output {
    let child = Command::new(pfs_bin())
        .args(["run", manifest])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_no_mounts(dir);
    let staging = format!("/tmp/pfs-run-{pid}-");
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&staging), "launcher {pid} left a mount: {mounts}");
    for e in fs::read_dir("/tmp").unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(&staging[5..]), "launcher {pid} left /tmp/{name}");
    }
    out
}

/// No mount of the host's mount table lies below `dir`.
pub fn assert_no_mounts(dir: &Path) {
    let dir = fs::canonicalize(dir).unwrap();
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let leaked: Vec<&str> = mounts
        .lines()
        .filter(|l| l.split(' ').nth(1).is_some_and(|m| Path::new(m).starts_with(&dir)))
        .collect();
    assert!(leaked.is_empty(), "mounts left below {}: {leaked:?}", dir.display());
}

/// A `pfs keyserver` process a test started: killed and reaped when dropped.
pub struct KeyServer(std::process::Child);

impl Drop for KeyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `pfs keyserver` in `owner` with its `policy.toml`, `tls/server.pem` and
/// `tls/server-key.pem` on 127.0.0.1:`port`, its log to `stderr`, and waits until it accepts
/// connections (failing at once, with its exit status, if it stops first).
pub fn start_keyserver(owner: &Path, port: u16, stderr: Stdio) -> KeyServer {
    let mut server = KeyServer(
        Command::new(pfs_bin())
            .args(["keyserver", "--policy", "policy.toml", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--cert", "tls/server.pem", "--key", "tls/server-key.pem"])
            .current_dir(owner)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("pfs keyserver in {} exited before listening: {status}", owner.display());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pfs keyserver did not listen on port {port} within 20 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server
}

/// Calls `check(path, bytes)` for every regular file below `dir`; returns the bytes read.
pub fn for_each_file(dir: &Path, mut check: impl FnMut(&Path, &[u8])) -> u64 {
    let mut stack = vec![dir.to_path_buf()];
    let mut scanned = 0u64;
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ty = e.file_type().unwrap();
            if ty.is_dir() {
                stack.push(e.path());
            } else if ty.is_file() {
                let bytes = fs::read(e.path()).unwrap();
                scanned += bytes.len() as u64;
                check(&e.path(), &bytes);
            }
        }
    }
    scanned
}

/// Fails if a file below `dir` contains one of `secrets` (or one of their lines of at least
/// 12 bytes).
pub fn assert_no_plaintext(dir: &Path, secrets: &[&[u8]]) {
    let mut needles: Vec<&[u8]> = Vec::new();
    for s in secrets {
        needles.push(s);
        // Lines of at least 12 bytes with some variety (a run of zeros or spaces in a binary
        // file also occurs in any file's padding and proves nothing).
        needles.extend(
            s.split(|b| *b == b'\n')
                .filter(|l| l.len() >= 12 && l.iter().collect::<std::collections::HashSet<_>>().len() >= 6),
        );
    }
    for_each_file(dir, |path, bytes| {
        for n in &needles {
            assert!(
                memchr::memmem::find(bytes, n).is_none(),
                "plaintext {:?} found in {}",
                String::from_utf8_lossy(&n[..n.len().min(60)]),
                path.display()
            );
        }
    });
}

/// Encrypts `data` into a new protected file at `dir/rel` bound to `rel`.
pub fn encrypt(dir: &Path, rel: &str, key: &[u8; 16], data: &[u8]) {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
    let key = pfs_core::Key::from_bytes(*key);
    let mut pf = pfs_core::ProtectedFile::create(
        pfs_core::FileStore::new(file),
        &key,
        rel.as_bytes(),
        &pfs_core::OpenOptions::new(),
    )
    .unwrap();
    pf.write_at(0, data).unwrap();
    pf.close().unwrap();
}

/// Decrypts the protected file `dir/rel`, which must be bound to `expected_path`.
pub fn decrypt(
    dir: &Path,
    rel: &str,
    key: &[u8; 16],
    expected_path: &str,
) -> Result<Vec<u8>, pfs_core::Error> {
    let file = fs::File::open(dir.join(rel)).unwrap();
    let key = pfs_core::Key::from_bytes(*key);
    let options = pfs_core::OpenOptions::new().read_only(true);
    let pf = pfs_core::ProtectedFile::open(
        pfs_core::FileStore::new(file),
        &key,
        Some(expected_path.as_bytes()),
        &options,
    )?;
    let mut out = vec![0u8; pf.len() as usize];
    let mut done = 0;
    while done < out.len() {
        let n = pf.read_at(done as u64, &mut out[done..])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    out.truncate(done);
    Ok(out)
}

/// The host's python3.
pub fn python() -> &'static str {
    for p in ["/usr/bin/python3", "/usr/local/bin/python3"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("python3 is required by the end-to-end tests");
}

/// A scratch directory, removed on drop.
pub fn workdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Writes `text` to `dir/rel` (creating parents) with mode 0644.
pub fn write(dir: &Path, rel: &str, text: &[u8]) -> PathBuf {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    path
}
