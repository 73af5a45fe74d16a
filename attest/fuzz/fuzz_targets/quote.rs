//! SGX/TDX quotes: the structural parser (`quote::parse_header`, `SgxQuote::parse`,
//! `SgxReportBody::parse`) and `DcapVerifier::verify` (dcap-qvl) with the committed
//! collateral of the three public vector sets. Seeds: the vectors' quotes.
#![no_main]

use std::sync::LazyLock;

use attest::dcap::unix_time;
use attest::quote::{SgxQuote, SgxReportBody, parse_header};
use attest::{Collateral, DcapVerifier};
use libfuzzer_sys::fuzz_target;

const GRAMINE_TIME: u64 = 1_755_300_000;

static DCAP: LazyLock<DcapVerifier> = LazyLock::new(|| {
    DcapVerifier::new(vec![
        Collateral::from_json(include_bytes!("../collateral/gramine-ratls.json"), "gramine-ratls").unwrap(),
        Collateral::from_json(include_bytes!("../collateral/phala-sgx-v3.json"), "phala-sgx-v3").unwrap(),
        Collateral::from_json(include_bytes!("../collateral/tdx-v4.json"), "tdx-v4").unwrap(),
    ])
});

fuzz_target!(|data: &[u8]| {
    let header = parse_header(data);
    if let Ok(quote) = SgxQuote::parse(data) {
        assert!(header.is_ok());
        assert!(
            quote.len() <= data.len(),
            "parsed length {} beyond the {} input bytes",
            quote.len(),
            data.len()
        );
        let _ = quote.body.is_debug();
    }
    if data.len() >= 48 {
        let _ = SgxReportBody::parse(&data[48..]);
    }
    if let Ok(ev) = DCAP.verify(data, unix_time(GRAMINE_TIME)) {
        // Only a genuine quote verifies: its structure must parse too.
        assert!(SgxQuote::parse(data).is_ok(), "verified quote does not parse: {:?}", ev.summary());
    }
});
