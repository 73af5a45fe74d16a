//! `/dev/attestation` (spec §7 and the `keys/NAME` row of §4.3): a small FUSE file system
//! served by the launcher (one background thread, started after the namespace exists) and
//! mounted in the view; [`View`](super::view::View) unmounts it with the rest of the view.
//!
//! | file | content |
//! |---|---|
//! | `attestation_type` | `sim` when `sgx.remote_attestation = "dcap"` and the launcher has a simulated [`QuoteProvider`], else `none` (no trailing newline, as Gramine) |
//! | `user_report_data` | read/write, exactly 64 bytes; starts as zeros |
//! | `quote` | only when `attestation_type` is not `none`: the provider's SIMULATED quote over the last `user_report_data`, made when the file is opened |
//! | `keys/NAME` | one file per key name the launcher knows (`fs.insecure__keys`, a provisioned key, the `key_name` of each encrypted mount): the 16 key bytes, or empty when the name has no key |
//!
//! Semantics and limits, compared with Gramine:
//! * **One instance for the whole run**: `user_report_data` is shared by the program and its
//!   children (Gramine keeps it per process).
//! * A write to `user_report_data` is kept per open file and installed once it holds 64
//!   bytes. A write that would go past 64 bytes fails with `EACCES`, and closing a file that
//!   was written with fewer bytes fails with `EACCES` (the value is then unchanged), as
//!   Gramine refuses every size other than 64.
//! * **Keys cannot be set at run time**: opening `keys/NAME` for writing fails with `EACCES`.
//!   The encrypted mounts receive their keys when the view is built, before the program
//!   starts, and pfs-fuse has no way to change a mount's key afterwards; set keys with
//!   `fs.insecure__keys` or secret provisioning instead.
//! * Not provided: `target_info`, `my_target_info`, `report` (local attestation) and the
//!   reserved sealing keys `keys/_sgx_mrenclave`, `keys/_sgx_mrsigner`.
//!
//! Contents are taken when a file is opened and served with `FOPEN_DIRECT_IO` (no page
//! cache), so a read returns what the open saw even though `stat` reports size 0 for
//! `quote`. Key bytes live only in zeroized buffers and are never logged.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use zeroize::Zeroizing;

use super::{Log, QuoteProvider, QuoteRequest};
use crate::manifest::{Identity, Manifest, RemoteAttestation};
use crate::measure::SimMeasurement;

/// Size of `user_report_data` (SGX REPORTDATA).
pub(crate) const REPORT_DATA_SIZE: usize = 64;

/// Attributes are never cached by the kernel: they are cheap, and `keys` or `quote` must
/// never look stale.
const TTL: Duration = Duration::ZERO;

/// The quote source and what it attests.
struct Quoting {
    provider: Arc<dyn QuoteProvider>,
    identity: Identity,
    measurement: SimMeasurement,
}

/// Everything `/dev/attestation` serves, taken from the launcher before the program starts.
pub(crate) struct Contents {
    attestation_type: &'static str,
    quoting: Option<Quoting>,
    /// Sorted by name; `None` when the name is registered (by a mount) but has no key.
    keys: Vec<(String, Option<pfs_core::Key>)>,
}

impl Contents {
    /// The contents for `manifest`: its keys (values from `keys`, names also from its
    /// encrypted mounts) and, when it asks for remote attestation and `provider` exists,
    /// quotes from `provider` for its identity and `measurement`.
    pub(crate) fn new(
        manifest: &Manifest,
        measurement: &SimMeasurement,
        keys: &std::collections::BTreeMap<String, pfs_core::Key>,
        provider: Option<Arc<dyn QuoteProvider>>,
    ) -> Contents {
        let mut names: Vec<String> = keys.keys().cloned().collect();
        for mount in &manifest.mounts {
            if let crate::manifest::MountKind::Encrypted { key_name, .. } = &mount.kind {
                names.push(key_name.clone());
            }
        }
        names.sort();
        names.dedup();
        let keys = names
            .into_iter()
            .filter(|n| valid_name(n))
            .map(|n| {
                let key = keys.get(&n).cloned();
                (n, key)
            })
            .collect();
        let quoting = match (manifest.identity.remote_attestation, provider) {
            (RemoteAttestation::Dcap, Some(provider)) => Some(Quoting {
                provider,
                identity: manifest.identity.clone(),
                measurement: measurement.clone(),
            }),
            _ => None,
        };
        let attestation_type = match &quoting {
            Some(q) => q.provider.attestation_type(),
            None => "none",
        };
        Contents { attestation_type, quoting, keys }
    }

