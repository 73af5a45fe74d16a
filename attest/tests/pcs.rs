//! Collateral fetched from a real HTTPS server on loopback that speaks Intel's
//! PCS API v4 and serves the real, Intel-signed collateral of the Gramine
//! RA-TLS vector set (FMSPC 00606A000000, PCK Platform CA).
//!
//! What is real and what the clock simulates: every byte served is Intel's
//! (signatures, chains to the pinned Intel SGX Root CA, CRLs), and the
//! certificate verified is a real Gramine RA-TLS certificate. That collateral
//! is valid only from 2025-08-15T05:41:26Z to 2025-09-14T04:36:46Z, so the
//! verifier and the refresher run on a manual clock placed inside (or just
//! after) that window. The repository holds only one Intel-issued set for this
//! platform, so a "newer" set cannot be shown with real signatures: the
//! refresh before expiry fetches, verifies and keeps the same set (Intel's
//! endpoint would serve a newer one), and past its nextUpdate the set is,
//! correctly, refused.
#![cfg(feature = "insecure-sim")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use attest::clock::ManualClock;
use attest::collateral::RefreshOutcome;
use attest::pcs::{PckCa, Platform};
use attest::{Policy, TcbStatus};

mod common;

use common::log_capture::{self, log_text};
use common::pcs_server::{Mode, PcsServer, start};

const FMSPC: &str = "00606A000000";
const VALID_FROM: u64 = 1_755_236_486;
const VALID_UNTIL: u64 = 1_757_824_606;
const INSIDE: u64 = 1_755_300_000;

struct Setup {
    dir: tempfile::TempDir,
    pcs: PcsServer,
    clock: Arc<ManualClock>,
    policy: Policy,
}

