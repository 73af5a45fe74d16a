//! Gramine RA-TLS certificates: building and parsing both evidence extensions,
//! and the binding between the certificate key and REPORTDATA.
//!
//! * Extension A (legacy): OID content bytes `06 09 2A 86 48 86 F8 4D 8A 39 06`
//!   (which decode to `0.6.9.42.840.113741.1337.6`, exactly as Gramine encodes
//!   it), value = the raw SGX quote. Binding: REPORTDATA = SHA-256(SPKI DER) ‖ 32 zero bytes.
//! * Extension B (TCG DICE tagged evidence, `2.23.133.5.4.9`): CBOR tag 60000
//!   around `[quote, claims]`. Binding: REPORTDATA = SHA-256(claims) ‖ 32 zero
//!   bytes, and the claims' `pubkey-hash` equals the hash of the SPKI DER.
//!
//! Extension B is tried first; if it is present it must parse and bind, with
//! no fallback. Only P-256 and P-384 keys are accepted.
//!
//! **Validity dates and the self-signature are ignored**, as Gramine does:
//! trust comes from the quote, and possession of the private key is proven by
//! the TLS handshake signature. Gramine enclaves create their certificates
//! with a fixed 2001–2030 validity and cannot rely on a trusted clock, so
//! checking dates would add failures without adding security. Freshness is
//! judged by verifying the quote and its collateral at the verifier's `now`.

use std::io::Cursor;
use std::sync::Arc;

use ciborium::value::Value;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use sha2::{Digest, Sha256, Sha384, Sha512};
use thiserror::Error;
use x509_parser::prelude::*;

use crate::attester::{AttestError, Attester, EvidenceKind};
use crate::dcap::VerifyError;
use crate::evidence::{QuoteVerifier, VerifiedEvidence};

/// Content bytes of the legacy Gramine OID, exactly as Gramine encodes them.
pub const LEGACY_OID_CONTENT: [u8; 11] = [0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF8, 0x4D, 0x8A, 0x39, 0x06];
/// Arcs of the legacy OID as it decodes (`0.6.9.42.840.113741.1337.6`).
pub const LEGACY_OID_ARCS: [u64; 8] = [0, 6, 9, 42, 840, 113741, 1337, 6];
/// Content bytes of the TCG DICE tagged-evidence OID `2.23.133.5.4.9`.
pub const TCG_EVIDENCE_OID_CONTENT: [u8; 6] = [0x67, 0x81, 0x05, 0x05, 0x04, 0x09];
/// Arcs of the TCG DICE tagged-evidence OID.
pub const TCG_EVIDENCE_OID_ARCS: [u64; 6] = [2, 23, 133, 5, 4, 9];
/// CBOR tag for an Intel TEE quote (IANA-registered).
pub const CBOR_TAG_INTEL_QUOTE: u64 = 60000;
/// Project-private CBOR tag for SIMULATED, INSECURE evidence ("PFSS").
///
/// Unregistered; chosen in the first-come-first-served range so that no stock
/// verifier (which only knows 60000) can mistake it for SGX evidence.
pub const SIM_EVIDENCE_TAG: u64 = 0x5046_5353;
/// The claims key holding the public-key hash.
pub const CLAIM_PUBKEY_HASH: &str = "pubkey-hash";
/// Gramine's RA-TLS certificate subject common name.
pub const GRAMINE_CN: &str = "RATLS";
/// Subject common name of simulated certificates.
pub const SIM_CN: &str = "RATLS-SIMULATED-INSECURE";

