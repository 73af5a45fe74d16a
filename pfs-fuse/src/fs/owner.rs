//! Owner, group and mode of a new inode, as a local file system gives them.
//!
//! The kernel sends the mode with the caller's umask already applied. The daemon creates
//! the host inode with its own umask in force and, as root, then hands it to the caller with
//! `chown`, which clears set-user-ID and set-group-ID bits. Neither may show: the new inode
//! gets exactly the requested mode (set-ID bits included), the caller's uid, and the
//! directory's group when the directory is set-group-ID (a new directory there inherits
//! the bit), as POSIX and Linux do.

use std::fs::File;

use fuser::{Errno, Request};
use nix::sys::stat::{FileStat, Mode};

use super::PfsFs;

/// How the new inode can be reached.
pub(super) enum NewInode<'a> {
    /// A regular file, through its open host descriptor.
    File(&'a File),
    /// Anything else, by its path relative to the backing directory (never followed if
    /// it is a symlink).
    Path(&'a [u8]),
}

fn errno(e: nix::errno::Errno) -> Errno {
    Errno::from_i32(e as i32)
}

impl PfsFs {
    /// Gives the inode just created in the directory at `parent` its owner, group and mode
    /// (`mode`: the permission and set-ID bits asked for, after the caller's umask; `None`
    /// for a symlink, whose mode means nothing), and returns its attributes.
    pub(super) fn settle_new(
        &self,
        req: &Request,
        parent: &[u8],
        new: NewInode<'_>,
        mode: Option<u32>,
        is_dir: bool,
    ) -> Result<FileStat, Errno> {
        let dir = self.backing.stat(parent)?;
        let setgid_dir = dir.st_mode & libc::S_ISGID != 0;
        if nix::unistd::geteuid().is_root() {
            let uid = Some(nix::unistd::Uid::from_raw(req.uid()));
            let gid = Some(nix::unistd::Gid::from_raw(if setgid_dir { dir.st_gid } else { req.gid() }));
            match &new {
                NewInode::File(f) => nix::unistd::fchown(f, uid, gid).map_err(errno)?,
                NewInode::Path(rel) => {
                    self.backing.chown(rel, uid.map(|u| u.as_raw()), gid.map(|g| g.as_raw()))?
                }
            }
        }
        let stat = |new: &NewInode<'_>| match new {
            NewInode::File(f) => nix::sys::stat::fstat(f).map_err(errno),
            NewInode::Path(rel) => self.backing.stat(rel),
        };
        let st = stat(&new)?;
        let Some(mode) = mode else { return Ok(st) };
        let mut want = mode & 0o7777;
        if is_dir && setgid_dir {
            want |= libc::S_ISGID;
        }
        if st.st_mode & 0o7777 == want {
            return Ok(st);
        }
        match &new {
            NewInode::File(f) => nix::sys::stat::fchmod(f, Mode::from_bits_truncate(want)).map_err(errno)?,
            NewInode::Path(rel) => self.backing.chmod(rel, want)?,
        }
        stat(&new)
    }
}
