//! [`PfsFs`]: POSIX operations mapped onto `pfs_core::ProtectedFile`.
//!
//! Helpers return `Result<_, Errno>`; the `Filesystem` methods only reply.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use log::{debug, error, warn};
use nix::sys::stat::FileStat;
use pfs_core::{FileStore, OpenOptions, ProtectedFile};

use crate::MountConfig;
use crate::backing::{Backing, Rel, child, is_hidden, recovery_name};
use crate::journal::{JournalName, backing_journal};
use crate::tables::{HostStamp, Inodes, OpenFile, OpenFiles};

mod exchange;
mod grow;
mod owner;
mod special;

pub use special::REGULAR_FILE_LINK_ERRNO;

/// Largest write request asked of the kernel (it caps this at `max_pages`, 1 MiB here).
const MAX_WRITE: u32 = 1 << 20;

/// The file system served by a mount.
#[derive(Debug)]
pub struct PfsFs {
    cfg: MountConfig,
    /// Shared with the recovery journals of open files, which reach their files through it.
    backing: Arc<Backing>,
    /// Taken for writing by rename (which rewrites embedded paths under a name), for
    /// reading by operations that resolve a name and then act on it.
    namespace: RwLock<()>,
    inodes: Mutex<Inodes>,
    open: Mutex<OpenFiles>,
    dirs: Mutex<DirHandles>,
    /// The last engine error logged per inode, so one failure gives one log line.
    last_error: Mutex<std::collections::HashMap<u64, String>>,
    /// Plaintext size per host inode, valid while the host file's stamp is unchanged.
    sizes: Mutex<std::collections::HashMap<u64, (HostStamp, u64)>>,
}

/// Bound of the plaintext-size cache (entries of about 64 bytes).
const SIZE_CACHE_ENTRIES: usize = 1 << 20;

fn errno_name(e: Errno) -> String {
    match e.code() {
        libc::EIO => "EIO".into(),
        libc::EACCES => "EACCES".into(),
        libc::EROFS => "EROFS".into(),
        libc::EFBIG => "EFBIG".into(),
        libc::ENAMETOOLONG => "ENAMETOOLONG".into(),
        libc::ENOSPC => "ENOSPC".into(),
        libc::EMLINK => "EMLINK".into(),
        libc::EPERM => "EPERM".into(),
        libc::EOPNOTSUPP => "EOPNOTSUPP".into(),
        c => format!("errno {c}"),
    }
}

/// A directory listing taken at `opendir`: names and kinds.
type Listing = Arc<Vec<(Vec<u8>, FileType)>>;

/// A file moved by rename with the embedded path it had before.
type Rebound = (Arc<OpenFile>, Vec<u8>);

/// A file rebound for a rename: the open file, the embedded path it had, its new name.
type Moved = (Arc<OpenFile>, Vec<u8>, Rel);

#[derive(Debug, Default)]
struct DirHandles {
    next: u64,
    by_fh: std::collections::HashMap<u64, Listing>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn kind_of(st: &FileStat) -> FileType {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec.clamp(0, 999_999_999) as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs())
    }
}

fn attr(ino: u64, st: &FileStat, size: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: time(st.st_ctime, st.st_ctime_nsec),
        kind: kind_of(st),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: special::fuse_rdev(st.st_rdev),
        blksize: 4096,
        flags: 0,
    }
}

fn show(rel: &[u8]) -> String {
    if rel.is_empty() { "/".into() } else { String::from_utf8_lossy(rel).into_owned() }
}

fn to_timespec(t: TimeOrNow) -> nix::sys::time::TimeSpec {
    match t {
        TimeOrNow::Now => nix::sys::time::TimeSpec::UTIME_NOW,
        TimeOrNow::SpecificTime(t) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            nix::sys::time::TimeSpec::new(d.as_secs() as i64, d.subsec_nanos() as i64)
        }
    }
}

