//! Offline Intel SGX DCAP quote verification with `dcap-qvl`.
//!
//! Pure Rust, no network: collateral is supplied by the caller in dcap-qvl's
//! `QuoteCollateralV3` JSON layout, and the verification time is an argument.
//! The trust anchor is a [`RootCa`]: by default the Intel SGX Root CA
//! (dcap-qvl's built-in copy, whose SHA-256 fingerprint is
//! [`INTEL_ROOT_CA_SHA256`]); a policy may name another one
//! (`[attestation] root_ca`) for a test or private PKI only.

use std::path::{Path, PathBuf};

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::quote::Report;
use rustls_pki_types::UnixTime;
use thiserror::Error;

use crate::evidence::{EnclaveIdentity, QuoteVerifier, TcbStatus, TeeType, VerifiedEvidence};
use crate::quote::{QuoteError, SgxQuote};

/// SHA-256 fingerprint of the pinned Intel SGX Root CA certificate (DER).
pub const INTEL_ROOT_CA_SHA256: &str = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3";

/// The root CA that every PCK chain and collateral chain must end in.
///
/// [`RootCa::intel`] (the default everywhere) is Intel's SGX Root CA. Any other
/// root ([`RootCa::from_der`], policy `[attestation] root_ca`) means evidence
/// is trusted because *that* CA says so, not Intel: use it only for a test PKI
/// (tests build one to rehearse collateral expiry) or a private one you control.
#[derive(Clone, PartialEq, Eq)]
pub struct RootCa {
    der: std::sync::Arc<[u8]>,
    sha256: String,
}

impl std::fmt::Debug for RootCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RootCa({}{})", self.sha256, if self.is_intel() { ", Intel SGX Root CA" } else { "" })
    }
}

impl Default for RootCa {
    fn default() -> Self {
        Self::intel()
    }
}

impl RootCa {
    /// The Intel SGX Root CA (pinned by [`INTEL_ROOT_CA_SHA256`]).
    pub fn intel() -> Self {
        // The same bytes as dcap-qvl's built-in copy (its constant is private);
        // the fingerprint is checked by the unit test below.
        Self::from_der(include_bytes!("intel_sgx_root_ca.der").to_vec())
    }

    /// Another root (DER). Not Intel's unless the bytes are Intel's.
    pub fn from_der(der: Vec<u8>) -> Self {
        use sha2::Digest;
        let sha256 = hex::encode(sha2::Sha256::digest(&der));
        Self { der: der.into(), sha256 }
    }

    /// Reads a root certificate file, PEM or DER.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        use rustls_pki_types::pem::PemObject;
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read root CA {}: {e}", path.display()))?;
        let der = if bytes.first() == Some(&0x30) {
            bytes
        } else {
            rustls_pki_types::CertificateDer::from_pem_slice(&bytes)
                .map_err(|e| format!("root CA {} is neither DER nor PEM: {e}", path.display()))?
                .to_vec()
        };
        x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("root CA {} is not an X.509 certificate: {e}", path.display()))?;
        Ok(Self::from_der(der))
    }

    /// The certificate (DER).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// SHA-256 of the DER, lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether this is the Intel SGX Root CA.
    pub fn is_intel(&self) -> bool {
        self.sha256 == INTEL_ROOT_CA_SHA256
    }
}

/// Why evidence failed cryptographic verification.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The quote is malformed or is not an SGX DCAP v3 quote.
    #[error("quote rejected: {0}")]
    Quote(#[from] QuoteError),
    /// SGX quote version 4 is understood but the verifier does not support it.
    #[error(
        "SGX quote version 4 is not supported by the verifier (dcap-qvl 0.7 verifies SGX quote version 3 only)"
    )]
    SgxV4Unsupported,
    /// No collateral was configured.
    #[error("no collateral configured; pass a collateral JSON file (dcap-qvl QuoteCollateralV3 layout)")]
    NoCollateral,
    /// DCAP verification failed with every configured collateral bundle.
    #[error("DCAP verification failed at time {now}: {}", .failures.iter().map(|(l, e)| format!("[{l}] {e}")).collect::<Vec<_>>().join("; "))]
    Dcap {
        /// Verification time (Unix seconds).
        now: u64,
        /// (collateral label, reason) for each bundle tried.
        failures: Vec<(String, String)>,
    },
    /// The verifier returned a status this crate does not know.
    #[error("verifier returned an unknown TCB status {0:?}")]
    UnknownStatus(String),
    /// The verified report is not an SGX enclave report.
    #[error("the verified report is not an SGX enclave report")]
    NotSgxReport,
    /// Simulated evidence could not be accepted (see the `insecure-sim` feature).
    #[error("simulated evidence rejected: {0}")]
    Simulated(String),
}

