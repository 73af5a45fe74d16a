//! Trusted files, verified lazily through one read-only FUSE file system of the launcher
//! (Gramine's `libos/src/fs/chroot/trusted.c` does the same inside the enclave).
//!
//! The file system serves "trees": host files or directories registered by the view
//! builder (chroot mounts and `fs.root` entries holding trusted files, and single trusted
//! files inside writable places). Tree `k` appears as `/k` below the FUSE mountpoint and is
//! bound into the view, so the number of mounts follows the mount table, not the number
//! of trusted files.
//!
//! A trusted file is hashed when the program first opens it: the whole file against the
//! manifest's SHA-256, and at the same time every 16 KiB chunk, whose hashes are kept
//! (32 bytes per chunk). Every later read re-reads whole chunks from the host file and
//! checks them against those hashes, so a host change after verification gives `EIO`,
//! never different bytes. Nothing is copied: bytes are read from the host on demand, and
//! the kernel keeps only verified pages in its cache (`FOPEN_KEEP_CACHE`, no direct I/O, so
//! `mmap` of shared objects works). A mismatch at first open refuses the open with
//! `EACCES` and names the file on the launcher's log.
//!
//! Host symlinks inside a tree are followed on the host (lookups use `stat`, not `lstat`),
//! as Gramine's chroot mounts open host paths: a venv's `bin/python3` that links into the
//! base interpreter's prefix is the file it points to. The trusted check uses the path
//! the program opened (its URI), as in Gramine, with the resolved host path as a second
//! chance.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, Request,
};
use sha2::{Digest, Sha256};

use super::super::Log;
use crate::manifest::TrustedFile;

/// Size of the chunks whose hashes are kept after verification (Gramine's
/// `TRUSTED_CHUNK_SIZE`).
pub(crate) const CHUNK_SIZE: usize = 16 * 1024;

/// Attribute and entry cache time. Trusted bytes cannot change once verified; other
/// files in a tree are the host's and may, so the kernel re-asks after a second.
const TTL: Duration = Duration::from_secs(1);

/// The FUSE root's inode; tree `k` has inode `k + 2`.
const INO_ROOT: u64 = 1;

/// Locks a mutex, ignoring poisoning: every critical section leaves consistent data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Lexical normalisation of an absolute path: `.` dropped, `..` applied (symlinks are not
/// resolved: the trusted check is by the path the manifest names, as in Gramine).
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The manifest's trusted files, by normalised host path.
pub(crate) struct TrustedList {
    /// Expected SHA-256 per file (`None`: the manifest has no hash; the content at first
    /// open is used, with a warning).
    files: HashMap<PathBuf, Option<[u8; 32]>>,
    /// Unexpanded trusted directories: every file below is trusted without a hash.
    dirs: Vec<PathBuf>,
}

impl TrustedList {
    /// The list for `entries`, with relative URIs resolved against `cwd`.
    pub(crate) fn new(entries: &[TrustedFile], cwd: &Path, log: &Log) -> TrustedList {
        let mut list = TrustedList { files: HashMap::with_capacity(entries.len()), dirs: Vec::new() };
        for entry in entries {
            let path = normalize(&cwd.join(entry.uri.trim_end_matches('/')));
            if entry.is_dir() {
                log.warn(format_args!(
                    "trusted directory file:{} was not expanded by `pfs manifest`: its files are trusted with \
                     the content they have at first open, which the measurement does NOT cover",
                    entry.uri
                ));
                list.dirs.push(path);
            } else {
                list.files.insert(path, entry.sha256);
            }
        }
        list
    }

    /// Whether there are no trusted files at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dirs.is_empty()
    }

    /// `Some(expected hash)` when `host` (normalised) is trusted.
    pub(crate) fn lookup(&self, host: &Path) -> Option<Option<[u8; 32]>> {
        if let Some(h) = self.files.get(host) {
            return Some(*h);
        }
        self.dirs.iter().any(|d| host.starts_with(d)).then_some(None)
    }

    /// Whether some trusted file is `path` or lies below it.
    pub(crate) fn any_at_or_under(&self, path: &Path) -> bool {
        self.dirs.iter().any(|d| d.starts_with(path) || path.starts_with(d))
            || self.files.keys().any(|f| f.starts_with(path))
    }

    /// The trusted files (normalised host paths).
    pub(crate) fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.keys().map(PathBuf::as_path)
    }
}

