//! `pfs run`: the launcher of the simulated TEE.
//!
//! [`enter_namespace`] must run while the process has a single thread (before any
//! runtime, logger or FUSE server starts): it unshares a private mount namespace (plus a
//! user namespace when not root) and makes every mount private. [`Launcher::run`] then
//! builds the app's view (see the `view` module), takes keys from `fs.insecure__keys` or a
//! [`KeyProvider`], builds the Landlock ruleset of `sgx.file_check_policy` (see the `policy`
//! module), forks, and in the child sets `PR_SET_PDEATHSIG(SIGKILL)`, chroots into the
//! view, changes to `fs.start_dir`, enforces the ruleset and executes the entrypoint with
//! the manifest's argv and environment. The parent waits, tears the view down (also when the program crashed or
//! was killed) and returns the program's status. Mounts live only in the private namespace,
//! so none can remain on the host even if the launcher itself is killed.
//!
//! Encrypted mounts and key provisioning are seams: [`EncryptedMounter`] (implemented by
//! the pfs-fuse integration) and [`KeyProvider`] (implemented by the attest client).

mod devattest;
mod error;
mod policy;
mod program;
mod seams;
mod view;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{LaunchError, TrustedFailure};
pub use policy::ALLOW_ALL_BUT_LOG_WARNING;
pub use seams::{
    EncryptedMount, EncryptedMountRequest, EncryptedMounter, KeyProvider, ProvisionRequest,
    ProvisionedSecret, QuoteProvider, QuoteRequest, SeamError,
};

use crate::manifest::{LogLevel, Manifest, Mode};
use crate::measure::{SimMeasurement, measure};
pub use crate::sys::WaitOutcome;
use crate::sys::{self, ChildStage, ExecPlan, Spawned};
use program::{build_argv, build_env};

/// The line printed when `pfs run` starts.
pub const SIMULATED_TEE_WARNING: &str = "pfs run: WARNING: simulated TEE: this run has NO confidentiality or integrity \
     protection against the host (host root can read the program's memory and plaintext files)";

/// The preload library of Gramine's secret provisioning, handled by the launcher itself.
pub const SECRET_PROV_LIBRARY: &str = "libsecret_prov_attest.so";

/// Launcher output, filtered by `loader.log_level`, to stderr or appended to
/// `loader.log_file`. Warnings about insecure settings are printed unless the level is
/// `none`; fatal errors always reach stderr.
pub(crate) struct Log {
    level: LogLevel,
    file: Option<std::fs::File>,
}

impl Log {
    /// The log a manifest asks for (`loader.log_file` is a host path, relative to the cwd).
    fn for_manifest(manifest: &Manifest) -> Log {
        let file = manifest.log_file.as_ref().and_then(|path| {
            match std::fs::OpenOptions::new().append(true).create(true).open(path) {
                Ok(f) => Some(f),
                Err(e) => {
                    eprintln!("pfs run: warning: cannot open loader.log_file {path}: {e}; logging to stderr");
                    None
                }
            }
        });
        Log { level: manifest.log_level, file }
    }

    /// A second handle on the same destination, for a server thread (`/dev/attestation`).
    fn try_clone(&self) -> Log {
        Log { level: self.level, file: self.file.as_ref().and_then(|f| f.try_clone().ok()) }
    }

    fn emit(&self, kind: &str, args: fmt::Arguments<'_>) {
        use std::io::Write;
        let line = format!("pfs run: {kind}: {args}\n");
        match &self.file {
            Some(file) => {
                let mut file: &std::fs::File = file;
                let _ = file.write_all(line.as_bytes());
            }
            None => eprint!("{line}"),
        }
    }

    pub(crate) fn warn(&self, args: fmt::Arguments<'_>) {
        if self.level > LogLevel::None {
            self.emit("warning", args);
        }
    }

    pub(crate) fn debug(&self, args: fmt::Arguments<'_>) {
        if self.level >= LogLevel::Debug {
            self.emit("debug", args);
        }
    }

    pub(crate) fn error(&self, args: fmt::Arguments<'_>) {
        if self.level > LogLevel::None {
            self.emit("error", args);
        }
    }
}

