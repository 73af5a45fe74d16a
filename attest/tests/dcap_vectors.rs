//! Real Intel SGX DCAP vectors: every set's expected.json, time windows, bit flips, TDX.

mod common;

use attest::dcap::unix_time;
use attest::quote::QuoteError;
use attest::{DcapVerifier, VerifyError};
use common::{collateral, expected, read};

fn check_against(set: &str, quote_file: &str, quote_key: &str) {
    let exp = expected(set);
    let t = exp["verification_time_unix"].as_u64().unwrap();
    let v = DcapVerifier::new(vec![collateral(set)]);
    let ev = v
        .verify(&read(&format!("{set}/{quote_file}")), unix_time(t))
        .unwrap_or_else(|e| panic!("{set}/{quote_file} must verify: {e}"));
    assert_eq!(ev.tcb_status().as_str(), exp["expected"]["tcb_status"].as_str().unwrap());
    let adv: Vec<String> = exp["expected"]["advisory_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let mut adv_sorted = adv.clone();
    adv_sorted.sort();
    assert_eq!(ev.advisory_ids(), adv_sorted.as_slice());
    let q = &exp[quote_key];
    let s = ev.summary();
    assert_eq!(s.mrenclave, q["mrenclave"].as_str().unwrap());
    assert_eq!(s.mrsigner, q["mrsigner"].as_str().unwrap());
    assert_eq!(u64::from(s.isv_prod_id), q["isv_prod_id"].as_u64().unwrap());
    assert_eq!(u64::from(s.isv_svn), q["isv_svn"].as_u64().unwrap());
    assert_eq!(s.debug, q["debug"].as_bool().unwrap());
    assert_eq!(s.report_data, q["report_data"].as_str().unwrap());
    let flags =
        u64::from_str_radix(q["attributes_flags"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(ev.identity().attribute_flags(), flags);
    assert_eq!(s.tee, "sgx-dcap");
}

#[test]
fn phala_sgx_v3_matches_expected() {
    check_against("phala-sgx-v3", "quote.bin", "quote");
}

#[test]
fn gramine_ratls_quotes_match_expected() {
    check_against("gramine-ratls", "quote_legacy.bin", "quote_legacy");
    check_against("gramine-ratls", "quote_evidence.bin", "quote_evidence");
}

#[test]
fn outside_time_window_fails() {
    for (set, file) in [
        ("phala-sgx-v3", "quote.bin"),
        ("gramine-ratls", "quote_legacy.bin"),
        ("gramine-ratls", "quote_evidence.bin"),
    ] {
        let exp = expected(set);
        let from = exp["collateral_valid_from_unix"].as_u64().unwrap();
        let until = exp["collateral_valid_until_unix"].as_u64().unwrap();
        let v = DcapVerifier::new(vec![collateral(set)]);
        let q = read(&format!("{set}/{file}"));
        for t in [from - 1, until + 1] {
            let err = v.verify(&q, unix_time(t)).expect_err("must fail outside the window");
            assert!(matches!(err, VerifyError::Dcap { now, .. } if now == t), "{set} at {t}: {err}");
        }
        assert!(v.verify(&q, unix_time(from)).is_ok() || v.verify(&q, unix_time(from + 60)).is_ok());
    }
}

#[test]
fn flipped_bits_fail() {
    let exp = expected("phala-sgx-v3");
    let t = unix_time(exp["verification_time_unix"].as_u64().unwrap());
    let v = DcapVerifier::new(vec![collateral("phala-sgx-v3")]);
    let q = read("phala-sgx-v3/quote.bin");
    // MRENCLAVE, REPORTDATA, ISV signature, QE report, and the attestation key.
    for off in [112usize, 400, 436 + 10, 436 + 64 + 5, 436 + 128 + 100] {
        let mut bad = q.clone();
        bad[off] ^= 0x01;
        let err = v.verify(&bad, t).expect_err("flipped bit must fail");
        assert!(matches!(err, VerifyError::Dcap { .. }), "offset {off}: {err}");
    }
}

#[test]
fn tdx_is_rejected_as_not_sgx() {
    let exp = expected("tdx-v4");
    let t = unix_time(exp["verification_time_unix"].as_u64().unwrap());
    let v = DcapVerifier::new(vec![collateral("tdx-v4")]);
    let err = v.verify(&read("tdx-v4/quote.bin"), t).expect_err("TDX must be rejected");
    assert!(matches!(err, VerifyError::Quote(QuoteError::Tdx { version: 4, tee_type: 0x81 })), "{err}");
    assert!(err.to_string().contains("TDX"));
    assert!(err.to_string().contains("not SGX"));
}

#[test]
fn wrong_collateral_fails() {
    let exp = expected("phala-sgx-v3");
    let t = unix_time(exp["verification_time_unix"].as_u64().unwrap());
    let v = DcapVerifier::new(vec![collateral("gramine-ratls")]);
    assert!(v.verify(&read("phala-sgx-v3/quote.bin"), t).is_err());
    let v = DcapVerifier::new(vec![collateral("gramine-ratls"), collateral("phala-sgx-v3")]);
    assert!(v.verify(&read("phala-sgx-v3/quote.bin"), t).is_ok());
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let v = DcapVerifier::new(vec![collateral("phala-sgx-v3")]);
    let t = unix_time(1750400000);
    let q = read("phala-sgx-v3/quote.bin");
    for n in [0usize, 1, 47, 48, 431, 432, 436, 1000, q.len() - 1] {
        assert!(v.verify(&q[..n], t).is_err());
    }
    assert!(attest::Collateral::from_json(b"{not json", "x").is_err());
}

#[test]
fn zero_padded_quote_verifies_and_random_mutations_never_panic() {
    let v = DcapVerifier::new(vec![collateral("phala-sgx-v3")]);
    let t = unix_time(1750400000);
    let q = read("phala-sgx-v3/quote.bin");
    let mut padded = q.clone();
    padded.extend_from_slice(&[0u8; 512]);
    assert!(v.verify(&padded, t).is_ok());
    // Deterministic xorshift mutations: errors, never panics, never a false accept.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut m = q.clone();
        let pos = (x as usize) % m.len();
        m[pos] ^= 1u8 << ((x >> 61) as u32);
        if let Ok(ev) = v.verify(&m, t) {
            // Only bytes outside the signed/checked data may change without failing
            // (e.g. the informational PEM text); identity must be unchanged.
            assert_eq!(
                ev.summary().mrenclave,
                "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
            );
            assert!(pos >= 432, "mutation at {pos} inside the signed body was accepted");
        }
    }
}

#[test]
fn sgx_v4_is_parsed_but_not_verified_and_epid_is_named() {
    let q = read("phala-sgx-v3/quote.bin");
    let mut v4 = q.clone();
    v4[0] = 4; // version 4, tee_type (bytes 4..8) stays 0 = SGX
    let parsed = attest::quote::SgxQuote::parse(&v4).expect("SGX v4 layout parses");
    assert_eq!(parsed.header.tee_type, 0);
    assert_eq!(
        hex::encode(parsed.body.mr_enclave),
        "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    );
    let v = DcapVerifier::new(vec![collateral("phala-sgx-v3")]);
    let err = v.verify(&v4, unix_time(1750400000)).unwrap_err();
    assert!(matches!(err, VerifyError::SgxV4Unsupported), "{err}");
    let mut epid = q;
    epid[0] = 2;
    let err = v.verify(&epid, unix_time(1750400000)).unwrap_err();
    assert!(err.to_string().contains("EPID"), "{err}");
}