/// Why an RA-TLS certificate was rejected.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RaTlsError {
    /// The certificate is not valid X.509 DER.
    #[error("certificate does not parse as X.509: {0}")]
    CertParse(String),
    /// Neither evidence extension is present.
    #[error(
        "certificate carries no RA-TLS evidence (neither TCG DICE 2.23.133.5.4.9 nor Gramine legacy 0.6.9.42.840.113741.1337.6)"
    )]
    NoEvidence,
    /// An extension appears more than once (RFC 5280 §4.2 forbids it).
    #[error("certificate carries extension {0} more than once (RFC 5280 allows each extension once)")]
    DuplicateExtension(String),
    /// The key is not P-256 or P-384.
    #[error("certificate key {0} is not accepted (only ECDSA P-256 and P-384)")]
    UnsupportedKey(String),
    /// The TCG evidence extension is malformed.
    #[error("TCG evidence extension malformed: {0}")]
    Cbor(String),
    /// The TCG evidence carries an unknown CBOR tag.
    #[error("TCG evidence has CBOR tag {0}, expected {CBOR_TAG_INTEL_QUOTE} (Intel TEE quote)")]
    UnknownTag(u64),
    /// Simulated evidence reached a verifier that does not accept it.
    #[error("certificate carries SIMULATED-INSECURE evidence (CBOR tag {SIM_EVIDENCE_TAG:#x}); {0}")]
    SimulatedNotAccepted(&'static str),
    /// The legacy extension value has an impossible size.
    #[error("legacy RA-TLS quote has {0} bytes; Gramine accepts 128..=8192")]
    LegacyQuoteSize(usize),
    /// A binding between the key and REPORTDATA does not hold.
    #[error("RA-TLS binding failed ({which}): expected {expected}, found {found}")]
    Binding {
        /// Which binding.
        which: &'static str,
        /// Expected value (hex).
        expected: String,
        /// Found value (hex).
        found: String,
    },
    /// The claims map is malformed or lacks `pubkey-hash`.
    #[error("claims malformed: {0}")]
    Claims(String),
    /// The quote or report failed verification.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Building a certificate failed.
    #[error("building the RA-TLS certificate failed: {0}")]
    Build(String),
    /// The attester failed.
    #[error(transparent)]
    Attest(#[from] AttestError),
}

/// Which extension the evidence came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvidenceFormat {
    /// TCG DICE tagged evidence with CBOR tag 60000.
    TcgDice,
    /// Gramine's legacy extension.
    Legacy,
    /// Simulated evidence (project-private CBOR tag inside the TCG extension).
    Simulated,
}

/// The evidence found in a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertEvidence {
    /// TCG DICE extension: quote and serialized claims.
    TcgDice {
        /// The SGX quote.
        quote: Vec<u8>,
        /// The serialized claims map.
        claims: Vec<u8>,
    },
    /// Legacy extension: the raw quote.
    Legacy {
        /// The SGX quote.
        quote: Vec<u8>,
    },
    /// Simulated evidence: the simulated report and the serialized claims.
    Simulated {
        /// CBOR simulated report.
        report: Vec<u8>,
        /// The serialized claims map.
        claims: Vec<u8>,
    },
}

impl CertEvidence {
    /// The format.
    pub fn format(&self) -> EvidenceFormat {
        match self {
            CertEvidence::TcgDice { .. } => EvidenceFormat::TcgDice,
            CertEvidence::Legacy { .. } => EvidenceFormat::Legacy,
            CertEvidence::Simulated { .. } => EvidenceFormat::Simulated,
        }
    }
}

/// Accepted certificate key curves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256.
    P256,
    /// NIST P-384 (Gramine's choice).
    P384,
}

