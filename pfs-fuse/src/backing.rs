//! The backing directory: every host operation goes through a directory fd opened before
//! the mount, with `*at` system calls, so a mount placed over its own backing directory
//! never re-enters itself.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fuser::Errno;
use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};

/// Suffix of Gramine's recovery ("shadow") files (spec §13); hidden from listings.
pub use pfs_core::recovery::RECOVERY_SUFFIX;

/// The relative path of the recovery file of the host file at `rel`: in the same
/// directory, named by `pfs_core::recovery::recovery_file_name` (Gramine's name, or a
/// fixed-length one when that would exceed NAME_MAX).
pub fn recovery_name(rel: &[u8]) -> Rel {
    let (dir, name) = match rel.iter().rposition(|&b| b == b'/') {
        Some(slash) => rel.split_at(slash + 1),
        None => (&rel[..0], rel),
    };
    let mut out = dir.to_vec();
    out.extend_from_slice(&pfs_core::recovery::recovery_file_name(name));
    out
}

/// Whether `name` is one of the names the mount hides.
pub fn is_hidden(name: &[u8]) -> bool {
    pfs_core::recovery::is_recovery_file_name(name)
}

/// A path relative to the backing directory: empty for the root, never a leading `/`.
pub type Rel = Vec<u8>;

/// `parent/name` as a relative path.
pub fn child(parent: &[u8], name: &[u8]) -> Rel {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut p = parent.to_vec();
        p.push(b'/');
        p.extend_from_slice(name);
        p
    }
}

fn nix_errno(e: nix::errno::Errno) -> Errno {
    Errno::from_i32(e as i32)
}

/// The host directory under the mount, held open by fd.
#[derive(Debug)]
pub struct Backing {
    dir: OwnedFd,
}

/// One directory entry read from the host.
#[derive(Debug, Clone)]
pub struct HostEntry {
    /// The name (never `.`, `..` or a hidden name).
    pub name: OsString,
}

