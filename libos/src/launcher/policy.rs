//! `sgx.file_check_policy` and `sgx.allowed_files`, enforced with Landlock.
//!
//! Under `strict` (Gramine's default) a file that is neither trusted, allowed nor under an
//! encrypted mount is refused with `EACCES`. The launcher builds a Landlock ruleset in the
//! parent, after the view is complete: each granted place is opened with `O_PATH` through
//! the view's host-side root, which is the same inode the program sees after `chroot`, and
//! the child only enforces the ruleset right before `execve` (see `sys::spawn`). Landlock
//! rules are attached to inodes and apply to everything beneath a granted directory, on
//! every path that reaches it, and to all descendants of the program; nothing is checked
//! per access in user space.
//!
//! Handled (restricted) rights: reading, writing, executing, truncating files; creating
//! files (regular, symlink, fifo, socket, devices); removing files; moving files between
//! directories. Gramine opens a file through its policy check for each of these (its
//! unlink and rename open the file first). Listing and `stat` stay possible (`READ_DIR`
//! is not handled), as in Gramine, which checks files, not directories; creating and
//! removing directories are not checked by Gramine either and are not handled. Device
//! ioctls are not handled.
//!
//! Grants: the places bound from the trusted-file view read and execute (that view refuses
//! what is not trusted); allowed files and
//! directories, tmpfs and encrypted mounts, the `/dev` basics and `/proc` everything.

use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::view::{self, View};
use super::{LaunchError, Log};
use crate::manifest::{FileCheckPolicy, Manifest};
use crate::sys::landlock::{self as ll, EXECUTE, FILE_RIGHTS, READ_FILE, WRITE_FILE};

/// What `allow_all_but_log` means here, printed once at start.
pub const ALLOW_ALL_BUT_LOG_WARNING: &str = "sgx.file_check_policy = \"allow_all_but_log\": files that are \
     neither trusted, allowed nor encrypted are NOT checked, and accesses to them are not logged one by one \
     (no file system of the launcher is in their path); trusted files stay read-only";

/// The rights this launcher restricts on a kernel with Landlock ABI `abi`.
pub(crate) fn handled_rights(abi: u32) -> u64 {
    let mut rights = ll::EXECUTE
        | ll::WRITE_FILE
        | ll::READ_FILE
        | ll::REMOVE_FILE
        | ll::MAKE_CHAR
        | ll::MAKE_REG
        | ll::MAKE_SOCK
        | ll::MAKE_FIFO
        | ll::MAKE_BLOCK
        | ll::MAKE_SYM;
    if abi >= 2 {
        rights |= ll::REFER;
    }
    if abi >= 3 {
        rights |= ll::TRUNCATE;
    }
    rights
}

/// A Landlock ruleset under construction, with the rights granted per inode (to explain a
/// refused entrypoint before the program starts).
pub(crate) struct Ruleset {
    fd: OwnedFd,
    handled: u64,
    granted: HashMap<(u64, u64), u64>,
    root: PathBuf,
}

impl Ruleset {
    /// The ruleset's fd, for the child to enforce.
    pub(crate) fn raw_fd(&self) -> libc::c_int {
        self.fd.as_raw_fd()
    }

    /// Grants `rights` at (and, for a directory, beneath) the host-side path `path`.
    fn grant(&mut self, path: &Path, rights: u64) -> Result<(), LaunchError> {
        let fail =
            |what: &str, e| LaunchError::FilePolicy { what: format!("{what} {}", path.display()), source: e };
        let target = ll::open_path(path).map_err(|e| fail("open", e))?;
        let file = fs::File::from(target);
        let meta = file.metadata().map_err(|e| fail("stat", e))?;
        let mut rights = rights & self.handled;
        if !meta.is_dir() {
            rights &= FILE_RIGHTS;
        }
        if rights == 0 {
            return Ok(());
        }
        let target = OwnedFd::from(file);
        ll::add_rule(&self.fd, &target, rights).map_err(|e| fail("add a Landlock rule for", e))?;
        *self.granted.entry((meta.dev(), meta.ino())).or_default() |= rights;
        Ok(())
    }

    /// The rights the program will have on the host-side path `path` (symlink-free, under
    /// the view root): the union of the grants on it and its ancestors, as Landlock
    /// computes it.
    fn rights_of(&self, path: &Path) -> u64 {
        path.ancestors()
            .take_while(|a| a.starts_with(&self.root))
            .filter_map(|a| fs::metadata(a).ok())
            .filter_map(|m| self.granted.get(&(m.dev(), m.ino())))
            .fold(0, |acc, r| acc | r)
    }
}