/// A parsed (not yet verified) RA-TLS certificate.
#[derive(Debug, Clone)]
pub struct ParsedCertificate {
    /// DER SubjectPublicKeyInfo of the certificate key.
    pub spki_der: Vec<u8>,
    /// The key's curve.
    pub curve: Curve,
    /// The subject, as text.
    pub subject: String,
    /// The evidence chosen (TCG first, then legacy).
    pub evidence: CertEvidence,
    /// Also present: the legacy quote, when the TCG extension was chosen.
    pub legacy_quote: Option<Vec<u8>>,
}

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// Parses an RA-TLS certificate and extracts its evidence. Nothing is verified.
pub fn parse_certificate(der: &[u8]) -> Result<ParsedCertificate, RaTlsError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| RaTlsError::CertParse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(RaTlsError::CertParse(format!("{} trailing bytes after the certificate", rest.len())));
    }
    let spki = cert.public_key();
    let alg = spki.algorithm.algorithm.to_id_string();
    let param = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
    let curve = match (alg.as_str(), param.as_deref()) {
        (OID_EC_PUBLIC_KEY, Some(OID_P256)) => Curve::P256,
        (OID_EC_PUBLIC_KEY, Some(OID_P384)) => Curve::P384,
        _ => {
            return Err(RaTlsError::UnsupportedKey(format!("{alg} {}", param.unwrap_or_default())));
        }
    };
    let mut tcg = None;
    let mut legacy = None;
    let mut seen = std::collections::BTreeSet::new();
    for ext in cert.extensions() {
        let oid = ext.oid.as_bytes();
        if !seen.insert(oid) {
            return Err(RaTlsError::DuplicateExtension(ext.oid.to_id_string()));
        }
        if oid == TCG_EVIDENCE_OID_CONTENT {
            tcg = Some(ext.value);
        } else if oid == LEGACY_OID_CONTENT {
            legacy = Some(ext.value);
        }
    }
    let legacy_quote = match legacy {
        Some(q) if !(128..=crate::quote::MAX_QUOTE_LEN).contains(&q.len()) => {
            return Err(RaTlsError::LegacyQuoteSize(q.len()));
        }
        Some(q) => Some(q.to_vec()),
        None => None,
    };
    let evidence = match (tcg, &legacy_quote) {
        (Some(v), _) => parse_tagged_evidence(v)?,
        (None, Some(q)) => CertEvidence::Legacy { quote: q.clone() },
        (None, None) => return Err(RaTlsError::NoEvidence),
    };
    if evidence.format() == EvidenceFormat::Simulated && legacy_quote.is_some() {
        return Err(RaTlsError::Cbor(
            "simulated evidence must never be combined with the legacy SGX extension".into(),
        ));
    }
    Ok(ParsedCertificate {
        spki_der: spki.raw.to_vec(),
        curve,
        subject: cert.subject().to_string(),
        legacy_quote: if evidence.format() == EvidenceFormat::TcgDice { legacy_quote } else { None },
        evidence,
    })
}

fn decode_one(bytes: &[u8]) -> Result<Value, String> {
    let mut cur = Cursor::new(bytes);
    let v: Value = ciborium::de::from_reader(&mut cur).map_err(|e| e.to_string())?;
    if cur.position() != bytes.len() as u64 {
        return Err(format!("{} trailing bytes after the CBOR item", bytes.len() as u64 - cur.position()));
    }
    Ok(v)
}

/// Parses the value of the TCG DICE tagged-evidence extension.
pub fn parse_tagged_evidence(value: &[u8]) -> Result<CertEvidence, RaTlsError> {
    let v = decode_one(value).map_err(RaTlsError::Cbor)?;
    let Value::Tag(tag, inner) = v else {
        return Err(RaTlsError::Cbor("value is not a CBOR tag".into()));
    };
    let Value::Array(items) = *inner else {
        return Err(RaTlsError::Cbor("tag content is not an array".into()));
    };
    let [Value::Bytes(first), Value::Bytes(claims)] = <[Value; 2]>::try_from(items)
        .map_err(|v| RaTlsError::Cbor(format!("array has {} items, expected 2", v.len())))?
    else {
        return Err(RaTlsError::Cbor("array items are not two byte strings".into()));
    };
    match tag {
        CBOR_TAG_INTEL_QUOTE => Ok(CertEvidence::TcgDice { quote: first, claims }),
        SIM_EVIDENCE_TAG => Ok(CertEvidence::Simulated { report: first, claims }),
        other => Err(RaTlsError::UnknownTag(other)),
    }
}