/// Counters of the trusted-file server, reported at the end of a run.
#[derive(Default)]
pub(crate) struct Stats {
    /// Trusted files hashed at their first open.
    pub(crate) verified: AtomicU64,
    /// Bytes hashed at first opens.
    pub(crate) hashed_bytes: AtomicU64,
    /// Opens of trusted files (including first ones).
    pub(crate) opens: AtomicU64,
    /// Chunks checked on reads after verification.
    pub(crate) chunks_checked: AtomicU64,
    /// Reads refused because a chunk changed on the host after verification.
    pub(crate) changed: AtomicU64,
    /// Opens refused because the file did not match the manifest.
    pub(crate) refused: AtomicU64,
}

/// What first open established about a trusted file.
struct Verified {
    size: u64,
    chunks: Vec<[u8; 32]>,
}

/// An open file: the host file, and the chunk hashes when it is trusted.
struct Handle {
    file: File,
    verified: Option<Arc<Verified>>,
    host: PathBuf,
}

/// A directory entry listed at `opendir`: (inode, type, name).
type DirEntry = (u64, FileType, OsString);

/// Inode numbers of host paths (by normalised path within the trees).
#[derive(Default)]
struct Inodes {
    paths: Vec<PathBuf>,
    by_path: HashMap<PathBuf, u64>,
}

struct TrustedFs {
    list: Arc<TrustedList>,
    trees: Arc<Mutex<Vec<PathBuf>>>,
    inodes: Mutex<Inodes>,
    verified: Mutex<HashMap<PathBuf, Arc<Verified>>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    dirs: Mutex<HashMap<u64, Vec<DirEntry>>>,
    next_fh: AtomicU64,
    /// `sgx.file_check_policy = "strict"`: files that are not trusted are refused.
    strict: bool,
    stats: Arc<Stats>,
    uid: u32,
    gid: u32,
    log: Log,
}

fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn kind_of(meta: &fs::Metadata) -> FileType {
    let ft = meta.file_type();
    if ft.is_dir() {
        FileType::Directory
    } else if ft.is_symlink() {
        FileType::Symlink
    } else {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_char_device() {
            FileType::CharDevice
        } else if ft.is_block_device() {
            FileType::BlockDevice
        } else if ft.is_fifo() {
            FileType::NamedPipe
        } else if ft.is_socket() {
            FileType::Socket
        } else {
            FileType::RegularFile
        }
    }
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs.clamp(0, 999_999_999) as u32)
    } else {
        UNIX_EPOCH
    }
}

impl TrustedFs {
    /// The host path of a tree inode (`None` for the FUSE root).
    fn host_of(&self, ino: u64) -> Result<Option<PathBuf>, Errno> {
        if ino == INO_ROOT {
            return Ok(None);
        }
        let inodes = lock(&self.inodes);
        let i = usize::try_from(ino - 2).map_err(|_| Errno::ENOENT)?;
        inodes.paths.get(i).cloned().map(Some).ok_or(Errno::ENOENT)
    }

    fn ino_of(&self, host: &Path) -> u64 {
        let mut inodes = lock(&self.inodes);
        if let Some(&ino) = inodes.by_path.get(host) {
            return ino;
        }
        let ino = inodes.paths.len() as u64 + 2;
        inodes.paths.push(host.to_owned());
        inodes.by_path.insert(host.to_owned(), ino);
        ino
    }

    fn root_attr(&self) -> FileAttr {
        self.attr(INO_ROOT, FileType::Directory, 0o555, 0, 2, UNIX_EPOCH)
    }

