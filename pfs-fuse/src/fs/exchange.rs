//! `rename(RENAME_EXCHANGE)`: two names swap their files atomically.
//!
//! Like a plain rename, the embedded paths are rewritten first (each protected file that
//! changes place, both sides, every regular file below a directory) and given back if the
//! host exchange fails. Recovery files swap along with their files.

use fuser::Errno;
use log::warn;

use super::{PfsFs, kind_of, lock, show};
use crate::backing::{child, recovery_name};
use fuser::FileType;

impl PfsFs {
    /// `rename(parent/name, newparent/newname, RENAME_EXCHANGE)`.
    pub(super) fn do_exchange(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
    ) -> Result<(), Errno> {
        let _ns = self.namespace.write().unwrap_or_else(|p| p.into_inner());
        let a = child(&self.rel(parent)?, name);
        let b = child(&self.rel(newparent)?, newname);
        let sa = self.backing.stat(&a)?;
        let sb = self.backing.stat(&b)?;
        if a == b || (sa.st_ino, sa.st_dev) == (sb.st_ino, sb.st_dev) {
            return Ok(());
        }
        let below = |x: &[u8], y: &[u8]| y.starts_with(x) && y.get(x.len()) == Some(&b'/');
        if below(&a, &b) || below(&b, &a) {
            return Err(Errno::EINVAL);
        }
        let mut pairs = self.files_to_rebind(&sa, &a, &b)?;
        pairs.extend(self.files_to_rebind(&sb, &b, &a)?);
        let moved = self.rebind_all(&pairs)?;
        if let Err(e) = self.backing.rename_with(&a, &b, nix::fcntl::RenameFlags::RENAME_EXCHANGE) {
            self.undo_rebinds(moved);
            return Err(e);
        }
        self.exchange_recovery_files(&a, kind_of(&sa), &b, kind_of(&sb));
        lock(&self.inodes).exchange(&a, &b);
        self.finish_rebinds(moved);
        Ok(())
    }

    /// The recovery file of a regular file goes with it to the other name (a directory's
    /// recovery files are inside it and move with it).
    fn exchange_recovery_files(&self, a: &[u8], kind_a: FileType, b: &[u8], kind_b: FileType) {
        let (ra, rb) = (recovery_name(a), recovery_name(b));
        let regular = (kind_a == FileType::RegularFile, kind_b == FileType::RegularFile);
        let result = match regular {
            (true, true) => {
                match self.backing.rename_with(&ra, &rb, nix::fcntl::RenameFlags::RENAME_EXCHANGE) {
                    Err(e) if e == Errno::ENOENT => {
                        // At most one of the two exists: move it across.
                        match self.backing.rename(&ra, &rb) {
                            Err(e) if e == Errno::ENOENT => self.backing.rename(&rb, &ra),
                            r => r,
                        }
                    }
                    r => r,
                }
            }
            (true, false) => self.backing.rename(&ra, &rb),
            (false, true) => self.backing.rename(&rb, &ra),
            (false, false) => Ok(()),
        };
        match result {
            Err(e) if e != Errno::ENOENT => warn!(
                "{:?} <-> {:?}: exchanged, but their recovery files were not (errno {}): remove \
                 them if no crash is pending",
                show(a),
                show(b),
                e.code()
            ),
            _ => {}
        }
    }
}
