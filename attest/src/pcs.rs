//! Collateral from an Intel PCS-compatible endpoint (Intel PCS or a PCCS),
//! API version 4, and its verification before use.
//!
//! Requests (`{base}` is the configured `pccs_url`):
//!
//! | item | request | issuer chain |
//! | --- | --- | --- |
//! | TCB info | `GET {base}/sgx/certification/v4/tcb?fmspc=FMSPC` → `{"tcbInfo":…,"signature":HEX}` | header `TCB-Info-Issuer-Chain` (v3 name `SGX-TCB-Info-Issuer-Chain` also accepted) |
//! | QE identity | `GET {base}/sgx/certification/v4/qe/identity` → `{"enclaveIdentity":…,"signature":HEX}` | header `SGX-Enclave-Identity-Issuer-Chain` |
//! | PCK CRL | `GET {base}/sgx/certification/v4/pckcrl?ca=processor\|platform&encoding=der` → DER | header `SGX-PCK-CRL-Issuer-Chain` |
//! | Root CA CRL | `GET {base}/sgx/certification/v4/rootcacrl` (PCCS; DER or hex) or, for Intel PCS, the Root CA's distribution point `https://certificates.trustedservices.intel.com/IntelSGXRootCA.der` | signed by the pinned root |
//!
//! Issuer chains are URL-encoded PEM (signer first, Intel SGX Root CA last).
//! The signed JSON objects are kept byte for byte (their signatures cover
//! the exact bytes). [`check_collateral`] verifies a set before it is used:
//! every chain ends in the **pinned** Intel SGX Root CA
//! ([`crate::dcap::INTEL_ROOT_CA_SHA256`]; [`check_collateral_with_root`] takes
//! another [`RootCa`] for a test or private PKI), every signature (certificates,
//! both CRLs, TCB info, QE identity) verifies, no certificate is revoked by the
//! Root CA CRL, everything is valid at `now`, the TCB info is for the
//! requested FMSPC, and the PCK CRL is issued by the requested CA.

use std::path::Path;
use std::time::Duration;

use dcap_qvl::QuoteCollateralV3;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_parser::prelude::*;

use crate::dcap::RootCa;

/// Intel's own PCS (its Root CA CRL is served from [`INTEL_ROOT_CA_CRL_URL`]).
pub const INTEL_PCS_URL: &str = "https://api.trustedservices.intel.com";
/// Distribution point of the Intel SGX Root CA's CRL.
pub const INTEL_ROOT_CA_CRL_URL: &str = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der";
/// Issuer-chain header of TCB info in API v4 (v3 used [`TCB_INFO_ISSUER_CHAIN_V3`]).
pub const TCB_INFO_ISSUER_CHAIN: &str = "TCB-Info-Issuer-Chain";
/// Issuer-chain header of TCB info in API v3.
pub const TCB_INFO_ISSUER_CHAIN_V3: &str = "SGX-TCB-Info-Issuer-Chain";
/// Issuer-chain header of the QE identity.
pub const QE_IDENTITY_ISSUER_CHAIN: &str = "SGX-Enclave-Identity-Issuer-Chain";
/// Issuer-chain header of the PCK CRL.
pub const PCK_CRL_ISSUER_CHAIN: &str = "SGX-PCK-CRL-Issuer-Chain";
/// Largest response accepted from the endpoint (TCB info is a few tens of KiB).
const MAX_RESPONSE: usize = 4 << 20;

/// Which Intel CA issued the platform's PCK certificate (and so which PCK CRL applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PckCa {
    /// "Intel SGX PCK Processor CA" (most single-socket platforms).
    Processor,
    /// "Intel SGX PCK Platform CA" (multi-package and server platforms).
    Platform,
}

impl PckCa {
    /// The `ca=` query value.
    pub fn as_str(self) -> &'static str {
        match self {
            PckCa::Processor => "processor",
            PckCa::Platform => "platform",
        }
    }
    fn issuer_cn(self) -> &'static str {
        match self {
            PckCa::Processor => "Intel SGX PCK Processor CA",
            PckCa::Platform => "Intel SGX PCK Platform CA",
        }
    }
}

impl std::str::FromStr for PckCa {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "processor" => Ok(PckCa::Processor),
            "platform" => Ok(PckCa::Platform),
            other => Err(format!("unknown PCK CA {other:?}; expected \"processor\" or \"platform\"")),
        }
    }
}

