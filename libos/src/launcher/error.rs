//! Launcher failures and their named exit codes.

use std::io;
use std::path::{Path, PathBuf};

use super::SeamError;
use crate::exit;
use crate::manifest::LoadError;

/// Why a trusted file was refused.
#[derive(Debug)]
pub enum TrustedFailure {
    /// It could not be read.
    Unreadable(io::Error),
    /// Its SHA-256 differs from the manifest.
    Mismatch {
        /// Hash in the manifest (hex).
        expected: String,
        /// Hash of the file now (hex).
        actual: String,
    },
    /// Another problem (e.g. a directory could not be expanded).
    Other(String),
}

/// A launcher failure. [`LaunchError::exit_code`] gives its named exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The manifest could not be loaded.
    #[error(transparent)]
    Manifest(#[from] LoadError),
    /// The launcher was called with several threads running.
    #[error(
        "the launcher must create its namespace while single-threaded, but {0} threads are running \
         (call libos::launcher::enter_namespace before starting any thread)"
    )]
    NotSingleThreaded(usize),
    /// The namespace could not be created.
    #[error(
        "cannot create a private mount namespace: {0} (pfs run needs root or unprivileged user namespaces)"
    )]
    Namespace(io::Error),
    /// A step of building or removing the view failed.
    #[error("cannot {what} {}: {source}", path.display())]
    View {
        /// What was being done.
        what: String,
        /// The path concerned.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A trusted file failed verification; the program was not started.
    #[error("trusted file file:{uri} {}; the program was not started", match failure {
        TrustedFailure::Unreadable(e) => format!("cannot be read ({e})"),
        TrustedFailure::Mismatch { expected, actual } =>
            format!("was modified: its SHA-256 is {actual}, the manifest expects {expected}"),
        TrustedFailure::Other(m) => m.clone(),
    })]
    Trusted {
        /// The trusted file's URI (without `file:`).
        uri: String,
        /// What is wrong.
        failure: TrustedFailure,
    },
    /// The manifest has encrypted mounts but no [`super::EncryptedMounter`] is available.
    #[error("encrypted mount at {path} needs pfs-fuse, which this build of the launcher does not include")]
    EncryptedUnavailable {
        /// The mount's in-view path.
        path: String,
    },
    /// An encrypted mount failed.
    #[error("encrypted mount of file:{uri} at {path}: {source}")]
    Encrypted {
        /// The mount's in-view path.
        path: String,
        /// Its URI.
        uri: String,
        /// The mounter's error.
        source: SeamError,
    },
    /// Keys could not be obtained.
    #[error("key provisioning failed: {0}")]
    Keys(String),
    /// The manifest pins another launcher binary.
    #[error("the manifest pins launcher sha256 {expected}, but this launcher ({}) has {actual}", path.display())]
    LauncherMismatch {
        /// The running launcher.
        path: PathBuf,
        /// `loader.entrypoint.sha256`.
        expected: String,
        /// This binary's hash.
        actual: String,
    },
    /// argv or env could not be prepared.
    #[error("{0}")]
    Config(String),
    /// fork/wait failed.
    #[error("cannot {0}: {1}")]
    Process(&'static str, io::Error),
    /// `sgx.file_check_policy = "strict"` cannot be enforced: the kernel has no Landlock.
    #[error(
        "sgx.file_check_policy = \"strict\" (the default) is enforced with Landlock, which this kernel does not \
         offer ({0}); the program was not started. Enable Landlock (Linux 5.13 or later with \
         CONFIG_SECURITY_LANDLOCK=y and `landlock` in the lsm= boot parameter), or set \
         sgx.file_check_policy = \"allow_all_but_log\" in the manifest to run without file checks"
    )]
    FilePolicyUnavailable(io::Error),
    /// The Landlock ruleset could not be built.
    #[error("cannot enforce sgx.file_check_policy: cannot {what}: {source}")]
    FilePolicy {
        /// What was being done, with the path.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The strict file policy would refuse to execute the entrypoint or its interpreter.
    #[error(
        "cannot start {program}: {role} {view_path}{} is neither a trusted nor an allowed file, and \
         sgx.file_check_policy is \"strict\": list {} in sgx.trusted_files or sgx.allowed_files",
        host.as_ref().map(|h| format!(" (host file {h})")).unwrap_or_default(),
        host.as_ref().map(|h| format!("file:{h}")).unwrap_or_else(|| "its host file".to_owned())
    )]
    NotListed {
        /// The entrypoint.
        program: String,
        /// Which file: the entrypoint, its `#!` or its ELF interpreter.
        role: String,
        /// The file's in-view path.
        view_path: String,
        /// The host file it maps to, when it maps to one.
        host: Option<String>,
    },
    /// The program could not be started inside the view.
    #[error("cannot start {program} in the app's view: {stage}: {source}{hint}")]
    Start {
        /// The entrypoint.
        program: String,
        /// What to check (may be empty).
        hint: String,
        /// The step that failed.
        stage: String,
        /// The error.
        source: io::Error,
    },
}

impl LaunchError {
    pub(crate) fn view(what: &str, path: &Path, source: io::Error) -> Self {
        LaunchError::View { what: what.to_owned(), path: path.to_owned(), source }
    }

    /// The named exit code for this failure (see [`crate::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            LaunchError::Manifest(_) | LaunchError::Config(_) => exit::MANIFEST,
            LaunchError::Namespace(_)
            | LaunchError::View { .. }
            | LaunchError::EncryptedUnavailable { .. }
            | LaunchError::Encrypted { .. }
            | LaunchError::FilePolicyUnavailable(_)
            | LaunchError::FilePolicy { .. } => exit::VIEW,
            LaunchError::NotListed { .. } => exit::EXEC,
            LaunchError::Trusted { .. } => exit::TRUSTED_FILE,
            LaunchError::Keys(_) => exit::KEYS,
            LaunchError::NotSingleThreaded(_)
            | LaunchError::LauncherMismatch { .. }
            | LaunchError::Process(..) => exit::LAUNCHER,
            LaunchError::Start { source, .. } if source.raw_os_error() == Some(libc::ENOENT) => {
                exit::NOT_FOUND
            }
            LaunchError::Start { .. } => exit::EXEC,
        }
    }
}
