//! The seams through which the launcher uses pfs-fuse (encrypted mounts) and the attest
//! client (key provisioning) without depending on them.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::manifest::Manifest;
use crate::measure::SimMeasurement;

/// A boxed error from a seam implementation.
pub type SeamError = Box<dyn StdError + Send + Sync>;

/// What an encrypted mount needs (spec §4.2). Always a directory: a single-file mount is
/// served by mounting the file's host directory on a private scratch directory, and the
/// launcher binds the one file into the view.
#[derive(Debug)]
pub struct EncryptedMountRequest<'a> {
    /// The manifest entry's `path` inside the view (for messages).
    pub view_path: &'a str,
    /// The normalised host path of the directory as the manifest names it, without `file:`
    /// and without a trailing `/` (relative stays relative; `.` for the cwd). A file at `REL`
    /// below the mount is bound to `normalize(uri/REL)`: pass it as pfs-fuse's path prefix.
    pub uri: &'a str,
    /// The backing host directory (`uri` resolved against the launcher's cwd).
    pub host_dir: &'a Path,
    /// Where to mount: an existing directory inside the private namespace.
    pub target: &'a Path,
    /// `key_name` (default `default`).
    pub key_name: &'a str,
    /// The key's value, or `None` when no key of that name is known (Gramine then fails
    /// every open with EACCES).
    pub key: Option<&'a pfs_core::Key>,
    /// `enable_recovery`: the mount keeps Gramine's recovery files (spec §13).
    pub enable_recovery: bool,
}

/// A live encrypted mount. `unmount` flushes and unmounts it.
pub trait EncryptedMount {
    /// Flushes every file and unmounts. Called once, after the program has ended.
    fn unmount(self: Box<Self>) -> Result<(), SeamError>;
}

/// Serves `type = "encrypted"` mounts (the pfs-fuse integration implements this).
///
/// Called after the namespace exists and before the program starts; FUSE server threads
/// may be started here (the launcher's child only makes raw system calls after `fork`).
pub trait EncryptedMounter {
    /// Mounts the protected files at `request.host_path` at `request.target`.
    fn mount(&mut self, request: &EncryptedMountRequest<'_>) -> Result<Box<dyn EncryptedMount>, SeamError>;
}

/// What the manifest asks a key server for (Gramine's `SECRET_PROVISION_*` protocol, spec §8).
#[derive(Debug)]
pub struct ProvisionRequest<'a> {
    /// The manifest being run.
    pub manifest: &'a Manifest,
    /// Its simulated measurement.
    pub measurement: &'a SimMeasurement,
    /// `SECRET_PROVISION_SERVERS`, split on `,` `;` and spaces (default `localhost:4433`).
    pub servers: Vec<String>,
    /// `SECRET_PROVISION_CA_CHAIN_PATH` as written (an in-view path).
    pub ca_chain_view_path: Option<&'a str>,
    /// Where to read it: the launcher's verified copy when it is a trusted file (as it
    /// should be), else the host path it maps to through the mount table.
    pub ca_chain_host_path: Option<PathBuf>,
    /// `SECRET_PROVISION_SET_KEY`: install the secret as this key.
    pub set_key: Option<&'a str>,
}

/// The secret a key server released.
pub enum ProvisionedSecret {
    /// Exactly 16 bytes, installed as key `name`.
    Key {
        /// The key name (`SECRET_PROVISION_SET_KEY`).
        name: String,
        /// The key.
        key: pfs_core::Key,
    },
    /// Any other secret: exported as `SECRET_PROVISION_SECRET_STRING`.
    String(String),
}

impl fmt::Debug for ProvisionedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProvisionedSecret::Key { name, .. } => write!(f, "Key({name:?}, <redacted>)"),
            ProvisionedSecret::String(_) => f.write_str("String(<redacted>)"),
        }
    }
}

/// Obtains secrets from a key server after attestation (the attest client implements this).
pub trait KeyProvider {
    /// Attests to a server of `request.servers` and returns the released secret.
    fn provision(&mut self, request: &ProvisionRequest<'_>) -> Result<ProvisionedSecret, SeamError>;
}

/// What `/dev/attestation/quote` asks a [`QuoteProvider`] for.
#[derive(Debug)]
pub struct QuoteRequest<'a> {
    /// The manifest's identity fields (`sgx.isvprodid`, `sgx.isvsvn`, `sgx.debug`).
    pub identity: &'a crate::manifest::Identity,
    /// The simulated measurement of the manifest being run.
    pub measurement: &'a SimMeasurement,
    /// The 64 bytes last written to `/dev/attestation/user_report_data` (zeros before).
    pub report_data: &'a [u8; 64],
}

/// Produces the quotes of `/dev/attestation/quote` (spec §7) when the manifest sets
/// `sgx.remote_attestation = "dcap"` (the attest crate's simulated attester implements this).
///
/// Called from the `/dev/attestation` server thread, hence `Send + Sync`.
pub trait QuoteProvider: Send + Sync {
    /// What `/dev/attestation/attestation_type` reads: `sim` for simulated evidence (`dcap`
    /// is reserved for a real SGX backend, so that an app insisting on SGX fails).
    fn attestation_type(&self) -> &'static str;
    /// A quote over `request.report_data`, in a format no verifier can take for an Intel
    /// quote when it is simulated.
    fn quote(&self, request: &QuoteRequest<'_>) -> Result<Vec<u8>, SeamError>;
}
