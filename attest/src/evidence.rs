//! Verified evidence: the only proof of a successful verification.
//!
//! [`VerifiedEvidence`] has private fields and a `pub(crate)` constructor
//! named `VerifiedEvidence::assertion`; grep for `assertion(` to find every
//! place that claims a verification happened.

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::UnixTime;
use serde::Serialize;

/// The kind of trusted execution environment that produced evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum TeeType {
    /// Intel SGX with a DCAP (ECDSA) quote.
    #[serde(rename = "sgx-dcap")]
    SgxDcap,
    /// Simulated, INSECURE evidence (feature `insecure-sim`). Never SGX.
    #[cfg(feature = "insecure-sim")]
    #[serde(rename = "simulated-INSECURE")]
    Simulated,
}

impl fmt::Display for TeeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TeeType::SgxDcap => f.write_str("sgx-dcap"),
            #[cfg(feature = "insecure-sim")]
            TeeType::Simulated => f.write_str("simulated-INSECURE"),
        }
    }
}

/// The TCB status of a verified platform, as Intel's collateral reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum TcbStatus {
    /// The platform is up to date.
    UpToDate,
    /// Software hardening (mitigations in the enclave) is needed.
    SWHardeningNeeded,
    /// Platform configuration is needed.
    ConfigurationNeeded,
    /// Both configuration and software hardening are needed.
    ConfigurationAndSWHardeningNeeded,
    /// The platform TCB is out of date.
    OutOfDate,
    /// Out of date, and configuration is needed.
    OutOfDateConfigurationNeeded,
    /// The platform TCB is revoked. No policy can accept this.
    Revoked,
    /// Simulated evidence: no TCB at all. Only simulated policy entries accept it.
    #[cfg(feature = "insecure-sim")]
    Simulated,
}

impl TcbStatus {
    /// The canonical name (as in Intel's TCB info JSON).
    pub fn as_str(&self) -> &'static str {
        match self {
            TcbStatus::UpToDate => "UpToDate",
            TcbStatus::SWHardeningNeeded => "SWHardeningNeeded",
            TcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TcbStatus::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TcbStatus::OutOfDate => "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            TcbStatus::Revoked => "Revoked",
            #[cfg(feature = "insecure-sim")]
            TcbStatus::Simulated => "Simulated",
        }
    }
}

impl fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown TCB status name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown TCB status {0:?}")]
pub struct UnknownTcbStatus(pub String);

impl FromStr for TcbStatus {
    type Err = UnknownTcbStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "UpToDate" => TcbStatus::UpToDate,
            "SWHardeningNeeded" => TcbStatus::SWHardeningNeeded,
            "ConfigurationNeeded" => TcbStatus::ConfigurationNeeded,
            "ConfigurationAndSWHardeningNeeded" => TcbStatus::ConfigurationAndSWHardeningNeeded,
            "OutOfDate" => TcbStatus::OutOfDate,
            "OutOfDateConfigurationNeeded" => TcbStatus::OutOfDateConfigurationNeeded,
            "Revoked" => TcbStatus::Revoked,
            other => return Err(UnknownTcbStatus(other.to_string())),
        })
    }
}

/// The identity of an enclave, as measured by the CPU (or as claimed by a simulation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnclaveIdentity {
    /// MRENCLAVE: the measurement of the enclave's initial contents.
    pub mrenclave: [u8; 32],
    /// MRSIGNER: SHA-256 of the enclave signer's modulus.
    pub mrsigner: [u8; 32],
    /// ISV product id.
    pub isv_prod_id: u16,
    /// ISV security version number.
    pub isv_svn: u16,
    /// ATTRIBUTES (FLAGS then XFRM, little-endian).
    pub attributes: [u8; 16],
    /// Whether the DEBUG attribute is set.
    pub debug: bool,
}

impl EnclaveIdentity {
    /// ATTRIBUTES.FLAGS as an integer.
    pub fn attribute_flags(&self) -> u64 {
        let mut f = [0u8; 8];
        f.copy_from_slice(&self.attributes[..8]);
        u64::from_le_bytes(f)
    }
}

/// Evidence that passed cryptographic verification at a given time.
///
/// Only verifiers in this crate can construct it. No measurement or TCB
/// *policy* has been applied yet: see [`crate::policy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEvidence {
    tee: TeeType,
    identity: EnclaveIdentity,
    report_data: [u8; 64],
    tcb_status: TcbStatus,
    advisory_ids: Vec<String>,
    verified_at: u64,
}

impl VerifiedEvidence {
    /// Asserts that verification happened. Only verifiers call this.
    pub(crate) fn assertion(
        tee: TeeType,
        identity: EnclaveIdentity,
        report_data: [u8; 64],
        tcb_status: TcbStatus,
        advisory_ids: Vec<String>,
        verified_at: UnixTime,
    ) -> Self {
        Self { tee, identity, report_data, tcb_status, advisory_ids, verified_at: verified_at.as_secs() }
    }

    /// Which TEE produced the evidence.
    pub fn tee(&self) -> TeeType {
        self.tee
    }
    /// The enclave identity.
    pub fn identity(&self) -> &EnclaveIdentity {
        &self.identity
    }
    /// The 64-byte REPORTDATA.
    pub fn report_data(&self) -> &[u8; 64] {
        &self.report_data
    }
    /// The merged (platform + QE) TCB status.
    pub fn tcb_status(&self) -> TcbStatus {
        self.tcb_status
    }
    /// The advisory IDs (union of platform and QE advisories).
    pub fn advisory_ids(&self) -> &[String] {
        &self.advisory_ids
    }
    /// The verification time, in seconds since the Unix epoch.
    pub fn verified_at(&self) -> u64 {
        self.verified_at
    }

    /// A JSON-friendly summary (the `pfs attest verify --json` object).
    pub fn summary(&self) -> EvidenceSummary {
        EvidenceSummary {
            tee: self.tee.to_string(),
            tcb_status: self.tcb_status.to_string(),
            advisory_ids: self.advisory_ids.clone(),
            mrenclave: hex::encode(self.identity.mrenclave),
            mrsigner: hex::encode(self.identity.mrsigner),
            isv_prod_id: self.identity.isv_prod_id,
            isv_svn: self.identity.isv_svn,
            attributes: hex::encode(self.identity.attributes),
            debug: self.identity.debug,
            report_data: hex::encode(self.report_data),
            verified_at: self.verified_at,
        }
    }
}

/// A serialisable summary of [`VerifiedEvidence`], hex in lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvidenceSummary {
    /// `sgx-dcap` or `simulated-INSECURE`.
    pub tee: String,
    /// TCB status name.
    pub tcb_status: String,
    /// Advisory IDs.
    pub advisory_ids: Vec<String>,
    /// MRENCLAVE, lowercase hex.
    pub mrenclave: String,
    /// MRSIGNER, lowercase hex.
    pub mrsigner: String,
    /// ISV product id.
    pub isv_prod_id: u16,
    /// ISV SVN.
    pub isv_svn: u16,
    /// ATTRIBUTES, lowercase hex.
    pub attributes: String,
    /// DEBUG attribute.
    pub debug: bool,
    /// REPORTDATA, lowercase hex.
    pub report_data: String,
    /// Verification time (Unix seconds).
    pub verified_at: u64,
}

/// Answers one question: is this SGX quote genuine, and what does it say, at time `now`?
///
/// Measurement and TCB policy are *not* applied.
pub trait QuoteVerifier: Send + Sync {
    /// Verifies `quote` at `now`.
    fn verify_quote(&self, quote: &[u8], now: UnixTime)
    -> Result<VerifiedEvidence, crate::dcap::VerifyError>;
}