/// Prepares the file policy for a built view: `None` under `allow_all_but_log` (after the
/// warning), else the ruleset the child must enforce. Under `strict` without Landlock the
/// run stops (fail closed).
pub(crate) fn prepare(
    view: &View,
    manifest: &Manifest,
    cwd: &Path,
    log: &Log,
) -> Result<Option<Ruleset>, LaunchError> {
    if manifest.file_check_policy == FileCheckPolicy::AllowAllButLog {
        log.warn(format_args!("{ALLOW_ALL_BUT_LOG_WARNING}"));
        return Ok(None);
    }
    let abi = ll::abi_version().map_err(LaunchError::FilePolicyUnavailable)?;
    let handled = handled_rights(abi);
    let fd = ll::create_ruleset(handled).map_err(LaunchError::FilePolicyUnavailable)?;
    let mut rules = Ruleset { fd, handled, granted: HashMap::new(), root: view.root().to_owned() };
    log.debug(format_args!("strict file policy: Landlock ABI {abi}, handled rights {handled:#x}"));

    for place in view.trusted_places() {
        if place.still_there() {
            rules.grant(&place.path, READ_FILE | EXECUTE)?;
        }
    }
    for uri in &manifest.allowed_files {
        let Some(path) = uri.strip_prefix("file:") else {
            log.debug(format_args!("allowed {uri}: only file: URIs map to the view"));
            continue;
        };
        let Ok(host) = fs::canonicalize(cwd.join(path)) else {
            log.warn(format_args!(
                "allowed file {uri} does not exist, so it cannot be granted: under the strict policy the program \
                 cannot create it (create it before the run, or allow its directory)"
            ));
            continue;
        };
        let places = view.places_of_host(&host);
        if places.is_empty() {
            log.debug(format_args!("allowed {uri} is not visible in the view"));
        }
        for place in places {
            rules.grant(&place, u64::MAX)?;
        }
    }
    for place in view.full_access_places() {
        if place.still_there() {
            rules.grant(&place.path, u64::MAX)?;
        }
    }
    // The launcher's own standard streams, reopened through /dev/std* (/proc/self/fd/N):
    // a terminal or a file the user redirected to.
    for n in 0..3 {
        let path = PathBuf::from(format!("/proc/self/fd/{n}"));
        if fs::metadata(&path).is_ok_and(|m| m.file_type().is_char_device() || m.is_file()) {
            rules.grant(&path, READ_FILE | WRITE_FILE)?;
        }
    }
    // The interpreter bound at the entrypoint's PT_INTERP path is the same inode as the
    // library-directory file it came from, but not beneath that directory: give it what
    // its source place has (Gramine loads it from its trusted runtime directory).
    if let Some((target, found)) = view.provided_interpreter() {
        let rights = view.resolve(found).map(|p| rules.rights_of(&p)).unwrap_or(0) & FILE_RIGHTS;
        if rights != 0 {
            rules.grant(target, rights)?;
        }
    }
    Ok(Some(rules))
}

/// Refuses, before the program starts, an entrypoint (or its `#!` or ELF interpreter) that
/// the strict policy would not let the kernel execute, naming the file and the fix.
pub(crate) fn check_program(view: &View, manifest: &Manifest, rules: &Ruleset) -> Result<(), LaunchError> {
    let needed = (READ_FILE | EXECUTE) & rules.handled;
    let check = |role: &str, view_path: &str| -> Result<Option<PathBuf>, LaunchError> {
        let Ok(host) = view.resolve(view_path) else { return Ok(None) };
        if !host.is_file() {
            return Ok(None);
        }
        if rules.rights_of(&host) & needed != needed {
            return Err(LaunchError::NotListed {
                program: manifest.entrypoint_in_view(),
                role: role.to_owned(),
                view_path: view_path.to_owned(),
                host: manifest.view_to_host(view_path),
            });
        }
        Ok(Some(host))
    };
    let Some(mut program) = check("the entrypoint", &manifest.entrypoint_in_view())? else { return Ok(()) };
    if let Some(interpreter) = view::shebang(&program) {
        match check("its #! interpreter", &interpreter)? {
            Some(p) => program = p,
            None => return Ok(()),
        }
    }
    if let Some(interp) = view::elf_interpreter(&program) {
        check("its ELF interpreter", &interp)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_rights_follow_the_abi() {
        let base = handled_rights(1);
        assert_eq!(base & (ll::REFER | ll::TRUNCATE), 0, "ABI 1 knows neither REFER nor TRUNCATE");
        assert_eq!(handled_rights(2), base | ll::REFER);
        assert_eq!(handled_rights(3), base | ll::REFER | ll::TRUNCATE);
        assert_eq!(handled_rights(7), handled_rights(3));
        for right in [ll::READ_FILE, ll::WRITE_FILE, ll::EXECUTE, ll::MAKE_REG, ll::REMOVE_FILE] {
            assert_ne!(base & right, 0);
        }
        // Listing directories stays possible, as in Gramine (READ_DIR is bit 3), and so do
        // directory creation and removal (bits 7 and 4) and device ioctls (bit 15).
        assert_eq!(handled_rights(7) & ((1 << 3) | (1 << 4) | (1 << 7) | (1 << 15)), 0);
    }
}