/// Number of threads of this process.
fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:").and_then(|n| n.trim().parse().ok())))
        .unwrap_or(1)
}

/// Creates the private mount namespace (and a user namespace when not root) and makes all
/// mounts private. Must be called before the process starts any thread.
pub fn enter_namespace() -> Result<(), LaunchError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(LaunchError::NotSingleThreaded(threads));
    }
    let (uid, gid) = (sys::geteuid(), sys::getegid());
    let user = uid != 0;
    sys::unshare_mount_namespace(user).map_err(LaunchError::Namespace)?;
    if user {
        // Become root of the new user namespace, mapped to our own ids.
        let write = |file: &str, text: String| std::fs::write(file, text).map_err(LaunchError::Namespace);
        write("/proc/self/setgroups", "deny".into())?;
        write("/proc/self/uid_map", format!("0 {uid} 1"))?;
        write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    }
    sys::make_private_recursive(Path::new("/")).map_err(LaunchError::Namespace)?;
    Ok(())
}

/// The launcher with its seams.
#[derive(Default)]
pub struct Launcher<'a> {
    /// Serves encrypted mounts; without it such manifests are refused.
    pub mounter: Option<&'a mut dyn EncryptedMounter>,
    /// Provisions keys for manifests that preload `libsecret_prov_attest.so`.
    pub key_provider: Option<&'a mut dyn KeyProvider>,
    /// Serves `/dev/attestation/quote` for manifests with `sgx.remote_attestation = "dcap"`;
    /// without it `attestation_type` reads `none` and there is no `quote`.
    pub quote_provider: Option<Arc<dyn QuoteProvider>>,
}

/// Everything `pfs run` does, for the CLI: prints [`SIMULATED_TEE_WARNING`], enters the
/// namespace, loads the manifest, runs it and returns the exit code to use (the program's,
/// or a named launcher code after printing the error). Call it before any thread exists.
pub fn main(manifest: &Path, args: &[OsString], launcher: Launcher<'_>) -> u8 {
    eprintln!("{SIMULATED_TEE_WARNING}");
    let result = enter_namespace().and_then(|()| {
        let path = resolve_manifest_path(manifest);
        let (manifest, warnings) = Manifest::load(&path, Mode::Run)?;
        let log = Log::for_manifest(&manifest);
        for w in &warnings {
            log.warn(format_args!("{}: {w}", path.display()));
        }
        launcher.run(&manifest, args)
    });
    match result {
        Ok(WaitOutcome::Exited(code)) => code as u8,
        Ok(WaitOutcome::Signaled(sig)) => (128 + sig) as u8,
        Err(e) => {
            eprintln!("pfs run: error: {e}");
            e.exit_code()
        }
    }
}

/// Gramine's `NAME` convention: `app` means `app.manifest` when `app` itself does not exist.
pub fn resolve_manifest_path(path: &Path) -> PathBuf {
    if path.exists() {
        return path.to_owned();
    }
    let mut with_ext = path.as_os_str().to_owned();
    with_ext.push(".manifest");
    let with_ext = PathBuf::from(with_ext);
    if with_ext.exists() { with_ext } else { path.to_owned() }
}

