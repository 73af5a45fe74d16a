//! The log of what the view did (mounts, created entries), undone in reverse at teardown,
//! and the cleanup of staging directories a killed launcher left behind.

use super::*;

impl View {
    /// Names the program created directly in the view's `/` (a tmpfs: they are discarded).
    pub(crate) fn stray_root_entries(&self) -> Vec<String> {
        let ours: std::collections::HashSet<&Path> = self
            .log
            .iter()
            .filter_map(|a| match a {
                Action::Created(p) | Action::Mounted(p) => Some(p.as_path()),
                _ => None,
            })
            .collect();
        let Ok(entries) = fs::read_dir(&self.root) else { return Vec::new() };
        let mut stray: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| !ours.contains(e.path().as_path()))
            .map(|e| format!("/{}", e.file_name().to_string_lossy()))
            .collect();
        stray.sort();
        stray
    }

    pub(super) fn mount(
        &mut self,
        op: impl FnOnce() -> io::Result<()>,
        what: &str,
        target: &Path,
    ) -> Result<(), LaunchError> {
        op().map_err(|e| LaunchError::view(what, target, e))?;
        self.log.push(Action::Mounted(target.to_owned()));
        Ok(())
    }

    /// Undoes everything in reverse order: encrypted mounts are flushed and unmounted,
    /// other mounts detached, created files and directories removed, the staging directory
    /// deleted. Returns the first error but always finishes.
    pub(crate) fn teardown(&mut self) -> Result<(), LaunchError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut first: Option<LaunchError> = None;
        while let Some(action) = self.log.pop() {
            let result = match action {
                Action::Mounted(p) => sys::umount_detach(&p).map_err(|e| LaunchError::view("unmount", &p, e)),
                Action::Created(p) => {
                    let r = match fs::symlink_metadata(&p) {
                        Ok(m) if m.is_dir() => fs::remove_dir(&p),
                        Ok(_) => fs::remove_file(&p),
                        Err(_) => Ok(()),
                    };
                    r.map_err(|e| LaunchError::view("remove mountpoint", &p, e))
                }
                Action::Placeholder(p) => match fs::symlink_metadata(&p) {
                    Ok(m) if m.is_file() && m.len() == 0 => fs::remove_file(&p)
                        .map_err(|e| LaunchError::view("remove the unused placeholder", &p, e)),
                    _ => Ok(()),
                },
                Action::Trusted(server) => server
                    .unmount()
                    .map_err(|e| LaunchError::view("unmount the trusted-file view", &self.staging, e)),
                Action::Attestation(mount) => {
                    mount.unmount().map_err(|e| LaunchError::view("unmount /dev/attestation", &self.root, e))
                }
                Action::Encrypted(guard) => guard.unmount().map_err(|source| LaunchError::Encrypted {
                    path: String::new(),
                    uri: String::new(),
                    source,
                }),
            };
            if let Err(e) = result {
                first.get_or_insert(e);
            }
        }
        if let Err(e) = fs::remove_dir(&self.staging) {
            first.get_or_insert(LaunchError::view("remove the staging directory", &self.staging, e));
        }
        first.map_or(Ok(()), Err)
    }
}

pub(super) enum Action {
    Mounted(PathBuf),
    Created(PathBuf),
    /// A placeholder host file for an allowed file; removed only if still empty.
    Placeholder(PathBuf),
    Encrypted(Box<dyn EncryptedMount>),
    /// The `/dev/attestation` file system, served by a thread of the launcher.
    Attestation(DevAttestation),
    /// The trusted-file view, served by threads of the launcher.
    Trusted(TrustedServer),
}

impl Drop for View {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

/// Removes the staging directories `pfs-run-PID-N` in `base` that a SIGKILLed launcher
/// left behind: only when process PID no longer exists, the directory is empty and it is
/// not a mountpoint. (A live launcher's staging directory also looks empty from outside its
/// namespace, hence the PID check.) Best effort: errors are ignored.
pub(super) fn remove_stale_staging(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else { return };
    let base_dev = fs::metadata(base).map(|m| m.dev()).ok();
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("pfs-run-")) else { continue };
        let Some((pid, n)) = rest.split_once('-') else { continue };
        let (Ok(pid), true) = (pid.parse::<u32>(), n.parse::<u32>().is_ok()) else { continue };
        if pid == 0 || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        let empty = fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
        if meta.is_dir() && empty && Some(meta.dev()) == base_dev {
            let _ = fs::remove_dir(&path);
        }
    }
}
