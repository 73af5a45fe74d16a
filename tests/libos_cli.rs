//! `pfs manifest` and `pfs run` as a user runs them (real namespace, real Python).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn pfs(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pfs")).args(args).current_dir(dir).output().unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// As in spec/manifest.md's worked example: the host's libc directory at /lib and nothing at
// /lib64; the launcher provides the ELF interpreter at its PT_INTERP path, as Gramine finds
// it by name in /lib.
const TEMPLATE: &str = r#"# A Gramine-style template.
libos.entrypoint = "/usr/bin/python3"
loader.argv = ["python3", "app.py"]
loader.env.ANSWER = "{{ answer }}"
fs.mounts = [
  { path = "/usr", uri = "file:/usr" },
  { path = "/lib", uri = "file:{{ gramine.runtimedir() }}" },
  { type = "tmpfs", path = "/tmp" },
]
sgx.trusted_files = [ "file:app.py" ]
# The strict file policy (the default) needs the system directories listed.
sgx.allowed_files = [ "file:/usr/", "file:{{ gramine.runtimedir() }}/" ]
"#;

#[test]
fn manifest_then_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("app.manifest.template"), TEMPLATE).unwrap();
    fs::write(d.join("app.py"), "import os, sys\nsys.exit(int(os.environ['ANSWER']))\n").unwrap();

    let out = pfs(d, &["manifest", "app.manifest.template", "app.manifest", "-D", "answer=42"]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = fs::read_to_string(d.join("app.manifest")).unwrap();
    let (manifest, _) = libos::Manifest::parse(&text, libos::Mode::Run).unwrap();
    let expected = format!("simulated measurement (NOT an SGX MRENCLAVE): {}", libos::measure(&manifest));
    assert!(stdout.contains(&expected), "{stdout}");
    assert!(!stdout.to_lowercase().contains("mrenclave:"), "never presented as an MRENCLAVE: {stdout}");

    let out = pfs(d, &["run", "app"]);
    assert_eq!(out.status.code(), Some(42), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().next().unwrap().contains("simulated TEE"), "{stderr}");

    // A /lib64 mount whose link dangles in the view is explained, not just "not found".
    let with_lib64 = TEMPLATE.replace(
        "  { type = \"tmpfs\"",
        "  { path = \"/lib64\", uri = \"file:/lib64\" },\n  { type = \"tmpfs\"",
    );
    fs::write(d.join("app.manifest.template"), with_lib64).unwrap();
    let out = pfs(d, &["manifest", "app.manifest.template", "app.manifest", "-D", "answer=42"]);
    assert!(out.status.success(), "{}", show(&out));
    let out = pfs(d, &["run", "app"]);
    if out.status.code() != Some(42) {
        assert_eq!(out.status.code(), Some(127), "{}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("ELF interpreter"), "{}", show(&out));
    }
}

#[test]
fn manifest_refuses_unknown_keys_with_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("t"), "libos.entrypoint = \"/x\"\n\nsgx.thread_num = 4\nsgx.nonsense = 1\n").unwrap();
    let out = pfs(d, &["manifest", "t", "out.manifest"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3: `sgx.thread_num`: removed from Gramine; use `sgx.max_threads`"),
        "{stderr}"
    );
    assert!(stderr.contains("line 4: `sgx.nonsense`: unknown key"), "{stderr}");
    assert!(!d.join("out.manifest").exists());
}

/// `/dev/attestation` under `pfs run` with the simulated attester: `attestation_type`
/// reads `sim`, the quote is simulated evidence (the attest crate's tagged format) over the
/// report data the program wrote, `keys/default` holds the insecure key, wrong sizes fail.
#[cfg(feature = "insecure-sim")]
#[test]
fn dev_attestation_serves_a_simulated_quote_over_user_report_data() {
    const APP: &str = r#"import errno, os
d = "/dev/attestation"
kind = open(d + "/attestation_type").read()
rd = bytes(range(100, 164))
with open(d + "/user_report_data", "wb") as f:
    f.write(rd)
quote = open(d + "/quote", "rb").read()
key = open(d + "/keys/default", "rb").read()
try:
    with open(d + "/user_report_data", "wb") as f:
        f.write(b"short")
    short = "accepted"
except OSError as e:
    short = errno.errorcode[e.errno]
print(kind, quote.hex(), key.hex(), short)
"#;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let template = TEMPLATE.replace("{{ answer }}", "0").replace(
        "sgx.trusted_files",
        "sgx.remote_attestation = \"dcap\"\nfs.insecure__keys.default = \"000102030405060708090a0b0c0d0e0f\"\n\
         sgx.trusted_files",
    );
    fs::write(d.join("app.manifest.template"), template).unwrap();
    fs::write(d.join("app.py"), APP).unwrap();
    let out = pfs(d, &["manifest", "app.manifest.template", "app.manifest"]);
    assert!(out.status.success(), "{}", show(&out));
    let (manifest, _) =
        libos::Manifest::parse(&fs::read_to_string(d.join("app.manifest")).unwrap(), libos::Mode::Run)
            .unwrap();

    let out = pfs(d, &["run", "app"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    let [kind, quote, key, short] = fields[..] else { panic!("{}", show(&out)) };
    assert_eq!(kind, "sim", "simulated, never `dcap`");
    assert_eq!(key, "000102030405060708090a0b0c0d0e0f");
    assert_eq!(short, "EACCES", "a 5-byte user_report_data is refused");

    let quote = hex::decode(quote).unwrap();
    assert!(attest::quote::SgxQuote::parse(&quote).is_err(), "never taken for an SGX quote");
    let attest::ratls::CertEvidence::Simulated { report, .. } =
        attest::ratls::parse_tagged_evidence(&quote).unwrap()
    else {
        panic!("the quote is not simulated evidence")
    };
    use attest::ratls::SimulatedEvidenceVerifier;
    let now = rustls_pki_types::UnixTime::now();
    let evidence = attest::sim::SimVerifier::dangerous_new().verify_simulated(&report, now).unwrap();
    let expected: Vec<u8> = (100u8..164).collect();
    assert_eq!(
        evidence.report_data().as_slice(),
        expected.as_slice(),
        "the quote is over the written report data"
    );
    assert_eq!(evidence.identity().mrenclave, libos::measure(&manifest).value);

    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains("pfs-attestation"), "left mounted: {mounts}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("000102030405060708090a0b0c0d0e0f"), "key logged");
}
