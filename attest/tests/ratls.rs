//! RA-TLS certificates: the real Gramine certificate, and certificates we build.

mod common;

use std::sync::Arc;

use attest::dcap::unix_time;
use attest::ratls::{self, CertEvidence, Curve, EvidenceFormat, RaTlsError};
use attest::{AttestError, Attester, DcapVerifier, EvidenceKind, RaTlsVerifier};
use common::{collateral, expected, read};

fn gramine_time() -> rustls_pki_types::UnixTime {
    unix_time(expected("gramine-ratls")["verification_time_unix"].as_u64().unwrap())
}

fn dcap_verifier() -> RaTlsVerifier {
    RaTlsVerifier::new(Arc::new(DcapVerifier::new(vec![collateral("gramine-ratls")])))
}

#[test]
fn real_gramine_cert_parses_with_both_extensions() {
    let der = read("gramine-ratls/ratls-cert.der");
    let p = ratls::parse_certificate(&der).expect("Gramine cert parses");
    assert_eq!(p.curve, Curve::P384);
    let exp = expected("gramine-ratls");
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&p.spki_der)),
        exp["certificate"]["spki_sha256"].as_str().unwrap()
    );
    match &p.evidence {
        CertEvidence::TcgDice { quote, claims } => {
            assert_eq!(quote, &read("gramine-ratls/quote_evidence.bin"));
            assert_eq!(claims, &read("gramine-ratls/claims.cbor"));
        }
        other => panic!("TCG evidence must be preferred, got {other:?}"),
    }
    assert_eq!(p.legacy_quote.as_deref(), Some(read("gramine-ratls/quote_legacy.bin").as_slice()));
    // Our claims encoder produces Gramine's bytes exactly.
    assert_eq!(ratls::build_claims(&p.spki_der).unwrap(), read("gramine-ratls/claims.cbor"));
    // And our tagged-evidence encoder reproduces the extension value.
    let CertEvidence::TcgDice { quote, claims } = &p.evidence else { unreachable!() };
    assert_eq!(
        ratls::build_tagged_evidence(60000, quote, claims).unwrap(),
        read("gramine-ratls/tcg_dice_tagged_evidence.cbor")
    );
}

#[test]
fn real_gramine_cert_verifies_and_binds() {
    let der = read("gramine-ratls/ratls-cert.der");
    let (ev, fmt) = dcap_verifier().verify_certificate(&der, gramine_time()).expect("verifies");
    assert_eq!(fmt, EvidenceFormat::TcgDice);
    assert_eq!(ev.tcb_status().as_str(), "OutOfDate");
    assert!(ev.identity().debug);
    let p = ratls::parse_certificate(&der).unwrap();
    // The legacy quote also verifies and binds.
    let v = DcapVerifier::new(vec![collateral("gramine-ratls")]);
    let legacy = v.verify(p.legacy_quote.as_ref().unwrap(), gramine_time()).unwrap();
    ratls::check_legacy_binding(&p.spki_der, legacy.report_data()).expect("legacy binding holds");
    // Swapped quotes do not bind.
    assert!(ratls::check_legacy_binding(&p.spki_der, ev.report_data()).is_err());
    let CertEvidence::TcgDice { claims, .. } = &p.evidence else { unreachable!() };
    assert!(matches!(
        ratls::check_claims_binding(&p.spki_der, claims, legacy.report_data()),
        Err(RaTlsError::Binding { .. })
    ));
}

#[test]
fn real_gramine_cert_fails_outside_window_and_when_tampered() {
    let der = read("gramine-ratls/ratls-cert.der");
    let v = dcap_verifier();
    assert!(v.verify_certificate(&der, unix_time(1_900_000_000)).is_err());
    // Flip a bit inside the claims' pubkey hash (last bytes of the TCG extension value).
    let ext = read("gramine-ratls/tcg_dice_tagged_evidence.cbor");
    let pos = der.windows(ext.len()).position(|w| w == ext.as_slice()).expect("extension inside cert");
    let mut bad = der.clone();
    bad[pos + ext.len() - 1] ^= 1;
    assert!(v.verify_certificate(&bad, gramine_time()).is_err());
    // Garbage never panics.
    for n in [0, 1, 10, 100, 1000, der.len() - 1] {
        assert!(v.verify_certificate(&der[..n], gramine_time()).is_err());
    }
}

