//! Key server round trips over TLS on loopback with the simulated attester,
//! hostile peers, and the wire format byte for byte.
#![cfg(feature = "insecure-sim")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use attest::client::ProvisioningClient;
use attest::ratls::{Curve, RaTlsCertificate, build_certificate};
use attest::server::Limits;
use attest::sim::SimAttester;
use attest::tls::load_certs;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;

use common::sim::{Fixture, identity, start_keyserver};

const MRE_OK: [u8; 32] = [0x11; 32];
const MRE_BAD: [u8; 32] = [0x22; 32];
const BOUND: Duration = Duration::from_secs(20);

fn policy_text(allow_sim: bool, tee: &str) -> String {
    format!(
        r#"[attestation]
insecure_allow_simulated = {allow_sim}

[keys.model]
file = "model.key"
[keys.inputs]
file = "inputs.key"
[keys.outputs]
file = "outputs.key"

[[enclave]]
name = "inference"
tee = "{tee}"
mrenclave = "{}"
first_secret = "model"
keys = ["inputs"]
"#,
        hex::encode(MRE_OK)
    )
}

fn limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        connection_timeout: Duration::from_secs(5),
        max_connections: 64,
        max_key_requests: 8,
        ..Limits::default()
    }
}

async fn start(allow_sim: bool, tee: &str) -> Fixture {
    start_with(allow_sim, tee, limits()).await
}

async fn start_with(allow_sim: bool, tee: &str, limits: Limits) -> Fixture {
    start_keyserver(
        &policy_text(allow_sim, tee),
        &[("model.key", [0xA1; 16]), ("inputs.key", [0xB2; 16]), ("outputs.key", [0xC3; 16])],
        limits,
    )
    .await
}

