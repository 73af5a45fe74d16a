//! The key server logs every decision (peer, identity, status, granted names or
//! reasons) and never logs key bytes.
#![cfg(feature = "insecure-sim")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attest::client::ProvisioningClient;
use attest::server::{KeyServer, Limits, spawn, verifier_for_policy};
use attest::sim::SimAttester;
use attest::tls::{init_tls, load_certs, load_private_key};
use attest::{EnclaveIdentity, Policy};

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

fn id(mre: u8) -> EnclaveIdentity {
    EnclaveIdentity {
        mrenclave: [mre; 32],
        mrsigner: [0x33; 32],
        isv_prod_id: 1,
        isv_svn: 2,
        attributes: [5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        debug: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_logged_keys_never() {
    let cap = Capture::default();
    tracing_subscriber::fmt()
        .with_writer(cap.clone())
        .with_ansi(false)
        .init();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Distinctive key bytes to search for in every encoding.
    let model = [
        0x5Au8, 0xC3, 0x17, 0xE9, 0x42, 0x0D, 0xB8, 0x66, 0x91, 0x2F, 0x7C, 0xA4, 0x3E, 0xD1, 0x08,
        0xF5,
    ];
    std::fs::write(d.join("model.key"), model).unwrap();
    std::fs::write(
        d.join("policy.toml"),
        format!(
            "[attestation]\ninsecure_allow_simulated = true\n[keys.model]\nfile = \"model.key\"\n[[enclave]]\nname = \"logged\"\ntee = \"simulated\"\nmrenclave = \"{}\"\nfirst_secret = \"model\"\n",
            hex::encode([0x11u8; 32])
        ),
    )
    .unwrap();
    let files = init_tls(&d.join("tls")).unwrap();
    let policy = Policy::load(&d.join("policy.toml")).unwrap();
    let server = KeyServer::new(
        load_certs(&files.server_cert).unwrap(),
        load_private_key(&files.server_key).unwrap(),
        verifier_for_policy(&policy).unwrap(),
        Arc::new(policy),
        Limits::default(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, _h) = spawn(server, listener).unwrap();
    let server = format!("localhost:{}", addr.port());
    let ok = ProvisioningClient::with_attester(
        &server,
        &files.ca_cert,
        &SimAttester::dangerous_new(id(0x11)),
    )
    .unwrap();
    let p = tokio::time::timeout(Duration::from_secs(20), ok.provision(&["model"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.first_secret.as_slice(), &model);
    let bad = ProvisioningClient::with_attester(
        &server,
        &files.ca_cert,
        &SimAttester::dangerous_new(id(0x99)),
    )
    .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(20), bad.provision(&[]))
            .await
            .unwrap()
            .is_err()
    );
    // Every line asserted below is written before the server sends the bytes
    // (or the alert) that the clients above have already received.

    let logs = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("policy accepts evidence"), "{logs}");
    assert!(logs.contains(&hex::encode([0x11u8; 32])), "identity logged");
    assert!(logs.contains("peer=127.0.0.1:"), "peer logged");
    assert!(logs.contains("tcb_status=Simulated"));
    assert!(logs.contains("sent first secret") && logs.contains("key=model"));
    assert!(logs.contains("sent named key"));
    assert!(
        logs.contains("refused by policy") && logs.contains("MRENCLAVE mismatch"),
        "{logs}"
    );
    assert!(logs.contains("SIMULATED-INSECURE"));
    let hex_lower = hex::encode(model);
    let hex_upper = hex_lower.to_uppercase();
    let debug_list = format!("{:?}", model);
    for needle in [hex_lower.as_str(), hex_upper.as_str(), debug_list.as_str()] {
        assert!(
            !logs.contains(needle),
            "key bytes leaked into logs as {needle}"
        );
    }
    assert!(!logs.as_bytes().windows(16).any(|w| w == model));
}
