//! A test SGX PKI: a root CA of our own, a TCB signing certificate, a PCK CA
//! and a PCK certificate, collateral signed by them with chosen validity, and
//! SGX DCAP v3 quotes signed through that PCK chain.
//!
//! Why it exists: the repository holds one Intel-signed collateral set, so a
//! *fresh* set (a later `nextUpdate`) cannot be shown with Intel's keys. Here
//! every signature is real ECDSA P-256 and every chain is verified (by
//! dcap-qvl and by the refresher) up to the test root, which the key server
//! is told to trust with `[attestation] root_ca`.
//!
//! What is copied from the real Gramine vector set, so that the semantics are
//! Intel's and not invented here: the PCK certificate's SGX extension (FMSPC
//! 00606A000000, CPUSVN, PCESVN), the TCB info and QE identity bodies (only
//! `issueDate`/`nextUpdate` are rewritten), and the quote's header, enclave
//! report and QE report (only REPORTDATA and the keys that sign change).
//! Quote layout: spec/ (v3: header 48, report 384, signature data length,
//! ECDSA signature 64, attestation key 64, QE report 384, QE report signature
//! 64, QE auth data, certification data type 5 = PEM PCK chain).
#![allow(dead_code)]

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension, DistinguishedName,
    DnType, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use sha2::{Digest, Sha256};

/// OID of Intel's SGX extension in a PCK certificate.
const SGX_EXT_OID: [u64; 7] = [1, 2, 840, 113741, 1, 13, 1];

fn t(secs: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap()
}

/// Intel's time format, `2025-08-15T05:41:26Z`.
pub fn intel_time(secs: u64) -> String {
    let d = t(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

impl Ca {
    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

fn params(cn: &str, ca: bool, serial: u8) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "pfs test PKI (not Intel)");
    dn.push(DnType::CountryName, "US");
    p.distinguished_name = dn;
    // Wide validity: the collateral's own dates are what the tests move across.
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2040, 1, 1);
    p.serial_number = Some(SerialNumber::from(vec![serial]));
    p.key_identifier_method = KeyIdMethod::Sha256;
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    } else {
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::ContentCommitment];
    }
    p
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

/// A ring signer (fixed r||s, as Intel's JSON and quote signatures are) for an rcgen key.
fn signer(k: &KeyPair) -> EcdsaKeyPair {
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &k.serialize_der(), &SystemRandom::new())
        .unwrap()
}

fn sign(k: &EcdsaKeyPair, msg: &[u8]) -> Vec<u8> {
    k.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec()
}

fn pem(der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap());
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

fn base64_encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The test PKI and the real vector set's templates.
pub struct TestPki {
    root: Ca,
    tcb_signer: Ca,
    pck_ca: Ca,
    pck_key: KeyPair,
    pck_der: Vec<u8>,
    tcb_info_template: String,
    qe_identity_template: String,
    quote_template: Vec<u8>,
}

/// One signed collateral set, as a PCS serves it and as dcap-qvl takes it.
#[derive(Clone)]
pub struct SignedSet {
    /// `{"tcbInfo":…,"signature":…}` as served.
    pub tcb_info_body: Vec<u8>,
    /// `{"enclaveIdentity":…,"signature":…}` as served.
    pub qe_identity_body: Vec<u8>,
    /// PCK CRL (DER).
    pub pck_crl: Vec<u8>,
    /// Root CA CRL (DER).
    pub root_ca_crl: Vec<u8>,
    /// TCB signing chain (PEM, signer then root) for TCB info and QE identity.
    pub tcb_chain: String,
    /// PCK CA chain (PEM, PCK CA then root) for the PCK CRL.
    pub pck_crl_chain: String,
    /// The same set in dcap-qvl's layout (a static collateral file).
    pub qvl_json: Vec<u8>,
}

/// Replaces the value of `"key":"…"` in a JSON text (the first occurrence).
fn set_json_str(json: &str, key: &str, value: &str) -> String {
    let pat = format!("\"{key}\":\"");
    let at = json.find(&pat).unwrap_or_else(|| panic!("{key} in template")) + pat.len();
    let end = at + json[at..].find('"').unwrap();
    format!("{}{value}{}", &json[..at], &json[end..])
}

