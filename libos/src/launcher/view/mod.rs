//! The app's view: a tmpfs root in the private mount namespace, `fs.root` and the mount
//! table applied in order, `/dev` basics and `/proc`. Places holding trusted files are
//! served through the launcher's read-only trusted-file view (see the `trusted` module),
//! which verifies each trusted file lazily at its first open.
//!
//! Every mount and every file or directory created is logged; [`View::teardown`] undoes the
//! log in reverse, so mountpoints created inside host directories (reachable through chroot
//! binds) are removed again and nothing is left mounted.

mod interp;
mod resolve;
mod trusted;
mod undo;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub(super) use interp::{elf_interpreter, shebang};
use resolve::chroot_sources;
use sha2::{Digest, Sha256};
use trusted::{TrustedList, TrustedServer, normalize};
use undo::Action;
use undo::remove_stale_staging;

use super::devattest::{Contents, DevAttestation};
use super::{EncryptedMount, EncryptedMountRequest, EncryptedMounter, LaunchError, Log, TrustedFailure};
use crate::manifest::{FileCheckPolicy, Manifest, MountKind, RemoteAttestation, TrustedFile};
use crate::sys;

/// A built view. Dropping it without [`View::teardown`] still tears it down.
pub(crate) struct View {
    staging: PathBuf,
    root: PathBuf,
    log: Vec<Action>,
    torn_down: bool,
    interp_hint: Option<String>,
    /// Scratch mounts serving single-file encrypted mounts, by (directory URI, key name).
    file_mounts: BTreeMap<(String, String), PathBuf>,
    /// The manifest's trusted files (set by [`View::load_trusted`]).
    trusted: Option<Arc<TrustedList>>,
    /// Index into `log` of the trusted-file server, once mounted.
    trusted_server: Option<usize>,
    /// Host sources (normalised) served whole through the trusted view.
    served: Vec<PathBuf>,
    /// Where the trusted view is bound in the view (read and execute under `strict`).
    trusted_places: Vec<Place>,
    /// Verified copies made for the launcher's own use (the key server's CA).
    copies: usize,
    /// Devices of the tmpfs file systems the launcher mounted (entries may be created there).
    own_devs: std::collections::HashSet<u64>,
    /// What `build` is building: to tell the app's own directories from system ones.
    layout: Option<Layout>,
    /// Places the program may use freely under the strict file policy: tmpfs and encrypted
    /// mounts, `/dev` basics, `/proc` (recorded when mounted).
    full_access: Vec<Place>,
    /// The ELF interpreter bound by [`View::provide_elf_interpreter`]: (host-side target,
    /// the in-view path it was found at).
    interpreter: Option<(PathBuf, String)>,
}

