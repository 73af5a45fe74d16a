//! A key server started with collateral that expires in one hour keeps
//! accepting enclaves across that expiry, without a restart, because it
//! fetches a fresh set from a loopback PCS (issue 12, acceptance).
//!
//! Everything is signed for real by a test PKI (`common::test_pki`: a root CA
//! of our own, named to the server with `[attestation] root_ca`), since only
//! one Intel-signed set exists; the enclave is a real RA-TLS client whose
//! quotes are SGX DCAP v3 quotes signed through the test PCK chain, and the
//! key server is the real one over TLS on loopback. The clock is a
//! [`ManualClock`] shared by the server's TLS verification, the DCAP verifier
//! and the refresher, so "one hour later" needs no waiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use attest::client::ProvisioningClient;
use attest::clock::ManualClock;
use attest::ratls::{Curve, build_certificate};
use attest::server::{KeyServer, Limits, spawn, verifier_and_refresher};
use attest::tls::{init_tls, load_certs, load_private_key};
use attest::{Policy, TcbStatus};

mod common;

use common::log_capture::{self, log_text};
use common::pcs_server::{Files, Mode, PcsServer, start_with};
use common::test_pki::{SignedSet, TestAttester, TestPki};

const FMSPC: &str = "00606A000000";
/// "Now" when the server starts (2027-01-15): inside the RA-TLS certificate's validity.
const T: u64 = 1_800_000_000;
/// Set A, the server's collateral at start, expires one hour later.
const A_EXPIRES: u64 = T + 3600;
const KEY: [u8; 16] = *b"expiry-test-key!";

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}; log:\n{}", log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pcs_files(set: &SignedSet) -> Files {
    Files {
        fmspc: FMSPC.into(),
        ca: "platform".into(),
        pck_crl: set.pck_crl.clone(),
        pck_crl_chain: set.pck_crl_chain.clone(),
        tcb_info: set.tcb_info_body.clone(),
        tcb_chain: set.tcb_chain.clone(),
        qe_identity: set.qe_identity_body.clone(),
        qe_chain: set.tcb_chain.clone(),
        root_crl: set.root_ca_crl.clone(),
    }
}