impl Fixture {
    fn client(&self, mre: [u8; 32]) -> ProvisioningClient {
        ProvisioningClient::with_attester(
            &self.server(),
            &self.ca(),
            &SimAttester::dangerous_new(identity(mre)),
        )
        .unwrap()
        .timeout(Duration::from_secs(5))
    }
    async fn good_round_trip(&self) {
        let p = tokio::time::timeout(BOUND, self.client(MRE_OK).provision(&[]))
            .await
            .expect("bounded")
            .expect("allowed identity provisions");
        assert_eq!(p.first_secret.as_slice(), &[0xA1; 16]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_identity_gets_exactly_its_keys() {
    let f = start(true, "simulated").await;
    let p = tokio::time::timeout(BOUND, f.client(MRE_OK).provision(&["inputs", "outputs", "model"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.first_secret.as_slice(), &[0xA1; 16]);
    assert_eq!(p.keys.keys().collect::<Vec<_>>(), vec!["inputs", "model"]);
    assert_eq!(p.keys["inputs"].as_slice(), &[0xB2; 16]);
    assert_eq!(p.keys["model"].as_slice(), &[0xA1; 16]);
    assert_eq!(p.denied.keys().collect::<Vec<_>>(), vec!["outputs"]);
    assert!(p.denied["outputs"].contains("not granted"));
    // Also from a list whose first server is dead.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let list = format!("127.0.0.1:{} ; {}", dead_addr.port(), f.server());
    let c = ProvisioningClient::with_attester(&list, &f.ca(), &SimAttester::dangerous_new(identity(MRE_OK)))
        .unwrap();
    let p = tokio::time::timeout(BOUND, c.provision(&[])).await.unwrap().unwrap();
    assert_eq!(p.server, f.server());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_mrenclave_gets_nothing() {
    let f = start(true, "simulated").await;
    let err =
        tokio::time::timeout(BOUND, f.client(MRE_BAD).provision(&["inputs"])).await.unwrap().unwrap_err();
    // Genuine evidence the policy refuses: told why (the policy's reasons), sent no key.
    let msg = err.to_string();
    assert!(msg.contains("server denied") && msg.contains("MRENCLAVE mismatch"), "{msg}");
    f.good_round_trip().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_refused_without_all_opt_ins() {
    // Policy flag off (entry marked simulated): refused.
    let f = start(false, "simulated").await;
    assert!(tokio::time::timeout(BOUND, f.client(MRE_OK).provision(&[])).await.unwrap().is_err());
    // Policy flag on, but the entry is an SGX entry with the same MRENCLAVE: refused.
    let f = start(true, "sgx").await;
    assert!(tokio::time::timeout(BOUND, f.client(MRE_OK).provision(&[])).await.unwrap().is_err());
    // Both: accepted (the feature is compiled in for this test file).
    let f = start(true, "simulated").await;
    f.good_round_trip().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_certificate_refused() {
    let f = start(true, "simulated").await;
    let c = ProvisioningClient::new(vec![f.server()], load_certs(&f.ca()).unwrap(), None).unwrap();
    let err = tokio::time::timeout(BOUND, c.provision(&[])).await.unwrap().unwrap_err();
    assert!(!err.to_string().is_empty());
    f.good_round_trip().await;
}

fn raw_connector(ca: &Path, id: &RaTlsCertificate) -> tokio_rustls::TlsConnector {
    raw_connector_versions(ca, id, rustls::DEFAULT_VERSIONS)
}

fn raw_connector_versions(
    ca: &Path,
    id: &RaTlsCertificate,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(ca).unwrap() {
        roots.add(c).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![id.cert.clone()], id.private_key())
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn raw_session(f: &Fixture) -> tokio_rustls::client::TlsStream<TcpStream> {
    let id = build_certificate(&SimAttester::dangerous_new(identity(MRE_OK)), Curve::P384).unwrap();
    let tcp = TcpStream::connect(f.addr).await.unwrap();
    let conn = raw_connector(&f.ca(), &id);
    tokio::time::timeout(BOUND, conn.connect(ServerName::try_from("localhost").unwrap(), tcp))
        .await
        .unwrap()
        .unwrap()
}

async fn read_to_end_bounded<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let _ =
        tokio::time::timeout(BOUND, s.read_to_end(&mut out)).await.expect("server closes in bounded time");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_format_byte_for_byte() {
    let f = start(true, "simulated").await;
    // Stock Gramine exchange: 35-byte request, 37 + 4 + 16 byte response, then close.
    let mut s = raw_session(&f).await;
    s.write_all(b"SECRET_PROVISION_RA_TLS_REQUEST_V1\0").await.unwrap();
    s.flush().await.unwrap();
    let mut resp = [0u8; 57];
    tokio::time::timeout(BOUND, s.read_exact(&mut resp)).await.unwrap().unwrap();
    let mut want = b"SECRET_PROVISION_RA_TLS_RESPONSE_V1:\0".to_vec();
    want.extend_from_slice(&[0, 0, 0, 16]);
    want.extend_from_slice(&[0xA1; 16]);
    assert_eq!(resp.to_vec(), want);
    s.shutdown().await.unwrap();
    assert!(read_to_end_bounded(&mut s).await.is_empty(), "nothing after the secret");

    // Extension: granted and denied keys.
    let mut s = raw_session(&f).await;
    s.write_all(b"SECRET_PROVISION_RA_TLS_REQUEST_V1\0").await.unwrap();
    s.read_exact(&mut resp).await.unwrap();
    s.write_all(b"ATTEST_KEY_REQUEST_V1:\0\0\0\0\x06inputs").await.unwrap();
    let mut k = [0u8; 57];
    s.read_exact(&mut k).await.unwrap();
    let mut want = b"SECRET_PROVISION_RA_TLS_RESPONSE_V1:\0\0\0\0\x10".to_vec();
    want.extend_from_slice(&[0xB2; 16]);
    assert_eq!(k.to_vec(), want);
    s.write_all(b"ATTEST_KEY_REQUEST_V1:\0\0\0\0\x07outputs").await.unwrap();
    let mut head = [0u8; 26];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head[..22], b"ATTEST_KEY_DENIED_V1:\0");
    let len = u32::from_be_bytes(head[22..26].try_into().unwrap()) as usize;
    let mut reason = vec![0u8; len];
    s.read_exact(&mut reason).await.unwrap();
    assert!(String::from_utf8(reason).unwrap().contains("outputs"));
    s.shutdown().await.unwrap();
    assert!(read_to_end_bounded(&mut s).await.is_empty());

    // A wrong request (V2) gets nothing at all.
    let mut s = raw_session(&f).await;
    s.write_all(b"SECRET_PROVISION_RA_TLS_REQUEST_V2\0").await.unwrap();
    assert!(read_to_end_bounded(&mut s).await.is_empty());
    // The request without its NUL (34 bytes) followed by silence: nothing, closed by the read timeout.
    let mut s = raw_session(&f).await;
    s.write_all(b"SECRET_PROVISION_RA_TLS_REQUEST_V1").await.unwrap();
    assert!(read_to_end_bounded(&mut s).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_do_not_stop_the_server() {
    let f = start(true, "simulated").await;
    // 1. Random bytes instead of a ClientHello.
    let mut t = TcpStream::connect(f.addr).await.unwrap();
    let mut junk = vec![0u8; 4096];
    for (i, b) in junk.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2654435761).to_be_bytes()[0];
    }
    let _ = t.write_all(&junk).await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(BOUND, t.read_to_end(&mut sink)).await.expect("closed in bounded time");
    f.good_round_trip().await;

    // 2. A truncated handshake: a TLS record header promising more than is sent, then silence.
    let mut stalled_hs = TcpStream::connect(f.addr).await.unwrap();
    stalled_hs.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]).await.unwrap();
    // 3. A client that connects and sends nothing at all.
    let mut silent = TcpStream::connect(f.addr).await.unwrap();
    // While both stall, others are served.
    f.good_round_trip().await;
    for s in [&mut stalled_hs, &mut silent] {
        let mut sink = Vec::new();
        let r = tokio::time::timeout(BOUND, s.read_to_end(&mut sink)).await;
        assert!(r.is_ok(), "server must drop a stalled handshake within its timeout");
    }

    // 4. A huge length prefix in an extension request (4 GiB - 1): denied without allocating, then closed.
    let mut s = raw_session(&f).await;
    s.write_all(b"SECRET_PROVISION_RA_TLS_REQUEST_V1\0").await.unwrap();
    let mut resp = [0u8; 57];
    s.read_exact(&mut resp).await.unwrap();
    s.write_all(b"ATTEST_KEY_REQUEST_V1:\0\xff\xff\xff\xff").await.unwrap();
    let out = read_to_end_bounded(&mut s).await;
    assert!(out.starts_with(b"ATTEST_KEY_DENIED_V1:\0"), "{:?}", String::from_utf8_lossy(&out));
    assert!(String::from_utf8_lossy(&out).contains("4294967295"));

    // 5. An attested client that stops sending after the handshake.
    let mut s = raw_session(&f).await;
    s.write_all(b"SECRET_").await.unwrap();
    f.good_round_trip().await;
    assert!(read_to_end_bounded(&mut s).await.is_empty());

    // 6. Garbage after the first secret.
    let mut s = raw_session(&f).await;
    s.write_all(b"SECRET_PROVISION_RA_TLS_REQUEST_V1\0").await.unwrap();
    s.read_exact(&mut resp).await.unwrap();
    s.write_all(&[0xFF; 64]).await.unwrap();
    assert!(read_to_end_bounded(&mut s).await.is_empty());

    // Still serving.
    f.good_round_trip().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_client_is_served() {
    // Gramine's mbedTLS 3.6 client may negotiate TLS 1.2.
    let f = start(true, "simulated").await;
    let id = build_certificate(&SimAttester::dangerous_new(identity(MRE_OK)), Curve::P384).unwrap();
    let conn = raw_connector_versions(&f.ca(), &id, &[&rustls::version::TLS12]);
    let tcp = TcpStream::connect(f.addr).await.unwrap();
    let mut s = tokio::time::timeout(BOUND, conn.connect(ServerName::try_from("localhost").unwrap(), tcp))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    s.write_all(attest::wire::REQUEST).await.unwrap();
    let mut resp = [0u8; 57];
    tokio::time::timeout(BOUND, s.read_exact(&mut resp)).await.unwrap().unwrap();
    assert_eq!(&resp[..37], attest::wire::RESPONSE);
    assert_eq!(&resp[41..], &[0xA1; 16]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p256_and_p384_client_keys_are_accepted() {
    let f = start(true, "simulated").await;
    for curve in [Curve::P256, Curve::P384] {
        let cert = build_certificate(&SimAttester::dangerous_new(identity(MRE_OK)), curve).unwrap();
        let c = ProvisioningClient::new(vec![f.server()], load_certs(&f.ca()).unwrap(), Some(&cert)).unwrap();
        let p = tokio::time::timeout(BOUND, c.provision(&["inputs"])).await.unwrap().unwrap();
        assert_eq!(p.keys["inputs"].as_slice(), &[0xB2; 16], "{curve:?}");
    }
}

/// Connects with `id` (or no certificate), sends the request, and returns every
/// byte the server sends back (an error or alert ends the read).
async fn raw_exchange(f: &Fixture, id: Option<&RaTlsCertificate>) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(&f.ca()).unwrap() {
        roots.add(c).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match id {
        Some(id) => b.with_client_auth_cert(vec![id.cert.clone()], id.private_key()).unwrap(),
        None => b.with_no_client_auth(),
    };
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(f.addr).await.unwrap();
    let mut out = Vec::new();
    // With TLS 1.3 the client may finish its side before the server rejects it.
    let Ok(Ok(mut s)) =
        tokio::time::timeout(BOUND, conn.connect(ServerName::try_from("localhost").unwrap(), tcp)).await
    else {
        return out;
    };
    let _ = s.write_all(attest::wire::REQUEST).await;
    let _ = s.flush().await;
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(BOUND, s.read(&mut buf)).await.expect("bounded") {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_peers_receive_no_secret() {
    let f = start(true, "simulated").await;
    // Verified evidence the policy refuses: only a KEY_DENIED message with the reasons.
    let bad = build_certificate(&SimAttester::dangerous_new(identity(MRE_BAD)), Curve::P384).unwrap();
    let got = raw_exchange(&f, Some(&bad)).await;
    assert!(got.starts_with(attest::wire::KEY_DENIED), "wrong MRENCLAVE must get KEY_DENIED only: {got:?}");
    let reason = String::from_utf8_lossy(&got[attest::wire::KEY_DENIED.len() + 4..]).into_owned();
    assert!(reason.contains("MRENCLAVE mismatch"), "{reason}");
    assert!(!got.windows(attest::wire::RESPONSE.len()).any(|w| w == attest::wire::RESPONSE));
    assert!(raw_exchange(&f, None).await.is_empty(), "client without certificate got data");
    let good = build_certificate(&SimAttester::dangerous_new(identity(MRE_OK)), Curve::P384).unwrap();
    let got = raw_exchange(&f, Some(&good)).await;
    assert!(got.starts_with(attest::wire::RESPONSE), "control: the allowed identity gets the response");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_handshake_pool_sheds_its_oldest_peer_instead_of_waiting() {
    // A long handshake deadline: only shedding can make room quickly.
    let lim = Limits {
        max_handshakes: 2,
        handshake_timeout: Duration::from_secs(30),
        connection_timeout: Duration::from_secs(30),
        ..limits()
    };
    let f = start_with(true, "simulated", lim).await;
    // Two silent peers take both handshake places.
    let mut a = TcpStream::connect(f.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let b = TcpStream::connect(f.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A good client is served at once: accept() never waits, the oldest silent peer is shed.
    let t0 = std::time::Instant::now();
    f.good_round_trip().await;
    assert!(t0.elapsed() < Duration::from_secs(10), "served only after {:?}", t0.elapsed());
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), a.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "the oldest silent peer was not shed: {r:?}");
    // The younger silent peer is still held (shed only on demand, not by a timer).
    assert!(matches!(b.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
}
