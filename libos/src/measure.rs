//! The simulated measurement: a documented identity of a manifest, **not** an SGX MRENCLAVE.
//!
//! ```text
//! sim_mrenclave = SHA-256( "ppml-sim-mrenclave-v1"
//!                        ‖ SHA-256(final manifest bytes)
//!                        ‖ launcher digest (32 bytes)
//!                        ‖ u64 LE sgx.enclave_size ‖ u32 LE sgx.max_threads ‖ u8 sgx.edmm_enable )
//! ```
//!
//! The launcher digest is `loader.entrypoint.sha256` when the manifest pins the launcher
//! (`pfs manifest --pin-launcher` writes it; `pfs run` then refuses any other launcher
//! binary), and 32 zero bytes otherwise. Binding the launcher is therefore opt-in: an
//! unpinned measurement depends only on the manifest file, so a key server can compute the
//! expected value from the manifest alone and it does not change with every rebuild of
//! `pfs`. Every trusted file's hash, every mount, argv and env entry is covered because it
//! sits in the measured manifest text.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::Manifest;

/// Domain separation tag of version 1 of the simulated measurement.
pub const DOMAIN_TAG: &[u8] = b"ppml-sim-mrenclave-v1";

/// A simulated measurement and the inputs it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMeasurement {
    /// The simulated measurement (`sim_mrenclave`).
    pub value: [u8; 32],
    /// SHA-256 of the manifest text.
    pub manifest_sha256: [u8; 32],
    /// `loader.entrypoint.sha256`, or zeros when the launcher is not pinned.
    pub launcher_digest: [u8; 32],
    /// `sgx.enclave_size` in bytes.
    pub enclave_size: u64,
    /// `sgx.max_threads`.
    pub max_threads: u32,
    /// `sgx.edmm_enable`.
    pub edmm: bool,
}

impl SimMeasurement {
    /// Lower-case hex of [`SimMeasurement::value`].
    pub fn hex(&self) -> String {
        hex::encode(self.value)
    }
}

impl fmt::Display for SimMeasurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// Computes the simulated measurement of a validated manifest (see the module docs).
pub fn measure(manifest: &Manifest) -> SimMeasurement {
    let manifest_sha256: [u8; 32] = Sha256::digest(manifest.text().as_bytes()).into();
    let launcher_digest = manifest.loader_entrypoint.sha256.unwrap_or([0; 32]);
    let id = &manifest.identity;
    let mut h = Sha256::new();
    h.update(DOMAIN_TAG);
    h.update(manifest_sha256);
    h.update(launcher_digest);
    h.update(id.enclave_size.to_le_bytes());
    h.update(id.max_threads.to_le_bytes());
    h.update([u8::from(id.edmm_enable)]);
    SimMeasurement {
        value: h.finalize().into(),
        manifest_sha256,
        launcher_digest,
        enclave_size: id.enclave_size,
        max_threads: id.max_threads,
        edmm: id.edmm_enable,
    }
}
