//! `pfs keyserver` as a process: init-tls, start, provision with the library
//! client (simulated attester), refuse a wrong identity, log without key bytes.
#![cfg(feature = "insecure-sim")]

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attest::EnclaveIdentity;
use attest::client::ProvisioningClient;
use attest::sim::SimAttester;

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

#[test]
fn keyserver_process_serves_and_refuses() {
    let d = tempfile::tempdir().unwrap();
    let tls = d.path().join("tls");
    let o =
        Command::new(env!("CARGO_BIN_EXE_pfs")).args(["keyserver", "init-tls"]).arg(&tls).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(d.path().join("model.key"), [0x6Bu8; 16]).unwrap();
    let policy = d.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[attestation]\ninsecure_allow_simulated = true\n[keys.model]\nfile = \"model.key\"\n[[enclave]]\nname = \"cli\"\ntee = \"simulated\"\nmrenclave = \"{}\"\nfirst_secret = \"model\"\n",
            hex::encode([0x11u8; 32])
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_pfs"))
            .args(["keyserver", "--policy"])
            .arg(&policy)
            .args(["--listen", &listen, "--cert"])
            .arg(tls.join("server.pem"))
            .arg("--key")
            .arg(tls.join("server-key.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Wait (bounded) until the port accepts connections.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "keyserver did not start listening on {listen}");
        assert!(server.0.try_wait().unwrap().is_none(), "keyserver exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let servers = format!("localhost:{port}");
    let ca = tls.join("ca.pem");
    let good =
        ProvisioningClient::with_attester(&servers, &ca, &SimAttester::dangerous_new(id(0x11))).unwrap();
    let p = good.provision_blocking(&[]).expect("provisioned");
    assert_eq!(p.first_secret.as_slice(), &[0x6B; 16]);
    let bad =
        ProvisioningClient::with_attester(&servers, &ca, &SimAttester::dangerous_new(id(0x12))).unwrap();
    assert!(bad.provision_blocking(&[]).is_err());
    // Still serving after the refusal.
    assert!(good.provision_blocking(&[]).is_ok());

    let _ = server.0.kill();
    let _ = server.0.wait();
    let mut log = String::new();
    server.0.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("key server ready"), "{log}");
    assert!(log.contains("refused by policy"), "{log}");
    assert!(log.contains("sent first secret"), "{log}");
    assert!(!log.to_lowercase().contains(&"6b".repeat(16)), "key bytes in the log");
}