impl TestPki {
    /// A fresh PKI (new keys each time) with the Gramine vector set's templates.
    pub fn new() -> Self {
        let mk = |cn: &str, serial: u8, issuer: Option<&Ca>| {
            let key = p256();
            let params = params(cn, true, serial);
            let der = match issuer {
                None => params.self_signed(&key).unwrap().der().to_vec(),
                Some(i) => params.signed_by(&key, &i.issuer()).unwrap().der().to_vec(),
            };
            Ca { params, key, der }
        };
        let root = mk("pfs Test SGX Root CA", 1, None);
        // Its CN must say "Platform CA": the PCK CA kind is read from the issuer name.
        let pck_ca = mk("Intel SGX PCK Platform CA", 2, Some(&root));
        let tcb_key = p256();
        let tcb_params = params("pfs Test SGX TCB Signing", false, 3);
        let tcb_der = tcb_params.signed_by(&tcb_key, &root.issuer()).unwrap().der().to_vec();
        let tcb_signer = Ca { params: tcb_params, key: tcb_key, der: tcb_der };

        let quote_template = super::read("gramine-ratls/quote_evidence.bin");
        let real_pck = real_pck_leaf(&quote_template);
        let (_, real) = x509_parser::parse_x509_certificate(&real_pck).unwrap();
        let sgx_ext = real
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.2.840.113741.1.13.1")
            .expect("real PCK certificate has the SGX extension")
            .value
            .to_vec();
        let pck_key = p256();
        let mut pck_params = params("Intel SGX PCK Certificate", false, 4);
        pck_params.custom_extensions = vec![CustomExtension::from_oid_content(&SGX_EXT_OID, sgx_ext)];
        let pck_der = pck_params.signed_by(&pck_key, &pck_ca.issuer()).unwrap().der().to_vec();

        let body = |f: &str, field: &str| {
            let v = super::read(&format!("gramine-ratls/{f}"));
            let map: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
                serde_json::from_slice(&v).unwrap();
            map[field].get().to_string()
        };
        Self {
            root,
            tcb_signer,
            pck_ca,
            pck_key,
            pck_der,
            tcb_info_template: body("tcb_info.json", "tcbInfo"),
            qe_identity_template: body("qe_identity.json", "enclaveIdentity"),
            quote_template,
        }
    }

    /// The test root CA (DER), for `[attestation] root_ca`.
    pub fn root_der(&self) -> &[u8] {
        &self.root.der
    }

    /// A collateral set valid from `issued` to `next_update` (TCB info, QE
    /// identity and both CRLs), with `crl_number`.
    pub fn collateral(&self, issued: u64, next_update: u64, crl_number: u8) -> SignedSet {
        let tcb_signer = signer(&self.tcb_signer.key);
        let dated = |tpl: &str| {
            set_json_str(
                &set_json_str(tpl, "issueDate", &intel_time(issued)),
                "nextUpdate",
                &intel_time(next_update),
            )
        };
        let tcb_info = dated(&self.tcb_info_template);
        let qe_identity = dated(&self.qe_identity_template);
        let tcb_sig = sign(&tcb_signer, tcb_info.as_bytes());
        let qe_sig = sign(&tcb_signer, qe_identity.as_bytes());
        let crl = |ca: &Ca| {
            CertificateRevocationListParams {
                this_update: t(issued),
                next_update: t(next_update),
                crl_number: SerialNumber::from(vec![crl_number]),
                issuing_distribution_point: None,
                revoked_certs: vec![],
                key_identifier_method: KeyIdMethod::Sha256,
            }
            .signed_by(&ca.issuer())
            .unwrap()
            .der()
            .to_vec()
        };
        let root_ca_crl = crl(&self.root);
        let pck_crl = crl(&self.pck_ca);
        let tcb_chain = format!("{}{}", pem(&self.tcb_signer.der), pem(&self.root.der));
        let pck_crl_chain = format!("{}{}", pem(&self.pck_ca.der), pem(&self.root.der));
        let qvl = dcap_qvl::QuoteCollateralV3 {
            pck_crl_issuer_chain: pck_crl_chain.clone(),
            root_ca_crl: root_ca_crl.clone(),
            pck_crl: pck_crl.clone(),
            tcb_info_issuer_chain: tcb_chain.clone(),
            tcb_info: tcb_info.clone(),
            tcb_info_signature: tcb_sig.clone(),
            qe_identity_issuer_chain: tcb_chain.clone(),
            qe_identity: qe_identity.clone(),
            qe_identity_signature: qe_sig.clone(),
            pck_certificate_chain: None,
        };
        SignedSet {
            tcb_info_body: format!("{{\"tcbInfo\":{tcb_info},\"signature\":\"{}\"}}", hex::encode(&tcb_sig))
                .into_bytes(),
            qe_identity_body: format!(
                "{{\"enclaveIdentity\":{qe_identity},\"signature\":\"{}\"}}",
                hex::encode(&qe_sig)
            )
            .into_bytes(),
            pck_crl,
            root_ca_crl,
            tcb_chain,
            pck_crl_chain,
            qvl_json: serde_json::to_vec(&qvl).unwrap(),
        }
    }

