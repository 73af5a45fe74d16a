//! Growing a file: truncate up, writes past the end, `fallocate`.
//!
//! The format has no holes (spec §3): every node up to the end is written, so growing a
//! file by N bytes makes the host write about N bytes of ciphertext. Before any of that is
//! written:
//!
//! - a size beyond [`MAX_WRITABLE_SIZE`] (16 TiB) answers `EFBIG`;
//! - growth the backing file system cannot hold (its free space, by `statvfs`) answers
//!   `ENOSPC`;
//! - the host space is reserved (`fallocate(FALLOC_FL_KEEP_SIZE)`), so that nobody else
//!   filling the disk can make the growth fail half way.
//!
//! If the growth fails anyway (an I/O error), the file is put back as it was: its old
//! size, content and host length, with nothing left behind.

use fuser::Errno;
use log::{error, warn};
use nix::fcntl::FallocateFlags;
use pfs_core::layout::{MAX_WRITABLE_SIZE, host_file_size};
use pfs_core::{FileStore, ProtectedFile};

use super::{PfsFs, errno_name, lock, show};
use crate::journal::backing_journal;
use crate::tables::OpenFile;

/// A write that starts more than this past the end grows the file through
/// [`PfsFs::grow`] first, with its checks: 8 MiB, twice the default node cache, beyond which
/// the zeros of the gap would no longer fit in the cache and be flushed part way. Nearer
/// gaps are normal: with the writeback cache and two worker threads, the kernel's writes
/// of consecutive pages can arrive out of order.
const CHECKED_WRITE_GAP: u64 = 8 << 20;

/// Zeros written per engine call by `FALLOC_FL_ZERO_RANGE`.
const ZERO_CHUNK: usize = 1 << 20;

fn errno(e: nix::errno::Errno) -> Errno {
    Errno::from_i32(e as i32)
}

impl PfsFs {
    fn file_name(&self, file: &OpenFile) -> String {
        self.rel(file.ino).map(|r| show(&r)).unwrap_or_else(|_| "(unlinked)".into())
    }

    /// Refuses growth to `size` plaintext bytes that the format's limit or the backing file
    /// system's free space does not allow, with a log line naming the limit. Returns the
    /// host file's current length.
    fn check_growth(&self, file: &OpenFile, size: u64) -> Result<u64, Errno> {
        if size > MAX_WRITABLE_SIZE {
            warn!(
                "inode {} {:?}: growing to {size} bytes refused (EFBIG): a file may have at most \
                 {MAX_WRITABLE_SIZE} bytes (16 TiB)",
                file.ino,
                self.file_name(file)
            );
            return Err(Errno::EFBIG);
        }
        let host_len = nix::sys::stat::fstat(&file.host).map_err(errno)?.st_size as u64;
        let need = host_file_size(size).saturating_sub(host_len);
        if need == 0 {
            return Ok(host_len);
        }
        let vfs = nix::sys::statvfs::fstatvfs(&file.host).map_err(errno)?;
        let free = (vfs.blocks_available() as u64).saturating_mul(vfs.fragment_size() as u64);
        if need > free {
            warn!(
                "inode {} {:?}: growing to {size} bytes refused (ENOSPC): the encrypted file would \
                 need {need} more bytes on the backing file system, which has {free} free (the \
                 format stores every node, zeros included)",
                file.ino,
                self.file_name(file)
            );
            return Err(Errno::ENOSPC);
        }
        Ok(host_len)
    }

