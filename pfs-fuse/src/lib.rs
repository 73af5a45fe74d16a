//! `pfs-fuse`: a FUSE file system giving a plaintext view of a directory of Gramine
//! protected files.
//!
//! Each regular file in the backing directory is a protected file; the mount maps POSIX
//! operations onto [`pfs_core::ProtectedFile`] and contains no crypto or format logic of
//! its own. Directories and symlinks are plain host directories and symlinks (their names
//! are not encrypted, exactly as in a Gramine encrypted mount).
//!
//! ```no_run
//! use pfs_fuse::{MountConfig, mount};
//! let key = pfs_core::Key::from_bytes([7; 16]);
//! let handle = mount(MountConfig::new("enc", key), "plain")?;
//! std::fs::write("plain/hello.txt", b"hi")?; // lands in enc/hello.txt, encrypted
//! handle.unmount()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The backing directory is opened before mounting and every host access is relative to
//! that descriptor, so a mount may sit over its own backing directory (the libOS runtime
//! does this so that in-view paths equal the manifest's URIs).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backing;
mod fs;
mod journal;
mod tables;

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, MountOption, SessionACL};
pub use pfs_core::PendingWritePolicy;

pub use backing::RECOVERY_SUFFIX;
pub use fs::{PfsFs, REGULAR_FILE_LINK_ERRNO};

/// Default node cache per open file in a mount: 1024 nodes (4 MiB). With 256 nodes a
/// cold 4 KiB random read of a 256 MiB file needed 1.9 host reads (its MHT node had been
/// evicted, 683 MHT nodes for 256 MiB); with 1024 the MHT nodes of files up to ~380 MiB
/// stay cached (measured 11k → 21k IOPS, see docs/FUSE.md).
pub const DEFAULT_MOUNT_CACHE_NODES: usize = 1024;

/// Default of [`MountConfig::write_barriers`]: off. Measured on ext4 (docs/FUSE.md,
/// "Recovery journal"), the fsyncs cut sequential writes from 190–330 to 60–76 MiB/s and
/// made creating 1,000 small files take 13–23 s instead of 0.7–0.9 s. Without them the
/// journal still covers a crash or kill of the daemon (the kernel keeps every completed
/// write, in order); a power loss mid-flush may leave a file refused or partly unreadable
/// (detected, never silently wrong).
pub const DEFAULT_WRITE_BARRIERS: bool = false;

/// Default of [`MountConfig::attr_ttl`]: 1 s. Every operation through the mount that
/// changes an inode's attributes answers with the new ones or makes the kernel drop its copy
/// (every name of a hard-linked file is one inode of the mount), so the TTL only bounds how
/// long a change made to the backing directory by others stays unseen. TTL 0 cost
/// measured in docs/FUSE.md ("Attribute and entry cache").
pub const DEFAULT_ATTR_TTL: Duration = Duration::from_secs(1);

/// Default of [`MountConfig::entry_ttl`]: 1 s, for the reasons of [`DEFAULT_ATTR_TTL`].
pub const DEFAULT_ENTRY_TTL: Duration = Duration::from_secs(1);

/// Everything a mount needs. Build with [`MountConfig::new`] and adjust the fields.
#[derive(Debug)]
pub struct MountConfig {
    /// The backing directory as the user named it. Its normalized form is the base of
    /// every embedded path unless [`path_prefix`](Self::path_prefix) is set.
    pub backing: PathBuf,
    /// The backing directory, already open. Set this when mounting over the backing
    /// directory itself; otherwise [`backing`](Self::backing) is opened before mounting.
    pub backing_fd: Option<OwnedFd>,
    /// Binds files to `PATH_PREFIX/REL` instead of `normalize(backing)/REL`.
    pub path_prefix: Option<Vec<u8>>,
    /// The key-derivation key of the files.
    pub key: pfs_core::Key,
    /// Node-cache capacity per open file, in 4096-byte nodes.
    pub cache_nodes: usize,
    /// Mount read-only: no host file is ever written.
    pub read_only: bool,
    /// Refuse files whose embedded path differs from the expected one (default on).
    pub path_check: bool,
    /// What to do with a file whose pending-write flag is set and no usable recovery file
    /// (default: refuse, EACCES).
    pub pending_write: PendingWritePolicy,
    /// Keep Gramine's recovery file (`<file>.gramine.recovery`, spec §13) for every file
    /// opened for writing (default on), so that a crash in the middle of a flush leaves a
    /// file that the next open restores to its last completed flush. Off, such a file is
    /// refused (EACCES) or, with [`PendingWritePolicy::Ignore`], may read as a mix of old
    /// and new nodes that fails authentication. Read-only mounts never write one.
    pub recovery: bool,
    /// With [`recovery`](Self::recovery): fsync between the phases of a journaled flush so
    /// that a power loss, not only a process crash, is recovered. Default
    /// [`DEFAULT_WRITE_BARRIERS`].
    pub write_barriers: bool,
    /// FUSE worker threads (at least 1; default 2).
    pub threads: usize,
    /// Use the kernel's writeback cache (default on).
    pub writeback_cache: bool,
    /// How long the kernel may cache attributes.
    pub attr_ttl: Duration,
    /// How long the kernel may cache names.
    pub entry_ttl: Duration,
    /// Let users other than the mounting one in (FUSE `allow_other`).
    pub allow_other: bool,
    /// Kernel readahead of the mount in KiB, set through `/sys/class/bdi` after mounting
    /// (root only; FUSE otherwise gets 128 KiB). Sequential reads then arrive as 1 MiB
    /// requests, which the engine serves with one batched backing read each.
    pub readahead_kb: Option<u32>,
}