    /// An SGX DCAP v3 quote of the Gramine vector's enclave with `report_data`,
    /// signed by a fresh attestation key certified (QE report) by the test PCK key.
    pub fn quote(&self, report_data: &[u8; 64]) -> Vec<u8> {
        let q = &self.quote_template;
        let mut out = q[..432].to_vec();
        out[368..432].copy_from_slice(report_data);
        let sig_len = u32::from_le_bytes(q[432..436].try_into().unwrap()) as usize;
        let sig = &q[436..436 + sig_len];
        let mut qe_report = sig[128..512].to_vec();
        let auth_len = u16::from_le_bytes(sig[576..578].try_into().unwrap()) as usize;
        let auth = &sig[578..578 + auth_len];

        let attest_pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let attest = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            attest_pkcs8.as_ref(),
            &SystemRandom::new(),
        )
        .unwrap();
        let attest_pub = &attest.public_key().as_ref()[1..]; // x || y, without the 0x04 prefix
        let mut h = Sha256::new();
        h.update(attest_pub);
        h.update(auth);
        qe_report[320..352].copy_from_slice(&h.finalize());
        qe_report[352..384].fill(0);
        let qe_sig = sign(&signer(&self.pck_key), &qe_report);
        let chain = format!("{}{}{}", pem(&self.pck_der), pem(&self.pck_ca.der), pem(&self.root.der));

        let mut sd = Vec::new();
        sd.extend_from_slice(&sign(&attest, &out));
        sd.extend_from_slice(attest_pub);
        sd.extend_from_slice(&qe_report);
        sd.extend_from_slice(&qe_sig);
        sd.extend_from_slice(&(auth_len as u16).to_le_bytes());
        sd.extend_from_slice(auth);
        sd.extend_from_slice(&5u16.to_le_bytes());
        sd.extend_from_slice(&(chain.len() as u32).to_le_bytes());
        sd.extend_from_slice(chain.as_bytes());
        out.extend_from_slice(&(sd.len() as u32).to_le_bytes());
        out.extend_from_slice(&sd);
        out
    }
}

/// The PCK leaf (DER) in a real quote's certification data (type 5, PEM chain).
fn real_pck_leaf(q: &[u8]) -> Vec<u8> {
    let sig = &q[436..];
    let auth_len = u16::from_le_bytes(sig[576..578].try_into().unwrap()) as usize;
    let cd = &sig[578 + auth_len..];
    assert_eq!(u16::from_le_bytes(cd[..2].try_into().unwrap()), 5, "certification data type 5");
    let len = u32::from_le_bytes(cd[2..6].try_into().unwrap()) as usize;
    let pem = &cd[6..6 + len];
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem).next().unwrap().unwrap().to_vec()
}

/// An attester that produces test-PKI quotes (kind: SGX DCAP).
pub struct TestAttester(pub Arc<TestPki>);

impl attest::Attester for TestAttester {
    fn kind(&self) -> attest::EvidenceKind {
        attest::EvidenceKind::SgxDcap
    }
    fn attest(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, attest::AttestError> {
        Ok(self.0.quote(report_data))
    }
}