/// An "SGX" attester that returns a fixed real quote regardless of REPORTDATA.
struct ReplayAttester(Vec<u8>);
impl Attester for ReplayAttester {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::SgxDcap
    }
    fn attest(&self, _rd: &[u8; 64]) -> Result<Vec<u8>, AttestError> {
        Ok(self.0.clone())
    }
}

#[test]
fn built_sgx_cert_encodes_gramine_extensions_and_replay_fails_binding() {
    let quote = read("gramine-ratls/quote_legacy.bin");
    for curve in [Curve::P256, Curve::P384] {
        let c = ratls::build_certificate(&ReplayAttester(quote.clone()), curve).unwrap();
        let der = c.cert.as_ref();
        // Legacy OID exactly as Gramine encodes it: 06 0B | 06 09 2A 86 48 86 F8 4D 8A 39 06.
        let legacy = [0x06, 0x0B, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF8, 0x4D, 0x8A, 0x39, 0x06];
        assert!(der.windows(legacy.len()).any(|w| w == legacy));
        let tcg = [0x06, 0x06, 0x67, 0x81, 0x05, 0x05, 0x04, 0x09];
        assert!(der.windows(tcg.len()).any(|w| w == tcg));
        let p = ratls::parse_certificate(der).unwrap();
        assert_eq!(p.curve, curve);
        assert!(p.subject.contains("CN=RATLS"));
        assert!(matches!(p.evidence, CertEvidence::TcgDice { .. }));
        // The quote is genuine but bound to another key: rejected.
        let err = dcap_verifier().verify_certificate(der, gramine_time()).unwrap_err();
        assert!(matches!(err, RaTlsError::Binding { .. }), "{err}");
    }
}

#[test]
fn simulated_cert_rejected_by_sgx_only_verifier() {
    // Hand-build a simulated-tag extension without the feature: the verifier must refuse it.
    let ev = ratls::build_tagged_evidence(ratls::SIM_EVIDENCE_TAG, b"report", b"claims").unwrap();
    assert!(matches!(ratls::parse_tagged_evidence(&ev), Ok(CertEvidence::Simulated { .. })));
    let other = ratls::build_tagged_evidence(12345, b"q", b"c").unwrap();
    assert!(matches!(ratls::parse_tagged_evidence(&other), Err(RaTlsError::UnknownTag(12345))));
}

#[cfg(feature = "insecure-sim")]
mod sim {
    use super::*;
    use attest::EnclaveIdentity;
    use attest::sim::{SimAttester, SimVerifier};

    fn identity() -> EnclaveIdentity {
        EnclaveIdentity {
            mrenclave: [0xAA; 32],
            mrsigner: [0xBB; 32],
            isv_prod_id: 7,
            isv_svn: 3,
            attributes: [0x07, 0, 0, 0, 0, 0, 0, 0, 0xE7, 0, 0, 0, 0, 0, 0, 0],
            debug: false,
        }
    }