/// One platform whose collateral is fetched: its FMSPC and its PCK CA.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    /// FMSPC, 12 uppercase hex characters.
    pub fmspc: String,
    /// The PCK CA.
    pub ca: PckCa,
}

impl Platform {
    /// Validates and normalises an FMSPC (6 bytes in hex).
    pub fn new(fmspc: &str, ca: PckCa) -> Result<Self, String> {
        if fmspc.len() != 12 || !fmspc.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("FMSPC {fmspc:?} is not 12 hex characters (6 bytes)"));
        }
        Ok(Self { fmspc: fmspc.to_ascii_uppercase(), ca })
    }
    /// A file name for this platform's cached set: `FMSPC-CA.json`.
    pub fn cache_file_name(&self) -> String {
        format!("{}-{}.json", self.fmspc, self.ca.as_str())
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FMSPC {} ({} CA)", self.fmspc, self.ca.as_str())
    }
}

/// Fetch and verification errors. Each names the URL or the item.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PcsError {
    /// The HTTP client could not be built (bad CA file, bad URL).
    #[error("collateral endpoint {url}: {reason}")]
    Setup {
        /// The endpoint.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A request failed or was answered with an error status.
    #[error("GET {url}: {reason}")]
    Http {
        /// The request.
        url: String,
        /// Status or transport error.
        reason: String,
    },
    /// A response is malformed (missing header, bad JSON, bad hex).
    #[error("GET {url}: {reason}")]
    Malformed {
        /// The request.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The fetched set failed verification; the previous set stays in use.
    #[error("collateral for {platform} refused: {reason}")]
    Refused {
        /// The platform.
        platform: String,
        /// Which check failed.
        reason: String,
    },
}

/// The validity of a verified set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Latest issue/thisUpdate time of its parts (Unix seconds).
    pub issued: u64,
    /// Earliest nextUpdate (or certificate notAfter) of its parts (Unix seconds).
    pub next_update: u64,
    /// TCB info `issueDate` (used to refuse a roll-back to an older set).
    pub tcb_info_issued: u64,
}

/// An HTTPS client for one PCS/PCCS endpoint.
#[derive(Debug, Clone)]
pub struct PcsClient {
    base: String,
    root_crl_url: String,
    http: reqwest::Client,
}

impl PcsClient {
    /// A client for `base_url` (e.g. `https://pccs.example:8081`), trusting the
    /// Mozilla roots plus, if given, the CA certificates in `extra_ca` (a PCCS
    /// usually has a private CA).
    pub fn new(base_url: &str, extra_ca: Option<&Path>, timeout: Duration) -> Result<Self, PcsError> {
        let setup = |reason: String| PcsError::Setup { url: base_url.to_string(), reason };
        let base = base_url.trim_end_matches('/').trim_end_matches("/sgx/certification/v4").to_string();
        if !base.starts_with("https://") {
            return Err(setup("must be an https:// URL".into()));
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = extra_ca {
            for c in crate::tls::load_certs(ca).map_err(|e| setup(e.to_string()))? {
                roots.add(c).map_err(|e| setup(format!("CA file {}: {e}", ca.display())))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| setup(e.to_string()))?;
        let root_crl_url = if base.starts_with(INTEL_PCS_URL) {
            INTEL_ROOT_CA_CRL_URL.to_string()
        } else {
            format!("{base}/sgx/certification/v4/rootcacrl")
        };
        Ok(Self { base, root_crl_url, http })
    }

    /// The endpoint's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn get(&self, url: &str) -> Result<(reqwest::header::HeaderMap, Vec<u8>), PcsError> {
        let http = |reason: String| PcsError::Http { url: url.to_string(), reason };
        let resp = self.http.get(url).send().await.map_err(|e| http(format!("{e:#}")))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(http(format!("HTTP {status}")));
        }
        if resp.content_length().is_some_and(|l| l > MAX_RESPONSE as u64) {
            return Err(http(format!("response larger than {MAX_RESPONSE} bytes")));
        }
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| http(format!("reading the body: {e:#}")))?;
        if body.len() > MAX_RESPONSE {
            return Err(http(format!("response larger than {MAX_RESPONSE} bytes")));
        }
        Ok((headers, body.to_vec()))
    }

    /// Fetches the collateral for `platform`. Nothing is verified here: see [`check_collateral`].
    pub async fn fetch(&self, platform: &Platform) -> Result<QuoteCollateralV3, PcsError> {
        let v4 = format!("{}/sgx/certification/v4", self.base);
        let url = format!("{v4}/pckcrl?ca={}&encoding=der", platform.ca.as_str());
        let (h, body) = self.get(&url).await?;
        let pck_crl_issuer_chain = chain_header(&h, &[PCK_CRL_ISSUER_CHAIN], &url)?;
        let pck_crl = der_or_hex(body, &url)?;

        let url = format!("{v4}/tcb?fmspc={}", platform.fmspc);
        let (h, body) = self.get(&url).await?;
        let tcb_info_issuer_chain =
            chain_header(&h, &[TCB_INFO_ISSUER_CHAIN, TCB_INFO_ISSUER_CHAIN_V3], &url)?;
        let (tcb_info, tcb_info_signature) = signed_json(&body, "tcbInfo", &url)?;

        let url = format!("{v4}/qe/identity");
        let (h, body) = self.get(&url).await?;
        let qe_identity_issuer_chain = chain_header(&h, &[QE_IDENTITY_ISSUER_CHAIN], &url)?;
        let (qe_identity, qe_identity_signature) = signed_json(&body, "enclaveIdentity", &url)?;

        let url = self.root_crl_url.clone();
        let (_, body) = self.get(&url).await?;
        let root_ca_crl = der_or_hex(body, &url)?;
        Ok(QuoteCollateralV3 {
            pck_crl_issuer_chain,
            root_ca_crl,
            pck_crl,
            tcb_info_issuer_chain,
            tcb_info,
            tcb_info_signature,
            qe_identity_issuer_chain,
            qe_identity,
            qe_identity_signature,
            pck_certificate_chain: None,
        })
    }
}

