//! `pfs mount` and `pfs umount`: a plaintext view of a directory of protected files.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

/// Long help of `pfs mount`.
pub const MOUNT_ABOUT: &str = "\
Mount a directory of protected files (BACKING) so that MOUNTPOINT shows their plaintext.
Files copied into MOUNTPOINT land in BACKING encrypted, as Gramine protected files.

A file at BACKING/REL is bound to the embedded path normalize(BACKING as typed)/REL, exactly
as a Gramine encrypted mount with uri = \"file:BACKING\" expects; --path-prefix P binds it to
P/REL instead. A file bound to another path is refused (EACCES) and the log says which path
it holds. Damaged, foreign or wrong-key files are listed (size 0 if unreadable) but fail to
open or read with EIO or EACCES; everything else keeps working.

Every file opened for writing keeps Gramine's recovery file (BACKING/REL.gramine.recovery,
hidden from the mount) while a flush rewrites its Merkle tree: if the daemon is killed or
crashes in the middle of a flush, the next open restores the file to its last completed
flush and logs how many nodes it restored. --no-recovery turns this off (a little faster):
a file interrupted mid-flush may then fail to read (EIO) where its nodes were half
rewritten. Surviving a power loss mid-flush too needs --write-barriers, which fsyncs
between the phases of every flush and costs much throughput (docs/FUSE.md has figures).

By default the command returns once the mount is live and the daemon keeps running in the
background; unmount with `pfs umount MOUNTPOINT` (or fusermount3 -u). With -f it stays in
the foreground, logs to stderr and unmounts cleanly on Ctrl-C or SIGTERM.";

/// Examples of `pfs mount`.
pub const MOUNT_EXAMPLES: &str = "\
Examples:
  pfs keygen -o owner.key
  mkdir enc plain
  pfs mount -w owner.key enc plain
  cp model.onnx inputs.csv plain/      # stored encrypted in enc/
  pfs umount plain";

/// Arguments of `pfs mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// Key file: 16 raw bytes (as made by `pfs keygen` or `gramine-sgx-pf-crypt gen-key`).
    #[arg(short = 'w', long = "wrap-key", value_name = "KEYFILE")]
    pub key: PathBuf,
    /// Bind files to P/REL instead of normalize(BACKING)/REL.
    #[arg(long, value_name = "P")]
    pub path_prefix: Option<String>,
    /// Node-cache capacity per open file, in 4 KiB nodes.
    #[arg(long, value_name = "N", default_value_t = pfs_fuse::DEFAULT_MOUNT_CACHE_NODES)]
    pub cache_nodes: usize,
    /// Mount read-only; nothing in BACKING is ever written.
    #[arg(long)]
    pub read_only: bool,
    /// Stay in the foreground (log to stderr; Ctrl-C or SIGTERM unmounts).
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Do not check embedded paths (recovery work: open files moved from elsewhere).
    #[arg(long)]
    pub no_path_check: bool,
    /// Open files whose pending-write flag is set (an interrupted Gramine flush) and read
    /// their last committed state, instead of refusing them.
    #[arg(long)]
    pub ignore_pending_write: bool,
    /// Keep no recovery file: flushes are faster (no journal, no fsyncs), but a crash in
    /// the middle of a flush leaves the file unopenable (EACCES) instead of recovered.
    #[arg(long)]
    pub no_recovery: bool,
    /// Fsync between the phases of every flush, so that recovery also works after a power
    /// loss, not only after a crash of the daemon (measured 3-4x slower sequential writes
    /// and about 20x slower creation of small files).
    #[arg(long, conflicts_with = "no_recovery")]
    pub write_barriers: bool,
    /// FUSE worker threads.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub threads: usize,
    /// Let other users access the mount (FUSE allow_other).
    #[arg(long)]
    pub allow_other: bool,
    /// How long the kernel may cache a file's attributes (size, mode, owner, times, link
    /// count), in seconds. Changes made through the mount are always seen at once; 0 also
    /// shows changes made to BACKING by others at once, at a cost (docs/FUSE.md).
    #[arg(long, value_name = "SECS", default_value_t = pfs_fuse::DEFAULT_ATTR_TTL.as_secs_f64(), value_parser = parse_secs)]
    pub attr_timeout: f64,
    /// How long the kernel may cache a name's lookup, in seconds (as --attr-timeout).
    #[arg(long, value_name = "SECS", default_value_t = pfs_fuse::DEFAULT_ENTRY_TTL.as_secs_f64(), value_parser = parse_secs)]
    pub entry_timeout: f64,
    /// Log more (debug level).
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Internal: print "ready" on stdout once mounted (used by the detaching parent).
    #[arg(long, hide = true)]
    pub notify_ready: bool,
    /// Directory of protected files.
    pub backing: PathBuf,
    /// Where the plaintext view appears.
    pub mountpoint: PathBuf,
}