    fn attr(&self, ino: u64, kind: FileType, perm: u16, size: u64, nlink: u32, t: SystemTime) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Attributes of a host path (symlinks followed on the host). A verified trusted file
    /// reports its verified size.
    fn host_attr(&self, ino: u64, host: &Path) -> Result<FileAttr, Errno> {
        let meta = fs::metadata(host).map_err(|e| errno(&e))?;
        let size = match lock(&self.verified).get(host) {
            Some(v) => v.size,
            None => meta.len(),
        };
        let t = time(meta.mtime(), meta.mtime_nsec());
        Ok(self.attr(ino, kind_of(&meta), (meta.mode() & 0o7777) as u16, size, meta.nlink() as u32, t))
    }

    fn do_lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let host = match self.host_of(parent)? {
            None => {
                let k: usize = name.to_str().and_then(|n| n.parse().ok()).ok_or(Errno::ENOENT)?;
                lock(&self.trees).get(k).cloned().ok_or(Errno::ENOENT)?
            }
            Some(dir) => {
                if name == ".." || name == "." || name.as_encoded_bytes().contains(&b'/') {
                    return Err(Errno::ENOENT);
                }
                dir.join(name)
            }
        };
        let ino = self.ino_of(&host);
        self.host_attr(ino, &host)
    }

    fn trusted_hash(&self, host: &Path) -> Option<Option<[u8; 32]>> {
        self.list.lookup(host).or_else(|| {
            let canonical = fs::canonicalize(host).ok()?;
            self.list.lookup(&canonical)
        })
    }

    /// Hashes a trusted file at its first open: whole-file SHA-256 and 16 KiB chunk hashes.
    fn verify(&self, host: &Path, file: &mut File, expected: Option<[u8; 32]>) -> Result<Verified, Errno> {
        // Read in large blocks (few syscalls), hash in 16 KiB chunks.
        const BLOCK: usize = 64 * CHUNK_SIZE;
        let mut whole = Sha256::new();
        let mut chunks = Vec::new();
        let mut buf = vec![0u8; BLOCK];
        let mut size = 0u64;
        loop {
            let mut filled = 0;
            while filled < BLOCK {
                match file.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.log.error(format_args!("trusted file {} cannot be read: {e}", host.display()));
                        return Err(Errno::EIO);
                    }
                }
            }
            whole.update(&buf[..filled]);
            chunks.extend(buf[..filled].chunks(CHUNK_SIZE).map(|c| <[u8; 32]>::from(Sha256::digest(c))));
            size += filled as u64;
            if filled < BLOCK {
                break;
            }
        }
        self.stats.hashed_bytes.fetch_add(size, Ordering::Relaxed);
        let actual: [u8; 32] = whole.finalize().into();
        match expected {
            Some(expected) if expected != actual => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                self.log.error(format_args!(
                    "trusted file {} was modified: its SHA-256 is {}, the manifest expects {}; open refused \
                     (EACCES)",
                    host.display(),
                    hex::encode(actual),
                    hex::encode(expected)
                ));
                return Err(Errno::EACCES);
            }
            Some(_) => {}
            None => self.log.warn(format_args!(
                "trusted file {} has no sha256 in the manifest: its content at first open is used, which the \
                 measurement does NOT cover",
                host.display()
            )),
        }
        self.stats.verified.fetch_add(1, Ordering::Relaxed);
        self.log.debug(format_args!(
            "verified trusted file {} ({size} bytes, {} chunks)",
            host.display(),
            chunks.len()
        ));
        Ok(Verified { size, chunks })
    }

    fn do_open(&self, ino: u64, flags: OpenFlags) -> Result<(u64, FopenFlags), Errno> {
        let host = self.host_of(ino)?.ok_or(Errno::EISDIR)?;
        let write = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY);
        let trusted = self.trusted_hash(&host);
        if write {
            self.log
                .debug(format_args!("write access to {} refused (read-only trusted view)", host.display()));
            return Err(if trusted.is_some() { Errno::EACCES } else { Errno::EROFS });
        }
        let Some(expected) = trusted else {
            if self.strict {
                self.log.debug(format_args!(
                    "{} is neither trusted nor allowed: refused (sgx.file_check_policy = \"strict\")",
                    host.display()
                ));
                return Err(Errno::EACCES);
            }
            let file = open_host(&host).map_err(|e| errno(&e))?;
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            lock(&self.handles).insert(fh, Arc::new(Handle { file, verified: None, host }));
            return Ok((fh, FopenFlags::empty()));
        };
        self.stats.opens.fetch_add(1, Ordering::Relaxed);
        let mut file = open_host(&host).map_err(|e| errno(&e))?;
        let known = lock(&self.verified).get(&host).cloned();
        let verified = match known {
            Some(v) => v,
            None => {
                let v = Arc::new(self.verify(&host, &mut file, expected)?);
                lock(&self.verified).entry(host.clone()).or_insert(v).clone()
            }
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(Handle { file, verified: Some(verified), host }));
        // Only verified bytes ever enter the page cache, so it may be kept across opens.
        Ok((fh, FopenFlags::FOPEN_KEEP_CACHE))
    }

    fn do_read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        // The handle is shared, not copied: a read costs no dup(2) and no path allocation,
        // and the table's lock is held only for the look-up.
        let handle = lock(&self.handles).get(&fh).cloned().ok_or(Errno::EBADF)?;
        let (file, host) = (&handle.file, &handle.host);
        let Some(v) = handle.verified.as_deref() else {
            let mut buf = vec![0u8; size as usize];
            let n = read_at_most(file, &mut buf, offset).map_err(|e| errno(&e))?;
            buf.truncate(n);
            return Ok(buf);
        };
        if offset >= v.size {
            return Ok(Vec::new());
        }
        let end = v.size.min(offset.saturating_add(u64::from(size)));
        let chunk = CHUNK_SIZE as u64;
        let first = offset / chunk;
        let last = (end - 1) / chunk;
        let start = first * chunk;
        let stop = v.size.min((last + 1) * chunk);
        let mut buf = vec![0u8; (stop - start) as usize];
        let n = read_at_most(file, &mut buf, start).map_err(|e| errno(&e))?;
        for (i, piece) in buf.chunks(CHUNK_SIZE).enumerate() {
            let index = first as usize + i;
            let ok = n >= (i * CHUNK_SIZE + piece.len())
                && v.chunks.get(index).is_some_and(|h| *h == <[u8; 32]>::from(Sha256::digest(piece)));
            if !ok {
                self.stats.changed.fetch_add(1, Ordering::Relaxed);
                self.log.error(format_args!(
                    "trusted file {} changed on the host after it was verified (chunk {index} at byte {}): read \
                     refused (EIO)",
                    host.display(),
                    index * CHUNK_SIZE
                ));
                return Err(Errno::EIO);
            }
        }
        self.stats.chunks_checked.fetch_add(last - first + 1, Ordering::Relaxed);
        buf.drain(..(offset - start) as usize);
        buf.truncate((end - offset) as usize);
        Ok(buf)
    }

    fn do_opendir(&self, ino: u64) -> Result<u64, Errno> {
        let mut entries: Vec<DirEntry> =
            vec![(ino, FileType::Directory, ".".into()), (INO_ROOT, FileType::Directory, "..".into())];
        match self.host_of(ino)? {
            None => {
                for (k, tree) in lock(&self.trees).iter().enumerate() {
                    let kind = fs::metadata(tree).map(|m| kind_of(&m)).unwrap_or(FileType::RegularFile);
                    entries.push((k as u64 + 2, kind, k.to_string().into()));
                }
            }
            Some(dir) => {
                for entry in fs::read_dir(&dir).map_err(|e| errno(&e))?.filter_map(|e| e.ok()) {
                    let Ok(ft) = entry.file_type() else { continue };
                    // Symlinks are shown as what they point to (followed on the host);
                    // dangling ones are left out, as their lookup fails.
                    let kind = if ft.is_symlink() {
                        match fs::metadata(entry.path()) {
                            Ok(m) => kind_of(&m),
                            Err(_) => continue,
                        }
                    } else if ft.is_dir() {
                        FileType::Directory
                    } else {
                        FileType::RegularFile
                    };
                    entries.push((entry.ino(), kind, entry.file_name()));
                }
            }
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dirs).insert(fh, entries);
        Ok(fh)
    }
}

