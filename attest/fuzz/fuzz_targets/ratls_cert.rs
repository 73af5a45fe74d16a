//! RA-TLS certificates as a key server receives them: `ratls::parse_certificate` and
//! the full `RaTlsVerifier::verify_certificate` (X.509 and extension parsing, CBOR
//! evidence, DCAP quote verification against the committed collateral of the public
//! vectors, claims binding; simulated evidence through `SimVerifier`) at the vectors'
//! verification time. Seeds: Gramine's real RA-TLS certificate and generated ones.
#![no_main]

use std::sync::{Arc, LazyLock};

use attest::dcap::unix_time;
use attest::ratls::{RaTlsVerifier, parse_certificate};
use attest::sim::SimVerifier;
use attest::{Collateral, DcapVerifier};
use libfuzzer_sys::fuzz_target;

/// `verification_time_unix` of `tests/vectors/dcap/gramine-ratls/expected.json`.
const GRAMINE_TIME: u64 = 1_755_300_000;

static VERIFIER: LazyLock<RaTlsVerifier> = LazyLock::new(|| {
    let collateral = vec![
        Collateral::from_json(include_bytes!("../collateral/gramine-ratls.json"), "gramine-ratls").unwrap(),
        Collateral::from_json(include_bytes!("../collateral/phala-sgx-v3.json"), "phala-sgx-v3").unwrap(),
    ];
    RaTlsVerifier::new(Arc::new(DcapVerifier::new(collateral)))
        .dangerous_with_simulated(Arc::new(SimVerifier::dangerous_new()))
});

fuzz_target!(|data: &[u8]| {
    let parsed = parse_certificate(data);
    let verified = VERIFIER.verify_certificate(data, unix_time(GRAMINE_TIME));
    // Verification parses first: whatever parsing refuses, verification refuses.
    if parsed.is_err() {
        assert!(verified.is_err());
    }
    if let Ok((ev, _format)) = verified {
        let _ = ev.summary();
    }
});