impl PfsFs {
    /// A file system over `backing` (opened before the mount) with `cfg`.
    pub fn new(cfg: MountConfig, backing: Backing) -> Self {
        PfsFs {
            cfg,
            backing: Arc::new(backing),
            namespace: RwLock::new(()),
            inodes: Mutex::new(Inodes::new()),
            open: Mutex::new(OpenFiles::default()),
            dirs: Mutex::new(DirHandles::default()),
            last_error: Mutex::new(std::collections::HashMap::new()),
            sizes: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The one place engine errors become errno values. Integrity failures and refused
    /// opens are logged once, naming the inode, the file and the engine's reason (which
    /// names the node and plaintext offset).
    fn pf_errno(&self, ino: u64, rel: &[u8], op: &str, e: &pfs_core::Error) -> Errno {
        let errno = Errno::from_i32(e.errno());
        let line = format!("inode {ino} {:?}: {op} failed ({}): {e}", show(rel), errno_name(errno));
        // The kernel retries a failed read in smaller pieces: say it once per inode.
        let mut last = lock(&self.last_error);
        if last.get(&ino) == Some(&line) {
            return errno;
        }
        last.insert(ino, line.clone());
        drop(last);
        if errno == Errno::EIO {
            error!("{line}");
        } else {
            warn!("{line}");
        }
        errno
    }

    /// The path `rel` is bound to inside protected files.
    fn embedded(&self, rel: &[u8]) -> Vec<u8> {
        self.cfg.embedded_path(rel)
    }

    /// Refuses a name whose embedded path would not fit the format's path field
    /// (`pfs_core::layout::MAX_PATH_LEN`, 771 bytes), with a log line giving the rule.
    fn check_embedded_len(&self, rel: &[u8], op: &str) -> Result<(), Errno> {
        let len = self.embedded(rel).len();
        if len <= pfs_core::layout::MAX_PATH_LEN {
            return Ok(());
        }
        // embedded(REL) = normalize(BASE)/REL, so REL may have this many bytes.
        let room = pfs_core::layout::MAX_PATH_LEN.saturating_sub(self.embedded(b"").len() + 1);
        warn!(
            "{op} {:?}: refused (ENAMETOOLONG): its embedded path would be {len} bytes, and a \
             protected file holds at most {} (the embedded path is normalize(BACKING)/REL, so a \
             path inside this mount may have at most {room} bytes)",
            show(rel),
            pfs_core::layout::MAX_PATH_LEN
        );
        Err(Errno::ENAMETOOLONG)
    }

    fn options(&self) -> OpenOptions {
        OpenOptions::new()
            .cache_nodes(self.cfg.cache_nodes)
            .read_only(self.cfg.read_only)
            .pending_write(self.cfg.pending_write)
            .write_barriers(self.cfg.write_barriers)
    }

    /// Whether files opened for writing keep a recovery file.
    fn journaling(&self) -> bool {
        self.cfg.recovery && !self.cfg.read_only
    }

    /// A recovery journal for the host file at `rel`, when the mount keeps them.
    fn journal_for(&self, rel: &[u8]) -> Option<(pfs_core::Journal, JournalName)> {
        if !self.journaling() {
            return None;
        }
        let name = JournalName::new(rel);
        Some((backing_journal(self.backing.clone(), name.clone()), name))
    }

    /// Opens the protected file in `host` (at `rel`) with the mount's options and, when
    /// the mount keeps them, its recovery file. A pending recovery (a flush interrupted by
    /// a crash) is performed here and logged; a recovery file left by a crash is then
    /// removed.
    fn open_protected(
        &self,
        ino: u64,
        rel: &[u8],
        host: std::fs::File,
    ) -> Result<(ProtectedFile<FileStore>, Option<JournalName>), pfs_core::Error> {
        let expected = self.cfg.path_check.then(|| self.embedded(rel));
        let (journal, name) = self.journal_for(rel).unzip();
        let pf = ProtectedFile::open_with_journal(
            FileStore::new(host),
            journal,
            &self.cfg.key,
            expected.as_deref(),
            &self.options(),
        )?;
        if let Some(nodes) = pf.recovered_nodes() {
            warn!(
                "inode {ino} {:?}: recovered an interrupted write: {nodes} nodes restored from {:?}",
                show(rel),
                show(&recovery_name(rel))
            );
        }
        if name.is_some() {
            // The file opened in a consistent state (restored and synced, or never
            // interrupted), so a recovery file left by a crash is spent: remove it now
            // rather than leave it until a close of a session that writes one.
            match self.backing.unlink(&recovery_name(rel), false) {
                Err(e) if e != Errno::ENOENT => {
                    debug!("{:?}: cannot remove the spent recovery file: errno {}", show(rel), e.code())
                }
                _ => {}
            }
        }
        Ok((pf, name))
    }

    fn rel(&self, ino: u64) -> Result<Rel, Errno> {
        lock(&self.inodes).rel(ino)
    }

    fn check_name(name: &OsStr) -> Result<&[u8], Errno> {
        let b = name.as_bytes();
        if b.is_empty() || b.contains(&b'/') || b == b"." || b == b".." {
            return Err(Errno::EINVAL);
        }
        if is_hidden(b) {
            return Err(Errno::EACCES);
        }
        Ok(b)
    }

    fn writable(&self) -> Result<(), Errno> {
        if self.cfg.read_only { Err(Errno::EROFS) } else { Ok(()) }
    }

    /// The open file of `ino`, if one exists right now.
    fn live_file(&self, ino: u64) -> Option<Arc<OpenFile>> {
        let slot = lock(&self.open).live(ino)?;
        let weak = slot.try_lock().ok()?.clone();
        weak.upgrade()
    }

    /// The shared open state of `ino`, opening the protected file if no one has it open.
    fn open_file(&self, ino: u64, rel: &[u8]) -> Result<Arc<OpenFile>, Errno> {
        let slot = lock(&self.open).slot(ino);
        let mut guard = lock(&slot);
        if let Some(file) = guard.upgrade() {
            return Ok(file);
        }
        let host = self.backing.open_file(rel, !self.cfg.read_only).inspect_err(|e| {
            warn!("inode {ino} {:?}: cannot open the host file: errno {}", show(rel), e.code());
        })?;
        let (pf, journal) =
            self.open_protected(ino, rel, host).map_err(|e| self.pf_errno(ino, rel, "open", &e))?;
        let file = Arc::new(OpenFile::new(ino, pf, journal)?);
        *guard = Arc::downgrade(&file);
        Ok(file)
    }

    /// Drops a reference obtained from `open_file`, flushing if it was the last one.
    fn put_file(&self, file: Arc<OpenFile>, rel: &[u8]) -> Result<(), Errno> {
        let ino = file.ino;
        let mut result = Ok(());
        if Arc::strong_count(&file) == 1 {
            let mut pf = file.pf_mut();
            if let Err(e) = pf.flush() {
                result = Err(self.pf_errno(ino, rel, "flush", &e));
            }
            drop(pf);
            if let Ok(st) = nix::sys::stat::fstat(&file.host)
                && let Some(inode) = lock(&self.inodes).get_mut(ino)
            {
                inode.cached_stamp = Some(HostStamp::of(&st));
            }
            if let Ok(st) = nix::sys::stat::fstat(&file.host) {
                self.remember_size(&st, file.size());
            }
        }
        drop(file);
        lock(&self.open).prune(ino);
        result
    }

    /// Plaintext size of a regular file for `getattr` and listings. A file whose metadata
    /// cannot be read (damaged, foreign, wrong key) is listed with size 0.
    fn plain_size(&self, ino: u64, rel: &[u8], st: &FileStat) -> u64 {
        if kind_of(st) != FileType::RegularFile {
            return st.st_size as u64;
        }
        if let Some(file) = self.live_file(ino) {
            return file.size();
        }
        let stamp = HostStamp::of(st);
        if let Some(&(s, size)) = lock(&self.sizes).get(&stamp.ino)
            && s == stamp
        {
            return size;
        }
        let size = match self.backing.open_file(rel, false) {
            Ok(host) => {
                let opts =
                    OpenOptions::new().read_only(true).cache_nodes(2).pending_write(self.cfg.pending_write);
                match ProtectedFile::open(FileStore::new(host), &self.cfg.key, None, &opts) {
                    Ok(pf) => pf.len(),
                    // An interrupted flush: opening it for writing performs the recovery
                    // (and logs it), after which the size is known.
                    Err(pfs_core::Error::RecoveryNeeded) if self.journaling() => {
                        match self.open_file(ino, rel) {
                            Ok(file) => {
                                let size = file.size();
                                let _ = self.put_file(file, rel);
                                return size;
                            }
                            Err(_) => 0,
                        }
                    }
                    Err(e) => {
                        debug!("inode {ino} {:?}: size unknown, listed as 0: {e}", show(rel));
                        0
                    }
                }
            }
            Err(_) => 0,
        };
        self.remember_size(st, size);
        size
    }

    /// Keeps the plaintext size of a host file version. The cache is keyed by host inode, so
    /// it survives the kernel forgetting our inodes (`ls -lR` after `drop_caches`).
    fn remember_size(&self, st: &FileStat, size: u64) {
        let mut sizes = lock(&self.sizes);
        if sizes.len() >= SIZE_CACHE_ENTRIES {
            sizes.clear();
        }
        let stamp = HostStamp::of(st);
        sizes.insert(stamp.ino, (stamp, size));
    }

    fn attr_of(&self, ino: u64) -> Result<FileAttr, Errno> {
        if let Some(file) = self.live_file(ino) {
            let st = nix::sys::stat::fstat(&file.host).map_err(|e| Errno::from_i32(e as i32))?;
            return Ok(attr(ino, &st, file.size()));
        }
        let rel = self.rel(ino)?;
        let st = self.backing.stat(&rel)?;
        Ok(attr(ino, &st, self.plain_size(ino, &rel, &st)))
    }

    fn do_lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let name = name.as_bytes();
        if is_hidden(name) {
            return Err(Errno::ENOENT);
        }
        let rel = child(&self.rel(parent)?, name);
        let st = self.backing.stat(&rel)?;
        let ino = self.inode_for(&rel, &st);
        Ok(attr(ino, &st, self.plain_size(ino, &rel, &st)))
    }

    fn do_open(&self, ino: u64, flags: OpenFlags) -> Result<(u64, FopenFlags), Errno> {
        let _ns = self.namespace.read().unwrap_or_else(|p| p.into_inner());
        let rel = self.rel(ino)?;
        let accmode = flags.0 & libc::O_ACCMODE;
        if self.cfg.read_only && accmode != libc::O_RDONLY {
            return Err(Errno::EROFS);
        }
        let already_open = self.live_file(ino).is_some();
        let file = self.open_file(ino, &rel)?;
        // Keep the kernel's page cache when the host file is as this daemon left it.
        let mut fopen = FopenFlags::empty();
        if already_open {
            fopen |= FopenFlags::FOPEN_KEEP_CACHE;
        } else if let Ok(st) = nix::sys::stat::fstat(&file.host) {
            let inodes = lock(&self.inodes);
            if let Some(inode) = inodes.by_ino_stamp(ino)
                && inode == HostStamp::of(&st)
            {
                fopen |= FopenFlags::FOPEN_KEEP_CACHE;
            }
        }
        let fh = lock(&self.open).insert(file);
        Ok((fh, fopen))
    }

    fn do_create(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> CreateResult {
        self.writable()?;
        let name = Self::check_name(name)?;
        match self.create_protected(req, parent, name, mode & 0o7777 & !umask) {
            Ok((ino, file, st)) => {
                let fh = lock(&self.open).insert(file);
                Ok((attr(ino, &st, 0), fh, FopenFlags::empty()))
            }
            Err(e) if e == Errno::EEXIST && flags & libc::O_EXCL == 0 => {
                let attr = self.do_lookup(parent, OsStr::from_bytes(name))?;
                let ino = attr.ino.0;
                match self.do_open(ino, OpenFlags(flags)) {
                    Ok((fh, fl)) => Ok((attr, fh, fl)),
                    Err(e) => {
                        lock(&self.inodes).forget(ino, 1);
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Creates `name` in `parent` as a new, empty protected file with permission bits
    /// `mode` (the caller's umask applied), owned by the caller, and opens it. Fails with
    /// `EEXIST`, leaving the existing file alone, if the name is taken.
    fn create_protected(
        &self,
        req: &Request,
        parent: u64,
        name: &[u8],
        mode: u32,
    ) -> Result<(u64, Arc<OpenFile>, FileStat), Errno> {
        let _ns = self.namespace.read().unwrap_or_else(|p| p.into_inner());
        let parent_rel = self.rel(parent)?;
        let rel = child(&parent_rel, name);
        let host = self.backing.create_file(&rel, mode)?;
        let settled = self.check_embedded_len(&rel, "create").and_then(|()| {
            self.settle_new(req, &parent_rel, owner::NewInode::File(&host), Some(mode), false)
        });
        if let Err(e) = settled {
            let _ = self.backing.unlink(&rel, false);
            return Err(e);
        }
        let ino = lock(&self.inodes).lookup(&rel);
        let (journal, journal_name) = self.journal_for(&rel).unzip();
        if journal.is_some() {
            // A recovery file left by an earlier file of this name (deleted outside the
            // mount) must never be applied to this one.
            let _ = self.backing.unlink(&recovery_name(&rel), false);
        }
        let pf = match ProtectedFile::create_with_journal(
            FileStore::new(host),
            journal,
            &self.cfg.key,
            &self.embedded(&rel),
            &self.options(),
        ) {
            Ok(pf) => pf,
            Err(e) => {
                let errno = self.pf_errno(ino, &rel, "create", &e);
                let _ = self.backing.unlink(&rel, false);
                let mut inodes = lock(&self.inodes);
                inodes.detach(&rel);
                inodes.forget(ino, 1);
                return Err(errno);
            }
        };
        let file = Arc::new(OpenFile::new(ino, pf, journal_name)?);
        let slot = lock(&self.open).slot(ino);
        *lock(&slot) = Arc::downgrade(&file);
        let st = nix::sys::stat::fstat(&file.host).map_err(|e| Errno::from_i32(e as i32))?;
        Ok((ino, file, st))
    }

    fn with_fh<T>(
        &self,
        ino: u64,
        fh: u64,
        f: impl FnOnce(&OpenFile, &mut ProtectedFile<FileStore>) -> Result<T, pfs_core::Error>,
        op: &str,
    ) -> Result<T, Errno> {
        let file = lock(&self.open).get(fh, ino)?;
        let mut pf = file.pf_mut();
        f(&file, &mut pf).map_err(|e| {
            let rel = self.rel(ino).unwrap_or_else(|_| b"(unlinked)".to_vec());
            self.pf_errno(ino, &rel, op, &e)
        })
    }

    fn do_setattr(&self, ino: u64, a: SetAttr) -> Result<FileAttr, Errno> {
        if a.size.is_some() || a.mode.is_some() || a.uid.is_some() || a.gid.is_some() {
            self.writable()?;
        }
        if let Some(size) = a.size {
            match a.fh {
                Some(fh) => {
                    let file = lock(&self.open).get(fh, ino)?;
                    self.resize(&file, size)?;
                }
                None => {
                    let _ns = self.namespace.read().unwrap_or_else(|p| p.into_inner());
                    let rel = self.rel(ino)?;
                    let file = self.open_file(ino, &rel)?;
                    let r = self.resize(&file, size);
                    self.put_file(file, &rel)?;
                    r?;
                }
            }
        }
        if a.mode.is_some() || a.uid.is_some() || a.gid.is_some() || a.atime.is_some() || a.mtime.is_some() {
            let rel = match self.rel(ino) {
                Ok(rel) => rel,
                // Unlinked or replaced while open: the host file has no name any more, only
                // the open descriptor (the kernel's writeback cache updates mtime this way
                // when such a file is written and fsynced).
                Err(e) => {
                    let file = self.live_file(ino).ok_or(e)?;
                    Self::set_attrs_by_fd(&file.host, &a)?;
                    return self.attr_of(ino);
                }
            };
            // These change the host ctime but not the plaintext: carry the cached size over.
            let known = self.backing.stat(&rel).ok().and_then(|st| {
                let stamp = HostStamp::of(&st);
                lock(&self.sizes).get(&stamp.ino).filter(|(s, _)| *s == stamp).map(|&(_, size)| size)
            });
            if let Some(mode) = a.mode {
                self.backing.chmod(&rel, mode)?;
            }
            if a.uid.is_some() || a.gid.is_some() {
                self.backing.chown(&rel, a.uid, a.gid)?;
            }
            if a.atime.is_some() || a.mtime.is_some() {
                self.backing.utimens(&rel, a.atime.map(to_timespec), a.mtime.map(to_timespec))?;
            }
            if let (Some(size), Ok(st)) = (known, self.backing.stat(&rel)) {
                self.remember_size(&st, size);
            }
        }
        self.attr_of(ino)
    }

    /// Mode, owner and times of an open host file that has no name (see `do_setattr`).
    fn set_attrs_by_fd(host: &std::fs::File, a: &SetAttr) -> Result<(), Errno> {
        let errno = |e: nix::errno::Errno| Errno::from_i32(e as i32);
        if let Some(mode) = a.mode {
            nix::sys::stat::fchmod(host, nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777))
                .map_err(errno)?;
        }
        if a.uid.is_some() || a.gid.is_some() {
            nix::unistd::fchown(
                host,
                a.uid.map(nix::unistd::Uid::from_raw),
                a.gid.map(nix::unistd::Gid::from_raw),
            )
            .map_err(errno)?;
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let omit = nix::sys::time::TimeSpec::UTIME_OMIT;
            nix::sys::stat::futimens(
                host,
                &a.atime.map(to_timespec).unwrap_or(omit),
                &a.mtime.map(to_timespec).unwrap_or(omit),
            )
            .map_err(errno)?;
        }
        Ok(())
    }

    fn do_mkdir(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Result<FileAttr, Errno> {
        self.writable()?;
        let name = Self::check_name(name)?;
        let _ns = self.namespace.read().unwrap_or_else(|p| p.into_inner());
        let parent_rel = self.rel(parent)?;
        let rel = child(&parent_rel, name);
        let mode = mode & 0o7777 & !umask;
        self.backing.mkdir(&rel, mode)?;
        let st = self.settle_new(req, &parent_rel, owner::NewInode::Path(&rel), Some(mode), true)?;
        let ino = lock(&self.inodes).lookup(&rel);
        Ok(attr(ino, &st, st.st_size as u64))
    }

    fn do_remove(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        self.writable()?;
        let name = name.as_bytes();
        if is_hidden(name) {
            return Err(Errno::ENOENT);
        }
        let _ns = self.namespace.read().unwrap_or_else(|p| p.into_inner());
        let rel = child(&self.rel(parent)?, name);
        self.backing.unlink(&rel, dir)?;
        if !dir {
            // An open file of this name keeps working on its unlinked host file; it must
            // not recreate the recovery file under a name it no longer has.
            self.detach_journal(&rel);
            let _ = self.backing.unlink(&recovery_name(&rel), false);
        }
        lock(&self.inodes).detach(&rel);
        Ok(())
    }

    /// Stops the open file at `rel` (if any) from writing a recovery file: its host file
    /// was unlinked or replaced.
    fn detach_journal(&self, rel: &[u8]) {
        let ino = lock(&self.inodes).ino_of(rel);
        if let Some(file) = ino.and_then(|i| self.live_file(i))
            && let Some(journal) = &file.journal
        {
            journal.detach();
        }
    }

    /// Rebinds the protected file at `from` to the embedded path of `to`. A file that
    /// cannot be opened (damaged, foreign, wrong key) keeps its embedded path; the caller
    /// still moves it, and a log line says so.
    fn rebind(&self, from: &[u8], to: &[u8]) -> Result<Option<Rebound>, Errno> {
        let ino = lock(&self.inodes).ino_of(from);
        let existing = ino.and_then(|i| self.live_file(i));
        let file = match existing {
            Some(f) => f,
            None => {
                let host = match self.backing.open_file(from, true) {
                    Ok(h) => h,
                    Err(e) => {
                        warn!(
                            "{:?}: moved without rewriting its embedded path: errno {}",
                            show(from),
                            e.code()
                        );
                        return Ok(None);
                    }
                };
                match self.open_protected(ino.unwrap_or(0), from, host) {
                    Ok((pf, journal)) => Arc::new(OpenFile::new(ino.unwrap_or(0), pf, journal)?),
                    Err(e) => {
                        warn!(
                            "{:?}: moved without rewriting its embedded path, not readable here: {e}",
                            show(from)
                        );
                        return Ok(None);
                    }
                }
            }
        };
        let old_path = file.pf().path().to_vec();
        // A rename changes no content: the metadata rewrite must not show as a new mtime.
        let times = nix::sys::stat::fstat(&file.host).ok();
        file.pf_mut()
            .rename(&self.embedded(to))
            .map_err(|e| self.pf_errno(file.ino, from, "rename (rewriting the embedded path)", &e))?;
        if let Some(st) = times {
            let _ = nix::sys::stat::futimens(
                &file.host,
                &nix::sys::time::TimeSpec::new(st.st_atime, st.st_atime_nsec),
                &nix::sys::time::TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
            );
        }
        Ok(Some((file, old_path)))
    }

    fn regular_files_below(&self, rel: &[u8], out: &mut Vec<Rel>) -> Result<(), Errno> {
        for entry in self.backing.list(rel)? {
            let r = child(rel, entry.name.as_bytes());
            let st = self.backing.stat(&r)?;
            match kind_of(&st) {
                FileType::RegularFile => out.push(r),
                FileType::Directory => self.regular_files_below(&r, out)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// The protected files a rename of `from` (with attributes `st`) to `to` rebinds: the
    /// file itself, or every regular file below a directory, each with its new name.
    fn files_to_rebind(&self, st: &FileStat, from: &[u8], to: &[u8]) -> Result<Vec<(Rel, Rel)>, Errno> {
        Ok(match kind_of(st) {
            FileType::RegularFile => vec![(from.to_vec(), to.to_vec())],
            FileType::Directory => {
                let mut files = Vec::new();
                self.regular_files_below(from, &mut files)?;
                files
                    .into_iter()
                    .map(|f| {
                        let mut t = to.to_vec();
                        t.extend_from_slice(&f[from.len()..]);
                        (f, t)
                    })
                    .collect()
            }
            _ => Vec::new(),
        })
    }

    /// Rewrites the embedded path of every file of `pairs` (from, to), all or nothing:
    /// the paths are checked against the format's limit first, and a failure restores the
    /// files already rebound.
    fn rebind_all(&self, pairs: &[(Rel, Rel)]) -> Result<Vec<Moved>, Errno> {
        for (_, t) in pairs {
            self.check_embedded_len(t, "rename to")?;
        }
        let mut moved = Vec::new();
        for (f, t) in pairs {
            match self.rebind(f, t) {
                Ok(Some((file, old))) => moved.push((file, old, t.clone())),
                Ok(None) => {}
                Err(e) => {
                    self.undo_rebinds(moved);
                    return Err(e);
                }
            }
        }
        Ok(moved)
    }

    /// Gives rebound files their old embedded paths back (the host rename failed).
    fn undo_rebinds(&self, moved: Vec<Moved>) {
        for (file, old_path, rel) in moved {
            if let Err(e) = file.pf_mut().rename(&old_path) {
                error!("{:?}: could not restore the embedded path after a failed rename: {e}", show(&rel));
            }
            let _ = self.put_file(file, &rel);
        }
    }

    /// After the host rename: the journals of rebound files follow their new names.
    fn finish_rebinds(&self, moved: Vec<Moved>) {
        for (file, _, rel) in moved {
            if let Some(journal) = &file.journal {
                journal.moved_to(&rel);
            }
            let _ = self.put_file(file, &rel);
        }
    }

    fn do_rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        self.writable()?;
        let name_b = name.as_bytes();
        if is_hidden(name_b) {
            return Err(Errno::ENOENT);
        }
        let newname = Self::check_name(newname)?;
        let bits = flags.bits();
        if bits & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT) != 0 {
            return Err(Errno::EINVAL);
        }
        if bits & libc::RENAME_EXCHANGE != 0 {
            if bits != libc::RENAME_EXCHANGE {
                return Err(Errno::EINVAL);
            }
            return self.do_exchange(parent, name_b, newparent, newname);
        }
        let _ns = self.namespace.write().unwrap_or_else(|p| p.into_inner());
        let from = child(&self.rel(parent)?, name_b);
        let to = child(&self.rel(newparent)?, newname);
        if from == to {
            return Ok(());
        }
        let st = self.backing.stat(&from)?;
        let target = self.backing.stat(&to);
        if bits & libc::RENAME_NOREPLACE != 0 && target.is_ok() {
            return Err(Errno::EEXIST);
        }
        if let Ok(t) = &target
            && (t.st_ino, t.st_dev) == (st.st_ino, st.st_dev)
        {
            // Two names of one file: POSIX says rename does nothing.
            return Ok(());
        }
        if kind_of(&st) == FileType::Directory && to.starts_with(&from) && to.get(from.len()) == Some(&b'/') {
            return Err(Errno::EINVAL);
        }
        // Embedded paths first, then the host rename; undone if the host rename fails.
        let pairs = self.files_to_rebind(&st, &from, &to)?;
        let moved = self.rebind_all(&pairs)?;
        let host = if bits == 0 {
            self.backing.rename(&from, &to)
        } else {
            self.backing.rename_with(&from, &to, nix::fcntl::RenameFlags::from_bits_truncate(bits))
        };
        if let Err(e) = host {
            self.undo_rebinds(moved);
            return Err(e);
        }
        if kind_of(&st) == FileType::RegularFile {
            // The replaced file's journal goes, the moved file's follows it (a directory's
            // recovery files move with the directory).
            self.detach_journal(&to);
            match self.backing.rename(&recovery_name(&from), &recovery_name(&to)) {
                Err(e) if e == Errno::ENOENT => {
                    let _ = self.backing.unlink(&recovery_name(&to), false);
                }
                Err(e) => warn!(
                    "{:?}: moved, but its recovery file was not (errno {}): remove {:?} if no crash is pending",
                    show(&to),
                    e.code(),
                    show(&recovery_name(&from))
                ),
                Ok(()) => {}
            }
        }
        lock(&self.inodes).rename(&from, &to);
        self.finish_rebinds(moved);
        Ok(())
    }

    fn dir_entries(&self, ino: u64) -> Result<Vec<(Vec<u8>, FileType)>, Errno> {
        let rel = self.rel(ino)?;
        let mut out = vec![(b".".to_vec(), FileType::Directory), (b"..".to_vec(), FileType::Directory)];
        for entry in self.backing.list(&rel)? {
            let kind = match self.backing.stat(&child(&rel, entry.name.as_bytes())) {
                Ok(st) => kind_of(&st),
                Err(_) => continue,
            };
            out.push((entry.name.as_bytes().to_vec(), kind));
        }
        Ok(out)
    }

    fn dir_handle(&self, fh: u64) -> Result<Listing, Errno> {
        lock(&self.dirs).by_fh.get(&fh).cloned().ok_or(Errno::EBADF)
    }

    /// Flushes every open file (unmount, destroy).
    pub fn flush_all(&self) {
        let files = lock(&self.open).all();
        for file in files {
            if let Err(e) = file.pf_mut().flush() {
                let rel = self.rel(file.ino).unwrap_or_default();
                self.pf_errno(file.ino, &rel, "final flush", &e);
            }
        }
    }
}

type CreateResult = Result<(FileAttr, u64, FopenFlags), Errno>;

struct SetAttr {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
    fh: Option<u64>,
}

impl Inodes {
    fn by_ino_stamp(&self, ino: u64) -> Option<HostStamp> {
        self.get(ino).and_then(|i| i.cached_stamp)
    }
}

impl Filesystem for PfsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        let _ = config.set_max_background(64);
        let mut wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_DIO;
        if self.cfg.writeback_cache && !self.cfg.read_only {
            wanted |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        for flag in wanted.iter() {
            if config.add_capabilities(flag).is_err() {
                debug!("kernel does not offer {flag:?}");
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.flush_all();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent.0, name) {
            Ok(a) => reply.entry_with_ttls(&self.cfg.attr_ttl, &self.cfg.entry_ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        lock(&self.inodes).forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr_of(ino.0) {
            Ok(a) => reply.attr(&self.cfg.attr_ttl, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let a = SetAttr { mode, uid, gid, size, atime, mtime, fh: fh.map(|f| f.0) };
        match self.do_setattr(ino.0, a) {
            Ok(a) => reply.attr(&self.cfg.attr_ttl, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.rel(ino.0).and_then(|rel| self.backing.readlink(&rel)) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        match self.do_mknod(req, parent.0, name, mode, umask, rdev) {
            Ok(a) => reply.entry_with_ttls(&self.cfg.attr_ttl, &self.cfg.entry_ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        match self.do_mkdir(req, parent.0, name, mode, umask) {
            Ok(a) => reply.entry_with_ttls(&self.cfg.attr_ttl, &self.cfg.entry_ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let r = (|| {
            self.writable()?;
            let name = Self::check_name(link_name)?;
            let _ns = self.namespace.read().unwrap_or_else(|p| p.into_inner());
            let parent_rel = self.rel(parent.0)?;
            let rel = child(&parent_rel, name);
            self.backing.symlink(target, &rel)?;
            let st = self.settle_new(req, &parent_rel, owner::NewInode::Path(&rel), None, false)?;
            let ino = lock(&self.inodes).lookup(&rel);
            Ok(attr(ino, &st, st.st_size as u64))
        })();
        match r {
            Ok(a) => reply.entry_with_ttls(&self.cfg.attr_ttl, &self.cfg.entry_ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.do_rename(parent.0, name, newparent.0, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        match self.do_link(ino.0, newparent.0, newname) {
            Ok(a) => reply.entry_with_ttls(&self.cfg.attr_ttl, &self.cfg.entry_ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.do_open(ino.0, flags) {
            Ok((fh, fl)) => reply.opened(FileHandle(fh), fl),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // A shared hold: the kernel's parallel readahead requests and other readers of
        // this file decrypt on their own FUSE worker threads at the same time.
        // (The open-file table's lock ends with this statement, before the read.)
        let file = lock(&self.open).get(fh.0, ino.0);
        let r = file.and_then(|file| {
            let mut buf = vec![0u8; size as usize];
            let n = file.pf().read_at(offset, &mut buf).map_err(|e| {
                let rel = self.rel(ino.0).unwrap_or_else(|_| b"(unlinked)".to_vec());
                self.pf_errno(ino.0, &rel, "read", &e)
            })?;
            buf.truncate(n);
            Ok((file, buf))
        });
        match r {
            Ok((file, buf)) => {
                reply.data(&buf);
                file.readahead_backing(offset, buf.len());
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if self.cfg.read_only {
            reply.error(Errno::EROFS);
            return;
        }
        let file = lock(&self.open).get(fh.0, ino.0);
        let r = file.and_then(|file| self.write_checked(&file, &mut file.pf_mut(), offset, data));
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        match self.with_fh(ino.0, fh.0, |_, pf| pf.flush(), "flush") {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let file = lock(&self.open).remove(fh.0);
        let r = match file {
            Some(file) if file.ino == ino.0 => {
                let rel = self.rel(ino.0).unwrap_or_default();
                let mut r = self.with_pf_flush(&file, &rel);
                if let Err(e) = self.put_file(file, &rel) {
                    r = Err(e);
                }
                r
            }
            _ => Err(Errno::EBADF),
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.with_fh(ino.0, fh.0, |_, pf| pf.sync_all(), "fsync") {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.dir_entries(ino.0) {
            Ok(entries) => {
                let mut dirs = lock(&self.dirs);
                dirs.next += 1;
                let fh = dirs.next;
                dirs.by_fh.insert(fh, Arc::new(entries));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = match self.dir_handle(fh.0) {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        let _ = ino;
        for (i, (name, kind)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(u64::MAX), (i + 1) as u64, *kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let entries = match self.dir_handle(fh.0) {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        let dir_attr = match self.attr_of(ino.0) {
            Ok(a) => a,
            Err(e) => return reply.error(e),
        };
        for (i, (name, _)) in entries.iter().enumerate().skip(offset as usize) {
            let off = (i + 1) as u64;
            if name == b"." || name == b".." {
                // The kernel does not count lookups for these two.
                if reply.add(
                    dir_attr.ino,
                    off,
                    OsStr::from_bytes(name),
                    &self.cfg.attr_ttl,
                    &dir_attr,
                    Generation(0),
                ) {
                    break;
                }
                continue;
            }
            let a = match self.do_lookup(ino.0, OsStr::from_bytes(name)) {
                Ok(a) => a,
                Err(_) => continue,
            };
            if reply.add(a.ino, off, OsStr::from_bytes(name), &self.cfg.entry_ttl, &a, Generation(0)) {
                lock(&self.inodes).forget(a.ino.0, 1);
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.dirs).by_fh.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.backing.statvfs() {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    // Extended attributes: ENOSYS, which the kernel remembers for the whole mount, so a
    // write never pays a GETXATTR("security.capability") round trip.
    fn setxattr(
        &self,
        _r: &Request,
        _i: INodeNo,
        _n: &OsStr,
        _v: &[u8],
        _f: i32,
        _p: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.do_create(req, parent.0, name, mode, umask, flags) {
            Ok((a, fh, fl)) => reply.created(&self.cfg.entry_ttl, &a, Generation(0), FileHandle(fh), fl),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.do_fallocate(ino.0, fh.0, offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl PfsFs {
    fn with_pf_flush(&self, file: &OpenFile, rel: &[u8]) -> Result<(), Errno> {
        file.pf_mut().flush().map_err(|e| self.pf_errno(file.ino, rel, "flush on release", &e))
    }
}
