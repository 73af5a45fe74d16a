//! CBOR decoding of RA-TLS evidence: the TCG DICE tagged-evidence extension value
//! (`parse_tagged_evidence`), the claims map (`claims_pubkey_hash`,
//! `check_claims_binding`) and the simulated report (`SimVerifier::verify_simulated`).
//! The first input byte selects the decoder. Seeds: Gramine's evidence and claims,
//! generated simulated reports, hostile nesting and lengths.
#![no_main]

use attest::dcap::unix_time;
use attest::ratls::{
    CertEvidence, SimulatedEvidenceVerifier, check_claims_binding, claims_pubkey_hash, parse_tagged_evidence,
};
use attest::sim::SimVerifier;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 3 {
        0 => {
            if let Ok(ev) = parse_tagged_evidence(bytes) {
                let claims = match &ev {
                    CertEvidence::TcgDice { claims, .. } | CertEvidence::Simulated { claims, .. } => claims,
                    CertEvidence::Legacy { .. } => panic!("tagged evidence decoded as legacy"),
                    _ => return,
                };
                let _ = claims_pubkey_hash(claims);
            }
        }
        1 => {
            if let Ok((_alg, hash)) = claims_pubkey_hash(bytes) {
                let _ = hash.len();
            }
            let _ = check_claims_binding(b"spki", bytes, &[0u8; 64]);
        }
        _ => {
            if let Ok(ev) = SimVerifier::dangerous_new().verify_simulated(bytes, unix_time(1_755_300_000)) {
                assert!(ev.identity().debug, "simulated evidence must always be debug");
            }
        }
    }
});
