//! `pfs run` with encrypted mounts, end to end and in its failure modes: wrong key, tampered
//! model, trusted script modified after `pfs manifest`, a stale foreign file at an output
//! path, a SIGKILLed program, a key server that refuses the measurement. After every run:
//! no mount left behind, no plaintext of inputs or outputs under the work directory.

mod common;

use std::fs;
use std::path::Path;

use common::*;

const KEY: [u8; 16] = *b"0123456789abcdef";
const OTHER_KEY: [u8; 16] = *b"fedcba9876543210";

/// An unmodified program: reads the model and input, writes a result.
const APP: &str = r#"import sys
model = open("/data/model.json", "rb").read()
inp = open("/data/input.csv", "rb").read()
with open("/output/result.txt", "w") as f:
    f.write("RESULT-LINE-%d-bytes-of-model-%d-bytes-of-input\n" % (len(model), len(inp)))
print("app: wrote the result")
"#;

/// The mounts of the test manifests; `{output}` is the output mount.
fn template(key: &[u8; 16], output: &str, extra_env: &str) -> String {
    format!(
        r#"libos.entrypoint = "{{{{ python }}}}"
loader.argv = ["{{{{ python }}}}", "app.py"]
loader.env.PYTHONDONTWRITEBYTECODE = "1"
{extra_env}
fs.mounts = [
  {{ path = "/usr", uri = "file:/usr" }},
  {{ path = "/lib", uri = "file:{{{{ gramine.runtimedir() }}}}" }},
  {{ type = "tmpfs", path = "/tmp" }},
  {{ type = "encrypted", path = "/data/", uri = "file:enc/input/" }},
  {output}
]
fs.insecure__keys.default = "{key}"
sgx.trusted_files = ["file:app.py"]
sgx.allowed_files = ["file:/usr/", "file:{{{{ gramine.runtimedir() }}}}/"]
"#,
        key = hex::encode(key)
    )
}

const DIR_OUTPUT: &str = r#"{ type = "encrypted", path = "/output/", uri = "file:enc/output/" },"#;

/// The plaintext model (20,000 bytes: the inline part and several data nodes) and input.
fn model() -> Vec<u8> {
    (0..1000).flat_map(|i| format!("MODEL-WEIGHT-{i:06}\n").into_bytes()).collect()
}
fn input() -> Vec<u8> {
    (0..50).flat_map(|i| format!("INPUT-ROW-{i:04},1.5,2.5\n").into_bytes()).collect()
}
fn expected_result() -> String {
    format!("RESULT-LINE-{}-bytes-of-model-{}-bytes-of-input\n", model().len(), input().len())
}

/// A work directory with the app, its encrypted inputs (under `KEY`) and a manifest whose
/// insecure key is `key`.
fn setup(d: &Path, key: &[u8; 16], output: &str, app: &str) {
    write(d, "app.py", app.as_bytes());
    encrypt(d, "enc/input/model.json", &KEY, &model());
    encrypt(d, "enc/input/input.csv", &KEY, &input());
    fs::create_dir_all(d.join("enc/output")).unwrap();
    write(d, "app.manifest.template", template(key, output, "").as_bytes());
    let out =
        pfs(d, &["manifest", "app.manifest.template", "app.manifest", "-D", &format!("python={}", python())]);
    assert!(out.status.success(), "{}", show(&out));
}

/// After any run: nothing in plaintext on disk (the script is not secret).
fn assert_clean(d: &Path) {
    assert_no_mounts(d);
    assert_no_plaintext(d, &[&model(), &input(), expected_result().as_bytes()]);
}

#[test]
fn outputs_are_protected_files_bound_to_the_uri_path() {
    let tmp = workdir();
    let d = tmp.path();
    setup(d, &KEY, DIR_OUTPUT, APP);
    let out = pfs_run(d, "app.manifest");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("insecure"),
        "insecure-key warning: {}",
        show(&out)
    );
    assert_clean(d);
    let got = decrypt(d, "enc/output/result.txt", &KEY, "enc/output/result.txt").expect("decrypts");
    assert_eq!(String::from_utf8(got).unwrap(), expected_result());
    // Bound to uri/REL, as Gramine binds it: the in-view path does not open it.
    assert!(decrypt(d, "enc/output/result.txt", &KEY, "/output/result.txt").is_err());
    assert!(fs::read(d.join("enc/output/result.txt")).unwrap().starts_with(b"GRAFS_PF"));
    // A second run overwrites the (now valid) output in place.
    let out = pfs_run(d, "app.manifest");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_clean(d);
}