    /// Reserves the host space from `host_len` up to what plaintext size `size` needs,
    /// without changing the host file's length. File systems without `fallocate` get no
    /// reservation (the free-space check stands alone there).
    fn reserve(&self, file: &OpenFile, host_len: u64, size: u64) -> Result<(), Errno> {
        let need = host_file_size(size).saturating_sub(host_len);
        if need == 0 {
            return Ok(());
        }
        match nix::fcntl::fallocate(
            &file.host,
            FallocateFlags::FALLOC_FL_KEEP_SIZE,
            host_len as i64,
            need as i64,
        ) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EOPNOTSUPP) => Ok(()),
            Err(e) => {
                // A partial reservation is released by setting the length it already has.
                let _ = nix::unistd::ftruncate(&file.host, host_len as i64);
                warn!(
                    "inode {} {:?}: growing to {size} bytes refused ({}): the backing file system \
                     cannot reserve {need} bytes",
                    file.ino,
                    self.file_name(file),
                    errno_name(errno(e))
                );
                Err(errno(e))
            }
        }
    }

    /// Grows the open file to `size` plaintext bytes (zeros), all or nothing.
    pub(super) fn grow(
        &self,
        file: &OpenFile,
        pf: &mut ProtectedFile<FileStore>,
        size: u64,
    ) -> Result<(), Errno> {
        let old = pf.len();
        if size <= old {
            return Ok(());
        }
        let host_len = self.check_growth(file, size)?;
        let rel = self.rel(file.ino).unwrap_or_else(|_| b"(unlinked)".to_vec());
        // What is on disk now is the state a failed growth goes back to.
        pf.flush().map_err(|e| self.pf_errno(file.ino, &rel, "flush before growing", &e))?;
        self.reserve(file, host_len, size)?;
        match pf.set_len(size).and_then(|()| pf.flush()) {
            Ok(()) => {
                file.set_size(size);
                Ok(())
            }
            Err(e) => {
                let errno = self.pf_errno(file.ino, &rel, "grow", &e);
                self.undo_growth(file, pf, old, host_len);
                Err(errno)
            }
        }
    }

    /// Puts a file whose growth from `old` bytes failed back to `old` bytes and its host
    /// file back to `host_len` bytes, releasing the reservation.
    fn undo_growth(&self, file: &OpenFile, pf: &mut ProtectedFile<FileStore>, old: u64, host_len: u64) {
        let name = self.file_name(file);
        let shrunk = pf.set_len(old).and_then(|()| pf.flush());
        // A failed flush leaves the engine unusable (and its drop writes nothing): read the
        // file again from disk, where the recovery journal restores the last completed flush.
        if shrunk.is_err() && pf.flush().is_err() {
            match self.reopen(file).and_then(|mut fresh| {
                fresh.set_len(old)?;
                fresh.flush()?;
                Ok(fresh)
            }) {
                Ok(fresh) => *pf = fresh,
                Err(e) => {
                    error!(
                        "inode {} {name:?}: after a failed growth, cannot restore its size {old}: {e}",
                        file.ino
                    );
                    return;
                }
            }
        } else if let Err(e) = shrunk {
            error!("inode {} {name:?}: after a failed growth, cannot restore its size {old}: {e}", file.ino);
            return;
        }
        if let Ok(st) = nix::sys::stat::fstat(&file.host)
            && st.st_size as u64 >= host_len
        {
            let _ = nix::unistd::ftruncate(&file.host, host_len as i64);
        }
        file.set_size(old);
        warn!("inode {} {name:?}: growth failed; the file is back at {old} bytes", file.ino);
    }

    /// The protected file of `file` opened again from its host descriptor, with the same
    /// recovery journal (a pending recovery is performed).
    fn reopen(&self, file: &OpenFile) -> Result<ProtectedFile<FileStore>, pfs_core::Error> {
        let host = file.host.try_clone().map_err(|e| pfs_core::Error::Io { node: None, source: e })?;
        let rel = self.rel(file.ino).ok();
        let expected = rel.as_deref().filter(|_| self.cfg.path_check).map(|r| self.embedded(r));
        let journal = file
            .journal
            .as_ref()
            .filter(|_| self.journaling())
            .map(|name| backing_journal(self.backing.clone(), name.clone()));
        ProtectedFile::open_with_journal(
            FileStore::new(host),
            journal,
            &self.cfg.key,
            expected.as_deref(),
            &self.options(),
        )
    }

    /// Sets the size of an open file: shrinking through the engine, growing through
    /// [`grow`](Self::grow).
    pub(super) fn resize(&self, file: &OpenFile, size: u64) -> Result<(), Errno> {
        let mut pf = file.pf_mut();
        if size > pf.len() {
            return self.grow(file, &mut pf, size);
        }
        pf.set_len(size).map_err(|e| {
            let rel = self.rel(file.ino).unwrap_or_else(|_| b"(unlinked)".to_vec());
            self.pf_errno(file.ino, &rel, "truncate", &e)
        })?;
        file.set_size(size);
        Ok(())
    }

    /// Writes `data` at `offset`. A write far past the end grows the file first, with the
    /// checks of [`grow`](Self::grow); a write that makes the file larger than
    /// [`MAX_WRITABLE_SIZE`] answers `EFBIG`.
    pub(super) fn write_checked(
        &self,
        file: &OpenFile,
        pf: &mut ProtectedFile<FileStore>,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Errno> {
        let end = offset.saturating_add(data.len() as u64);
        if end > MAX_WRITABLE_SIZE && end > pf.len() {
            self.check_growth(file, end)?;
        }
        if offset > pf.len().saturating_add(CHECKED_WRITE_GAP) {
            self.grow(file, pf, offset)?;
        }
        pf.write_at(offset, data).map_err(|e| {
            let rel = self.rel(file.ino).unwrap_or_else(|_| b"(unlinked)".to_vec());
            self.pf_errno(file.ino, &rel, "write", &e)
        })?;
        file.set_size(pf.len());
        Ok(())
    }

    /// `fallocate`. Supported: mode 0 (grow to `offset + length` if beyond the end),
    /// `FALLOC_FL_KEEP_SIZE` (reserve host space for growth up to there),
    /// `FALLOC_FL_ZERO_RANGE` (the range reads as zeros, written as encrypted zeros) with or
    /// without `KEEP_SIZE`. Everything else answers `EOPNOTSUPP`: `PUNCH_HOLE` exists to
    /// free space, and the format has no holes, so it could free nothing (docs/FUSE.md).
    pub(super) fn do_fallocate(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<(), Errno> {
        self.writable()?;
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let zero = match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => false,
            libc::FALLOC_FL_ZERO_RANGE => true,
            _ => return Err(Errno::from_i32(libc::EOPNOTSUPP)),
        };
        let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
        let file = lock(&self.open).get(fh, ino)?;
        let mut pf = file.pf_mut();
        let len = pf.len();
        if zero && offset < len {
            let zeros = vec![0u8; ZERO_CHUNK];
            let mut at = offset;
            while at < end.min(len) {
                let n = (end.min(len) - at).min(ZERO_CHUNK as u64) as usize;
                self.write_checked(&file, &mut pf, at, &zeros[..n])?;
                at += n as u64;
            }
        }
        if end > len {
            if keep_size {
                let host_len = self.check_growth(&file, end)?;
                self.reserve(&file, host_len, end)?;
            } else {
                self.grow(&file, &mut pf, end)?;
            }
        }
        Ok(())
    }
}