fn chain_header(h: &reqwest::header::HeaderMap, names: &[&str], url: &str) -> Result<String, PcsError> {
    let malformed = |reason: String| PcsError::Malformed { url: url.to_string(), reason };
    let v = names
        .iter()
        .find_map(|n| h.get(*n))
        .ok_or_else(|| malformed(format!("response has no {} header", names[0])))?;
    let v = v.to_str().map_err(|_| malformed(format!("{} header is not ASCII", names[0])))?;
    percent_encoding::percent_decode_str(v)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| malformed(format!("{} header is not URL-encoded UTF-8", names[0])))
}

/// PCS returns DER; some PCCS versions return the DER as hex text.
fn der_or_hex(body: Vec<u8>, url: &str) -> Result<Vec<u8>, PcsError> {
    if body.first() == Some(&0x30) {
        return Ok(body);
    }
    let text = std::str::from_utf8(&body).unwrap_or("").trim();
    hex::decode(text).map_err(|_| PcsError::Malformed {
        url: url.to_string(),
        reason: "CRL is neither DER nor hex-encoded DER".into(),
    })
}

/// Extracts the exact bytes of `body[field]` and the hex `signature`.
fn signed_json(body: &[u8], field: &str, url: &str) -> Result<(String, Vec<u8>), PcsError> {
    let malformed = |reason: String| PcsError::Malformed { url: url.to_string(), reason };
    let map: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
        serde_json::from_slice(body).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let inner = map.get(field).ok_or_else(|| malformed(format!("no \"{field}\" member")))?;
    let sig = map.get("signature").ok_or_else(|| malformed("no \"signature\" member".into()))?;
    let sig: String =
        serde_json::from_str(sig.get()).map_err(|_| malformed("\"signature\" is not a string".into()))?;
    let sig = hex::decode(&sig).map_err(|_| malformed("\"signature\" is not hex".into()))?;
    Ok((inner.get().to_string(), sig))
}

/// Parses an RFC 3339 UTC time as Intel writes it (`2025-08-15T05:41:26Z`, optional
/// fraction) into Unix seconds.
fn parse_utc(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !s.ends_with('Z') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedBody {
    id: String,
    version: u32,
    issue_date: String,
    next_update: String,
    #[serde(default)]
    fmspc: Option<String>,
}

/// A parsed chain: (DER of each certificate), signer first, root last.
fn pem_chain(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} issuer chain is not PEM: {e}"))?;
    if certs.len() < 2 {
        return Err(format!(
            "{what} issuer chain has {} certificate(s), expected signer and root",
            certs.len()
        ));
    }
    Ok(certs)
}

