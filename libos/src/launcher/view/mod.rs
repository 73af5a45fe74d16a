//! The app's view: a tmpfs root in the private mount namespace, `fs.root` and the mount
//! table applied in order, `/dev` basics and `/proc`. Places holding trusted files are
//! served through the launcher's read-only trusted-file view (see the `trusted` module),
//! which verifies each trusted file lazily at its first open.
//!
//! Every mount and every file or directory created is logged; [`View::teardown`] undoes the
//! log in reverse, so mountpoints created inside host directories (reachable through chroot
//! binds) are removed again and nothing is left mounted.

mod trusted;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};
use trusted::{TrustedList, TrustedServer, normalize};

use super::devattest::{Contents, DevAttestation};
use super::{EncryptedMount, EncryptedMountRequest, EncryptedMounter, LaunchError, Log, TrustedFailure};
use crate::manifest::{FileCheckPolicy, Manifest, MountKind, RemoteAttestation, TrustedFile};
use crate::sys;

enum Action {
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

const MAX_SYMLINKS: usize = 40;

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

    /// Gramine finds a program's ELF interpreter by its file name in the library
    /// directories of the view, which is why manifests mount `gramine.runtimedir()` at `/lib`
    /// and nothing at `/lib64`. When the entrypoint's `PT_INTERP` path (or that of its `#!`
    /// interpreter) does not exist in the view but a file of that name does in a library
    /// directory of the view, bind it at the `PT_INTERP` path — only if that path can be
    /// created in the view's own tmpfs (never inside a host directory).
    fn provide_elf_interpreter(&mut self, manifest: &Manifest, log: &Log) -> Result<(), LaunchError> {
        let Ok(mut program) = self.resolve(&manifest.entrypoint_in_view()) else { return Ok(()) };
        if !program.exists() {
            self.interp_hint = hidden_by_later_mount(manifest, &manifest.entrypoint_in_view());
            return Ok(());
        }
        if let Some(script_interpreter) = shebang(&program) {
            let Ok(p) = self.resolve(&script_interpreter) else { return Ok(()) };
            program = p;
        }
        let Some(interp) = elf_interpreter(&program) else { return Ok(()) };
        let Ok(host_interp) = self.resolve(&interp) else { return Ok(()) };
        if host_interp.is_file() {
            return Ok(());
        }
        let name =
            Path::new(&interp).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
        let dirs = [
            "/lib".to_owned(),
            "/lib64".to_owned(),
            format!("/lib/{multiarch}"),
            "/usr/lib".to_owned(),
            "/usr/lib64".to_owned(),
            format!("/usr/lib/{multiarch}"),
        ];
        let found = dirs
            .iter()
            .map(|dir| format!("{dir}/{name}"))
            .find(|candidate| self.resolve(candidate).is_ok_and(|p| p.is_file()));
        let Some(found) = found else {
            self.interp_hint = Some(format!("its ELF interpreter {interp} is not in the view"));
            return Ok(());
        };
        // The deepest existing ancestor of the missing path must be on the view's tmpfs.
        let root_dev = fs::metadata(&self.root).map(|m| m.dev()).ok();
        let mut ancestor = host_interp.as_path();
        while !ancestor.exists() {
            match ancestor.parent() {
                Some(p) => ancestor = p,
                None => break,
            }
        }
        if fs::metadata(ancestor).map(|m| m.dev()).ok() != root_dev
            || fs::symlink_metadata(&host_interp).is_ok()
        {
            self.interp_hint = Some(format!(
                "its ELF interpreter {interp} does not resolve in the view (a mount provides a dangling link); \
                 {found} exists: drop the mount that provides {interp}'s directory or mount the host's directory there"
            ));
            return Ok(());
        }
        let source = self.resolve(&found)?;
        let target = self.mountpoint(&interp, false)?;
        self.mount(|| sys::bind(&source, &target, false), "bind the ELF interpreter", &target)?;
        self.interpreter = Some((target, found.clone()));
        log.debug(format_args!("ELF interpreter {interp} provided from {found}"));
        Ok(())
    }

