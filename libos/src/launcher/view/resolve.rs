//! Path resolution inside the view (symlinks as the program sees them after `chroot`),
//! mountpoint creation and shadowing, and where a host file is visible in the view.

use super::*;

impl View {
    /// Every host-side place (under the view root) where the canonical host file or
    /// directory `host` is visible through `fs.root` and the chroot mounts: below a mount
    /// whose source contains it, or at a mount whose source it contains. A place counts
    /// only if it shows the same inode (a later mount may hide it). Where the view holds a
    /// tmpfs of the launcher instead (the view's `/` and shadowed system directories), the
    /// entries bound into it are matched one by one, so that granting never covers the
    /// launcher's own tmpfs as a whole.
    pub(in crate::launcher) fn places_of_host(&self, host: &Path) -> Vec<PathBuf> {
        let Some(layout) = &self.layout else { return Vec::new() };
        let mut places = Vec::new();
        for (src, view_base) in chroot_sources(&layout.manifest, &layout.cwd) {
            let (host_dir, view_path) = if let Ok(rel) = host.strip_prefix(&src) {
                (host.to_owned(), Path::new(&view_base).join(rel))
            } else if src.starts_with(host) {
                (src.clone(), PathBuf::from(&view_base))
            } else {
                continue;
            };
            let Some(view_path) = view_path.to_str() else { continue };
            let Ok(place) = self.resolve(view_path) else { continue };
            self.match_place(&host_dir, &place, 0, &mut places);
        }
        places.sort();
        places.dedup();
        places
    }

    pub(super) fn match_place(&self, host: &Path, place: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        // Links copied into the launcher's tmpfs would resolve on the host side: skip them.
        if fs::symlink_metadata(place).is_ok_and(|m| m.file_type().is_symlink()) {
            return;
        }
        let (Ok(h), Ok(p)) = (fs::metadata(host), fs::metadata(place)) else { return };
        if h.dev() == p.dev() && h.ino() == p.ino() {
            out.push(place.to_owned());
            return;
        }
        if depth >= 8 || !h.is_dir() || !p.is_dir() || !self.own_devs.contains(&p.dev()) {
            return;
        }
        let Ok(entries) = fs::read_dir(host) else { return };
        for entry in entries.filter_map(|e| e.ok()) {
            self.match_place(&entry.path(), &place.join(entry.file_name()), depth + 1, out);
        }
    }

