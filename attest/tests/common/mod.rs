//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The DCAP vectors directory: `$ATTEST_VECTORS_DIR`, or `shared/vectors/dcap`
/// beside the repository clone. Panics with a clear message when it is missing
/// (the tests must not silently skip).
pub fn vectors() -> PathBuf {
    let dir = match std::env::var_os("ATTEST_VECTORS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/dcap"),
    };
    assert!(
        dir.join("README.md").is_file(),
        "DCAP test vectors not found at {} (expected ../shared/vectors/dcap beside the repository; set ATTEST_VECTORS_DIR to override)",
        dir.display()
    );
    dir
}

pub fn read(rel: &str) -> Vec<u8> {
    let p = vectors().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading vector {}: {e}", p.display()))
}

pub fn expected(set: &str) -> serde_json::Value {
    serde_json::from_slice(&read(&format!("{set}/expected.json"))).expect("expected.json parses")
}

pub fn collateral(set: &str) -> attest::Collateral {
    attest::Collateral::from_file(&vectors().join(set).join("collateral.json"))
        .expect("collateral parses")
}
