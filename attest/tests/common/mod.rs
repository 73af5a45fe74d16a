//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository's DCAP vectors (`tests/vectors/dcap`). Panics with a clear message when
/// they are missing (the tests must not silently skip).
pub fn vectors() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/dcap");
    assert!(
        dir.join("README.md").is_file(),
        "DCAP test vectors not found at {} (they are part of the repository)",
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
    attest::Collateral::from_file(&vectors().join(set).join("collateral.json")).expect("collateral parses")
}

/// Simulated identities and an in-process key server on loopback.
#[cfg(feature = "insecure-sim")]
pub mod sim {
    use std::sync::Arc;

    use attest::server::{KeyServer, Limits, spawn, verifier_for_policy};
    use attest::tls::{init_tls, load_certs, load_private_key};
    use attest::{EnclaveIdentity, Policy};

    /// A simulated enclave identity with the given MRENCLAVE.
    pub fn identity(mre: [u8; 32]) -> EnclaveIdentity {
        EnclaveIdentity {
            mrenclave: mre,
            mrsigner: [0x33; 32],
            isv_prod_id: 1,
            isv_svn: 2,
            attributes: [0x05, 0, 0, 0, 0, 0, 0, 0, 0xE7, 0, 0, 0, 0, 0, 0, 0],
            debug: false,
        }
    }

    /// A running key server: its directory (policy, keys, `tls/`) and address.
    pub struct Fixture {
        pub dir: tempfile::TempDir,
        pub addr: std::net::SocketAddr,
    }

    impl Fixture {
        /// The dev CA made by `init_tls`.
        pub fn ca(&self) -> std::path::PathBuf {
            self.dir.path().join("tls/ca.pem")
        }
        /// `localhost:PORT`, matching the server certificate.
        pub fn server(&self) -> String {
            format!("localhost:{}", self.addr.port())
        }
    }

    /// Writes `keys` (file name, bytes) and `policy` into a temp dir, runs
    /// `init_tls`, and starts a key server on 127.0.0.1 with `limits`.
    pub async fn start_keyserver(policy: &str, keys: &[(&str, [u8; 16])], limits: Limits) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (name, bytes) in keys {
            std::fs::write(d.join(name), bytes).unwrap();
        }
        std::fs::write(d.join("policy.toml"), policy).unwrap();
        let files = init_tls(&d.join("tls")).unwrap();
        let policy = Policy::load(&d.join("policy.toml")).unwrap();
        let server = KeyServer::new(
            load_certs(&files.server_cert).unwrap(),
            load_private_key(&files.server_key).unwrap(),
            verifier_for_policy(&policy).unwrap(),
            Arc::new(policy),
            limits,
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, _h) = spawn(server, listener).unwrap();
        Fixture { dir, addr }
    }
}
pub mod log_capture;
pub mod pcs_server;
pub mod test_pki;