/// Extracts `(hash algorithm id, hash)` from a serialized claims map.
pub fn claims_pubkey_hash(claims: &[u8]) -> Result<(u64, Vec<u8>), RaTlsError> {
    let v = decode_one(claims).map_err(RaTlsError::Claims)?;
    let Value::Map(entries) = v else {
        return Err(RaTlsError::Claims("claims are not a CBOR map".into()));
    };
    let value = entries
        .into_iter()
        .find_map(|(k, v)| (k.as_text() == Some(CLAIM_PUBKEY_HASH)).then_some(v))
        .ok_or_else(|| RaTlsError::Claims("no \"pubkey-hash\" entry".into()))?;
    let Value::Bytes(inner) = value else {
        return Err(RaTlsError::Claims("\"pubkey-hash\" is not a byte string".into()));
    };
    let Value::Array(pair) = decode_one(&inner).map_err(RaTlsError::Claims)? else {
        return Err(RaTlsError::Claims("\"pubkey-hash\" is not a serialized array".into()));
    };
    match pair.as_slice() {
        [Value::Integer(alg), Value::Bytes(h)] => {
            let alg =
                u64::try_from(*alg).map_err(|_| RaTlsError::Claims("negative hash algorithm id".into()))?;
            Ok((alg, h.clone()))
        }
        _ => Err(RaTlsError::Claims("\"pubkey-hash\" is not [alg-id, hash]".into())),
    }
}

fn hash_with(alg: u64, data: &[u8]) -> Result<Vec<u8>, RaTlsError> {
    Ok(match alg {
        1 => Sha256::digest(data).to_vec(),
        7 => Sha384::digest(data).to_vec(),
        8 => Sha512::digest(data).to_vec(),
        other => {
            return Err(RaTlsError::Claims(format!("unsupported hash algorithm id {other} (1, 7 or 8)")));
        }
    })
}

fn expect_report_data(which: &'static str, rd: &[u8; 64], hash32: &[u8]) -> Result<(), RaTlsError> {
    let mut expected = [0u8; 64];
    expected[..32].copy_from_slice(hash32);
    if rd != &expected {
        return Err(RaTlsError::Binding { which, expected: hex::encode(expected), found: hex::encode(rd) });
    }
    Ok(())
}

/// Checks the binding of `claims` to REPORTDATA and to the certificate key.
pub fn check_claims_binding(
    spki_der: &[u8],
    claims: &[u8],
    report_data: &[u8; 64],
) -> Result<(), RaTlsError> {
    expect_report_data("REPORTDATA = SHA-256(claims)", report_data, &Sha256::digest(claims))?;
    let (alg, h) = claims_pubkey_hash(claims)?;
    let want = hash_with(alg, spki_der)?;
    if want != h {
        return Err(RaTlsError::Binding {
            which: "claims pubkey-hash = hash(SPKI)",
            expected: hex::encode(want),
            found: hex::encode(h),
        });
    }
    Ok(())
}

/// Checks the legacy binding: REPORTDATA = SHA-256(SPKI DER) ‖ zeros.
pub fn check_legacy_binding(spki_der: &[u8], report_data: &[u8; 64]) -> Result<(), RaTlsError> {
    expect_report_data("REPORTDATA = SHA-256(SPKI)", report_data, &Sha256::digest(spki_der))
}

/// Verifies simulated reports. Implemented by `sim::SimVerifier`; exists only
/// with the `insecure-sim` feature.
#[cfg(feature = "insecure-sim")]
pub trait SimulatedEvidenceVerifier: Send + Sync {
    /// Verifies a simulated report at `now`.
    fn verify_simulated(&self, report: &[u8], now: UnixTime) -> Result<VerifiedEvidence, VerifyError>;
}