    /// Resolves an absolute in-view path to a host path under the view root, following
    /// symlinks as the program would see them after chroot (absolute links restart at the
    /// view root; `..` never leaves it). Missing components are appended unresolved.
    pub(crate) fn resolve(&self, view_path: &str) -> Result<PathBuf, LaunchError> {
        let mut pending: Vec<String> = components(view_path);
        pending.reverse();
        let mut current: Vec<String> = Vec::new();
        let mut links = 0usize;
        while let Some(part) = pending.pop() {
            if part == ".." {
                current.pop();
                continue;
            }
            let candidate = self.host_of(&current).join(&part);
            match fs::symlink_metadata(&candidate) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(LaunchError::view(
                            "resolve",
                            &candidate,
                            io::Error::from_raw_os_error(libc::ELOOP),
                        ));
                    }
                    let target = fs::read_link(&candidate)
                        .map_err(|e| LaunchError::view("read link", &candidate, e))?;
                    let target = target.to_string_lossy();
                    if target.starts_with('/') {
                        current.clear();
                    }
                    for c in components(&target).into_iter().rev() {
                        pending.push(c);
                    }
                }
                _ => current.push(part),
            }
        }
        Ok(self.host_of(&current))
    }

    pub(super) fn host_of(&self, parts: &[String]) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(parts);
        p
    }

    /// Makes sure a directory (or, with `dir == false`, a file) exists at `view_path`,
    /// creating missing parents, and returns its host path.
    pub(super) fn mountpoint(&mut self, view_path: &str, dir: bool) -> Result<PathBuf, LaunchError> {
        let parts = components(view_path);
        let mut sofar = String::new();
        for (i, part) in parts.iter().enumerate() {
            sofar.push('/');
            sofar.push_str(part);
            let last = i + 1 == parts.len();
            let host = self.resolve(&sofar)?;
            match fs::metadata(&host) {
                Ok(meta) if last && meta.is_dir() != dir => {
                    return Err(LaunchError::view(
                        if dir { "mount a directory over a file" } else { "mount a file over a directory" },
                        Path::new(view_path),
                        io::Error::from_raw_os_error(if dir { libc::ENOTDIR } else { libc::EISDIR }),
                    ));
                }
                Ok(meta) if !last && !meta.is_dir() => {
                    return Err(LaunchError::view(
                        "create a mountpoint below a file",
                        Path::new(&sofar),
                        io::Error::from_raw_os_error(libc::ENOTDIR),
                    ));
                }
                Ok(_) => {}
                Err(_) => {
                    if let Some(parent) = host.parent() {
                        self.make_room_in(parent)?;
                    }
                    if last && !dir {
                        fs::File::create(&host)
                            .map_err(|e| LaunchError::view("create mountpoint", &host, e))?;
                    } else {
                        fs::create_dir(&host)
                            .map_err(|e| LaunchError::view("create mountpoint", &host, e))?;
                    }
                    self.log.push(Action::Created(host));
                }
            }
        }
        self.resolve(view_path)
    }

    pub(super) fn remember_own_tmpfs(&mut self, dir: &Path) {
        if let Ok(meta) = fs::metadata(dir) {
            self.own_devs.insert(meta.dev());
        }
    }

    /// Before a mountpoint is created in `dir` (a host path under the view root): if `dir`
    /// is a host directory outside the app's own `fs.root` (a system directory such as the
    /// libc directory bound at `/lib`), replace it in the view by a tmpfs that holds binds of
    /// all its entries ("shadowing"), so that the host directory is never modified. Inside
    /// `fs.root` the mountpoint is created on the host (and removed after the run), so that
    /// the program's own new files there still reach the host.
    pub(super) fn make_room_in(&mut self, dir: &Path) -> Result<(), LaunchError> {
        let Ok(meta) = fs::metadata(dir) else { return Ok(()) };
        if self.own_devs.contains(&meta.dev()) {
            return Ok(());
        }
        // The trusted view is read-only: always shadow its directories.
        let trusted_view = self
            .server()
            .and_then(|_| fs::metadata(self.staging.join("trusted")).ok())
            .is_some_and(|m| m.dev() == meta.dev());
        let Some(layout) = &self.layout else { return Ok(()) };
        let Ok(rel) = dir.strip_prefix(&self.root) else { return Ok(()) };
        let view_path = format!("/{}", rel.display());
        let Some(host) = layout.manifest.view_to_host(&view_path) else { return Ok(()) };
        let host = fs::canonicalize(layout.cwd.join(host)).ok();
        let in_app = match (&host, &layout.app_root) {
            (Some(h), Some(root)) => h.starts_with(root),
            _ => true,
        };
        if in_app && !trusted_view {
            return Ok(());
        }
        // Keep the directory's current content reachable, then cover it with a tmpfs and
        // bind every entry back.
        let shadow = self.staging.join(format!("shadow-{}", self.own_devs.len()));
        fs::create_dir(&shadow).map_err(|e| LaunchError::view("create", &shadow, e))?;
        self.mount(|| sys::bind(dir, &shadow, true), "bind", &shadow)?;
        let mode = format!("mode={:o}", meta.mode() & 0o7777);
        self.mount(|| sys::mount_tmpfs(dir, &mode), "shadow", dir)?;
        let dir = dir.to_owned();
        self.remember_own_tmpfs(&dir);
        self.bind_entries(&shadow, &dir, false)?;
        Ok(())
    }
}

pub(super) const MAX_SYMLINKS: usize = 40;

/// (canonical host directory or file, in-view path) for `fs.root` and every chroot mount,
/// in manifest order.
pub(super) fn chroot_sources(manifest: &Manifest, cwd: &Path) -> Vec<(PathBuf, String)> {
    let mut sources: Vec<(PathBuf, String)> = Vec::new();
    if let Ok(root) = fs::canonicalize(cwd.join(&manifest.root)) {
        sources.push((root, "/".into()));
    }
    for m in &manifest.mounts {
        if let MountKind::Chroot { uri } = &m.kind
            && let Ok(src) = fs::canonicalize(cwd.join(uri))
        {
            sources.push((src, m.path.clone()));
        }
    }
    sources
}

pub(super) fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}