    /// What `attestation_type` reads.
    pub(crate) fn attestation_type(&self) -> &'static str {
        self.attestation_type
    }
}

/// A name that can be a file name of `keys/`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// A node of the tree; the inode number is derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Root,
    AttestationType,
    UserReportData,
    Quote,
    Keys,
    /// Index into [`Contents::keys`].
    Key(usize),
}

const INO_ROOT: u64 = 1;
const INO_TYPE: u64 = 2;
const INO_REPORT_DATA: u64 = 3;
const INO_QUOTE: u64 = 4;
const INO_KEYS: u64 = 5;
const INO_FIRST_KEY: u64 = 6;

impl Node {
    fn ino(self) -> u64 {
        match self {
            Node::Root => INO_ROOT,
            Node::AttestationType => INO_TYPE,
            Node::UserReportData => INO_REPORT_DATA,
            Node::Quote => INO_QUOTE,
            Node::Keys => INO_KEYS,
            Node::Key(i) => INO_FIRST_KEY + i as u64,
        }
    }
}

/// An open file: what the open saw, and what was written through it.
struct Handle {
    content: Zeroizing<Vec<u8>>,
    /// `user_report_data` opened for writing: the bytes written so far.
    written: Option<Zeroizing<Vec<u8>>>,
}

/// The file system.
struct AttestationFs {
    contents: Contents,
    report_data: Mutex<[u8; REPORT_DATA_SIZE]>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    uid: u32,
    gid: u32,
    started: SystemTime,
    log: Log,
}

