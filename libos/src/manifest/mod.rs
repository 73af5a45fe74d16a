//! The Gramine-compatible manifest: TOML text → [`RawManifest`] → validated [`Manifest`].
//!
//! The supported subset and its semantics are those of the project's `spec/manifest.md`
//! (sections 3–10). Every error names the full dotted key and the line it is on.

mod raw;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use raw::{Entry, Node, RawManifest, Value};

/// How strictly unknown keys are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The build step (`pfs manifest`): unknown keys are errors, as with `gramine-manifest`.
    Build,
    /// The runtime (`pfs run`): unknown keys are warnings, as Gramine's runtime ignores them.
    Run,
}

/// One finding about the manifest: the dotted key it concerns, its line, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Full dotted key path, e.g. `fs.mounts[2].type`; empty for syntax errors.
    pub key: String,
    /// 1-based line number in the manifest text (0 when unknown).
    pub line: usize,
    /// What is wrong and, where possible, what to write instead.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.key.is_empty()) {
            (0, true) => write!(f, "{}", self.message),
            (0, false) => write!(f, "`{}`: {}", self.key, self.message),
            (line, true) => write!(f, "line {line}: {}", self.message),
            (line, false) => write!(f, "line {line}: `{}`: {}", self.key, self.message),
        }
    }
}

/// The manifest was refused. Holds every error found, in source order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ManifestError {
    /// The errors.
    pub errors: Vec<Diagnostic>,
}

impl ManifestError {
    pub(crate) fn new(errors: Vec<Diagnostic>) -> Self {
        ManifestError { errors }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.as_slice() {
            [one] => write!(f, "invalid manifest: {one}"),
            many => {
                write!(f, "invalid manifest ({} errors):", many.len())?;
                for d in many {
                    write!(f, "\n  {d}")?;
                }
                Ok(())
            }
        }
    }
}

/// Where the program's argv comes from (spec §3; the options are mutually exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgvSource {
    /// `loader.argv`: the complete argv including argv\[0\].
    Explicit(Vec<String>),
    /// `loader.argv_src_file`: NUL-terminated arguments read from this host path.
    SrcFile(String),
    /// `loader.insecure__use_cmdline_argv`: the command line, argv\[0\] replaced by the entrypoint.
    CommandLine,
    /// None of the three: argv = `[libos.entrypoint]`.
    Entrypoint,
}

/// One `loader.env.NAME` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// `NAME = "v"` or `NAME = { value = "v" }`.
    Value(String),
    /// `NAME = { passthrough = true }`: copy from the host environment if set there.
    Passthrough,
}

/// The program's environment configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvConfig {
    /// `loader.env.*` in manifest order.
    pub vars: Vec<(String, EnvValue)>,
    /// `loader.env_src_file` (host path, normalised).
    pub src_file: Option<String>,
    /// `loader.insecure__use_host_env`.
    pub use_host_env: bool,
}

impl EnvConfig {
    /// The value a `loader.env` entry sets, if it is a literal value.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.vars.iter().rev().find(|(n, _)| n == name).and_then(|(_, v)| match v {
            EnvValue::Value(s) => Some(s.as_str()),
            EnvValue::Passthrough => None,
        })
    }
}

/// `loader.log_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Print nothing but fatal errors.
    None,
    /// Errors (the default).
    Error,
    /// Errors and warnings.
    Warning,
    /// Debug output.
    Debug,
    /// Trace output.
    Trace,
    /// Everything.
    All,
}

/// What a mount entry mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// `type = "chroot"`: a host file or directory (normalised host path from `uri`).
    Chroot {
        /// Normalised host path (relative paths are relative to the runtime's cwd).
        uri: String,
    },
    /// `type = "encrypted"`: protected files served by pfs-fuse.
    Encrypted {
        /// Normalised host path; this is also the path bound into each file (spec §4.2).
        uri: String,
        /// `key_name`, default `default`.
        key_name: String,
        /// `enable_recovery` (default false, as Gramine): keep recovery files (spec §13).
        enable_recovery: bool,
    },
    /// `type = "tmpfs"`: an empty in-memory directory.
    Tmpfs,
}

/// One `fs.mounts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Absolute, normalised path inside the view.
    pub path: String,
    /// What is mounted there.
    pub kind: MountKind,
}

/// A 16-byte key from `fs.insecure__keys`.
#[derive(Clone, PartialEq, Eq)]
pub struct InsecureKey(pub [u8; 16]);

impl fmt::Debug for InsecureKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InsecureKey(<redacted>)")
    }
}

/// One `sgx.trusted_files` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedFile {
    /// Normalised host path; ends with `/` for a not yet expanded directory.
    pub uri: String,
    /// SHA-256 of the file, when the build step has filled it in.
    pub sha256: Option<[u8; 32]>,
}

impl TrustedFile {
    /// Whether this entry names a directory (`file:DIR/`).
    pub fn is_dir(&self) -> bool {
        self.uri.ends_with('/')
    }
}

/// `sgx.file_check_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCheckPolicy {
    /// Files neither trusted, allowed nor encrypted are refused.
    Strict,
    /// Such files are allowed with a warning.
    AllowAllButLog,
}

/// `sgx.remote_attestation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteAttestation {
    /// `"none"`.
    None,
    /// `"dcap"`: use the configured attestation backend (simulated here).
    Dcap,
}