fn open_host(host: &Path) -> io::Result<File> {
    fs::OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(host)
}

/// Reads up to `buf.len()` bytes at `offset` (fewer only at end of file).
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

impl Filesystem for TrustedFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let attr = match self.host_of(ino.0) {
            Ok(None) => Ok(self.root_attr()),
            Ok(Some(host)) => self.host_attr(ino.0, &host),
            Err(e) => Err(e),
        };
        match attr {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.do_open(ino.0, flags) {
            Ok((fh, open_flags)) => reply.opened(FileHandle(fh), open_flags),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.do_read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.handles).remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.do_opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let dirs = lock(&self.dirs);
        let Some(entries) = dirs.get(&fh.0) else { return reply.error(Errno::EBADF) };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(skip) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
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
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }
}

/// The live trusted-file view: a FUSE mount served by two launcher threads.
pub(crate) struct TrustedServer {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    trees: Arc<Mutex<Vec<PathBuf>>>,
    stats: Arc<Stats>,
}

impl TrustedServer {
    /// Mounts the (still empty) trusted view at `mountpoint`, an existing directory in the
    /// private namespace.
    pub(crate) fn mount(
        list: Arc<TrustedList>,
        strict: bool,
        mountpoint: &Path,
        log: Log,
    ) -> io::Result<TrustedServer> {
        let trees = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(Stats::default());
        let fs = TrustedFs {
            list,
            trees: trees.clone(),
            inodes: Mutex::new(Inodes::default()),
            verified: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            strict,
            stats: stats.clone(),
            uid: crate::sys::geteuid(),
            gid: crate::sys::getegid(),
            log,
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName(format!("pfs-trusted:{}", std::process::id())),
            MountOption::Subtype("pfs-trusted".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::RO,
        ];
        // One thread may hash a large file at its first open while the other serves reads.
        config.n_threads = Some(2);
        let session = fuser::Session::new(fs, mountpoint, &config).map_err(|e| {
            io::Error::new(e.kind(), format!("{e} (FUSE: /dev/fuse must be usable by this user)"))
        })?;
        Ok(TrustedServer { session: Some(session.spawn()?), mountpoint: mountpoint.to_owned(), trees, stats })
    }

    /// Serves the host file or directory `host` (normalised) and returns where it appears
    /// below the mountpoint. Registering the same path twice gives the same place.
    pub(crate) fn add_tree(&self, host: &Path) -> PathBuf {
        let mut trees = lock(&self.trees);
        let k = match trees.iter().position(|t| t == host) {
            Some(k) => k,
            None => {
                trees.push(host.to_owned());
                trees.len() - 1
            }
        };
        self.mountpoint.join(k.to_string())
    }

    /// The server's counters.
    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Unmounts and waits for the server threads.
    pub(crate) fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else { return Ok(()) };
        if session.guard.is_finished() {
            return session.join();
        }
        session.umount_and_join()
    }
}

impl Drop for TrustedServer {
    fn drop(&mut self) {
        let _ = self.unmount_inner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("/a/./b/../c//d")), PathBuf::from("/a/c/d"));
        assert_eq!(normalize(Path::new("/../x")), PathBuf::from("/x"));
    }

    #[test]
    fn trusted_list_finds_files_and_prefixes() {
        let log = Log { level: crate::manifest::LogLevel::None, file: None };
        let entries = vec![
            TrustedFile { uri: "venv/lib/a.py".into(), sha256: Some([7; 32]) },
            TrustedFile { uri: "/opt/tree/".into(), sha256: None },
        ];
        let list = TrustedList::new(&entries, Path::new("/w"), &log);
        assert_eq!(list.lookup(Path::new("/w/venv/lib/a.py")), Some(Some([7; 32])));
        assert_eq!(list.lookup(Path::new("/opt/tree/x/y")), Some(None));
        assert_eq!(list.lookup(Path::new("/w/venv/lib/b.py")), None);
        assert!(list.any_at_or_under(Path::new("/w/venv")));
        assert!(list.any_at_or_under(Path::new("/opt")));
        assert!(!list.any_at_or_under(Path::new("/w/data")));
    }
}