    #[test]
    fn simulated_cert_round_trip() {
        let att = SimAttester::dangerous_new(identity());
        for curve in [Curve::P256, Curve::P384] {
            let c = ratls::build_certificate(&att, curve).unwrap();
            let der = c.cert.as_ref();
            let legacy = [0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF8, 0x4D, 0x8A, 0x39, 0x06];
            assert!(!der.windows(legacy.len()).any(|w| w == legacy), "never the legacy OID");
            // Tag 60000 is D9 EA 60; it must not appear as the evidence tag.
            let p = ratls::parse_certificate(der).unwrap();
            assert!(p.subject.contains("SIMULATED-INSECURE"));
            assert!(matches!(p.evidence, CertEvidence::Simulated { .. }));
            // Refused without the explicit opt-in.
            assert!(matches!(
                dcap_verifier().verify_certificate(der, gramine_time()),
                Err(RaTlsError::SimulatedNotAccepted(_))
            ));
            let v = dcap_verifier().dangerous_with_simulated(Arc::new(SimVerifier::dangerous_new()));
            let (ev, fmt) = v.verify_certificate(der, gramine_time()).unwrap();
            assert_eq!(fmt, EvidenceFormat::Simulated);
            assert_eq!(ev.tcb_status(), attest::TcbStatus::Simulated);
            assert_eq!(ev.tee(), attest::TeeType::Simulated);
            assert!(ev.identity().debug);
            assert_eq!(ev.identity().mrenclave, [0xAA; 32]);
            assert_eq!(ev.identity().isv_prod_id, 7);
        }
    }
}

#[test]
fn gramine_attester_uses_dev_attestation_and_never_falls_back() {
    use attest::GramineAttester;
    let d = tempfile::tempdir().unwrap();
    let att = GramineAttester::with_dir(d.path());
    // No /dev/attestation at all: an error, not simulation.
    assert!(matches!(att.attest(&[0u8; 64]), Err(AttestError::Io { .. })));
    std::fs::write(d.path().join("attestation_type"), "none").unwrap();
    let err = att.attest(&[0u8; 64]).unwrap_err();
    assert!(matches!(&err, AttestError::NotDcap { found } if found == "none"));
    assert!(err.to_string().contains("no fallback"));
    assert!(ratls::build_certificate(&att, Curve::P384).is_err());
    // With "dcap": REPORTDATA is written, the quote is read.
    std::fs::write(d.path().join("attestation_type"), "dcap\n").unwrap();
    std::fs::write(d.path().join("quote"), read("gramine-ratls/quote_legacy.bin")).unwrap();
    let rd = [0x42u8; 64];
    assert_eq!(att.attest(&rd).unwrap(), read("gramine-ratls/quote_legacy.bin"));
    assert_eq!(std::fs::read(d.path().join("user_report_data")).unwrap(), rd.to_vec());
    // A certificate built this way carries REPORTDATA for its own key; it was
    // written last for the legacy extension: SHA-256(SPKI) || zeros.
    let c = ratls::build_certificate(&att, Curve::P384).unwrap();
    let p = ratls::parse_certificate(c.cert.as_ref()).unwrap();
    use sha2::Digest;
    let urd = std::fs::read(d.path().join("user_report_data")).unwrap();
    assert_eq!(&urd[..32], sha2::Sha256::digest(&p.spki_der).as_slice());
    assert_eq!(&urd[32..], &[0u8; 32]);
}

#[test]
fn real_gramine_cert_is_usable_for_tls_signature_checks() {
    // The key server checks the handshake signature through rustls-webpki, which
    // must parse Gramine's mbedTLS certificate (explicit NULL parameter).
    let der = rustls_pki_types::CertificateDer::from(read("gramine-ratls/ratls-cert.der"));
    let ee = webpki::EndEntityCert::try_from(&der).expect("webpki parses the Gramine cert");
    // A wrong signature is rejected as a signature error, not as a parse error.
    let err = ee
        .verify_signature(
            webpki::ring::ECDSA_P384_SHA384,
            b"message",
            &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01],
        )
        .unwrap_err();
    assert!(format!("{err:?}").contains("InvalidSignatureForPublicKey"), "{err:?}");
}

#[test]
fn gramine_key_install() {
    use attest::GramineAttester;
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("keys")).unwrap();
    let att = GramineAttester::with_dir(d.path());
    att.install_key("default", &[7u8; 16]).unwrap();
    assert_eq!(std::fs::read(d.path().join("keys/default")).unwrap(), vec![7u8; 16]);
    for bad in ["", "_sgx_mrenclave", "../x", "a/b", ".."] {
        assert!(att.install_key(bad, &[0u8; 16]).is_err(), "{bad:?}");
    }
}