/// Arguments of `pfs umount`.
#[derive(Debug, Args)]
pub struct UmountArgs {
    /// The mount point given to `pfs mount`.
    pub mountpoint: PathBuf,
    /// Seconds to wait for the daemon to finish its final flush.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds between 0 and 86400")),
    }
}

fn read_key(path: &Path) -> anyhow::Result<pfs_core::Key> {
    let bytes = std::fs::read(path).with_context(|| format!("reading key file {}", path.display()))?;
    let key = pfs_core::Key::from_slice(&bytes);
    match key {
        Some(k) => Ok(k),
        None => bail!(
            "key file {} holds {} bytes; a key file is exactly 16 raw bytes",
            path.display(),
            bytes.len()
        ),
    }
}

struct StderrLogger {
    level: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.level && (m.target().starts_with("pfs") || m.level() <= log::Level::Error)
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            // A closed terminal must not stop the daemon: write errors are ignored.
            let _ = writeln!(std::io::stderr(), "pfs[{}]: {}: {}", std::process::id(), r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

fn init_logging(verbose: bool) {
    let level = if verbose { log::LevelFilter::Debug } else { log::LevelFilter::Info };
    if log::set_boxed_logger(Box::new(StderrLogger { level })).is_ok() {
        log::set_max_level(level);
    }
}

/// `pfs mount`.
pub fn run_mount(args: &MountArgs) -> anyhow::Result<()> {
    let key = read_key(&args.key)?;
    if !args.backing.is_dir() {
        bail!("backing directory {} does not exist or is not a directory", args.backing.display());
    }
    if !args.mountpoint.is_dir() {
        bail!("mount point {} does not exist or is not a directory", args.mountpoint.display());
    }
    if !args.foreground {
        return spawn_daemon(args);
    }
    init_logging(args.verbose);
    if args.notify_ready {
        pfs_fuse::detach_from_terminal().context("detaching from the terminal")?;
    }
    let mut cfg = pfs_fuse::MountConfig::new(&args.backing, key);
    cfg.path_prefix = args.path_prefix.as_ref().map(|p| p.as_bytes().to_vec());
    cfg.cache_nodes = args.cache_nodes;
    cfg.read_only = args.read_only;
    cfg.path_check = !args.no_path_check;
    cfg.threads = args.threads.max(1);
    cfg.allow_other = args.allow_other;
    cfg.attr_ttl = Duration::from_secs_f64(args.attr_timeout);
    cfg.entry_ttl = Duration::from_secs_f64(args.entry_timeout);
    if args.ignore_pending_write {
        cfg.pending_write = pfs_fuse::PendingWritePolicy::Ignore;
    }
    cfg.recovery = !args.no_recovery;
    cfg.write_barriers = args.write_barriers;
    let notify = args.notify_ready;
    let backing = args.backing.display().to_string();
    let mnt = args.mountpoint.display().to_string();
    pfs_fuse::run_until_signal(cfg, &args.mountpoint, move || {
        log::info!("{backing} mounted on {mnt}");
        if notify {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "ready");
            let _ = out.flush();
        }
    })
    .with_context(|| format!("mounting {} on {}", args.backing.display(), args.mountpoint.display()))?;
    log::info!("{} unmounted", args.mountpoint.display());
    Ok(())
}

/// Runs this program again as `pfs mount -f --notify-ready ...` in its own session and
/// returns once the child reports the mount live (or fails, printing why).
fn spawn_daemon(args: &MountArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the pfs executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount").arg("-f").arg("--notify-ready").arg("-w").arg(&args.key);
    if let Some(p) = &args.path_prefix {
        cmd.arg("--path-prefix").arg(p);
    }
    cmd.arg("--cache-nodes").arg(args.cache_nodes.to_string());
    cmd.arg("--threads").arg(args.threads.to_string());
    cmd.arg("--attr-timeout").arg(args.attr_timeout.to_string());
    cmd.arg("--entry-timeout").arg(args.entry_timeout.to_string());
    for (on, flag) in [
        (args.read_only, "--read-only"),
        (args.no_path_check, "--no-path-check"),
        (args.ignore_pending_write, "--ignore-pending-write"),
        (args.no_recovery, "--no-recovery"),
        (args.write_barriers, "--write-barriers"),
        (args.allow_other, "--allow-other"),
        (args.verbose, "--verbose"),
    ] {
        if on {
            cmd.arg(flag);
        }
    }
    cmd.arg("--").arg(&args.backing).arg(&args.mountpoint);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().context("starting the mount daemon")?;
    let stdout = child.stdout.take().context("daemon stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).context("waiting for the mount daemon")?;
    if line.trim() == "ready" {
        return Ok(());
    }
    let status = child.wait().context("waiting for the mount daemon")?;
    bail!("the mount daemon failed ({status}); see the message above")
}

/// `pfs umount`.
pub fn run_umount(args: &UmountArgs) -> anyhow::Result<()> {
    if !pfs_fuse::is_mounted(&args.mountpoint) {
        bail!("{} is not a mount point", args.mountpoint.display());
    }
    pfs_fuse::unmount(&args.mountpoint, Duration::from_secs(args.timeout))
        .with_context(|| format!("unmounting {}", args.mountpoint.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        m: MountArgs,
    }

    #[test]
    fn mount_flags_parse_as_documented() {
        let t = T::parse_from([
            "pfs",
            "-w",
            "k",
            "--path-prefix",
            "/p",
            "--cache-nodes",
            "64",
            "--read-only",
            "-f",
            "--no-path-check",
            "--no-recovery",
            "enc",
            "plain",
        ]);
        assert_eq!(t.m.key, PathBuf::from("k"));
        assert_eq!(t.m.path_prefix.as_deref(), Some("/p"));
        assert_eq!(t.m.cache_nodes, 64);
        assert!(t.m.read_only && t.m.foreground && t.m.no_path_check && t.m.no_recovery);
        let t = T::parse_from(["pfs", "-w", "k", "--write-barriers", "enc", "plain"]);
        assert!(!t.m.no_recovery && t.m.write_barriers, "recovery is on by default");
        let both = T::try_parse_from(["pfs", "-w", "k", "--no-recovery", "--write-barriers", "e", "p"]);
        assert!(both.is_err(), "barriers without a journal make no sense");
        assert_eq!((t.m.attr_timeout, t.m.entry_timeout), (1.0, 1.0), "1 s TTLs by default");
        let t0 = T::parse_from(["pfs", "-w", "k", "--attr-timeout", "0", "--entry-timeout", "0.5", "e", "p"]);
        assert_eq!((t0.m.attr_timeout, t0.m.entry_timeout), (0.0, 0.5));
        assert!(T::try_parse_from(["pfs", "-w", "k", "--attr-timeout", "-1", "e", "p"]).is_err());
        assert!(T::try_parse_from(["pfs", "-w", "k", "--entry-timeout", "nan", "e", "p"]).is_err());
        assert_eq!(t.m.backing, PathBuf::from("enc"));
        assert_eq!(t.m.mountpoint, PathBuf::from("plain"));
    }
}