struct Window {
    issued: u64,
    next_update: u64,
}

impl Window {
    fn narrow(&mut self, from: i64, to: i64) {
        self.issued = self.issued.max(u64::try_from(from).unwrap_or(0));
        self.next_update = self.next_update.min(u64::try_from(to).unwrap_or(0));
    }
}

/// Verifies a chain up to the pinned root at `now`, checking revocation of the
/// non-root certificates against `revoked` (serials from the Root CA CRL).
fn check_chain(
    chain: &[CertificateDer<'_>],
    what: &str,
    anchor: &RootCa,
    now: u64,
    revoked: &[Vec<u8>],
    w: &mut Window,
) -> Result<(), String> {
    let root = chain.last().ok_or_else(|| format!("{what} issuer chain is empty"))?;
    let fp = hex::encode(Sha256::digest(root.as_ref()));
    if fp != anchor.sha256() {
        let name = if anchor.is_intel() { "the pinned Intel SGX Root CA" } else { "the configured root CA" };
        return Err(format!(
            "{what} issuer chain does not end in {name} (SHA-256 {}; found SHA-256 {fp})",
            anchor.sha256()
        ));
    }
    let parsed = chain
        .iter()
        .map(|c| X509Certificate::from_der(c).map(|(_, x)| x))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} issuer chain: certificate does not parse: {e}"))?;
    for (i, cert) in parsed.iter().enumerate() {
        let issuer = parsed.get(i + 1).unwrap_or(cert);
        cert.verify_signature(Some(issuer.public_key())).map_err(|e| {
            format!("{what} issuer chain: signature of {} does not verify: {e}", cert.subject())
        })?;
        let (nb, na) = (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp());
        if (now as i64) < nb || (now as i64) > na {
            return Err(format!(
                "{what} issuer chain: {} is not valid at {now} ({nb}..{na})",
                cert.subject()
            ));
        }
        w.narrow(nb, na);
        if i + 1 < parsed.len() && revoked.iter().any(|s| s.as_slice() == cert.raw_serial()) {
            return Err(format!("{what} issuer chain: {} is revoked by the Root CA CRL", cert.subject()));
        }
    }
    Ok(())
}

fn check_crl(
    der: &[u8],
    name: &str,
    signer: &X509Certificate<'_>,
    now: u64,
    w: &mut Window,
) -> Result<Vec<Vec<u8>>, String> {
    let (_, crl) = parse_x509_crl(der).map_err(|e| format!("{name} does not parse: {e}"))?;
    crl.verify_signature(signer.public_key())
        .map_err(|e| format!("{name} signature does not verify with {}: {e}", signer.subject()))?;
    let this = crl.last_update().timestamp();
    let next = crl.next_update().ok_or_else(|| format!("{name} has no nextUpdate"))?.timestamp();
    if (now as i64) < this || (now as i64) > next {
        return Err(format!("{name} is not valid at {now} (thisUpdate {this}, nextUpdate {next})"));
    }
    w.narrow(this, next);
    Ok(crl.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()).collect())
}

fn check_signed_json(
    body: &str,
    sig: &[u8],
    chain: &[CertificateDer<'_>],
    what: &str,
    id: &str,
    now: u64,
    w: &mut Window,
) -> Result<SignedBody, String> {
    let (_, signer) = X509Certificate::from_der(&chain[0]).map_err(|e| format!("{what} signer: {e}"))?;
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        signer.public_key().subject_public_key.data.as_ref(),
    );
    key.verify(body.as_bytes(), sig)
        .map_err(|_| format!("{what} signature does not verify with {}", signer.subject()))?;
    let b: SignedBody = serde_json::from_str(body).map_err(|e| format!("{what} JSON: {e}"))?;
    if b.id != id {
        return Err(format!("{what} has id {:?}, expected {id:?}", b.id));
    }
    let issued =
        parse_utc(&b.issue_date).ok_or_else(|| format!("{what} issueDate {:?} unreadable", b.issue_date))?;
    let next = parse_utc(&b.next_update)
        .ok_or_else(|| format!("{what} nextUpdate {:?} unreadable", b.next_update))?;
    if now < issued || now > next {
        return Err(format!(
            "{what} is not valid at {now} (issueDate {}, nextUpdate {})",
            b.issue_date, b.next_update
        ));
    }
    w.narrow(issued as i64, next as i64);
    Ok(b)
}