impl Backing {
    /// Opens `path` as the backing directory.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let dir =
            nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(Backing { dir })
    }

    /// Uses an already open directory fd.
    pub fn from_fd(dir: OwnedFd) -> Self {
        Backing { dir }
    }

    fn cpath(rel: &[u8]) -> Result<CString, Errno> {
        let rel = if rel.is_empty() { b"." as &[u8] } else { rel };
        CString::new(rel).map_err(|_| Errno::EINVAL)
    }

    /// `lstat` of a relative path.
    pub fn stat(&self, rel: &[u8]) -> Result<FileStat, Errno> {
        let p = Self::cpath(rel)?;
        nix::sys::stat::fstatat(self.dir.as_fd(), p.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(nix_errno)
    }

    /// Opens a regular host file. Application flags such as `O_DIRECT` are never passed on:
    /// the file is opened read-write (or read-only) and nothing else.
    pub fn open_file(&self, rel: &[u8], writable: bool) -> Result<File, Errno> {
        let p = Self::cpath(rel)?;
        let acc = if writable { OFlag::O_RDWR } else { OFlag::O_RDONLY };
        let flags = acc | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        // O_NOATIME: reading through the mount must not dirty every backing inode (an
        // `ls`/`cat` of 5,000 files would otherwise make the next sync write 5,000 inodes).
        // Only the owner or root may ask for it; fall back without.
        let fd =
            match nix::fcntl::openat(self.dir.as_fd(), p.as_c_str(), flags | OFlag::O_NOATIME, Mode::empty())
            {
                Err(nix::errno::Errno::EPERM) => {
                    nix::fcntl::openat(self.dir.as_fd(), p.as_c_str(), flags, Mode::empty())
                }
                r => r,
            }
            .map_err(nix_errno)?;
        Ok(File::from(fd))
    }

    /// Creates a new regular host file (exclusively) with `mode`.
    pub fn create_file(&self, rel: &[u8], mode: u32) -> Result<File, Errno> {
        let p = Self::cpath(rel)?;
        let fd = nix::fcntl::openat(
            self.dir.as_fd(),
            p.as_c_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(mode & 0o7777),
        )
        .map_err(nix_errno)?;
        Ok(File::from(fd))
    }

    /// Opens (creating if needed, mode 0600) the recovery file of the host file at `rel`,
    /// read-write. Its content is node images of the protected file, so only the owner
    /// may read it.
    pub fn open_recovery_file(&self, rel: &[u8]) -> Result<File, Errno> {
        let p = Self::cpath(&recovery_name(rel))?;
        let fd = nix::fcntl::openat(
            self.dir.as_fd(),
            p.as_c_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(nix_errno)?;
        Ok(File::from(fd))
    }

    /// Opens the existing recovery file of the host file at `rel` for reading. Anything but
    /// a regular file is refused (`EINVAL`), and a FIFO planted in its place cannot block.
    pub fn open_recovery_file_for_reading(&self, rel: &[u8]) -> Result<File, Errno> {
        let p = Self::cpath(&recovery_name(rel))?;
        let fd = nix::fcntl::openat(
            self.dir.as_fd(),
            p.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .map_err(nix_errno)?;
        let file = File::from(fd);
        match nix::sys::stat::fstat(&file) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => Ok(file),
            Ok(_) => Err(Errno::EINVAL),
            Err(e) => Err(nix_errno(e)),
        }
    }

    /// Lists a host directory, without `.`, `..` and hidden names.
    pub fn list(&self, rel: &[u8]) -> Result<Vec<HostEntry>, Errno> {
        let p = Self::cpath(rel)?;
        let mut dir = Dir::openat(
            self.dir.as_fd(),
            p.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(nix_errno)?;
        let mut out = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(nix_errno)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." || is_hidden(name) {
                continue;
            }
            out.push(HostEntry { name: OsStr::from_bytes(name).to_os_string() });
        }
        Ok(out)
    }

    /// `mkdirat`.
    pub fn mkdir(&self, rel: &[u8], mode: u32) -> Result<(), Errno> {
        let p = Self::cpath(rel)?;
        nix::sys::stat::mkdirat(self.dir.as_fd(), p.as_c_str(), Mode::from_bits_truncate(mode & 0o7777))
            .map_err(nix_errno)
    }

    /// `unlinkat`, for a file (`dir == false`) or an empty directory.
    pub fn unlink(&self, rel: &[u8], dir: bool) -> Result<(), Errno> {
        let p = Self::cpath(rel)?;
        let flag =
            if dir { nix::unistd::UnlinkatFlags::RemoveDir } else { nix::unistd::UnlinkatFlags::NoRemoveDir };
        nix::unistd::unlinkat(self.dir.as_fd(), p.as_c_str(), flag).map_err(nix_errno)
    }

    /// `renameat` within the backing directory (replaces an existing target).
    pub fn rename(&self, from: &[u8], to: &[u8]) -> Result<(), Errno> {
        let a = Self::cpath(from)?;
        let b = Self::cpath(to)?;
        nix::fcntl::renameat(self.dir.as_fd(), a.as_c_str(), self.dir.as_fd(), b.as_c_str())
            .map_err(nix_errno)
    }

    /// `renameat2` with `flags` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`, `RENAME_WHITEOUT`),
    /// within the backing directory.
    pub fn rename_with(&self, from: &[u8], to: &[u8], flags: nix::fcntl::RenameFlags) -> Result<(), Errno> {
        let a = Self::cpath(from)?;
        let b = Self::cpath(to)?;
        nix::fcntl::renameat2(self.dir.as_fd(), a.as_c_str(), self.dir.as_fd(), b.as_c_str(), flags)
            .map_err(nix_errno)
    }

    /// `mknodat`: a FIFO, socket or device node (`mode` holds the type and permission bits).
    pub fn mknod(&self, rel: &[u8], mode: u32, dev: libc::dev_t) -> Result<(), Errno> {
        let p = Self::cpath(rel)?;
        let kind = nix::sys::stat::SFlag::from_bits_truncate(mode & libc::S_IFMT);
        nix::sys::stat::mknodat(
            self.dir.as_fd(),
            p.as_c_str(),
            kind,
            Mode::from_bits_truncate(mode & 0o7777),
            dev,
        )
        .map_err(nix_errno)
    }

    /// `linkat` without following a symlink: `to` becomes another name of `from`.
    pub fn link(&self, from: &[u8], to: &[u8]) -> Result<(), Errno> {
        let a = Self::cpath(from)?;
        let b = Self::cpath(to)?;
        nix::unistd::linkat(self.dir.as_fd(), a.as_c_str(), self.dir.as_fd(), b.as_c_str(), AtFlags::empty())
            .map_err(nix_errno)
    }

    /// `symlinkat`: creates a host symlink holding `target` verbatim.
    pub fn symlink(&self, target: &Path, rel: &[u8]) -> Result<(), Errno> {
        let p = Self::cpath(rel)?;
        nix::unistd::symlinkat(target, self.dir.as_fd(), p.as_c_str()).map_err(nix_errno)
    }

    /// `readlinkat`.
    pub fn readlink(&self, rel: &[u8]) -> Result<OsString, Errno> {
        let p = Self::cpath(rel)?;
        nix::fcntl::readlinkat(self.dir.as_fd(), p.as_c_str()).map_err(nix_errno)
    }

    /// `fchmodat` without following a symlink (a host symlink put in place of a name must
    /// never let a chmod reach outside the backing directory); a symlink itself gets
    /// `EOPNOTSUPP`, as Linux answers `lchmod`.
    pub fn chmod(&self, rel: &[u8], mode: u32) -> Result<(), Errno> {
        let p = Self::cpath(rel)?;
        nix::sys::stat::fchmodat(
            self.dir.as_fd(),
            p.as_c_str(),
            Mode::from_bits_truncate(mode & 0o7777),
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        )
        .map_err(nix_errno)
    }

    /// `fchownat` without following symlinks.
    pub fn chown(&self, rel: &[u8], uid: Option<u32>, gid: Option<u32>) -> Result<(), Errno> {
        let p = Self::cpath(rel)?;
        nix::unistd::fchownat(
            self.dir.as_fd(),
            p.as_c_str(),
            uid.map(nix::unistd::Uid::from_raw),
            gid.map(nix::unistd::Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(nix_errno)
    }

    /// `utimensat` without following symlinks; `None` leaves a time unchanged.
    pub fn utimens(
        &self,
        rel: &[u8],
        atime: Option<nix::sys::time::TimeSpec>,
        mtime: Option<nix::sys::time::TimeSpec>,
    ) -> Result<(), Errno> {
        let p = Self::cpath(rel)?;
        let omit = nix::sys::time::TimeSpec::UTIME_OMIT;
        nix::sys::stat::utimensat(
            self.dir.as_fd(),
            p.as_c_str(),
            &atime.unwrap_or(omit),
            &mtime.unwrap_or(omit),
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(nix_errno)
    }

    /// `fstatvfs` of the backing file system.
    pub fn statvfs(&self) -> Result<nix::sys::statvfs::Statvfs, Errno> {
        nix::sys::statvfs::fstatvfs(self.dir.as_fd()).map_err(nix_errno)
    }
}