/// Locks a mutex, ignoring poisoning: every critical section leaves consistent data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AttestationFs {
    fn node(&self, ino: u64) -> Result<Node, Errno> {
        let node = match ino {
            INO_ROOT => Node::Root,
            INO_TYPE => Node::AttestationType,
            INO_REPORT_DATA => Node::UserReportData,
            INO_QUOTE if self.contents.quoting.is_some() => Node::Quote,
            INO_KEYS => Node::Keys,
            n if n >= INO_FIRST_KEY => {
                let i = usize::try_from(n - INO_FIRST_KEY).map_err(|_| Errno::ENOENT)?;
                if i >= self.contents.keys.len() {
                    return Err(Errno::ENOENT);
                }
                Node::Key(i)
            }
            _ => return Err(Errno::ENOENT),
        };
        Ok(node)
    }

    /// The entries of a directory node, in listing order.
    fn children(&self, dir: Node) -> Result<Vec<(String, Node)>, Errno> {
        match dir {
            Node::Root => {
                let mut v = vec![
                    ("attestation_type".to_owned(), Node::AttestationType),
                    ("user_report_data".to_owned(), Node::UserReportData),
                ];
                if self.contents.quoting.is_some() {
                    v.push(("quote".to_owned(), Node::Quote));
                }
                v.push(("keys".to_owned(), Node::Keys));
                Ok(v)
            }
            Node::Keys => Ok(self
                .contents
                .keys
                .iter()
                .enumerate()
                .map(|(i, (n, _))| (n.clone(), Node::Key(i)))
                .collect()),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn attr(&self, node: Node) -> FileAttr {
        let (kind, perm, size) = match node {
            Node::Root | Node::Keys => (FileType::Directory, 0o755, 0),
            Node::AttestationType => {
                (FileType::RegularFile, 0o444, self.contents.attestation_type.len() as u64)
            }
            Node::UserReportData => (FileType::RegularFile, 0o666, REPORT_DATA_SIZE as u64),
            Node::Quote => (FileType::RegularFile, 0o444, 0),
            Node::Key(i) => {
                let has = self.contents.keys.get(i).is_some_and(|(_, k)| k.is_some());
                (FileType::RegularFile, 0o600, if has { 16 } else { 0 })
            }
        };
        FileAttr {
            ino: INodeNo(node.ino()),
            size,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn do_open(&self, ino: u64, flags: OpenFlags) -> Result<u64, Errno> {
        let node = self.node(ino)?;
        let write = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY);
        let content: Zeroizing<Vec<u8>> = match node {
            Node::Root | Node::Keys => return Err(Errno::EISDIR),
            Node::AttestationType | Node::Quote if write => return Err(Errno::EACCES),
            Node::Key(i) if write => {
                let name = self.contents.keys.get(i).map_or("?", |(n, _)| n.as_str());
                self.log.warn(format_args!(
                    "/dev/attestation/keys/{name}: setting a key at run time is not supported (encrypted mounts get \
                     their keys before the program starts); refused with EACCES. Use fs.insecure__keys.{name} or \
                     secret provisioning (SECRET_PROVISION_SET_KEY = \"{name}\")"
                ));
                return Err(Errno::EACCES);
            }
            Node::AttestationType => Zeroizing::new(self.contents.attestation_type.as_bytes().to_vec()),
            Node::UserReportData => Zeroizing::new(lock(&self.report_data).to_vec()),
            Node::Quote => Zeroizing::new(self.quote()?),
            Node::Key(i) => match self.contents.keys.get(i) {
                Some((_, Some(key))) => Zeroizing::new(key.as_bytes().to_vec()),
                _ => Zeroizing::new(Vec::new()),
            },
        };
        let written = (write && node == Node::UserReportData).then(|| Zeroizing::new(Vec::new()));
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Handle { content, written });
        Ok(fh)
    }

    /// A quote over the current `user_report_data`.
    fn quote(&self) -> Result<Vec<u8>, Errno> {
        let Some(q) = &self.contents.quoting else { return Err(Errno::ENOENT) };
        let report_data = *lock(&self.report_data);
        let request =
            QuoteRequest { identity: &q.identity, measurement: &q.measurement, report_data: &report_data };
        q.provider.quote(&request).map_err(|e| {
            self.log.error(format_args!("/dev/attestation/quote: the quote provider failed: {e}"));
            Errno::EIO
        })
    }

    fn do_read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let handles = lock(&self.handles);
        let handle = handles.get(&fh).ok_or(Errno::EBADF)?;
        let len = handle.content.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(len);
        let end = start.saturating_add(size as usize).min(len);
        Ok(handle.content[start..end].to_vec())
    }

    fn do_write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let mut handles = lock(&self.handles);
        let handle = handles.get_mut(&fh).ok_or(Errno::EBADF)?;
        let Some(buf) = handle.written.as_mut() else { return Err(Errno::EBADF) };
        let start = usize::try_from(offset).map_err(|_| Errno::EACCES)?;
        let end = start.checked_add(data.len()).ok_or(Errno::EACCES)?;
        if end > REPORT_DATA_SIZE {
            self.log.debug(format_args!(
                "/dev/attestation/user_report_data: a write up to byte {end} refused with EACCES (exactly \
                 {REPORT_DATA_SIZE} bytes are accepted)"
            ));
            return Err(Errno::EACCES);
        }
        if buf.len() < end {
            buf.resize(end, 0);
        }
        buf[start..end].copy_from_slice(data);
        if buf.len() == REPORT_DATA_SIZE {
            lock(&self.report_data).copy_from_slice(buf);
        }
        u32::try_from(data.len()).map_err(|_| Errno::EINVAL)
    }

    /// Closing a `user_report_data` written with fewer than 64 bytes fails.
    fn do_flush(&self, fh: u64) -> Result<(), Errno> {
        let handles = lock(&self.handles);
        let handle = handles.get(&fh).ok_or(Errno::EBADF)?;
        match &handle.written {
            Some(buf) if !buf.is_empty() && buf.len() != REPORT_DATA_SIZE => {
                self.log.debug(format_args!(
                    "/dev/attestation/user_report_data: {} bytes written, refused with EACCES (exactly \
                     {REPORT_DATA_SIZE} bytes are accepted)",
                    buf.len()
                ));
                Err(Errno::EACCES)
            }
            _ => Ok(()),
        }
    }

    /// Only `user_report_data` may be truncated (`O_TRUNC`, shell `>`): it restarts the
    /// handle's write buffer. Every other change is refused.
    fn do_setattr(
        &self,
        ino: u64,
        size: Option<u64>,
        fh: Option<u64>,
        other: bool,
    ) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        if node != Node::UserReportData {
            return if size.is_none() && !other { Ok(self.attr(node)) } else { Err(Errno::EACCES) };
        }
        if size == Some(0)
            && let Some(fh) = fh
            && let Some(Handle { written: Some(buf), .. }) = lock(&self.handles).get_mut(&fh)
        {
            buf.clear();
        }
        Ok(self.attr(node))
    }
}

