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
    // Key files must not be readable by others (the server refuses them otherwise).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.path().join("model.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
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

/// A key server directory: init-tls, a 0600 key file and a policy (`extra` appended
/// to its `[attestation]` table).
fn setup(extra_attestation: &str, entry_tee: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_pfs"))
        .args(["keyserver", "init-tls"])
        .arg(d.path().join("tls"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let key = d.path().join("model.key");
    std::fs::write(&key, [0x6Bu8; 16]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let policy = d.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[attestation]\ninsecure_allow_simulated = {}\n{extra_attestation}\n[keys.model]\nfile = \"model.key\"\n[[enclave]]\nname = \"cli\"\ntee = \"{entry_tee}\"\nmrenclave = \"{}\"\nfirst_secret = \"model\"\n",
            extra_attestation.is_empty() && entry_tee == "simulated",
            hex::encode([0x11u8; 32])
        ),
    )
    .unwrap();
    (d, policy)
}

/// Runs `pfs keyserver` with `args`, expecting it to refuse to start.
fn refused(d: &std::path::Path, policy: &std::path::Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_pfs"))
        .args(["keyserver", "--policy"])
        .arg(policy)
        .args(["--listen", "127.0.0.1:0", "--cert"])
        .arg(d.join("tls/server.pem"))
        .arg("--key")
        .arg(d.join("tls/server-key.pem"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "expected a refusal to start (exit 2): {err}");
    err
}

#[test]
fn readable_key_files_are_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let (d, policy) = setup("", "simulated");
    std::fs::set_permissions(d.path().join("model.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = refused(d.path(), &policy, &[]);
    let line = format!("line {}", line_of(&policy, "[keys.model]"));
    assert!(err.contains(&line) && err.contains("keys.model.file") && err.contains("0644"), "{err}");
    assert!(err.contains("chmod 600") && err.contains("--allow-insecure-key-permissions"), "{err}");
    // The TLS private key is checked the same way.
    std::fs::set_permissions(d.path().join("model.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(d.path().join("tls/server-key.pem"), std::fs::Permissions::from_mode(0o666))
        .unwrap();
    let err = refused(d.path(), &policy, &[]);
    assert!(err.contains("server-key.pem") && err.contains("0666"), "{err}");
    // Allowed explicitly: it starts, and says why it is insecure.
    let mut s = start_server(d.path(), &policy, &["--allow-insecure-key-permissions"]);
    let log = wait_ready(&mut s);
    assert!(log.contains("started anyway"), "{log}");
}

#[test]
fn zero_timeouts_and_limits_are_refused() {
    let (d, policy) = setup("", "simulated");
    for (flag, v) in [("--timeout-secs", "0"), ("--max-connections", "0"), ("--max-handshakes", "0")] {
        let err = refused(d.path(), &policy, &[flag, v]);
        assert!(err.contains(flag) && err.contains("0"), "{flag}: {err}");
    }
}

#[test]
fn a_key_of_another_certificate_names_both_files() {
    let (d, policy) = setup("", "simulated");
    let other = d.path().join("other");
    let o =
        Command::new(env!("CARGO_BIN_EXE_pfs")).args(["keyserver", "init-tls"]).arg(&other).output().unwrap();
    assert!(o.status.success());
    std::fs::copy(other.join("server-key.pem"), d.path().join("tls/server-key.pem")).unwrap();
    let err = refused(d.path(), &policy, &[]);
    assert!(
        err.contains("server-key.pem") && err.contains("server.pem") && err.contains("does not belong"),
        "{err}"
    );
    assert!(!err.contains("KeyMismatch"), "{err}");
}

#[test]
fn a_missing_collateral_file_names_the_policy_line_and_its_cause_once() {
    let (d, policy) = setup("collateral = [\"nowhere.json\"]", "sgx");
    let err = refused(d.path(), &policy, &[]);
    let line = format!("line {}", line_of(&policy, "collateral ="));
    assert!(
        err.contains(&line) && err.contains("attestation.collateral[0]") && err.contains("nowhere.json"),
        "{err}"
    );
    assert_eq!(err.matches("No such file or directory").count(), 1, "cause printed more than once: {err}");
}

#[test]
fn a_simulated_entry_without_the_opt_in_is_warned_about_and_logs_have_no_colour() {
    let (d, policy) = setup("# no opt-in", "simulated");
    let mut s = start_server(d.path(), &policy, &[]);
    let log = wait_ready(&mut s);
    let line = format!("line {}", line_of(&policy, "[[enclave]]"));
    assert!(log.contains(&line) && log.contains("can never match"), "{log}");
    assert!(!log.contains('\x1b'), "ANSI escape codes in a log that is not a terminal: {log:?}");
}

fn start_server(d: &std::path::Path, policy: &std::path::Path, args: &[&str]) -> Server {
    Server(
        Command::new(env!("CARGO_BIN_EXE_pfs"))
            .args(["keyserver", "--policy"])
            .arg(policy)
            .args(["--listen", "127.0.0.1:0", "--cert"])
            .arg(d.join("tls/server.pem"))
            .arg("--key")
            .arg(d.join("tls/server-key.pem"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Reads stderr until "key server ready" (bounded), returning what was read.
fn wait_ready(s: &mut Server) -> String {
    use std::io::BufRead;
    let err = s.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut log = String::new();
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            log.push_str(&line);
            log.push('\n');
            if line.contains("key server ready") {
                let _ = tx.send(log.clone());
            }
        }
        let _ = tx.send(log);
    });
    let log = rx.recv_timeout(Duration::from_secs(20)).expect("key server output");
    assert!(log.contains("key server ready"), "{log}");
    log
}

/// The 1-based line of `policy` that starts with `prefix`.
fn line_of(policy: &std::path::Path, prefix: &str) -> usize {
    let text = std::fs::read_to_string(policy).unwrap();
    text.lines().position(|l| l.starts_with(prefix)).expect("line in policy") + 1
}