struct Server {
    dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    verifier: attest::RaTlsVerifier,
    refresher: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// A key server whose static collateral is `set_a`, trusting the test root,
/// refreshing from `pcs` every 50 ms of real time, on `clock`.
async fn start_server(pki: &TestPki, set_a: &SignedSet, pcs: &PcsServer, clock: Arc<ManualClock>) -> Server {
    log_capture::install();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("test-root.der"), pki.root_der()).unwrap();
    std::fs::write(d.join("set-a.json"), &set_a.qvl_json).unwrap();
    std::fs::write(d.join("k.key"), KEY).unwrap();
    std::fs::write(
        d.join("policy.toml"),
        format!(
            r#"[attestation]
root_ca = "test-root.der"
collateral = ["set-a.json"]
pccs_url = "{}"
pccs_ca = "{}"
platforms = [{{ fmspc = "{FMSPC}", ca = "platform" }}]
collateral_cache = "cache"
[keys.k]
file = "k.key"
[[enclave]]
name = "gramine"
mrenclave = "0866e7ca11b9f4efe4bf39b2607f4e1299f111920d96d95719080f01b62b7585"
allow_debug = true
accepted_tcb_statuses = ["OutOfDate"]
first_secret = "k"
"#,
            pcs.url,
            pcs.ca.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("k.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let policy = Policy::load(&d.join("policy.toml")).unwrap();
    let (verifier, refresher) = verifier_and_refresher(&policy, clock.clone()).unwrap();
    let refresher = refresher.expect("pccs_url gives a refresher").check_every(Duration::from_millis(50));
    let tls = init_tls(&d.join("tls")).unwrap();
    let server = KeyServer::new(
        load_certs(&tls.server_cert).unwrap(),
        load_private_key(&tls.server_key).unwrap(),
        verifier.clone(),
        Arc::new(policy),
        Limits::default(),
    )
    .unwrap()
    .with_clock(clock);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, _h) = spawn(server, listener).unwrap();
    Server { dir, addr, verifier, refresher: tokio::spawn(refresher.run()) }
}

/// One provisioning by a fresh enclave identity (a new RA-TLS certificate, new quotes).
async fn provision(pki: &Arc<TestPki>, s: &Server) -> Result<Vec<u8>, String> {
    let cert = build_certificate(&TestAttester(pki.clone()), Curve::P384).unwrap();
    let ca = load_certs(&s.dir.path().join("tls/ca.pem")).unwrap();
    let client = ProvisioningClient::new(vec![format!("localhost:{}", s.addr.port())], ca, Some(&cert))
        .unwrap()
        .timeout(Duration::from_secs(5));
    client.provision(&[]).await.map(|p| p.first_secret.to_vec()).map_err(|e| e.to_string())
}

/// The reason the server's verifier gives for a fresh enclave certificate at `at`.
fn verdict(pki: &Arc<TestPki>, v: &attest::RaTlsVerifier, at: u64) -> Result<TcbStatus, String> {
    let cert = build_certificate(&TestAttester(pki.clone()), Curve::P384).unwrap();
    v.verify_certificate(&cert.cert, attest::dcap::unix_time(at))
        .map(|(ev, _)| ev.tcb_status())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_collateral_expiring_in_an_hour_keeps_provisioning_across_the_expiry() {
    let pki = Arc::new(TestPki::new());
    let set_a = pki.collateral(T - 86_400, A_EXPIRES, 1);
    let set_b = pki.collateral(T - 60, T + 30 * 86_400, 2);
    let pcs = start_with(pcs_files(&set_b)).await;
    // The endpoint is down at start, so the first provisioning can only use set A.
    pcs.set_mode(Mode::Down);
    let clock = Arc::new(ManualClock::at(T));
    let s = start_server(&pki, &set_a, &pcs, clock.clone()).await;
    assert!(log_text().contains("root_ca is NOT the Intel SGX Root CA"), "{}", log_text());
    wait_for("a failed first fetch", || log_text().contains("collateral refresh failed")).await;

    // Before the expiry: provisioned with set A.
    assert_eq!(provision(&pki, &s).await.unwrap(), KEY);
    assert_eq!(verdict(&pki, &s.verifier, T).unwrap(), TcbStatus::OutOfDate);

    // The endpoint comes back and the clock passes A's expiry (no restart).
    pcs.set_mode(Mode::Serve);
    let hits = pcs.hits();
    clock.set(A_EXPIRES + 60);
    wait_for("a refresh from the PCS", || log_text().contains("collateral refreshed")).await;
    assert!(pcs.hits() >= hits + 4, "PCK CRL, TCB info, QE identity and Root CA CRL were fetched");
    // Set A alone is expired now, so what still accepts the enclave is set B.
    let a_only = attest::RaTlsVerifier::new(Arc::new(attest::DcapVerifier::with_store(Arc::new(
        attest::collateral::CollateralStore::with_root(
            vec![attest::Collateral::from_json(&set_a.qvl_json, "set A").unwrap()],
            attest::dcap::RootCa::from_der(pki.root_der().to_vec()),
        ),
    ))));
    let err = verdict(&pki, &a_only, A_EXPIRES + 60).unwrap_err();
    assert!(err.contains("expired"), "{err}");
    assert_eq!(provision(&pki, &s).await.unwrap(), KEY);
    assert_eq!(verdict(&pki, &s.verifier, A_EXPIRES + 60).unwrap(), TcbStatus::OutOfDate);
    // The fetched set reached the cache with mode 0600.
    use std::os::unix::fs::PermissionsExt;
    let cached = s.dir.path().join("cache").join(format!("{FMSPC}-platform.json"));
    assert_eq!(std::fs::metadata(&cached).unwrap().permissions().mode() & 0o777, 0o600);

    // A second server that never reached the PCS: with A expired, the enclave is
    // refused, and the reason names the expiry.
    pcs.set_mode(Mode::Down);
    let s2 = start_server(&pki, &set_a, &pcs, clock.clone()).await;
    let err = provision(&pki, &s2).await.unwrap_err();
    assert!(!err.is_empty());
    let reason = verdict(&pki, &s2.verifier, A_EXPIRES + 60).unwrap_err();
    assert!(reason.contains("DCAP verification failed") && reason.contains("expired"), "{reason}");
    // The first server still provisions (set B is valid for 30 days).
    assert_eq!(provision(&pki, &s).await.unwrap(), KEY);
}

#[test]
fn the_intel_root_refuses_test_pki_evidence() {
    // The same quote and collateral with the default trust anchor: refused, so the
    // test root is trusted only because the policy says so.
    let pki = Arc::new(TestPki::new());
    let set = pki.collateral(T - 60, T + 3600, 1);
    let v = attest::RaTlsVerifier::new(Arc::new(attest::DcapVerifier::new(vec![
        attest::Collateral::from_json(&set.qvl_json, "test set").unwrap(),
    ])));
    let err = verdict(&pki, &v, T).unwrap_err();
    assert!(err.contains("DCAP verification failed"), "{err}");
    let p = attest::pcs::Platform::new(FMSPC, attest::pcs::PckCa::Platform).unwrap();
    let qvl: dcap_qvl::QuoteCollateralV3 = serde_json::from_slice(&set.qvl_json).unwrap();
    let err = attest::pcs::check_collateral(&qvl, &p, T).unwrap_err();
    assert!(err.contains("pinned Intel SGX Root CA"), "{err}");
    let root = attest::dcap::RootCa::from_der(pki.root_der().to_vec());
    assert!(attest::pcs::check_collateral_with_root(&qvl, &p, T, &root).is_ok());
}