impl Filesystem for AttestationFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.node(parent.0).and_then(|dir| self.children(dir)).and_then(|children| {
            children
                .into_iter()
                .find(|(n, _)| OsStr::new(n) == name)
                .map(|(_, node)| node)
                .ok_or(Errno::ENOENT)
        });
        match found {
            Ok(node) => reply.entry(&TTL, &self.attr(node), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino.0) {
            Ok(node) => reply.attr(&TTL, &self.attr(node)),
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
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let other = mode.is_some() || uid.is_some() || gid.is_some();
        match self.do_setattr(ino.0, size, fh.map(|f| f.0), other) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.do_open(ino.0, flags) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
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
            Ok(data) => reply.data(&Zeroizing::new(data)),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.do_write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.do_flush(fh.0) {
            Ok(()) => reply.ok(),
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
        // Dropping the handle wipes its buffers (Zeroizing).
        lock(&self.handles).remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino.0) {
            Ok(Node::Root | Node::Keys) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let node = match self.node(ino.0) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let children = match self.children(node) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let mut entries: Vec<(u64, FileType, String)> =
            vec![(node.ino(), FileType::Directory, ".".into()), (INO_ROOT, FileType::Directory, "..".into())];
        entries.extend(children.into_iter().map(|(name, n)| (n.ino(), self.attr(n).kind, name)));
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(skip) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// The live `/dev/attestation` mount.
pub(crate) struct DevAttestation {
    session: Option<fuser::BackgroundSession>,
}

impl DevAttestation {
    /// Mounts `contents` at `target` (an existing directory in the private namespace) and
    /// serves it from one background thread. Returns once the mount is live.
    pub(crate) fn mount(contents: Contents, target: &Path, log: Log) -> io::Result<DevAttestation> {
        let fs = AttestationFs {
            contents,
            report_data: Mutex::new([0; REPORT_DATA_SIZE]),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            uid: crate::sys::geteuid(),
            gid: crate::sys::getegid(),
            started: SystemTime::now(),
            log,
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName(format!("pfs-attestation:{}", std::process::id())),
            MountOption::Subtype("pfs-attestation".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::NoExec,
            MountOption::RW,
        ];
        config.n_threads = Some(1);
        // The caller names the mountpoint; say what FUSE needs, as encrypted mounts do.
        let session = fuser::Session::new(fs, target, &config).map_err(|e| {
            io::Error::new(e.kind(), format!("{e} (FUSE: /dev/fuse must be usable by this user)"))
        })?;
        Ok(DevAttestation { session: Some(session.spawn()?) })
    }

    /// Unmounts and waits for the server thread.
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

impl Drop for DevAttestation {
    fn drop(&mut self) {
        let _ = self.unmount_inner();
    }
}