/// Why a collateral file could not be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CollateralError {
    /// The file could not be read.
    #[error("cannot read collateral file {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error (in the message, not a separate cause, so it is printed once).
        cause: std::io::Error,
    },
    /// The policy's collateral endpoint is unusable.
    #[error("policy {policy}, [attestation] pccs_url: {reason}")]
    Endpoint {
        /// The policy file.
        policy: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A collateral file named by a policy could not be loaded.
    #[error("policy {policy}, line {line}, field `{field}`: {inner}")]
    InPolicy {
        /// The policy file.
        policy: PathBuf,
        /// 1-based line naming the collateral file.
        line: usize,
        /// Dotted field name.
        field: String,
        /// What went wrong with the file.
        inner: Box<CollateralError>,
    },
    /// The policy's `root_ca` cannot be used.
    #[error("policy {policy}, line {line}, field `attestation.root_ca`: {reason}")]
    RootCa {
        /// The policy file.
        policy: PathBuf,
        /// 1-based line of `root_ca`.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The JSON is not in dcap-qvl's `QuoteCollateralV3` layout.
    #[error("collateral {label} is not valid QuoteCollateralV3 JSON: {reason}")]
    Json {
        /// File name or label.
        label: String,
        /// The parser's message, with line and column.
        reason: String,
    },
}

/// One collateral bundle for one platform (FMSPC).
#[derive(Clone)]
pub struct Collateral {
    label: String,
    inner: QuoteCollateralV3,
}

impl std::fmt::Debug for Collateral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collateral").field("label", &self.label).finish_non_exhaustive()
    }
}

impl Collateral {
    /// Parses collateral JSON (dcap-qvl `QuoteCollateralV3` layout). `label` names it in errors.
    pub fn from_json(json: &[u8], label: impl Into<String>) -> Result<Self, CollateralError> {
        let label = label.into();
        let inner: QuoteCollateralV3 = serde_json::from_slice(json)
            .map_err(|e| CollateralError::Json { label: label.clone(), reason: e.to_string() })?;
        Ok(Self { label, inner })
    }

    /// Reads and parses a collateral JSON file.
    pub fn from_file(path: &Path) -> Result<Self, CollateralError> {
        let bytes =
            std::fs::read(path).map_err(|cause| CollateralError::Io { path: path.to_path_buf(), cause })?;
        Self::from_json(&bytes, path.display().to_string())
    }

    /// The label used in error messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Wraps a dcap-qvl collateral set (for example one fetched from a PCCS).
    pub fn from_qvl(inner: QuoteCollateralV3, label: impl Into<String>) -> Self {
        Self { label: label.into(), inner }
    }

    /// The dcap-qvl collateral set.
    pub fn as_qvl(&self) -> &QuoteCollateralV3 {
        &self.inner
    }
}

/// Verifies SGX DCAP v3 quotes offline against a set of collateral bundles.
///
/// Debug enclaves verify (the result says `debug: true`); rejecting them is
/// the policy's job. Each bundle is tried in turn; the first that verifies wins.
#[derive(Debug, Clone)]
pub struct DcapVerifier {
    store: std::sync::Arc<crate::collateral::CollateralStore>,
}

impl DcapVerifier {
    /// A verifier anchored in Intel's SGX Root CA, using `collateral`.
    pub fn new(collateral: Vec<Collateral>) -> Self {
        Self::with_store(std::sync::Arc::new(crate::collateral::CollateralStore::new(collateral)))
    }