/// A file or directory of the view, identified when the launcher made it, so that the file
/// policy can tell whether a later mount hid it.
pub(super) struct Place {
    /// Host-side path (under the view root).
    pub(super) path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Place {
    fn at(path: &Path) -> Option<Place> {
        let meta = fs::metadata(path).ok()?;
        Some(Place { path: path.to_owned(), dev: meta.dev(), ino: meta.ino() })
    }

    /// Whether `path` still shows what was recorded (no later mount covers it).
    pub(super) fn still_there(&self) -> bool {
        fs::metadata(&self.path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
    }
}

/// The manifest being built and where its relative URIs point.
struct Layout {
    manifest: Manifest,
    cwd: PathBuf,
    /// `fs.root` on the host, canonical.
    app_root: Option<PathBuf>,
}

/// The parts of an encrypted mount entry shared by its directory and file forms.
struct EncryptedSpec<'a> {
    view_path: &'a str,
    key_name: &'a str,
    key: Option<&'a pfs_core::Key>,
    enable_recovery: bool,
}

impl View {
    /// Creates the staging directory and its tmpfs (holding the view root and the
    /// trusted-file view's mountpoint).
    pub(crate) fn new() -> Result<View, LaunchError> {
        let base = std::env::temp_dir();
        remove_stale_staging(&base);
        let pid = std::process::id();
        let mut n = 0u32;
        let staging = loop {
            let candidate = base.join(format!("pfs-run-{pid}-{n}"));
            match fs::create_dir(&candidate) {
                Ok(()) => break candidate,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(LaunchError::view("create the staging directory", &candidate, e)),
            }
        };
        let mut view = View {
            root: staging.join("root"),
            staging,
            log: Vec::new(),
            torn_down: false,
            interp_hint: None,
            file_mounts: BTreeMap::new(),
            trusted: None,
            trusted_server: None,
            served: Vec::new(),
            trusted_places: Vec::new(),
            copies: 0,
            own_devs: std::collections::HashSet::new(),
            layout: None,
            full_access: Vec::new(),
            interpreter: None,
        };
        sys::mount_tmpfs(&view.staging, "mode=0700")
            .map_err(|e| LaunchError::view("mount the view's tmpfs", &view.staging, e))?;
        view.log.push(Action::Mounted(view.staging.clone()));
        fs::create_dir(&view.root).map_err(|e| LaunchError::view("create", &view.root, e))?;
        fs::set_permissions(&view.root, fs::Permissions::from_mode(0o755))
            .map_err(|e| LaunchError::view("chmod", &view.root, e))?;
        view.remember_own_tmpfs(&view.root.clone());
        Ok(view)
    }

