//! FIFOs, sockets and device nodes, and hard links.
//!
//! A FIFO, socket or device node carries no content, so there is nothing to encrypt and no
//! path to bind: like a symlink it is a host special file in the backing directory, with
//! its name, mode, owner and device number in the clear (gocryptfs does the same). The
//! mount is `nodev`, so a device node made through it cannot be opened through it.
//!
//! Hard links are allowed between names of these content-free files. A protected file is
//! bound to one path (its embedded path), so a second name of it would be refused at open;
//! `link` to a regular file answers [`REGULAR_FILE_LINK_ERRNO`] instead.

use std::ffi::OsStr;

use fuser::{Errno, FileAttr, FileType, Request};
use log::warn;

use super::{PfsFs, attr, kind_of, lock, owner::NewInode, show};
use crate::backing::child;

/// What `link` to a regular file answers: `EPERM`, which link(2) documents as "the file
/// system does not support the creation of hard links" and the kernel itself answers for
/// such file systems. `EMLINK` was tried against it (docs/FUSE.md, "Hard links"): `cp -a`,
/// `rsync -aH` and GNU `tar` report the failure, exit non-zero and keep the data under the
/// first name with either errno, `git clone` falls back to copying with either, and
/// Python's `shutil.copytree` never links. `EMLINK` would add a claim that is false here
/// (the file has one link, and `LINK_MAX` is not 1 for the mount's other file types).
pub const REGULAR_FILE_LINK_ERRNO: Errno = Errno::EPERM;

/// Whether `kind` is a file without content (everything but regular files and directories).
pub(super) fn is_content_free(kind: FileType) -> bool {
    matches!(
        kind,
        FileType::Symlink
            | FileType::NamedPipe
            | FileType::Socket
            | FileType::CharDevice
            | FileType::BlockDevice
    )
}

/// The host `dev_t` of a device number as FUSE carries it (the kernel's 32-bit
/// `new_encode_dev`: minor bits 0–7, major bits 8–19, minor bits 20–31).
pub(super) fn host_dev(rdev: u32) -> libc::dev_t {
    let major = (rdev & 0xfff00) >> 8;
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    nix::sys::stat::makedev(u64::from(major), u64::from(minor))
}

/// The FUSE encoding of a host `dev_t` (the inverse of [`host_dev`]).
pub(super) fn fuse_rdev(dev: libc::dev_t) -> u32 {
    let major = nix::sys::stat::major(dev) as u32;
    let minor = nix::sys::stat::minor(dev) as u32;
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

impl PfsFs {
    /// `mknod`: a FIFO, socket or device node becomes a host special file; a regular file
    /// (`mknod` with `S_IFREG`) a new, empty protected file.
    pub(super) fn do_mknod(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> Result<FileAttr, Errno> {
        self.writable()?;
        let name = Self::check_name(name)?;
        let kind = mode & libc::S_IFMT;
        let perm = mode & 0o7777 & !umask;
        let dev = match kind {
            libc::S_IFREG | 0 => {
                let (ino, file, st) = self.create_protected(req, parent, name, perm)?;
                let rel = self.rel(ino)?;
                self.put_file(file, &rel)?;
                return Ok(attr(ino, &st, 0));
            }
            libc::S_IFIFO | libc::S_IFSOCK => 0,
            libc::S_IFCHR | libc::S_IFBLK => host_dev(rdev),
            _ => return Err(Errno::EINVAL),
        };
        let _ns = self.namespace.read().unwrap_or_else(|p| p.into_inner());
        let parent_rel = self.rel(parent)?;
        let rel = child(&parent_rel, name);
        self.backing.mknod(&rel, kind | perm, dev)?;
        let st = self.settle_new(req, &parent_rel, NewInode::Path(&rel), Some(perm), false)?;
        let ino = lock(&self.inodes).lookup(&rel);
        Ok(attr(ino, &st, st.st_size as u64))
    }

    /// `link`: another name for a content-free file. Regular files are refused (see the
    /// module documentation), with a log line saying why.
    pub(super) fn do_link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Result<FileAttr, Errno> {
        self.writable()?;
        let name = Self::check_name(newname)?;
        let _ns = self.namespace.read().unwrap_or_else(|p| p.into_inner());
        let rel = self.rel(ino)?;
        let st = self.backing.stat(&rel)?;
        let kind = kind_of(&st);
        if !is_content_free(kind) {
            if kind == FileType::RegularFile {
                warn!(
                    "link {:?} (another name for {:?}): refused ({}): a protected file is bound to \
                     one path, so hard links to regular files are not supported (symlinks, FIFOs, \
                     sockets and devices can be linked)",
                    show(&child(&self.rel(newparent)?, name)),
                    show(&rel),
                    super::errno_name(REGULAR_FILE_LINK_ERRNO)
                );
                return Err(REGULAR_FILE_LINK_ERRNO);
            }
            return Err(Errno::EPERM);
        }
        let new = child(&self.rel(newparent)?, name);
        self.backing.link(&rel, &new)?;
        let st = self.backing.stat(&new)?;
        lock(&self.inodes).link(ino, &new, st.st_ino);
        Ok(attr(ino, &st, st.st_size as u64))
    }

    /// The inode for `rel` found by a lookup with attributes `st`: every name of one
    /// hard-linked content-free host file is one inode of the mount.
    pub(super) fn inode_for(&self, rel: &[u8], st: &nix::sys::stat::FileStat) -> u64 {
        if !(is_content_free(kind_of(st)) && st.st_nlink > 1) {
            return lock(&self.inodes).lookup(rel);
        }
        // The name another inode was known by is checked outside the table lock.
        let known = lock(&self.inodes).linked_name(st.st_ino);
        let confirmed = known.filter(|(_, name)| {
            self.backing.stat(name).is_ok_and(|s| s.st_ino == st.st_ino && s.st_dev == st.st_dev)
        });
        lock(&self.inodes).lookup_linked(rel, st.st_ino, confirmed.map(|(ino, _)| ino))
    }
}
