//! Shared helpers for the real-mount tests: a mounted temp directory that always
//! unmounts, and a logger that keeps the daemon's log lines for assertions.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use pfs_core::{FileStore, Key, OpenOptions, ProtectedFile};
use pfs_fuse::{MountConfig, MountHandle};

pub const KEY: [u8; 16] = *b"pfs-fuse-testkey";

pub fn key() -> Key {
    Key::from_bytes(KEY)
}

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
static INIT: Once = Once::new();

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("pfs") && m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let line = format!("{}: {}", r.level(), r.args());
            eprintln!("daemon log: {line}");
            LOG.lock().unwrap().push(line);
        }
    }
    fn flush(&self) {}
}

/// Installs the capturing logger (once per test binary).
pub fn init_log() {
    INIT.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Info);
    });
}

/// Log lines so far that contain every one of `needles`.
pub fn log_lines_with(needles: &[&str]) -> Vec<String> {
    LOG.lock().unwrap().iter().filter(|l| needles.iter().all(|n| l.contains(n))).cloned().collect()
}

/// Whether anything is mounted at `path` (by /proc/mounts).
pub fn mounted_at(path: &Path) -> bool {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let want = canon.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

/// A temp dir with `enc/` (backing) and `plain/` (mount point), mounted. Dropping it
/// unmounts and checks that nothing is left mounted.
pub struct TestMount {
    pub dir: tempfile::TempDir,
    pub enc: PathBuf,
    pub plain: PathBuf,
    handle: Option<MountHandle>,
    /// `enc` is a tmpfs mounted by [`TestMount::on_tmpfs`], unmounted on drop.
    tmpfs: bool,
}

impl TestMount {
    /// Mounts with default options (the test fails, never skips, if FUSE is unavailable).
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// Mounts after `adjust` edits the config.
    pub fn with(adjust: impl FnOnce(&mut MountConfig)) -> Self {
        Self::build(None, adjust)
    }

    /// Mounts over a backing directory on a tmpfs of `size` (e.g. `"64m"`), for tests whose
    /// writes could otherwise fill the machine's disk, or that need a disk that fills up.
    pub fn on_tmpfs(size: &str, adjust: impl FnOnce(&mut MountConfig)) -> Self {
        Self::build(Some(size), adjust)
    }

    fn build(tmpfs: Option<&str>, adjust: impl FnOnce(&mut MountConfig)) -> Self {
        init_log();
        let dir = tempfile::tempdir().unwrap();
        let enc = dir.path().join("enc");
        let plain = dir.path().join("plain");
        std::fs::create_dir(&enc).unwrap();
        std::fs::create_dir(&plain).unwrap();
        if let Some(size) = tmpfs {
            let st = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
                .arg(&enc)
                .status()
                .unwrap();
            assert!(st.success(), "mounting a tmpfs on {} (these tests need root)", enc.display());
        }
        let mut t = TestMount { dir, enc, plain, handle: None, tmpfs: tmpfs.is_some() };
        t.mount(adjust);
        t
    }

    pub fn mount(&mut self, adjust: impl FnOnce(&mut MountConfig)) {
        assert!(self.handle.is_none());
        let mut cfg = MountConfig::new(&self.enc, key());
        adjust(&mut cfg);
        let h = pfs_fuse::mount(cfg, &self.plain)
            .unwrap_or_else(|e| panic!("FUSE mount failed (these tests need /dev/fuse and root): {e}"));
        assert!(mounted_at(&self.plain), "mount not visible in /proc/mounts");
        self.handle = Some(h);
    }

    pub fn unmount(&mut self) {
        if let Some(h) = self.handle.take()
            && let Err(e) = h.unmount()
        {
            assert_eq!(e.kind(), std::io::ErrorKind::ResourceBusy, "unmount: {e}");
            unmount_when_not_busy(&self.plain);
        }
        assert!(!mounted_at(&self.plain), "still mounted after unmount");
    }

    pub fn remount(&mut self) {
        self.unmount();
        self.mount(|_| {});
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.plain.join(rel)
    }

    pub fn e(&self, rel: &str) -> PathBuf {
        self.enc.join(rel)
    }

    /// The embedded path a file at `rel` must hold under the default config.
    pub fn embedded(&self, rel: &str) -> Vec<u8> {
        MountConfig::new(&self.enc, key()).embedded_path(rel.as_bytes())
    }

    /// Decrypts `enc/rel` with the engine alone, checking the embedded path.
    pub fn decrypt_direct(&self, rel: &str) -> Vec<u8> {
        decrypt_file(&self.e(rel), &self.embedded(rel))
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take()
            && h.unmount().is_err_and(|e| e.kind() == std::io::ErrorKind::ResourceBusy)
        {
            // Busy for a moment (see `unmount_when_not_busy`); no panic inside drop.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::time::Instant::now() < deadline
                && pfs_fuse::unmount(&self.plain, std::time::Duration::from_secs(60))
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ResourceBusy)
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        let leftover = mounted_at(&self.plain);
        if leftover {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.plain).status();
        }
        if self.tmpfs {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.enc).status();
        }
        if leftover && !std::thread::panicking() {
            panic!("{} still mounted after the test", self.plain.display());
        }
    }
}