    /// A verifier reading the sets in force from `store` at each verification
    /// (the store is refreshed in the background by [`crate::collateral::Refresher`]).
    pub fn with_store(store: std::sync::Arc<crate::collateral::CollateralStore>) -> Self {
        Self { store }
    }

    /// Verifies a quote at `now`.
    pub fn verify(&self, quote: &[u8], now: UnixTime) -> Result<VerifiedEvidence, VerifyError> {
        let parsed = SgxQuote::parse(quote)?;
        if parsed.header.version != 3 {
            return Err(VerifyError::SgxV4Unsupported);
        }
        let quote = quote.get(..parsed.len()).ok_or(VerifyError::NotSgxReport)?;
        let collateral = self.store.current();
        if collateral.is_empty() {
            return Err(VerifyError::NoCollateral);
        }
        let verifier =
            dcap_qvl::verify::QuoteVerifier::new(self.store.root().der().to_vec()).allow_debug(true);
        let mut failures = Vec::new();
        for c in collateral.iter() {
            if let Err(e) = crl_windows(&c.inner, now.as_secs()) {
                failures.push((c.label.clone(), e));
                continue;
            }
            match verifier.verify(quote, &c.inner, now.as_secs()) {
                Ok(report) => {
                    let status: TcbStatus = report
                        .status
                        .parse()
                        .map_err(|_| VerifyError::UnknownStatus(report.status.clone()))?;
                    let Report::SgxEnclave(r) = report.report else {
                        return Err(VerifyError::NotSgxReport);
                    };
                    let flags = u64::from_le_bytes(
                        r.attributes[..8].try_into().map_err(|_| VerifyError::NotSgxReport)?,
                    );
                    let identity = EnclaveIdentity {
                        mrenclave: r.mr_enclave,
                        mrsigner: r.mr_signer,
                        isv_prod_id: r.isv_prod_id,
                        isv_svn: r.isv_svn,
                        attributes: r.attributes,
                        debug: flags & crate::quote::ATTR_DEBUG != 0,
                    };
                    let mut advisories = report.advisory_ids;
                    advisories.sort();
                    advisories.dedup();
                    return Ok(VerifiedEvidence::assertion(
                        TeeType::SgxDcap,
                        identity,
                        r.report_data,
                        status,
                        advisories,
                        now,
                    ));
                }
                Err(e) => failures.push((c.label.clone(), format!("{e:#}"))),
            }
        }
        Err(VerifyError::Dcap { now: now.as_secs(), failures })
    }
}

impl QuoteVerifier for DcapVerifier {
    fn verify_quote(&self, quote: &[u8], now: UnixTime) -> Result<VerifiedEvidence, VerifyError> {
        self.verify(quote, now)
    }
}

/// Checks `thisUpdate <= now <= nextUpdate` for both CRLs (spec §4 step 2).
///
/// dcap-qvl checks `nextUpdate` but not `thisUpdate`; we are strict about both.
fn crl_windows(c: &QuoteCollateralV3, now: u64) -> Result<(), String> {
    for (name, der) in [("root CA CRL", &c.root_ca_crl), ("PCK CRL", &c.pck_crl)] {
        let (_, crl) = x509_parser::parse_x509_crl(der).map_err(|e| format!("{name} does not parse: {e}"))?;
        let this = crl.last_update().timestamp();
        if (now as i128) < i128::from(this) {
            return Err(format!("{name} is not yet valid at {now} (thisUpdate {this})"));
        }
        match crl.next_update() {
            Some(next) if (now as i128) > i128::from(next.timestamp()) => {
                return Err(format!("{name} expired at {} (now {now})", next.timestamp()));
            }
            Some(_) => {}
            None => return Err(format!("{name} has no nextUpdate")),
        }
    }
    Ok(())
}

/// Converts Unix seconds into a [`UnixTime`].
pub fn unix_time(secs: u64) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_root_is_intels() {
        let r = super::RootCa::intel();
        assert_eq!(r.sha256(), super::INTEL_ROOT_CA_SHA256);
        assert!(r.is_intel());
        assert!(!super::RootCa::from_der(b"not intel".to_vec()).is_intel());
    }
}