#[test]
fn wrong_key_gives_eacces_and_the_run_fails() {
    let tmp = workdir();
    let d = tmp.path();
    setup(d, &OTHER_KEY, DIR_OUTPUT, APP);
    let out = pfs_run(d, "app.manifest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stderr.contains("[Errno 13]") || stderr.contains("[Errno 5]"), "{}", show(&out));
    assert!(stderr.contains("/data/model.json"), "{}", show(&out));
    assert!(stderr.contains("pfs run: encrypted mount:") && stderr.contains("model.json"), "{}", show(&out));
    assert!(!d.join("enc/output/result.txt").exists(), "the program must not get past its input");
    assert_clean(d);
}

#[test]
fn tampered_model_fails_the_read_and_the_run() {
    let tmp = workdir();
    let d = tmp.path();
    setup(d, &KEY, DIR_OUTPUT, APP);
    // Flip one bit of the third data node's ciphertext.
    let path = d.join("enc/input/model.json");
    let mut bytes = fs::read(&path).unwrap();
    assert!(bytes.len() >= 5 * 4096, "{}", bytes.len());
    bytes[4 * 4096 + 100] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let out = pfs_run(d, "app.manifest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stderr.contains("[Errno 13]") || stderr.contains("[Errno 5]"), "{}", show(&out));
    assert!(!d.join("enc/output/result.txt").exists());
    assert_clean(d);
}

#[test]
/// Trusted files are verified when first opened (as in Gramine): the interpreter's open of
/// its script is refused with EACCES and the launcher names the file.
fn trusted_script_modified_after_manifest_is_refused_at_open() {
    let tmp = workdir();
    let d = tmp.path();
    setup(d, &KEY, DIR_OUTPUT, APP);
    write(d, "app.py", format!("{APP}open('/output/leak.txt', 'w').write('x')\n").as_bytes());
    let out = pfs_run(d, "app.manifest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stderr.contains("trusted file") && stderr.contains("app.py was modified"),
        "names the file: {}",
        show(&out)
    );
    assert!(stderr.contains("Permission denied"), "the open fails with EACCES: {}", show(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("app:"), "the program must not start");
    assert!(!d.join("enc/output/result.txt").exists() && !d.join("enc/output/leak.txt").exists());
    assert_clean(d);
}

#[test]
fn stale_foreign_file_at_an_output_path_is_a_clear_error() {
    // A single-file output mount: the launcher opens the output before the program starts.
    let tmp = workdir();
    let d = tmp.path();
    let single =
        r#"{ type = "encrypted", path = "/output/result.txt", uri = "file:enc/output/result.txt" },"#;
    setup(d, &KEY, single, APP);
    let stale = b"stale plaintext result from an earlier, unprotected run\n";
    write(d, "enc/output/result.txt", stale);
    let out = pfs_run(d, "app.manifest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(121), "{}", show(&out));
    assert!(stderr.contains("result.txt"), "names the file: {}", show(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("app:"), "the program must not start");
    assert_eq!(
        fs::read(d.join("enc/output/result.txt")).unwrap(),
        stale,
        "a foreign file is never overwritten"
    );
    assert_no_mounts(d);
    assert_no_plaintext(d, &[&model(), &input()]);

    // A directory output mount: the program's open fails (EACCES) and pfs-fuse says why.
    let tmp = workdir();
    let d = tmp.path();
    setup(d, &KEY, DIR_OUTPUT, APP);
    write(d, "enc/output/result.txt", stale);
    let out = pfs_run(d, "app.manifest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stderr.contains("[Errno 13]") || stderr.contains("[Errno 5]"), "{}", show(&out));
    assert!(
        stderr.contains("pfs run: encrypted mount:") && stderr.contains("\"result.txt\": open failed"),
        "the launcher says which file and why: {}",
        show(&out)
    );
    assert_eq!(fs::read(d.join("enc/output/result.txt")).unwrap(), stale);
    assert_no_mounts(d);
}

#[test]
fn sigkilled_program_leaves_no_mount_and_its_closed_output_is_valid() {
    let tmp = workdir();
    let d = tmp.path();
    let app = format!("{APP}import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n");
    setup(d, &KEY, DIR_OUTPUT, &app);
    let out = pfs_run(d, "app.manifest");
    assert_eq!(out.status.code(), Some(128 + 9), "{}", show(&out));
    assert_clean(d);
    let got = decrypt(d, "enc/output/result.txt", &KEY, "enc/output/result.txt").expect("decrypts");
    assert_eq!(String::from_utf8(got).unwrap(), expected_result());
}

/// The key server refuses the program's measurement: the run stops before the program
/// starts, with the server's reason.
#[cfg(feature = "insecure-sim")]
#[test]
fn key_server_refusal_stops_the_run_with_the_servers_reason() {
    use std::process::Stdio;

    let tmp = workdir();
    let d = tmp.path();
    let owner = d.join("owner");
    let cloud = d.join("cloud");
    fs::create_dir_all(&owner).unwrap();
    let out = pfs(d, &["keyserver", "init-tls", "owner/tls"]);
    assert!(out.status.success(), "{}", show(&out));
    fs::write(owner.join("wrap-key"), KEY).unwrap();
    // 0600, as `pfs keygen` writes it: the key server refuses key files others can read.
    fs::set_permissions(owner.join("wrap-key"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();

    write(&cloud, "app.py", APP.as_bytes());
    fs::copy(owner.join("tls/ca.pem"), cloud.join("ca.crt")).unwrap();
    encrypt(&cloud, "enc/input/model.json", &KEY, &model());
    encrypt(&cloud, "enc/input/input.csv", &KEY, &input());
    fs::create_dir_all(cloud.join("enc/output")).unwrap();
    let env = format!(
        "loader.env.LD_PRELOAD = \"libsecret_prov_attest.so\"\n\
         loader.env.SECRET_PROVISION_CONSTRUCTOR = \"1\"\n\
         loader.env.SECRET_PROVISION_SET_KEY = \"default\"\n\
         loader.env.SECRET_PROVISION_CA_CHAIN_PATH = \"/ca.crt\"\n\
         loader.env.SECRET_PROVISION_SERVERS = \"localhost:{port}\"\n"
    );
    let text = template(&KEY, DIR_OUTPUT, &env)
        .replace("fs.insecure__keys.default = \"30313233343536373839616263646566\"\n", "")
        .replace("[\"file:app.py\"]", "[\"file:app.py\", \"file:ca.crt\"]");
    assert!(!text.contains("insecure__keys"));
    write(&cloud, "app.manifest.template", text.as_bytes());
    let out = pfs(
        &cloud,
        &["manifest", "app.manifest.template", "app.manifest", "-D", &format!("python={}", python())],
    );
    assert!(out.status.success(), "{}", show(&out));

    // The policy names another measurement.
    let policy = format!(
        "[attestation]\ninsecure_allow_simulated = true\n[keys.default]\nfile = \"wrap-key\"\n\
         [[enclave]]\nname = \"someone-else\"\ntee = \"simulated\"\nmrenclave = \"{}\"\nfirst_secret = \"default\"\n",
        "ab".repeat(32)
    );
    fs::write(owner.join("policy.toml"), policy).unwrap();
    let server = start_keyserver(&owner, port, Stdio::null());

    let out = pfs_run(&cloud, "app.manifest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(123), "{}", show(&out));
    assert!(stderr.contains("MRENCLAVE mismatch"), "the server's reason: {}", show(&out));
    assert!(stderr.contains(&"ab".repeat(32)) && stderr.contains("someone-else"), "{}", show(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("app:"), "the program must not start");
    drop(server);
    assert_clean(d);
}