#[test]
fn non_ec_keys_are_refused() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let claims = ratls::build_claims(&spki).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        &ratls::TCG_EVIDENCE_OID_ARCS,
        ratls::build_tagged_evidence(60000, &read("gramine-ratls/quote_evidence.bin"), &claims).unwrap(),
    )];
    let cert = params.self_signed(&key).unwrap();
    let err = ratls::parse_certificate(cert.der()).unwrap_err();
    assert!(matches!(err, RaTlsError::UnsupportedKey(_)), "{err}");
}

#[test]
fn hand_made_simulated_cert_is_refused_without_opt_in() {
    // Built by hand so that it also runs in the default build (no SimAttester there).
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let claims = ratls::build_claims(&spki).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, ratls::SIM_CN);
    params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        &ratls::TCG_EVIDENCE_OID_ARCS,
        ratls::build_tagged_evidence(ratls::SIM_EVIDENCE_TAG, b"not a report", &claims).unwrap(),
    )];
    let cert = params.self_signed(&key).unwrap();
    let err = dcap_verifier().verify_certificate(cert.der(), gramine_time()).unwrap_err();
    assert!(matches!(err, RaTlsError::SimulatedNotAccepted(_)), "{err}");
    assert!(err.to_string().contains("SIMULATED-INSECURE"));
}

#[test]
fn hostile_cbor_never_panics_or_overallocates() {
    // tag 60000, array(2), bstr claiming 2^40 bytes with almost none present.
    let huge = [0xD9, 0xEA, 0x60, 0x82, 0x5B, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 1, 2, 3];
    assert!(ratls::parse_tagged_evidence(&huge).is_err());
    // Deep nesting.
    let mut deep = vec![0xD9, 0xEA, 0x60];
    deep.extend(std::iter::repeat_n(0x81u8, 100_000));
    deep.push(0x00);
    assert!(ratls::parse_tagged_evidence(&deep).is_err());
    assert!(ratls::claims_pubkey_hash(&deep[3..]).is_err());
    // Random mutations of the real extension value and claims.
    let ext = read("gramine-ratls/tcg_dice_tagged_evidence.cbor");
    let claims = read("gramine-ratls/claims.cbor");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut e = ext.clone();
        let i = (x as usize) % 40; // the structure lives in the first bytes and the claims at the end
        e[i] ^= (x >> 56) as u8 | 1;
        let _ = ratls::parse_tagged_evidence(&e);
        let mut c = claims.clone();
        let j = (x as usize >> 8) % c.len();
        c[j] ^= (x >> 48) as u8 | 1;
        let _ = ratls::claims_pubkey_hash(&c);
        let _ = ratls::parse_tagged_evidence(&e[..(x as usize >> 16) % e.len()]);
    }
}

#[test]
fn a_duplicated_evidence_extension_is_refused() {
    // RFC 5280 §4.2: a certificate must not include more than one instance of an extension.
    // Two TCG evidence extensions (the real Gramine evidence, then a second copy) must not
    // be resolved by picking one of them.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let claims = ratls::build_claims(&spki).unwrap();
    let ev = ratls::build_tagged_evidence(60000, &read("gramine-ratls/quote_evidence.bin"), &claims).unwrap();
    for oid in [&ratls::TCG_EVIDENCE_OID_ARCS[..], &ratls::LEGACY_OID_ARCS[..]] {
        let mut params = rcgen::CertificateParams::default();
        let value =
            if oid == ratls::LEGACY_OID_ARCS { read("gramine-ratls/quote_legacy.bin") } else { ev.clone() };
        params.custom_extensions = vec![
            rcgen::CustomExtension::from_oid_content(oid, value.clone()),
            rcgen::CustomExtension::from_oid_content(oid, value),
        ];
        let cert = params.self_signed(&key).unwrap();
        let err = ratls::parse_certificate(cert.der()).unwrap_err();
        assert!(matches!(err, RaTlsError::DuplicateExtension(_)), "{err}");
        assert!(err.to_string().contains("more than once"), "{err}");
    }
}