/// Verifies a collateral set for `platform` at `now` (Unix seconds) against the
/// Intel SGX Root CA: see the module doc.
pub fn check_collateral(c: &QuoteCollateralV3, platform: &Platform, now: u64) -> Result<Validity, String> {
    check_collateral_with_root(c, platform, now, &RootCa::intel())
}

/// [`check_collateral`] with another trust anchor (a test or private PKI).
pub fn check_collateral_with_root(
    c: &QuoteCollateralV3,
    platform: &Platform,
    now: u64,
    anchor: &RootCa,
) -> Result<Validity, String> {
    let mut w = Window { issued: 0, next_update: u64::MAX };
    let tcb_chain = pem_chain(&c.tcb_info_issuer_chain, "TCB info")?;
    let qe_chain = pem_chain(&c.qe_identity_issuer_chain, "QE identity")?;
    let crl_chain = pem_chain(&c.pck_crl_issuer_chain, "PCK CRL")?;
    let root_der = tcb_chain.last().ok_or("empty chain")?;
    let (_, root) = X509Certificate::from_der(root_der).map_err(|e| format!("root: {e}"))?;
    // The root is pinned by fingerprint in check_chain; verify its CRL first.
    check_chain(&tcb_chain[tcb_chain.len() - 1..], "root", anchor, now, &[], &mut w)?;
    let revoked = check_crl(&c.root_ca_crl, "Root CA CRL", &root, now, &mut w)?;
    check_chain(&tcb_chain, "TCB info", anchor, now, &revoked, &mut w)?;
    check_chain(&qe_chain, "QE identity", anchor, now, &revoked, &mut w)?;
    check_chain(&crl_chain, "PCK CRL", anchor, now, &revoked, &mut w)?;
    let (_, pck_ca) = X509Certificate::from_der(&crl_chain[0]).map_err(|e| format!("PCK CA: {e}"))?;
    let cn = pck_ca.subject().iter_common_name().next().and_then(|n| n.as_str().ok()).unwrap_or("");
    if cn != platform.ca.issuer_cn() {
        return Err(format!("PCK CRL is issued by {cn:?}, expected {:?}", platform.ca.issuer_cn()));
    }
    check_crl(&c.pck_crl, "PCK CRL", &pck_ca, now, &mut w)?;
    let tcb =
        check_signed_json(&c.tcb_info, &c.tcb_info_signature, &tcb_chain, "TCB info", "SGX", now, &mut w)?;
    if !(2..=3).contains(&tcb.version) {
        return Err(format!("TCB info version {} is not supported (2 or 3)", tcb.version));
    }
    match &tcb.fmspc {
        Some(f) if f.eq_ignore_ascii_case(&platform.fmspc) => {}
        other => return Err(format!("TCB info is for FMSPC {other:?}, expected {}", platform.fmspc)),
    }
    let tcb_info_issued = parse_utc(&tcb.issue_date).unwrap_or(0);
    let qe = check_signed_json(
        &c.qe_identity,
        &c.qe_identity_signature,
        &qe_chain,
        "QE identity",
        "QE",
        now,
        &mut w,
    )?;
    if qe.version != 2 {
        return Err(format!("QE identity version {} is not supported (2)", qe.version));
    }
    Ok(Validity { issued: w.issued, next_update: w.next_update, tcb_info_issued })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intel_times_parse() {
        assert_eq!(parse_utc("2025-08-15T05:41:26Z"), Some(1_755_236_486));
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc("2024-02-29T12:00:00.123Z"), Some(1_709_208_000));
        for bad in ["", "2025-08-15 05:41:26Z", "2025-13-01T00:00:00Z", "2025-08-15T05:41:26+01:00"] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn fmspc_is_checked_and_normalised() {
        assert_eq!(Platform::new("00606a000000", PckCa::Platform).unwrap().fmspc, "00606A000000");
        assert!(Platform::new("00606A0000", PckCa::Platform).is_err());
        assert!(Platform::new("00606A00000G", PckCa::Platform).is_err());
    }
}
