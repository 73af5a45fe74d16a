//! Attesters: produce evidence whose REPORTDATA is chosen by the caller.

use std::path::PathBuf;

use thiserror::Error;

/// What kind of evidence an attester produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvidenceKind {
    /// An SGX DCAP quote.
    SgxDcap,
    /// A simulated, INSECURE report (feature `insecure-sim`).
    Simulated,
}

/// Why an attester could not produce evidence.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AttestError {
    /// A `/dev/attestation` file could not be used.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Gramine is not configured for DCAP attestation.
    #[error(
        "attestation type is {found:?}, expected \"dcap\" (set sgx.remote_attestation = \"dcap\" in the manifest); no fallback to simulation"
    )]
    NotDcap {
        /// What `/dev/attestation/attestation_type` says.
        found: String,
    },
    /// The attester failed otherwise.
    #[error("attester failed: {0}")]
    Other(String),
}

/// Answers one question: produce evidence binding these 64 bytes of REPORTDATA.
pub trait Attester: Send + Sync {
    /// The kind of evidence produced.
    fn kind(&self) -> EvidenceKind;
    /// Produces evidence (an SGX quote, or a simulated report) with `report_data`.
    fn attest(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, AttestError>;
}

/// The Gramine attester: uses `/dev/attestation` inside a Gramine SGX enclave.
///
/// It requires `/dev/attestation/attestation_type` to read `dcap` and never
/// falls back to simulation.
#[derive(Debug, Clone)]
pub struct GramineAttester {
    dir: PathBuf,
}

impl Default for GramineAttester {
    fn default() -> Self {
        Self { dir: PathBuf::from("/dev/attestation") }
    }
}

impl GramineAttester {
    /// The attester for `/dev/attestation`.
    pub fn new() -> Self {
        Self::default()
    }

    /// An attester rooted at another directory (for tests).
    pub fn with_dir(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Installs a provisioned 16-byte key as `/dev/attestation/keys/<name>`, where
    /// Gramine's encrypted mounts with `key_name = "<name>"` find it.
    ///
    /// Names starting with `_` (Gramine's reserved sealing keys) and names
    /// containing `/` or NUL are refused.
    pub fn install_key(&self, name: &str, key: &[u8; 16]) -> Result<(), AttestError> {
        if name.is_empty()
            || name.starts_with('_')
            || name.contains(['/', '\0'])
            || name == "."
            || name == ".."
        {
            return Err(AttestError::Other(format!(
                "key name {name:?} is not allowed (empty, reserved '_' prefix, '/' or NUL)"
            )));
        }
        let path = self.dir.join("keys").join(name);
        std::fs::write(&path, key).map_err(|source| AttestError::Io { op: "writing", path, source })
    }
}

impl Attester for GramineAttester {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::SgxDcap
    }

    fn attest(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, AttestError> {
        let ty = self.dir.join("attestation_type");
        let found = std::fs::read_to_string(&ty).map_err(|source| AttestError::Io {
            op: "reading",
            path: ty.clone(),
            source,
        })?;
        if found.trim() != "dcap" {
            return Err(AttestError::NotDcap { found: found.trim().to_string() });
        }
        let urd = self.dir.join("user_report_data");
        std::fs::write(&urd, report_data).map_err(|source| AttestError::Io {
            op: "writing",
            path: urd,
            source,
        })?;
        let q = self.dir.join("quote");
        std::fs::read(&q).map_err(|source| AttestError::Io { op: "reading", path: q, source })
    }
}