/// Verifies RA-TLS certificates: extract, verify the quote, check the binding.
#[derive(Clone)]
pub struct RaTlsVerifier {
    quotes: Arc<dyn QuoteVerifier>,
    #[cfg(feature = "insecure-sim")]
    simulated: Option<Arc<dyn SimulatedEvidenceVerifier>>,
}

impl std::fmt::Debug for RaTlsVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("RaTlsVerifier");
        #[cfg(feature = "insecure-sim")]
        d.field("accepts_simulated", &self.simulated.is_some());
        d.finish_non_exhaustive()
    }
}

impl RaTlsVerifier {
    /// A verifier for SGX evidence only.
    pub fn new(quotes: Arc<dyn QuoteVerifier>) -> Self {
        Self {
            quotes,
            #[cfg(feature = "insecure-sim")]
            simulated: None,
        }
    }

    /// Also accept SIMULATED, INSECURE evidence (feature `insecure-sim` only).
    #[cfg(feature = "insecure-sim")]
    pub fn dangerous_with_simulated(mut self, sim: Arc<dyn SimulatedEvidenceVerifier>) -> Self {
        self.simulated = Some(sim);
        self
    }

    /// Parses and verifies `cert_der` at `now`; returns the verified evidence
    /// and which extension it came from.
    pub fn verify_certificate(
        &self,
        cert_der: &[u8],
        now: UnixTime,
    ) -> Result<(VerifiedEvidence, EvidenceFormat), RaTlsError> {
        let parsed = parse_certificate(cert_der)?;
        let format = parsed.evidence.format();
        let ev = match &parsed.evidence {
            CertEvidence::TcgDice { quote, claims } => {
                let ev = self.quotes.verify_quote(quote, now)?;
                check_claims_binding(&parsed.spki_der, claims, ev.report_data())?;
                ev
            }
            CertEvidence::Legacy { quote } => {
                let ev = self.quotes.verify_quote(quote, now)?;
                check_legacy_binding(&parsed.spki_der, ev.report_data())?;
                ev
            }
            #[cfg(not(feature = "insecure-sim"))]
            CertEvidence::Simulated { .. } => {
                return Err(RaTlsError::SimulatedNotAccepted(
                    "this build has no simulated-evidence support (the insecure-sim feature is off)",
                ));
            }
            #[cfg(feature = "insecure-sim")]
            CertEvidence::Simulated { report, claims } => {
                let Some(sim) = &self.simulated else {
                    return Err(RaTlsError::SimulatedNotAccepted(
                        "this verifier does not accept simulated evidence (needs the insecure-sim feature and insecure_allow_simulated = true)",
                    ));
                };
                if !parsed.subject.contains(SIM_CN) {
                    return Err(RaTlsError::Cbor(format!(
                        "simulated evidence in a certificate whose subject {:?} does not say {SIM_CN}",
                        parsed.subject
                    )));
                }
                let ev = sim.verify_simulated(report, now)?;
                check_claims_binding(&parsed.spki_der, claims, ev.report_data())?;
                ev
            }
        };
        Ok((ev, format))
    }
}

/// A freshly generated RA-TLS certificate and its private key.
pub struct RaTlsCertificate {
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    /// The private key (PKCS#8 DER). Zeroized on drop by rustls-pki-types.
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl std::fmt::Debug for RaTlsCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaTlsCertificate").field("cert_len", &self.cert.len()).finish_non_exhaustive()
    }
}