/// A policy that accepts the real Gramine certificate (debug, OutOfDate) and
/// fetches its platform's collateral from the loopback PCS.
async fn setup(at: u64) -> Setup {
    log_capture::install();
    let pcs = start("gramine-ratls", FMSPC, "platform").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("k.key"), [7u8; 16]).unwrap();
    std::fs::write(
        d.join("policy.toml"),
        format!(
            r#"[attestation]
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
    let policy = Policy::load(&d.join("policy.toml")).unwrap();
    Setup { dir, pcs, clock: Arc::new(ManualClock::at(at)), policy }
}

fn platform() -> Platform {
    Platform::new(FMSPC, PckCa::Platform).unwrap()
}

fn verify_real_cert(
    v: &attest::RaTlsVerifier,
    at: u64,
) -> Result<attest::VerifiedEvidence, attest::RaTlsError> {
    let cert = common::read("gramine-ratls/ratls-cert.der");
    v.verify_certificate(&cert, attest::dcap::unix_time(at)).map(|(ev, _)| ev)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_collateral_is_verified_cached_0600_and_verifies_a_real_gramine_certificate() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup(INSIDE).await;
    let (verifier, refresher) = attest::server::verifier_and_refresher(&s.policy, s.clock.clone()).unwrap();
    let refresher = refresher.expect("pccs_url gives a refresher");
    // Before the first fetch there is no collateral: the certificate is refused.
    let err = verify_real_cert(&verifier, INSIDE).unwrap_err();
    assert!(err.to_string().contains("no collateral"), "{err}");
    // One refresh from the loopback PCS, then the same verifier accepts it (no restart).
    let out = refresher.refresh(&platform()).await.unwrap();
    assert_eq!(out, RefreshOutcome::Installed { next_update: VALID_UNTIL });
    let ev = verify_real_cert(&verifier, INSIDE).unwrap();
    assert_eq!(ev.tcb_status(), TcbStatus::OutOfDate);
    assert!(s.pcs.hits() >= 4, "four PCS requests (PCK CRL, TCB info, QE identity, Root CA CRL)");
    // The cache: mode 0600, QuoteCollateralV3 JSON that works as a static collateral file.
    let cached = s.dir.path().join("cache").join(format!("{FMSPC}-platform.json"));
    let mode = std::fs::metadata(&cached).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "cache file mode {mode:o}");
    let stat = attest::Collateral::from_file(&cached).unwrap();
    let v = attest::RaTlsVerifier::new(Arc::new(attest::DcapVerifier::new(vec![stat])));
    assert_eq!(verify_real_cert(&v, INSIDE).unwrap().tcb_status(), TcbStatus::OutOfDate);
    // No temporary file is left next to it.
    let names: Vec<_> =
        std::fs::read_dir(s.dir.path().join("cache")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_response_is_refused_and_the_set_in_use_is_kept() {
    let s = setup(INSIDE).await;
    let (verifier, refresher) = attest::server::verifier_and_refresher(&s.policy, s.clock.clone()).unwrap();
    let refresher = refresher.unwrap();
    refresher.refresh(&platform()).await.unwrap();
    let cached = s.dir.path().join("cache").join(format!("{FMSPC}-platform.json"));
    let before = std::fs::read(&cached).unwrap();
    for (mode, what) in
        [(Mode::TamperTcbInfo, "TCB info signature"), (Mode::TamperPckCrl, "PCK CRL signature")]
    {
        s.pcs.set_mode(mode);
        let err = refresher.refresh(&platform()).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("refused") && msg.contains(what) && msg.contains("does not verify"), "{msg}");
        assert_eq!(std::fs::read(&cached).unwrap(), before, "a refused set must not reach the cache");
        assert_eq!(verify_real_cert(&verifier, INSIDE).unwrap().tcb_status(), TcbStatus::OutOfDate);
    }
    // A verified set that is not valid at the clock's time is refused too.
    s.pcs.set_mode(Mode::Serve);
    s.clock.set(VALID_FROM - 10);
    let err = refresher.refresh(&platform()).await.unwrap_err();
    assert!(err.to_string().contains("not valid at"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_expiring_in_an_hour_is_refreshed_and_served_while_the_endpoint_is_down_until_it_expires() {
    let s = setup(INSIDE).await;
    let (verifier, refresher) = attest::server::verifier_and_refresher(&s.policy, s.clock.clone()).unwrap();
    let refresher = refresher.unwrap().check_every(Duration::from_millis(50));
    refresher.refresh(&platform()).await.unwrap();
    // A restart: a new refresher loads the cache and refreshes in the background.
    let (verifier2, refresher2) = attest::server::verifier_and_refresher(&s.policy, s.clock.clone()).unwrap();
    drop(verifier);
    s.clock.set(VALID_UNTIL - 3600); // the set in use expires in one hour
    let hits0 = s.pcs.hits();
    let task = tokio::spawn(refresher2.unwrap().check_every(Duration::from_millis(50)).run());
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.pcs.hits() < hits0 + 4 {
        assert!(Instant::now() < deadline, "no refresh before expiry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(verify_real_cert(&verifier2, VALID_UNTIL - 3600).unwrap().tcb_status(), TcbStatus::OutOfDate);
    // The endpoint goes down: the cached set is still served up to its expiry ...
    s.pcs.set_mode(Mode::Down);
    s.clock.set(VALID_UNTIL - 60);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log_text().contains("collateral refresh failed") {
        assert!(Instant::now() < deadline, "the failed refresh was not logged:\n{}", log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(log_text().contains("503"), "{}", log_text());
    assert!(verify_real_cert(&verifier2, VALID_UNTIL - 60).is_ok());
    // ... and refused after it, with the expiry logged.
    s.clock.set(VALID_UNTIL + 1);
    let err = verify_real_cert(&verifier2, VALID_UNTIL + 1).unwrap_err();
    assert!(err.to_string().contains("DCAP verification failed"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log_text().contains("collateral expired") {
        assert!(Instant::now() < deadline, "expiry not logged:\n{}", log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(log_text().contains("collateral loaded from the cache"));
    assert!(log_text().contains("collateral refreshed"));
    task.abort();
}