/// The embedded path of `rel` in a mount of `enc` with the default config.
pub fn embedded_of(enc: &Path, rel: &str) -> Vec<u8> {
    MountConfig::new(enc, key()).embedded_path(rel.as_bytes())
}

/// Decrypts a protected file with the engine, requiring `expected_path`.
pub fn decrypt_file(path: &Path, expected_path: &[u8]) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let pf = ProtectedFile::open(
        FileStore::new(f),
        &key(),
        Some(expected_path),
        &OpenOptions::new().read_only(true),
    )
    .unwrap_or_else(|e| panic!("engine cannot open {}: {e}", path.display()));
    let mut out = vec![0u8; pf.len() as usize];
    let n = pf.read_at(0, &mut out).unwrap();
    assert_eq!(n, out.len());
    out
}

/// Deterministic pseudo-random bytes.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The errno of an io::Error.
pub fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// Environment variables that turn a test binary into a mount daemon (see
/// [`daemon_entry`]).
pub const DAEMON_ENV: &str = "PFS_FUSE_TEST_DAEMON";

/// Body of the `daemon_entry` test each test file that spawns daemons defines: when the
/// binary runs as a daemon child, mount `enc` on `plain` in the foreground and serve until
/// SIGTERM; otherwise return at once. The spec's optional fourth line holds options
/// separated by commas: `no-writeback` (no kernel writeback cache), `no-recovery`,
/// `cache=N` (nodes cached per open file), `allow-other`, `umask=OCTAL` (the daemon's own
/// umask), `fsize=BYTES` (RLIMIT_FSIZE of the daemon, with SIGXFSZ ignored, so that its host
/// writes past BYTES fail with EFBIG: a disk that fails part way).
pub fn daemon_entry() {
    let Ok(spec) = std::env::var(DAEMON_ENV) else { return };
    let mut parts = spec.split('\n');
    let enc = PathBuf::from(parts.next().unwrap());
    let plain = PathBuf::from(parts.next().unwrap());
    let prefix = parts.next().filter(|p| !p.is_empty()).map(|p| p.as_bytes().to_vec());
    let options: Vec<&str> = parts.next().unwrap_or("").split(',').filter(|o| !o.is_empty()).collect();
    init_log();
    let mut cfg = MountConfig::new(&enc, key());
    cfg.path_prefix = prefix;
    for option in options {
        match option {
            "no-writeback" => cfg.writeback_cache = false,
            "no-recovery" => cfg.recovery = false,
            o if o.starts_with("cache=") => cfg.cache_nodes = o["cache=".len()..].parse().unwrap(),
            "allow-other" => cfg.allow_other = true,
            o if o.starts_with("umask=") => {
                let mask = u32::from_str_radix(&o["umask=".len()..], 8).unwrap();
                nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
            }
            o if o.starts_with("fsize=") => {
                let bytes: u64 = o["fsize=".len()..].parse().unwrap();
                nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE, bytes, bytes)
                    .unwrap();
                // Blocked (and inherited by every worker thread), SIGXFSZ stays pending
                // instead of killing the daemon; the write still fails with EFBIG.
                let mut set = nix::sys::signal::SigSet::empty();
                set.add(nix::sys::signal::Signal::SIGXFSZ);
                nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&set), None)
                    .unwrap();
            }
            other => panic!("unknown daemon option {other:?}"),
        }
    }
    pfs_fuse::run_until_signal(cfg, &plain, || {
        use std::io::Write;
        let mut out = std::io::stdout();
        writeln!(out, "PFS-DAEMON-READY").unwrap();
        out.flush().unwrap();
    })
    .unwrap();
    std::process::exit(0);
}

