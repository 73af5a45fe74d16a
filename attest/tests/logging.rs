//! The key server logs every decision (peer, identity, status, granted names or
//! reasons) and never logs key bytes.
#![cfg(feature = "insecure-sim")]

use std::io::Write;
use std::sync::{Arc, Mutex};

mod common;

use common::sim::{identity, start_keyserver};
use std::time::Duration;

use attest::client::ProvisioningClient;
use attest::server::Limits;
use attest::sim::SimAttester;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_logged_keys_never() {
    let cap = Capture::default();
    tracing_subscriber::fmt().with_writer(cap.clone()).with_ansi(false).init();

    // Distinctive key bytes to search for in every encoding.
    let model =
        [0x5Au8, 0xC3, 0x17, 0xE9, 0x42, 0x0D, 0xB8, 0x66, 0x91, 0x2F, 0x7C, 0xA4, 0x3E, 0xD1, 0x08, 0xF5];
    let policy = format!(
        "[attestation]\ninsecure_allow_simulated = true\n[keys.model]\nfile = \"model.key\"\n[[enclave]]\nname = \"logged\"\ntee = \"simulated\"\nmrenclave = \"{}\"\nfirst_secret = \"model\"\n",
        hex::encode([0x11u8; 32])
    );
    let f = start_keyserver(&policy, &[("model.key", model)], Limits::default()).await;
    let ca = f.ca();
    let server = f.server();
    let ok =
        ProvisioningClient::with_attester(&server, &ca, &SimAttester::dangerous_new(identity([0x11; 32])))
            .unwrap();
    let p = tokio::time::timeout(Duration::from_secs(20), ok.provision(&["model"])).await.unwrap().unwrap();
    assert_eq!(p.first_secret.as_slice(), &model);
    let bad =
        ProvisioningClient::with_attester(&server, &ca, &SimAttester::dangerous_new(identity([0x99; 32])))
            .unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(20), bad.provision(&[])).await.unwrap().is_err());
    // Every line asserted below is written before the server sends the bytes
    // (or the alert) that the clients above have already received.

    let logs = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("policy accepts evidence"), "{logs}");
    assert!(logs.contains(&hex::encode([0x11u8; 32])), "identity logged");
    assert!(logs.contains("peer=127.0.0.1:"), "peer logged");
    assert!(logs.contains("tcb_status=Simulated"));
    assert!(logs.contains("sent first secret") && logs.contains("key=model"));
    assert!(logs.contains("sent named key"));
    assert!(logs.contains("refused by policy") && logs.contains("MRENCLAVE mismatch"), "{logs}");
    assert!(logs.contains("SIMULATED-INSECURE"));
    let hex_lower = hex::encode(model);
    let hex_upper = hex_lower.to_uppercase();
    let debug_list = format!("{:?}", model);
    for needle in [hex_lower.as_str(), hex_upper.as_str(), debug_list.as_str()] {
        assert!(!logs.contains(needle), "key bytes leaked into logs as {needle}");
    }
    assert!(!logs.as_bytes().windows(16).any(|w| w == model));
}