impl MountConfig {
    /// Defaults: read-write, path check on, recovery file on, 2 threads, writeback cache,
    /// [`DEFAULT_ATTR_TTL`] and [`DEFAULT_ENTRY_TTL`],
    /// [`DEFAULT_MOUNT_CACHE_NODES`] cached nodes per open file.
    pub fn new(backing: impl Into<PathBuf>, key: pfs_core::Key) -> Self {
        MountConfig {
            backing: backing.into(),
            backing_fd: None,
            path_prefix: None,
            key,
            cache_nodes: DEFAULT_MOUNT_CACHE_NODES,
            read_only: false,
            path_check: true,
            pending_write: PendingWritePolicy::Refuse,
            recovery: true,
            write_barriers: DEFAULT_WRITE_BARRIERS,
            threads: 2,
            writeback_cache: true,
            attr_ttl: DEFAULT_ATTR_TTL,
            entry_ttl: DEFAULT_ENTRY_TTL,
            allow_other: false,
            readahead_kb: Some(1024),
        }
    }

    /// The embedded path a file at `rel` (relative to the backing directory) is bound to.
    pub fn embedded_path(&self, rel: &[u8]) -> Vec<u8> {
        let base: Vec<u8> = match &self.path_prefix {
            Some(p) => p.clone(),
            None => std::os::unix::ffi::OsStrExt::as_bytes(self.backing.as_os_str()).to_vec(),
        };
        pfs_core::path::join_normalized(&base, rel)
    }
}

fn session_config(cfg: &MountConfig) -> Config {
    let mut c = Config::default();
    c.mount_options = vec![
        MountOption::FSName(format!("pfs:{}", std::process::id())),
        MountOption::Subtype("pfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        if cfg.read_only { MountOption::RO } else { MountOption::RW },
    ];
    if cfg.allow_other {
        c.acl = SessionACL::All;
    }
    c.n_threads = Some(cfg.threads.max(1));
    c.clone_fd = cfg.threads > 1;
    c
}

fn build(mut cfg: MountConfig) -> io::Result<(PfsFs, Config)> {
    let backing = match cfg.backing_fd.take() {
        Some(fd) => backing::Backing::from_fd(fd),
        None => backing::Backing::open(&cfg.backing).map_err(|e| {
            io::Error::new(e.kind(), format!("opening backing directory {}: {e}", cfg.backing.display()))
        })?,
    };
    let config = session_config(&cfg);
    Ok((PfsFs::new(cfg, backing), config))
}

fn mount_error(e: io::Error, mountpoint: &Path) -> io::Error {
    if e.kind() == io::ErrorKind::NotFound
        && !nix::unistd::geteuid().is_root()
        && which("fusermount3").is_none()
    {
        return io::Error::new(
            e.kind(),
            "mounting as a non-root user needs fusermount3: install the `fuse3` package (e.g. apt-get install fuse3)",
        );
    }
    io::Error::new(e.kind(), format!("mounting on {}: {e}", mountpoint.display()))
}

fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(prog)).find(|p| p.is_file())
}

/// A live mount served by background threads. [`unmount`](Self::unmount) (or drop)
/// flushes every open file and unmounts.
#[derive(Debug)]
pub struct MountHandle {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

impl MountHandle {
    /// Where the file system is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether the session ended (for example after `fusermount3 -u` from outside).
    pub fn is_finished(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts, waits for the workers, and flushes every file still open.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    /// Waits until the mount is unmounted from outside, then returns.
    pub fn join(mut self) -> io::Result<()> {
        match self.session.take() {
            Some(s) => s.join(),
            None => Ok(()),
        }
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else { return Ok(()) };
        if session.guard.is_finished() {
            return session.join();
        }
        session.umount_and_join()
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            log::warn!("unmounting {}: {e}", self.mountpoint.display());
        }
    }
}

/// Mounts `cfg` on `mountpoint` and serves it from background threads. Returns once the
/// mount is live: the next file operation on `mountpoint` already sees it.
pub fn mount(cfg: MountConfig, mountpoint: impl AsRef<Path>) -> io::Result<MountHandle> {
    let mountpoint = mountpoint.as_ref();
    let readahead_kb = cfg.readahead_kb;
    let (fs, config) = build(cfg)?;
    let session = fuser::Session::new(fs, mountpoint, &config).map_err(|e| mount_error(e, mountpoint))?;
    let session = session.spawn()?;
    if let Some(kb) = readahead_kb {
        set_readahead(mountpoint, kb);
    }
    Ok(MountHandle { session: Some(session), mountpoint: mountpoint.to_path_buf() })
}

/// Raises the kernel readahead of the mount at `mountpoint` (best effort). The device
/// number comes from `/proc/self/mountinfo`, so the mount itself is not touched.
fn set_readahead(mountpoint: &Path, kb: u32) {
    let Ok(canon) = mountpoint.canonicalize() else { return };
    let target = canon.to_string_lossy().into_owned();
    let me = format!("pfs:{}", std::process::id());
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let dev = info.lines().rev().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.get(4).map(|m| unescape(m)).as_deref() == Some(target.as_str())
            && f.get(sep + 2) == Some(&me.as_str()))
        .then(|| f[2].to_string())
    });
    if let Some(dev) = dev
        && let Err(e) = std::fs::write(format!("/sys/class/bdi/{dev}/read_ahead_kb"), kb.to_string())
    {
        log::debug!("cannot set readahead of {} to {kb} KiB: {e}", mountpoint.display());
    }
}