/// A mount served by a separate process (this test binary re-run as a daemon). Needed
/// whenever the test uses mmap on the mount (a daemon in the same address space would
/// deadlock against the test's `mmap_lock`) or kills the daemon.
pub struct ChildMount {
    pub child: Option<std::process::Child>,
    pub plain: PathBuf,
}

impl ChildMount {
    pub fn spawn(enc: &Path, plain: &Path, prefix: Option<&str>) -> Self {
        Self::spawn_with(enc, plain, prefix, "", None)
    }

    /// [`spawn`](Self::spawn) with daemon options (see [`daemon_entry`]) and, when
    /// `stderr` is given, the daemon's stderr (its log lines, any panic message) appended
    /// to that file.
    pub fn spawn_with(
        enc: &Path,
        plain: &Path,
        prefix: Option<&str>,
        options: &str,
        stderr: Option<&Path>,
    ) -> Self {
        use std::io::BufRead;
        let exe = std::env::current_exe().unwrap();
        let spec = format!("{}\n{}\n{}\n{options}", enc.display(), plain.display(), prefix.unwrap_or(""));
        let err = match stderr {
            Some(p) => std::process::Stdio::from(
                std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap(),
            ),
            None => std::process::Stdio::inherit(),
        };
        let mut child = std::process::Command::new(exe)
            .args(["--exact", "daemon_entry", "--nocapture", "--test-threads=1"])
            .env(DAEMON_ENV, spec)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        // libtest prints its own lines first; wait for ours.
        loop {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                let st = child.wait().unwrap();
                panic!("FUSE daemon child failed to mount ({st}); these tests need /dev/fuse and root");
            }
            if line.trim_end().ends_with("PFS-DAEMON-READY") {
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        assert!(mounted_at(plain));
        ChildMount { child: Some(child), plain: plain.to_path_buf() }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon already stopped").id()
    }

    /// Unmounts from outside as `pfs umount` does; the daemon flushes and exits 0.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Err(e) = pfs_fuse::unmount(&self.plain, std::time::Duration::from_secs(60)) {
                assert_eq!(e.kind(), std::io::ErrorKind::ResourceBusy, "unmount: {e}");
                unmount_when_not_busy(&self.plain);
            }
            let st = c.wait().unwrap();
            assert!(st.success(), "daemon exit status {st}");
        }
        assert!(!mounted_at(&self.plain), "still mounted after the daemon stopped");
    }

    /// kill -9 of the daemon, then removal of the dead mount.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        let st = std::process::Command::new("umount").arg("-l").arg(&self.plain).status().unwrap();
        assert!(st.success());
        assert!(!mounted_at(&self.plain));
    }
}

impl Drop for ChildMount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
        if mounted_at(&self.plain) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.plain).status();
        }
    }
}

/// Retries the unmount of `plain` while it is busy, for up to 10 s. A busy mount is
/// transient in these tests: tests of one binary run in parallel, and a test that starts
/// a process (the daemon of a `ChildMount`, `umount`, a checker) gives the child a copy of
/// every open descriptor of this process, including one on another test's mount, until its
/// `exec` closes them. Seen in CI: EBUSY right after `fs::write` had closed its file.
pub fn unmount_when_not_busy(plain: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match pfs_fuse::unmount(plain, std::time::Duration::from_secs(60)) {
            Ok(()) => return,
            Err(e)
                if e.kind() == std::io::ErrorKind::ResourceBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("unmount of {}: {e}", plain.display()),
        }
    }
}