/// The identity fields of spec §6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sgx.debug`.
    pub debug: bool,
    /// `sgx.isvprodid`.
    pub isvprodid: u16,
    /// `sgx.isvsvn`.
    pub isvsvn: u16,
    /// `sgx.enclave_size` in bytes (default 256M, 1024G with EDMM).
    pub enclave_size: u64,
    /// `sgx.max_threads` (default 4).
    pub max_threads: u32,
    /// `sgx.edmm_enable`.
    pub edmm_enable: bool,
    /// `sgx.remote_attestation`.
    pub remote_attestation: RemoteAttestation,
}

/// `loader.entrypoint` (Gramine's LibOS binary; here the launcher).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoaderEntrypoint {
    /// `loader.entrypoint.uri` (normalised host path).
    pub uri: Option<String>,
    /// `loader.entrypoint.sha256`: pins the launcher binary (checked at run time, measured).
    pub sha256: Option<[u8; 32]>,
}

/// A validated manifest. The launcher accepts nothing else.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub(crate) text: String,
    /// `libos.entrypoint`: path of the program inside the view.
    pub entrypoint: String,
    /// `loader.entrypoint.*`.
    pub loader_entrypoint: LoaderEntrypoint,
    /// Where argv comes from.
    pub argv: ArgvSource,
    /// The environment configuration.
    pub env: EnvConfig,
    /// `loader.log_level`.
    pub log_level: LogLevel,
    /// `loader.log_file`.
    pub log_file: Option<String>,
    /// `loader.uid` / `loader.gid` (accepted, no effect).
    pub uid_gid: (u32, u32),
    /// `fs.root` host directory (normalised; default `.`, the runtime's cwd).
    pub root: String,
    /// `fs.start_dir` (absolute, normalised; default `/`).
    pub start_dir: String,
    /// `fs.mounts` in order.
    pub mounts: Vec<Mount>,
    /// `fs.insecure__keys.*`.
    pub insecure_keys: BTreeMap<String, InsecureKey>,
    /// `sgx.trusted_files`.
    pub trusted_files: Vec<TrustedFile>,
    /// `sgx.allowed_files` (normalised URIs, `file:` or `dev:` prefix kept).
    pub allowed_files: Vec<String>,
    /// `sgx.file_check_policy`.
    pub file_check_policy: FileCheckPolicy,
    /// Identity fields.
    pub identity: Identity,
    /// `sys.enable_extra_runtime_domain_names_conf`.
    pub extra_domain_names_conf: bool,
}

impl Manifest {
    /// Parses and validates manifest text. Returns the manifest and the warnings (unknown
    /// keys in [`Mode::Run`], accepted-but-ignored keys, insecure settings).
    pub fn parse(text: &str, mode: Mode) -> Result<(Manifest, Vec<Diagnostic>), ManifestError> {
        let raw = RawManifest::parse(text)?;
        validate::validate(&raw, mode)
    }

    /// Reads and validates a manifest file.
    pub fn load(path: &Path, mode: Mode) -> Result<(Manifest, Vec<Diagnostic>), LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
        Manifest::parse(&text, mode).map_err(|source| LoadError::Invalid { path: path.to_owned(), source })
    }

    /// The manifest text exactly as parsed (what the simulated measurement covers).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// `libos.entrypoint` as an absolute path inside the view (relative entrypoints are
    /// resolved from `fs.start_dir`).
    pub fn entrypoint_in_view(&self) -> String {
        normalize_str(&join_view(&self.start_dir, &self.entrypoint))
    }

    /// The host path (normalised, maybe relative to the runtime's cwd) that an in-view
    /// path maps to through `fs.root` and the chroot mounts, or `None` when it lies in a
    /// tmpfs or encrypted mount. Later mounts win, as in the view.
    pub fn view_to_host(&self, view_path: &str) -> Option<String> {
        let view_path = normalize_str(&join_view(&self.start_dir, view_path));
        for mount in self.mounts.iter().rev() {
            if let Some(rest) = strip_view_prefix(&view_path, &mount.path) {
                return match &mount.kind {
                    MountKind::Chroot { uri } => Some(join_host(uri, rest)),
                    _ => None,
                };
            }
        }
        let rest = view_path.trim_start_matches('/');
        Some(join_host(&self.root, rest))
    }
}

/// A manifest file could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read manifest {}: {source}", path.display())]
    Read {
        /// The manifest path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest is invalid.
    #[error("{}: {source}", path.display())]
    Invalid {
        /// The manifest path.
        path: PathBuf,
        /// The errors.
        source: ManifestError,
    },
}

/// Normalises a path string with [`pfs_core::path::normalize`] (spec §2).
pub fn normalize_str(path: &str) -> String {
    String::from_utf8_lossy(&pfs_core::path::normalize(path.as_bytes())).into_owned()
}

/// `rest` below `prefix` if `path` is `prefix` or lies under it (both normalised, absolute).
pub(crate) fn strip_view_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix == "/" {
        return Some(path.trim_start_matches('/'));
    }
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() { Some("") } else { rest.strip_prefix('/') }
}

fn join_view(start_dir: &str, path: &str) -> String {
    if path.starts_with('/') { path.to_owned() } else { format!("{start_dir}/{path}") }
}

fn join_host(base: &str, rest: &str) -> String {
    if rest.is_empty() { base.to_owned() } else { normalize_str(&format!("{base}/{rest}")) }
}

#[cfg(test)]
mod tests;