    /// The host path of the view's root (what the program is chrooted into).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// For the launcher's own use before the program starts (the key server's CA): when
    /// `host` is a trusted file, checks it against the manifest now and returns a private
    /// copy of exactly the checked bytes; `Ok(None)` when it is not trusted.
    pub(crate) fn verified_copy(&mut self, host: &Path) -> Result<Option<PathBuf>, LaunchError> {
        let Some(list) = &self.trusted else { return Ok(None) };
        let normal = normalize(host);
        let expected = match list.lookup(&normal) {
            Some(h) => h,
            None => match fs::canonicalize(host).ok().and_then(|c| list.lookup(&c)) {
                Some(h) => h,
                None => return Ok(None),
            },
        };
        let uri = host.display().to_string();
        let bytes = fs::read(host)
            .map_err(|e| LaunchError::Trusted { uri: uri.clone(), failure: TrustedFailure::Unreadable(e) })?;
        let actual: [u8; 32] = Sha256::digest(&bytes).into();
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(LaunchError::Trusted {
                uri,
                failure: TrustedFailure::Mismatch {
                    expected: hex::encode(expected),
                    actual: hex::encode(actual),
                },
            });
        }
        let copy = self.staging.join(format!("verified-{}", self.copies));
        self.copies += 1;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&copy)
            .map_err(|e| LaunchError::view("store a verified trusted file", &copy, e))?;
        file.write_all(&bytes).map_err(|e| LaunchError::view("store a verified trusted file", &copy, e))?;
        Ok(Some(copy))
    }

    /// Builds the whole view for `manifest`, with relative URIs resolved against `cwd`.
    /// [`View::load_trusted`] must have run.
    pub(crate) fn build(
        &mut self,
        manifest: &Manifest,
        cwd: &Path,
        keys: &BTreeMap<String, pfs_core::Key>,
        mounter: Option<&mut dyn EncryptedMounter>,
        log: &Log,
    ) -> Result<(), LaunchError> {
        self.layout = Some(Layout {
            manifest: manifest.clone(),
            cwd: cwd.to_owned(),
            app_root: fs::canonicalize(cwd.join(&manifest.root)).ok(),
        });
        let strict = manifest.file_check_policy == FileCheckPolicy::Strict;
        self.allowed_file_placeholders(manifest, cwd, strict, log)?;
        self.mount_trusted_view(manifest, strict, log)?;
        self.bind_root(&cwd.join(&manifest.root))?;
        let mut mounter = mounter;
        for mount in &manifest.mounts {
            match &mount.kind {
                MountKind::Chroot { uri } => {
                    let source = cwd.join(uri);
                    let meta = fs::metadata(&source).map_err(|e| {
                        let what = format!("mount file:{uri} at {}: open its source", mount.path);
                        LaunchError::view(&what, &source, e)
                    })?;
                    let target = self.mountpoint(&mount.path, meta.is_dir())?;
                    let served = self.serve(&source);
                    let from = served.clone().unwrap_or_else(|| source.clone());
                    self.mount(|| sys::bind(&from, &target, true), "bind", &target)?;
                    if served.is_some() {
                        self.trusted_places.extend(Place::at(&target));
                    }
                    log.debug(format_args!(
                        "mounted {} at {}{}",
                        source.display(),
                        mount.path,
                        if served.is_some() { " (through the trusted view)" } else { "" }
                    ));
                }
                MountKind::Tmpfs => {
                    let target = self.mountpoint(&mount.path, true)?;
                    self.mount(|| sys::mount_tmpfs(&target, "mode=1777"), "mount tmpfs", &target)?;
                    self.remember_own_tmpfs(&target);
                    self.full_access.extend(Place::at(&target));
                    log.debug(format_args!("tmpfs at {}", mount.path));
                }
                MountKind::Encrypted { uri, key_name, enable_recovery } => {
                    let Some(mounter) = mounter.as_deref_mut() else {
                        return Err(LaunchError::EncryptedUnavailable { path: mount.path.clone() });
                    };
                    let spec = EncryptedSpec {
                        view_path: &mount.path,
                        key_name,
                        key: keys.get(key_name),
                        enable_recovery: *enable_recovery,
                    };
                    let host_path = cwd.join(uri.trim_end_matches('/'));
                    if uri.ends_with('/') && !host_path.exists() {
                        // An output directory: create it, like the files that will appear in it.
                        fs::create_dir_all(&host_path).map_err(|e| {
                            LaunchError::view("create the encrypted directory", &host_path, e)
                        })?;
                    }
                    if uri.ends_with('/') || host_path.is_dir() {
                        let target = self.mountpoint(&mount.path, true)?;
                        self.encrypted_dir(mounter, &spec, uri.trim_end_matches('/'), &host_path, &target)?;
                        self.full_access.extend(Place::at(&target));
                    } else {
                        self.encrypted_file(mounter, &spec, uri, cwd)?;
                    }
                    log.debug(format_args!("encrypted mount of {uri} at {}", mount.path));
                }
            }
        }
        if manifest.extra_domain_names_conf {
            for file in ["/etc/resolv.conf", "/etc/hosts"] {
                if Path::new(file).is_file() {
                    let target = self.mountpoint(file, false)?;
                    self.mount(|| sys::bind(Path::new(file), &target, false), "bind", &target)?;
                }
            }
        }
        self.provide_dev_and_proc()?;
        self.provide_elf_interpreter(manifest, log)?;
        self.bind_trusted_elsewhere(manifest, cwd, log)
    }

    /// Mounts the trusted-file view (empty; places are added as the view is built) when
    /// the manifest has trusted files.
    fn mount_trusted_view(
        &mut self,
        manifest: &Manifest,
        strict: bool,
        log: &Log,
    ) -> Result<(), LaunchError> {
        let Some(list) = self.trusted.clone().filter(|l| !l.is_empty()) else { return Ok(()) };
        let _ = manifest;
        let target = self.staging.join("trusted");
        fs::create_dir(&target).map_err(|e| LaunchError::view("create", &target, e))?;
        let server = TrustedServer::mount(list, strict, &target, log.try_clone())
            .map_err(|e| LaunchError::view("mount the trusted-file view (FUSE) on", &target, e))?;
        self.trusted_server = Some(self.log.len());
        self.log.push(Action::Trusted(server));
        Ok(())
    }

    fn server(&self) -> Option<&TrustedServer> {
        match self.log.get(self.trusted_server?) {
            Some(Action::Trusted(server)) => Some(server),
            _ => None,
        }
    }

    /// Whether the host file or directory `source` is served whole through the trusted
    /// view: it holds trusted files, and no allowed file or directory is at, below or
    /// above it (allowed files must stay writable, and the trusted view is read-only).
    /// Returns where to bind it from.
    fn serve(&mut self, source: &Path) -> Option<PathBuf> {
        let list = self.trusted.as_ref()?;
        let layout = self.layout.as_ref()?;
        let source = normalize(&layout.cwd.join(source));
        if !list.any_at_or_under(&source) {
            return None;
        }
        let allowed_overlap = layout.manifest.allowed_files.iter().any(|uri| {
            let Some(path) = uri.strip_prefix("file:") else { return false };
            let allowed = normalize(&layout.cwd.join(path.trim_end_matches('/')));
            allowed.starts_with(&source) || source.starts_with(&allowed)
        });
        if allowed_overlap {
            return None;
        }
        let place = self.server()?.add_tree(&source);
        self.served.push(source);
        Some(place)
    }

    /// What the trusted view did during the run, for the debug log.
    pub(crate) fn trusted_summary(&self) -> Option<String> {
        let stats = self.server()?.stats();
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        Some(format!(
            "trusted files: {} verified at first open ({} bytes hashed), {} opens, {} chunks checked on reads, \
             {} opens refused (hash mismatch), {} reads refused (changed after verification); {} listed; \
             launcher peak RSS {}",
            get(&stats.verified),
            get(&stats.hashed_bytes),
            get(&stats.opens),
            get(&stats.chunks_checked),
            get(&stats.refused),
            get(&stats.changed),
            self.trusted.as_ref().map_or(0, |l| l.files().count()),
            fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_owned())))
                .unwrap_or_else(|| "unknown".into()),
        ))
    }

    /// Mounts `/dev/attestation` (spec §7, see the `devattest` module) after the rest of the
    /// view. Gramine always provides it; here a failure to mount it stops the run only when
    /// the manifest sets `sgx.remote_attestation = "dcap"` (the program then needs it), and
    /// is a warning otherwise, so that programs that never attest do not depend on FUSE.
    pub(crate) fn mount_attestation(
        &mut self,
        contents: Contents,
        manifest: &Manifest,
        log: &Log,
    ) -> Result<(), LaunchError> {
        let wanted = manifest.identity.remote_attestation == RemoteAttestation::Dcap;
        let kind = contents.attestation_type();
        if wanted && kind == "none" {
            log.warn(format_args!(
                "sgx.remote_attestation = \"dcap\", but this launcher has no attester (there is no SGX here; \
                 pfs built with `--features insecure-sim` has a simulated one): /dev/attestation/attestation_type \
                 reads \"none\" and there is no /dev/attestation/quote"
            ));
        }
        let target = self.mountpoint("/dev/attestation", true)?;
        match DevAttestation::mount(contents, &target, log.try_clone()) {
            Ok(mount) => {
                self.log.push(Action::Attestation(mount));
                self.full_access.extend(Place::at(&target));
                log.debug(format_args!("/dev/attestation mounted (attestation_type {kind})"));
                Ok(())
            }
            Err(e) if wanted => Err(LaunchError::view("mount /dev/attestation (FUSE) on", &target, e)),
            Err(e) => {
                log.warn(format_args!(
                    "/dev/attestation is not available (mounting it failed: {e}); the program runs without it"
                ));
                Ok(())
            }
        }
    }

    /// Asks the mounter to serve the protected files of `host_dir` (bound to `uri/REL`) at
    /// `target`.
    fn encrypted_dir(
        &mut self,
        mounter: &mut dyn EncryptedMounter,
        spec: &EncryptedSpec<'_>,
        uri: &str,
        host_dir: &Path,
        target: &Path,
    ) -> Result<(), LaunchError> {
        let request = EncryptedMountRequest {
            view_path: spec.view_path,
            uri,
            host_dir,
            target,
            key_name: spec.key_name,
            key: spec.key,
            enable_recovery: spec.enable_recovery,
        };
        let guard = mounter.mount(&request).map_err(|source| LaunchError::Encrypted {
            path: spec.view_path.to_owned(),
            uri: uri.to_owned(),
            source,
        })?;
        self.log.push(Action::Encrypted(guard));
        Ok(())
    }

    /// A single-file encrypted mount (`uri` names a file, e.g. an output `result.txt`): the
    /// file's host directory is served on a private scratch directory (once per directory
    /// and key), and the one file is bound at the mount's path. A missing file is created
    /// through the mount (so it is a valid encrypted file from the start); an existing one
    /// must open with the key, so a wrong key, a modified file or a stale file bound to
    /// another path stops the run before the program starts.
    fn encrypted_file(
        &mut self,
        mounter: &mut dyn EncryptedMounter,
        spec: &EncryptedSpec<'_>,
        uri: &str,
        cwd: &Path,
    ) -> Result<(), LaunchError> {
        let (dir_uri, name) = match uri.rsplit_once('/') {
            Some(("", name)) => ("/", name),
            Some((dir, name)) => (dir, name),
            None => (".", uri),
        };
        let cache_key = (dir_uri.to_owned(), spec.key_name.to_owned());
        let scratch = match self.file_mounts.get(&cache_key) {
            Some(scratch) => scratch.clone(),
            None => {
                let scratch = self.staging.join(format!("encrypted-{}", self.file_mounts.len()));
                fs::create_dir(&scratch).map_err(|e| LaunchError::view("create", &scratch, e))?;
                self.encrypted_dir(mounter, spec, dir_uri, &cwd.join(dir_uri), &scratch)?;
                self.file_mounts.insert(cache_key, scratch.clone());
                scratch
            }
        };
        let inner = scratch.join(name);
        let opened = if fs::symlink_metadata(&inner).is_ok() {
            fs::File::open(&inner).map(drop)
        } else {
            fs::File::create(&inner).map(drop)
        };
        opened.map_err(|e| LaunchError::Encrypted {
            path: spec.view_path.to_owned(),
            uri: uri.to_owned(),
            source: format!(
                "cannot open it with key {:?}: {e} (wrong or missing key, a modified file, or a file encrypted \
                 for another path, e.g. a stale output of an earlier run that must be deleted)",
                spec.key_name
            )
            .into(),
        })?;
        let target = self.mountpoint(spec.view_path, false)?;
        self.mount(|| sys::bind(&inner, &target, false), "bind the encrypted file", &target)?;
        self.full_access.extend(Place::at(&target));
        Ok(())
    }

    /// The view's `/` is a tmpfs holding binds of `fs.root`'s entries, so a file the program
    /// creates directly in `/` would not reach the host. For each allowed file that sits
    /// directly in `fs.root` and does not exist yet (Gramine's `result.txt` pattern), create
    /// an empty host file first so it is bound like the others; it is removed again after
    /// the run if it is still empty.
    ///
    /// Under the strict file policy the same is done for a missing allowed file anywhere
    /// below `fs.root`: Landlock grants rights on existing files (inodes), and a name that
    /// does not exist yet has none, so the file must exist before the program starts.
    fn allowed_file_placeholders(
        &mut self,
        manifest: &Manifest,
        cwd: &Path,
        strict: bool,
        log: &Log,
    ) -> Result<(), LaunchError> {
        let Ok(root) = fs::canonicalize(cwd.join(&manifest.root)) else { return Ok(()) };
        // An empty plaintext file is not a valid protected file: never put one where an
        // encrypted mount will serve it.
        let encrypted: Vec<PathBuf> = manifest
            .mounts
            .iter()
            .filter_map(|m| match &m.kind {
                MountKind::Encrypted { uri, .. } => {
                    fs::canonicalize(cwd.join(uri.trim_end_matches('/'))).ok()
                }
                _ => None,
            })
            .collect();
        for uri in &manifest.allowed_files {
            let Some(path) = uri.strip_prefix("file:").filter(|p| !p.ends_with('/')) else { continue };
            let host = cwd.join(path);
            let parent = host.parent().and_then(|p| fs::canonicalize(p).ok());
            let wanted = match &parent {
                Some(parent) if encrypted.iter().any(|e| parent.starts_with(e)) => false,
                Some(parent) if strict => parent.starts_with(&root),
                Some(parent) => *parent == root,
                None => false,
            };
            if !wanted || fs::symlink_metadata(&host).is_ok() {
                continue;
            }
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&host)
                .map_err(|e| LaunchError::view("create the allowed file", &host, e))?;
            log.debug(format_args!("created placeholder for allowed file {}", host.display()));
            self.log.push(Action::Placeholder(host));
        }
        Ok(())
    }

    /// Takes the manifest's trusted files. Nothing is read yet: each file is verified when
    /// the program first opens it (see the `trusted` module).
    pub(crate) fn load_trusted(&mut self, entries: &[TrustedFile], cwd: &Path, log: &Log) {
        self.trusted = Some(Arc::new(TrustedList::new(entries, cwd, log)));
    }

    /// Makes the entries of the host directory `fs.root` appear at `/`.
    fn bind_root(&mut self, host_root: &Path) -> Result<(), LaunchError> {
        let root = self.root.clone();
        self.bind_entries(host_root, &root, true)
    }

    /// Recreates every entry of the host directory `source` inside `target` (a tmpfs of
    /// ours): directories and files as recursive binds, symlinks as copies. With `serve`,
    /// entries holding trusted files are bound from the trusted view (see [`View::serve`]).
    fn bind_entries(&mut self, source: &Path, target: &Path, serve: bool) -> Result<(), LaunchError> {
        let mut entries: Vec<fs::DirEntry> = fs::read_dir(source)
            .and_then(|d| d.collect::<io::Result<_>>())
            .map_err(|e| LaunchError::view("read", source, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let from = entry.path();
            if from == self.staging {
                continue;
            }
            let to = target.join(entry.file_name());
            let file_type = entry.file_type().map_err(|e| LaunchError::view("stat", &from, e))?;
            if file_type.is_symlink() {
                let link = fs::read_link(&from).map_err(|e| LaunchError::view("read link", &from, e))?;
                std::os::unix::fs::symlink(&link, &to)
                    .map_err(|e| LaunchError::view("create link", &to, e))?;
                self.log.push(Action::Created(to));
                continue;
            }
            if file_type.is_dir() {
                fs::create_dir(&to).map_err(|e| LaunchError::view("create", &to, e))?;
            } else {
                fs::File::create(&to).map_err(|e| LaunchError::view("create", &to, e))?;
            }
            self.log.push(Action::Created(to.clone()));
            let served = if serve { self.serve(&from) } else { None };
            let source = served.clone().unwrap_or_else(|| from.clone());
            self.mount(|| sys::bind(&source, &to, true), "bind", &to)?;
            if served.is_some() {
                self.trusted_places.extend(Place::at(&to));
            }
        }
        Ok(())
    }

    /// `/dev/{null,zero,random,urandom}` (bound from the host), the usual `/dev/fd` links,
    /// and `/proc`, unless the view already has them.
    fn provide_dev_and_proc(&mut self) -> Result<(), LaunchError> {
        for dev in ["null", "zero", "random", "urandom"] {
            let view_path = format!("/dev/{dev}");
            let existing = self.resolve(&view_path)?;
            if fs::metadata(&existing).is_ok_and(|m| m.rdev() != 0) {
                self.full_access.extend(Place::at(&existing));
                continue;
            }
            let target = self.mountpoint(&view_path, false)?;
            let source = Path::new("/dev").join(dev);
            self.mount(|| sys::bind(&source, &target, false), "bind", &target)?;
            self.full_access.extend(Place::at(&target));
        }
        for (name, link) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            let target = self.resolve(&format!("/dev/{name}"))?;
            if fs::symlink_metadata(&target).is_err() {
                std::os::unix::fs::symlink(link, &target)
                    .map_err(|e| LaunchError::view("create link", &target, e))?;
                self.log.push(Action::Created(target));
            }
        }
        let proc = self.mountpoint("/proc", true)?;
        if !sys::is_proc(&proc).unwrap_or(false) {
            self.mount(|| sys::bind(Path::new("/proc"), &proc, true), "bind /proc", &proc)?;
        }
        self.full_access.extend(Place::at(&proc));
        Ok(())
    }

    /// Trusted files outside the places served whole (in writable places: next to allowed
    /// files, or in a directory that is allowed): each is bound from the trusted view over
    /// every place in the view where the same host file is visible (same device and inode
    /// after all mounts are in place).
    fn bind_trusted_elsewhere(
        &mut self,
        manifest: &Manifest,
        cwd: &Path,
        log: &Log,
    ) -> Result<(), LaunchError> {
        let Some(list) = self.trusted.clone() else { return Ok(()) };
        if self.server().is_none() {
            return Ok(());
        }
        let sources = chroot_sources(manifest, cwd);
        // Both spellings of every source, to skip without a syscall the trusted files that
        // no mount shows (e.g. a trusted `/usr/lib/` of which only one directory is mounted).
        let mut reachable: Vec<PathBuf> = sources.iter().map(|(src, _)| src.clone()).collect();
        reachable.push(normalize(&cwd.join(&manifest.root)));
        reachable.extend(manifest.mounts.iter().filter_map(|m| match &m.kind {
            MountKind::Chroot { uri } => Some(normalize(&cwd.join(uri))),
            _ => None,
        }));
        let served = self.served.clone();
        for file in list.files() {
            if served.iter().any(|s| file.starts_with(s)) || !reachable.iter().any(|r| file.starts_with(r)) {
                continue;
            }
            let Ok(host) = fs::canonicalize(file) else { continue };
            let Ok(host_meta) = fs::metadata(&host) else { continue };
            if !host_meta.is_file() {
                continue;
            }
            let mut bound = false;
            for (src, view_base) in &sources {
                let Ok(rel) = host.strip_prefix(src) else { continue };
                let view_path = Path::new(view_base).join(rel);
                let Some(view_path) = view_path.to_str() else { continue };
                let Ok(target) = self.resolve(view_path) else { continue };
                let same = fs::metadata(&target)
                    .is_ok_and(|m| m.dev() == host_meta.dev() && m.ino() == host_meta.ino());
                if !same {
                    continue;
                }
                let Some(place) = self.server().map(|s| s.add_tree(file)) else { continue };
                self.mount(|| sys::bind(&place, &target, false), "bind a trusted file", &target)?;
                sys::remount_bind_readonly(&target)
                    .map_err(|e| LaunchError::view("make a trusted file read-only", &target, e))?;
                self.trusted_places.extend(Place::at(&target));
                bound = true;
            }
            if !bound {
                log.debug(format_args!("trusted file {} is not visible in the view", file.display()));
            }
        }
        Ok(())
    }

    /// Where the trusted view is bound (read and execute under the strict policy; the
    /// trusted view itself refuses files that are not trusted).
    pub(super) fn trusted_places(&self) -> impl Iterator<Item = &Place> {
        self.trusted_places.iter()
    }

    /// Tmpfs and encrypted mounts, `/dev` basics and `/proc`: full access under the strict
    /// policy (Gramine provides `/dev` and `/proc` itself).
    pub(super) fn full_access_places(&self) -> &[Place] {
        &self.full_access
    }

    /// The ELF interpreter the view provides: (host-side target, in-view path it came from).
    pub(super) fn provided_interpreter(&self) -> Option<(&Path, &str)> {
        self.interpreter.as_ref().map(|(t, f)| (t.as_path(), f.as_str()))
    }
}
