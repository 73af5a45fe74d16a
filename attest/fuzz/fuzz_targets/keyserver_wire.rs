//! The key server's reading of client messages (Gramine's secret-provisioning request
//! and our key-request extension, `attest/src/server.rs` `KeyServer::handle`), through
//! the real server: one in-process `KeyServer` on loopback (simulated evidence allowed
//! by its policy), and per input one RA-TLS client session that sends the input bytes
//! after the handshake, closes its side and reads everything the server sends.
//!
//! Checked besides "no panic": the server closes the session promptly after the client's
//! close_notify (no hang on partial messages), its output is a sequence of well-formed
//! responses, and the key that the policy does not grant never appears in it.
//! The wire parser is inline in the async handler, so it is driven through TLS rather
//! than called directly (a few hundred inputs per second).
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use attest::ratls::{Curve, build_certificate};
use attest::server::{KeyServer, Limits, spawn, verifier_for_policy};
use attest::sim::SimAttester;
use attest::tls::{init_tls, load_certs, load_private_key};
use attest::{EnclaveIdentity, Policy, wire};
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MRENCLAVE: [u8; 32] = [0x11; 32];
const GRANTED_FIRST: [u8; 16] = [0xa1; 16];
const GRANTED_EXTRA: [u8; 16] = [0xb2; 16];
const NOT_GRANTED: [u8; 16] = [0xc3; 16];

struct Harness {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    _dir: tempfile::TempDir,
}

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, bytes) in
        [("model.key", GRANTED_FIRST), ("inputs.key", GRANTED_EXTRA), ("outputs.key", NOT_GRANTED)]
    {
        std::fs::write(d.join(name), bytes).unwrap();
    }
    let policy = format!(
        "[attestation]\ninsecure_allow_simulated = true\n\n\
         [keys.model]\nfile = \"model.key\"\n[keys.inputs]\nfile = \"inputs.key\"\n\
         [keys.outputs]\nfile = \"outputs.key\"\n\n\
         [[enclave]]\nname = \"inference\"\ntee = \"simulated\"\nmrenclave = \"{}\"\n\
         first_secret = \"model\"\nkeys = [\"inputs\"]\n",
        MRENCLAVE.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    std::fs::write(d.join("policy.toml"), policy).unwrap();
    let files = init_tls(&d.join("tls")).unwrap();
    let policy = Policy::load(&d.join("policy.toml")).unwrap();
    let limits = Limits {
        handshake_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(2),
        connection_timeout: Duration::from_secs(5),
        max_connections: 8,
        max_key_requests: 8,
        ..Limits::default()
    };
    let server = KeyServer::new(
        load_certs(&files.server_cert).unwrap(),
        load_private_key(&files.server_key).unwrap(),
        verifier_for_policy(&policy).unwrap(),
        Arc::new(policy),
        limits,
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        spawn(server, listener).unwrap().0
    });

    let identity = EnclaveIdentity {
        mrenclave: MRENCLAVE,
        mrsigner: [0x33; 32],
        isv_prod_id: 1,
        isv_svn: 2,
        attributes: [0x05, 0, 0, 0, 0, 0, 0, 0, 0xe7, 0, 0, 0, 0, 0, 0, 0],
        debug: false,
    };
    let id = build_certificate(&SimAttester::dangerous_new(identity), Curve::P256).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(&files.ca_cert).unwrap() {
        roots.add(c).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![id.cert.clone()], id.private_key())
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    Harness { rt, addr, connector, _dir: dir }
});

/// Splits the server's output into messages; panics on anything malformed.
fn check_output(mut out: &[u8]) {
    let mut first = true;
    while !out.is_empty() {
        let (prefix, max): (&[u8], u32) = if out.starts_with(wire::RESPONSE) {
            (wire::RESPONSE, wire::MAX_SECRET_LEN)
        } else if !first && out.starts_with(wire::KEY_DENIED) {
            (wire::KEY_DENIED, wire::MAX_SECRET_LEN)
        } else {
            panic!("server sent a malformed message: {:02x?}", &out[..out.len().min(64)]);
        };
        let rest = &out[prefix.len()..];
        assert!(rest.len() >= 4, "truncated length field");
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap());
        assert!(len <= max && rest.len() >= 4 + len as usize, "bad length {len}");
        let body = &rest[4..4 + len as usize];
        if prefix == wire::RESPONSE {
            assert!(body == GRANTED_FIRST || body == GRANTED_EXTRA, "server released {body:02x?}");
            assert!(!first || body == GRANTED_FIRST, "first secret is not the policy's first_secret");
        }
        first = false;
        out = &rest[4 + len as usize..];
    }
}

fuzz_target!(|data: &[u8]| {
    let h = &*HARNESS;
    let out = h.rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        let mut tls = h.connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
        // The server may close early (protocol violation); later writes may then fail.
        let _ = tls.write_all(data).await;
        let _ = tls.shutdown().await;
        let mut out = Vec::new();
        match tokio::time::timeout(Duration::from_secs(4), tls.read_to_end(&mut out)).await {
            Ok(_) => out,
            Err(_) => panic!("server still holds the session 4 s after the client's close_notify"),
        }
    });
    assert!(!out.windows(NOT_GRANTED.len()).any(|w| w == NOT_GRANTED), "ungranted key sent");
    check_output(&out);
});