impl Launcher<'_> {
    /// Runs `manifest` with command-line `args`. [`enter_namespace`] must have succeeded.
    pub fn run(mut self, manifest: &Manifest, args: &[OsString]) -> Result<WaitOutcome, LaunchError> {
        let log = Log::for_manifest(manifest);
        let cwd =
            std::env::current_dir().map_err(|e| LaunchError::Config(format!("cannot get the cwd: {e}")))?;
        check_launcher_pin(manifest)?;
        let _ = sys::set_not_dumpable();

        let measurement = measure(manifest);
        log.debug(format_args!("simulated measurement (NOT an SGX MRENCLAVE): {measurement}"));
        let mut keys: BTreeMap<String, pfs_core::Key> = manifest
            .insecure_keys
            .iter()
            .map(|(name, key)| (name.clone(), pfs_core::Key::from_bytes(key.0)))
            .collect();
        let mut env = build_env(manifest, &cwd, &log)?;
        let argv = build_argv(manifest, args, &cwd, &log)?;

        let mut view = view::View::new()?;
        view.load_trusted(&manifest.trusted_files, &cwd, &log);
        let preloaded = strip_secret_prov_preload(&mut env);
        let ca = if preloaded {
            ca_chain_host_path(manifest, &cwd, |host| view.verified_copy(host), &log)?
        } else {
            None
        };
        match self.provision(manifest, &measurement, ca, preloaded, &log)? {
            Some(ProvisionedSecret::Key { name, key }) => {
                log.debug(format_args!("key {name:?} provisioned"));
                keys.insert(name, key);
            }
            Some(ProvisionedSecret::String(s)) => {
                env.push(("SECRET_PROVISION_SECRET_STRING".into(), s.into()))
            }
            None => {}
        }
        view.build(manifest, &cwd, &keys, self.mounter.take(), &log)?;
        let attestation = devattest::Contents::new(manifest, &measurement, &keys, self.quote_provider.take());
        drop(keys);
        view.mount_attestation(attestation, manifest, &log)?;
        let ruleset = policy::prepare(&view, manifest, &cwd, &log)?;
        if let Some(rules) = &ruleset {
            policy::check_program(&view, manifest, rules)?;
        }

        let program = manifest.entrypoint_in_view();
        let plan = ExecPlan {
            root: sys::cpath(view.root()).map_err(|e| LaunchError::view("use", view.root(), e))?,
            start_dir: cstr(&manifest.start_dir)?,
            program: cstr(&program)?,
            argv: argv.into_iter().map(|a| sys::cstring(&a)).collect::<io::Result<_>>().map_err(config)?,
            envp: env
                .into_iter()
                .map(|(k, v)| {
                    let mut s = k;
                    s.push("=");
                    s.push(v);
                    sys::cstring(&s)
                })
                .collect::<io::Result<_>>()
                .map_err(config)?,
            landlock: ruleset.as_ref().map_or(-1, policy::Ruleset::raw_fd),
        };
        log.debug(format_args!("starting {program}"));
        let spawned = sys::spawn(&plan);
        // The child has its copy (or failed); the ruleset is close-on-exec anyway.
        drop(ruleset);
        let outcome = match spawned {
            Ok(Spawned::Running(pid)) => {
                let saved = sys::supervise_signals(pid);
                let waited = sys::wait(pid).map_err(|e| LaunchError::Process("wait for the program", e));
                sys::restore_signals(saved);
                waited
            }
            Ok(Spawned::Failed(stage, source)) => Err(LaunchError::Start {
                program: program.clone(),
                hint: match (stage, view.interp_hint(), source.raw_os_error()) {
                    (ChildStage::Exec, Some(hint), Some(libc::ENOENT)) => format!(" ({hint})"),
                    (ChildStage::Exec | ChildStage::Chdir, None, Some(libc::ENOENT)) => {
                        " (is it reachable through fs.root or an fs.mounts entry?)".to_owned()
                    }
                    (ChildStage::Exec, _, Some(libc::EACCES))
                        if manifest.file_check_policy == crate::manifest::FileCheckPolicy::Strict =>
                    {
                        " (sgx.file_check_policy is \"strict\": a file it needs to start is neither trusted nor \
                         allowed)"
                            .to_owned()
                    }
                    _ => String::new(),
                },
                stage: match stage {
                    ChildStage::DeathSignal => "PR_SET_PDEATHSIG".to_owned(),
                    ChildStage::Chroot => "chroot".to_owned(),
                    ChildStage::Chdir => format!("chdir to fs.start_dir {}", manifest.start_dir),
                    ChildStage::Landlock => "enforce the file policy (Landlock)".to_owned(),
                    ChildStage::Exec => "execve".to_owned(),
                },
                source,
            }),
            Err(e) => Err(LaunchError::Process("fork", e)),
        };
        if let Some(summary) = view.trusted_summary() {
            log.debug(format_args!("{summary}"));
        }
        let stray = view.stray_root_entries();
        if !stray.is_empty() {
            log.warn(format_args!(
                "the program created {} directly in the view's `/`, which is a private tmpfs: discarded. Write \
                 below a mounted directory, or list the file in sgx.allowed_files so it is backed by fs.root",
                stray.join(", ")
            ));
        }
        let torn_down = view.teardown();
        let outcome = outcome?;
        if let Err(e) = torn_down {
            // The program's status is what the caller asked for; cleanup problems are
            // reported but do not replace it.
            log.error(format_args!("cleanup: {e}"));
        }
        if let WaitOutcome::Signaled(sig) = outcome {
            log.warn(format_args!("{program} was killed by signal {sig}"));
        }
        Ok(outcome)
    }

    /// Gramine's secret provisioning: when the manifest preloads `libsecret_prov_attest.so`
    /// with `SECRET_PROVISION_CONSTRUCTOR=1`, the launcher does what that library would do,
    /// before the program starts. Returns the released secret, if any was requested.
    fn provision(
        &mut self,
        manifest: &Manifest,
        measurement: &SimMeasurement,
        ca_chain_host_path: Option<PathBuf>,
        preloaded: bool,
        log: &Log,
    ) -> Result<Option<ProvisionedSecret>, LaunchError> {
        if !preloaded {
            return Ok(None);
        }
        let get = |name: &str| manifest.env.value(name);
        if !matches!(get("SECRET_PROVISION_CONSTRUCTOR"), Some("1" | "true" | "TRUE")) {
            log.warn(format_args!(
                "{SECRET_PROV_LIBRARY} is preloaded without SECRET_PROVISION_CONSTRUCTOR=1: no secret is \
                 provisioned before the program starts"
            ));
            return Ok(None);
        }
        let Some(provider) = self.key_provider.as_deref_mut() else {
            return Err(LaunchError::Keys(format!(
                "the manifest asks for secret provisioning ({SECRET_PROV_LIBRARY}), but this launcher has no \
                 attestation client"
            )));
        };
        let servers = get("SECRET_PROVISION_SERVERS")
            .unwrap_or("localhost:4433")
            .split([',', ';', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let request = ProvisionRequest {
            manifest,
            measurement,
            servers,
            ca_chain_view_path: get("SECRET_PROVISION_CA_CHAIN_PATH"),
            ca_chain_host_path,
            set_key: get("SECRET_PROVISION_SET_KEY"),
        };
        let secret = provider.provision(&request).map_err(|e| LaunchError::Keys(e.to_string()))?;
        Ok(Some(secret))
    }
}

/// Removes `libsecret_prov_attest.so` from `LD_PRELOAD` (the launcher does its job) and
/// says whether it was there.
fn strip_secret_prov_preload(env: &mut Vec<(OsString, OsString)>) -> bool {
    let Some(pos) = env.iter().position(|(k, _)| k == "LD_PRELOAD") else { return false };
    let preload = env[pos].1.to_string_lossy().into_owned();
    let libs: Vec<&str> = preload.split([':', ' ']).filter(|s| !s.is_empty()).collect();
    let is_marker = |l: &&str| Path::new(l).file_name().is_some_and(|n| n == SECRET_PROV_LIBRARY);
    if !libs.iter().any(is_marker) {
        return false;
    }
    let rest: Vec<&str> = libs.iter().filter(|l| !is_marker(l)).copied().collect();
    if rest.is_empty() {
        env.remove(pos);
    } else {
        env[pos].1 = rest.join(":").into();
    }
    true
}

/// The host path to read `SECRET_PROVISION_CA_CHAIN_PATH` from: the verified copy when it
/// is a trusted file (as it should be), else the host file it maps to, with a warning.
fn ca_chain_host_path(
    manifest: &Manifest,
    cwd: &Path,
    mut verified_copy: impl FnMut(&Path) -> Result<Option<PathBuf>, LaunchError>,
    log: &Log,
) -> Result<Option<PathBuf>, LaunchError> {
    let Some(view_path) = manifest.env.value("SECRET_PROVISION_CA_CHAIN_PATH") else { return Ok(None) };
    let Some(host) = manifest.view_to_host(view_path) else { return Ok(None) };
    let host = cwd.join(host);
    match verified_copy(&host)? {
        Some(copy) => Ok(Some(copy)),
        None => {
            log.warn(format_args!(
                "SECRET_PROVISION_CA_CHAIN_PATH ({}) is not a trusted file: the key server's CA is not verified",
                host.display()
            ));
            Ok(Some(host))
        }
    }
}

fn config(e: io::Error) -> LaunchError {
    LaunchError::Config(format!("argv or environment: {e}"))
}

fn cstr(s: &str) -> Result<std::ffi::CString, LaunchError> {
    sys::cstring(s.as_ref()).map_err(config)
}

/// Refuses to run when `loader.entrypoint.sha256` pins a different launcher binary.
fn check_launcher_pin(manifest: &Manifest) -> Result<(), LaunchError> {
    let Some(expected) = manifest.loader_entrypoint.sha256 else { return Ok(()) };
    let path = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let actual = crate::build::sha256_file(Path::new("/proc/self/exe"))
        .map_err(|e| LaunchError::Config(format!("cannot hash the launcher binary: {e}")))?;
    if actual != expected {
        return Err(LaunchError::LauncherMismatch {
            path,
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Manifest {
        Manifest::parse(text, Mode::Run).unwrap().0
    }

    const QUIET: Log = Log { level: LogLevel::None, file: None };

    struct FixedKey;
    impl KeyProvider for FixedKey {
        fn provision(&mut self, request: &ProvisionRequest<'_>) -> Result<ProvisionedSecret, SeamError> {
            assert_eq!(request.servers, vec!["a:1".to_string(), "b:2".into()]);
            assert_eq!(request.ca_chain_view_path, Some("/ssl/ca.crt"));
            assert_eq!(request.ca_chain_host_path.as_deref(), Some(Path::new("/w/ssl/ca.crt")));
            Ok(ProvisionedSecret::Key {
                name: request.set_key.unwrap().into(),
                key: pfs_core::Key::from_bytes([1; 16]),
            })
        }
    }

    #[test]
    fn secret_provisioning_is_recognised_and_the_preload_stripped() {
        let m = manifest(
            "libos.entrypoint = \"/bin/x\"\nfs.mounts = [ { path = \"/ssl\", uri = \"file:ssl\" } ]\n\
             loader.env.LD_PRELOAD = \"libfoo.so:libsecret_prov_attest.so\"\n\
             loader.env.SECRET_PROVISION_CONSTRUCTOR = \"1\"\nloader.env.SECRET_PROVISION_SET_KEY = \"default\"\n\
             loader.env.SECRET_PROVISION_SERVERS = \"a:1;b:2\"\nloader.env.SECRET_PROVISION_CA_CHAIN_PATH = \"/ssl/ca.crt\"\n",
        );
        let mut env = build_env(&m, Path::new("/w"), &QUIET).unwrap();
        assert!(strip_secret_prov_preload(&mut env));
        assert_eq!(env.iter().find(|(k, _)| k == "LD_PRELOAD").unwrap().1, "libfoo.so");
        assert!(!strip_secret_prov_preload(&mut env));

        let ca = ca_chain_host_path(&m, Path::new("/w"), |_| Ok(None), &QUIET).unwrap();
        assert_eq!(ca.as_deref(), Some(Path::new("/w/ssl/ca.crt")));
        let copy = ca_chain_host_path(&m, Path::new("/w"), |_| Ok(Some("/verified".into())), &QUIET).unwrap();
        assert_eq!(copy.as_deref(), Some(Path::new("/verified")));

        let mut provider = FixedKey;
        let mut launcher = Launcher { key_provider: Some(&mut provider), ..Launcher::default() };
        let secret = launcher.provision(&m, &measure(&m), ca, true, &QUIET).unwrap();
        assert!(matches!(secret, Some(ProvisionedSecret::Key { name, .. }) if name == "default"));

        let err = Launcher::default().provision(&m, &measure(&m), None, true, &QUIET).unwrap_err();
        assert_eq!(err.exit_code(), crate::exit::KEYS);
        assert!(err.to_string().contains("no attestation client"), "{err}");
        assert!(Launcher::default().provision(&m, &measure(&m), None, false, &QUIET).unwrap().is_none());
    }
}