    /// A hint for "no such file" when the program cannot be started.
    pub(crate) fn interp_hint(&self) -> Option<&str> {
        self.interp_hint.as_deref()
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

    fn mount(
        &mut self,
        op: impl FnOnce() -> io::Result<()>,
        what: &str,
        target: &Path,
    ) -> Result<(), LaunchError> {
        op().map_err(|e| LaunchError::view(what, target, e))?;
        self.log.push(Action::Mounted(target.to_owned()));
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
        let served = self.served.clone();
        for file in list.files() {
            if served.iter().any(|s| file.starts_with(s)) {
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

    /// Every host-side place (under the view root) where the canonical host file or
    /// directory `host` is visible through `fs.root` and the chroot mounts: below a mount
    /// whose source contains it, or at a mount whose source it contains. A place counts
    /// only if it shows the same inode (a later mount may hide it). Where the view holds a
    /// tmpfs of the launcher instead (the view's `/` and shadowed system directories), the
    /// entries bound into it are matched one by one, so that granting never covers the
    /// launcher's own tmpfs as a whole.
    pub(super) fn places_of_host(&self, host: &Path) -> Vec<PathBuf> {
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

    fn match_place(&self, host: &Path, place: &Path, depth: usize, out: &mut Vec<PathBuf>) {
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

    fn host_of(&self, parts: &[String]) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(parts);
        p
    }

    /// Makes sure a directory (or, with `dir == false`, a file) exists at `view_path`,
    /// creating missing parents, and returns its host path.
    fn mountpoint(&mut self, view_path: &str, dir: bool) -> Result<PathBuf, LaunchError> {
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

    fn remember_own_tmpfs(&mut self, dir: &Path) {
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
    fn make_room_in(&mut self, dir: &Path) -> Result<(), LaunchError> {
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

impl Drop for View {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

/// Explains a missing in-view path that an earlier mount provided but a later mount hides
/// (Gramine applies mounts in order; e.g. a tmpfs at `/tmp` listed after a venv in `/tmp/..`).
fn hidden_by_later_mount(manifest: &Manifest, view_path: &str) -> Option<String> {
    use crate::manifest::strip_view_prefix;
    let mounts = &manifest.mounts;
    let (i, provider, j, hider) = mounts.iter().enumerate().find_map(|(i, provider)| {
        strip_view_prefix(view_path, &provider.path)?;
        let (j, hider) =
            mounts.iter().enumerate().skip(i + 1).find(|(_, m)| {
                m.path != provider.path && strip_view_prefix(&provider.path, &m.path).is_some()
            })?;
        Some((i, provider, j, hider))
    })?;
    Some(format!(
        "fs.mounts[{i}] provides it at {}, but fs.mounts[{j}] at {} is listed later and hides it: \
         list {} first",
        provider.path, hider.path, hider.path
    ))
}

/// Removes the staging directories `pfs-run-PID-N` in `base` that a SIGKILLed launcher
/// left behind: only when process PID no longer exists, the directory is empty and it is
/// not a mountpoint. (A live launcher's staging directory also looks empty from outside its
/// namespace, hence the PID check.) Best effort: errors are ignored.
fn remove_stale_staging(base: &Path) {
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

/// (canonical host directory or file, in-view path) for `fs.root` and every chroot mount,
/// in manifest order.
fn chroot_sources(manifest: &Manifest, cwd: &Path) -> Vec<(PathBuf, String)> {
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

/// The interpreter of a `#!` script, if `path` is one.
pub(super) fn shebang(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = fs::File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let text = std::str::from_utf8(line).ok()?;
    text.split_whitespace().next().filter(|p| p.starts_with('/')).map(str::to_owned)
}

/// The `PT_INTERP` path of a 64-bit little-endian ELF file, if it has one.
pub(super) fn elf_interpreter(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let file = fs::File::open(path).ok()?;
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0).ok()?;
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
    let phoff = u64_at(&header, 0x20);
    let phentsize = u64::from(u16_at(&header, 0x36));
    let phnum = u64::from(u16_at(&header, 0x38));
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    for i in 0..phnum {
        let mut ph = [0u8; 56];
        file.read_exact_at(&mut ph, phoff.checked_add(i * phentsize)?).ok()?;
        if u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) == 3 {
            let (offset, size) = (u64_at(&ph, 0x08), u64_at(&ph, 0x20));
            if size == 0 || size > 4096 {
                return None;
            }
            let mut buf = vec![0u8; size as usize];
            file.read_exact_at(&mut buf, offset).ok()?;
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return String::from_utf8(buf[..end].to_vec()).ok();
        }
    }
    None
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}