/// Unmounts `mountpoint` as `pfs umount` does: unmount (directly as root, else with
/// `fusermount3 -u`), then wait up to `wait` for the daemon that served it to finish its
/// final flush and exit.
pub fn unmount(mountpoint: &Path, wait: Duration) -> io::Result<()> {
    let daemon = daemon_pid(mountpoint);
    if nix::unistd::geteuid().is_root() {
        nix::mount::umount2(mountpoint, nix::mount::MntFlags::empty()).map_err(|e| {
            io::Error::new(io::Error::from(e).kind(), format!("unmounting {}: {e}", mountpoint.display()))
        })?;
    } else {
        let status =
            std::process::Command::new("fusermount3").arg("-u").arg(mountpoint).status().map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    io::Error::new(
                        e.kind(),
                        "fusermount3 not found: install the `fuse3` package (e.g. apt-get install fuse3)",
                    )
                } else {
                    e
                }
            })?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "fusermount3 -u {} failed ({status})",
                mountpoint.display()
            )));
        }
    }
    if let Some(pid) = daemon
        && pid != std::process::id()
    {
        let deadline = Instant::now() + wait;
        while process_alive(pid) {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("unmounted, but daemon {pid} has not exited after {wait:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 is the state; a zombie has finished its work.
        Ok(s) => s.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')).unwrap_or(false),
        Err(_) => false,
    }
}

/// The PID of the pfs daemon serving `mountpoint`, read from `/proc/self/mountinfo`
/// (pfs mounts are named `pfs:PID`).
pub fn daemon_pid(mountpoint: &Path) -> Option<u32> {
    let canon = mountpoint.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else { continue };
        if fields.get(4).map(|m| unescape(m)) != Some(canon.as_os_str().to_string_lossy().into_owned()) {
            continue;
        }
        if let Some(src) = fields.get(sep + 2)
            && let Some(pid) = src.strip_prefix("pfs:")
        {
            found = pid.parse().ok();
        }
    }
    found
}

/// Whether `mountpoint` is currently a mount point in this mount namespace.
pub fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(canon) = mountpoint.canonicalize() else { return false };
    let target = canon.as_os_str().to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| {
            info.lines().any(|l| l.split(' ').nth(4).map(unescape).as_deref() == Some(target.as_str()))
        })
        .unwrap_or(false)
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// Detaches the calling process from its terminal session (`setsid`), for a daemon that
/// must survive the shell that started it.
pub fn detach_from_terminal() -> io::Result<()> {
    nix::unistd::setsid().map(|_| ()).map_err(io::Error::from)
}

/// Mounts `cfg` on `mountpoint` and serves it until the mount is unmounted from outside
/// (`pfs umount`, `fusermount3 -u`, `umount`) or SIGINT, SIGTERM or SIGHUP arrives, in
/// which case it unmounts cleanly itself. Every open file is flushed before it returns.
/// `on_ready` runs once the mount is live.
///
/// Must be called before the process starts other threads: it blocks those signals in
/// the calling thread so that every worker thread inherits the mask.
pub fn run_until_signal(
    cfg: MountConfig,
    mountpoint: impl AsRef<Path>,
    on_ready: impl FnOnce(),
) -> io::Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGUSR1] {
        set.add(s);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(io::Error::from)?;
    let handle = mount(cfg, mountpoint)?;
    on_ready();
    let waiter = nix::sys::pthread::pthread_self();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let watcher = std::thread::Builder::new().name("pfs-unmount".into()).spawn(move || {
        while !handle.is_finished() && !stop2.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let r = if stop2.load(Ordering::Acquire) { handle.unmount() } else { handle.join() };
        // Directed at the waiting thread, which blocks SIGUSR1, so the process-wide
        // default action never applies.
        let _ = nix::sys::pthread::pthread_kill(waiter, Signal::SIGUSR1);
        r
    })?;
    // SIGUSR1 comes only from the watcher, once the session has ended.
    loop {
        let sig = set.wait().map_err(io::Error::from)?;
        if sig == Signal::SIGUSR1 {
            break;
        }
        log::info!("{sig:?} received: unmounting");
        stop.store(true, Ordering::Release);
    }
    watcher.join().map_err(|_| io::Error::other("unmount thread panicked"))?
}