impl RaTlsCertificate {
    /// The private key as a [`PrivateKeyDer`].
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// Builds the claims map `{"pubkey-hash": bstr(CBOR [1, SHA-256(spki)])}` exactly as Gramine does.
pub fn build_claims(spki_der: &[u8]) -> Result<Vec<u8>, RaTlsError> {
    let pair = Value::Array(vec![Value::Integer(1.into()), Value::Bytes(Sha256::digest(spki_der).to_vec())]);
    let mut inner = Vec::new();
    ciborium::ser::into_writer(&pair, &mut inner).map_err(|e| RaTlsError::Build(e.to_string()))?;
    let map = Value::Map(vec![(Value::Text(CLAIM_PUBKEY_HASH.into()), Value::Bytes(inner))]);
    let mut out = Vec::new();
    ciborium::ser::into_writer(&map, &mut out).map_err(|e| RaTlsError::Build(e.to_string()))?;
    Ok(out)
}

/// Encodes `tag([first, claims])` for the TCG evidence extension.
pub fn build_tagged_evidence(tag: u64, first: &[u8], claims: &[u8]) -> Result<Vec<u8>, RaTlsError> {
    let v = Value::Tag(
        tag,
        Box::new(Value::Array(vec![Value::Bytes(first.to_vec()), Value::Bytes(claims.to_vec())])),
    );
    let mut out = Vec::new();
    ciborium::ser::into_writer(&v, &mut out).map_err(|e| RaTlsError::Build(e.to_string()))?;
    Ok(out)
}

fn report_data_for(hash32: &[u8]) -> [u8; 64] {
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(hash32);
    rd
}

/// Generates a fresh key pair and an RA-TLS certificate carrying evidence from `attester`.
///
/// For SGX evidence both extensions are emitted, as Gramine ≥ 1.8 does (two
/// quotes with different REPORTDATA). Simulated evidence uses only the TCG
/// extension with [`SIM_EVIDENCE_TAG`] and the subject CN [`SIM_CN`].
pub fn build_certificate(attester: &dyn Attester, curve: Curve) -> Result<RaTlsCertificate, RaTlsError> {
    use rcgen::{CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, KeyPair, SerialNumber};
    let alg = match curve {
        Curve::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        Curve::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
    };
    let key = KeyPair::generate_for(alg).map_err(|e| RaTlsError::Build(e.to_string()))?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let claims = build_claims(&spki)?;
    let claims_rd = report_data_for(&Sha256::digest(&claims));
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let kind = attester.kind();
    let mut exts = Vec::new();
    match kind {
        EvidenceKind::SgxDcap => {
            dn.push(DnType::CommonName, GRAMINE_CN);
            dn.push(DnType::OrganizationName, "GramineDevelopers");
            dn.push(DnType::CountryName, "US");
            let q_tcg = attester.attest(&claims_rd)?;
            exts.push(CustomExtension::from_oid_content(
                &TCG_EVIDENCE_OID_ARCS,
                build_tagged_evidence(CBOR_TAG_INTEL_QUOTE, &q_tcg, &claims)?,
            ));
            let q_legacy = attester.attest(&report_data_for(&Sha256::digest(&spki)))?;
            exts.push(CustomExtension::from_oid_content(&LEGACY_OID_ARCS, q_legacy));
        }
        EvidenceKind::Simulated => {
            dn.push(DnType::CommonName, SIM_CN);
            dn.push(DnType::OrganizationName, "pfs");
            dn.push(DnType::CountryName, "US");
            let report = attester.attest(&claims_rd)?;
            exts.push(CustomExtension::from_oid_content(
                &TCG_EVIDENCE_OID_ARCS,
                build_tagged_evidence(SIM_EVIDENCE_TAG, &report, &claims)?,
            ));
        }
    }
    params.distinguished_name = dn;
    params.not_before = rcgen::date_time_ymd(2001, 1, 1);
    params.not_after = rcgen::date_time_ymd(2030, 12, 31) + std::time::Duration::from_secs(86_399);
    params.serial_number = Some(SerialNumber::from(vec![1u8]));
    params.is_ca = IsCa::ExplicitNoCa;
    params.custom_extensions = exts;
    let cert = params.self_signed(&key).map_err(|e| RaTlsError::Build(e.to_string()))?;
    Ok(RaTlsCertificate { cert: cert.der().clone(), key: PrivatePkcs8KeyDer::from(key.serialize_der()) })
}
