//! `pfs demo` end to end: key, in-memory model and input encrypted, key server on loopback,
//! `pfs run` of the unmodified Python program, encrypted result (real FUSE, TLS, Python).
#![cfg(feature = "insecure-sim")]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

#[test]
fn demo_runs_the_whole_workflow() {
    let tmp = workdir();
    let dir = tmp.path().join("demo");
    let run = || {
        let out = Command::new(pfs_bin()).args(["demo", "--workdir"]).arg(&dir).output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        assert_no_mounts(tmp.path());
        out
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for n in 1..=6 {
        assert!(stdout.contains(&format!("[{n}/6]")), "step {n} missing: {stdout}");
    }
    assert!(stdout.contains("simulated measurement (NOT an SGX MRENCLAVE)"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("simulated TEE"), "{}", show(&out));

    // What DIR keeps: the owner's key, TLS files and policy; the cloud's files.
    let owner = dir.join("owner");
    let cloud = dir.join("cloud");
    for f in ["wrap-key", "policy.toml", "tls/ca.pem", "tls/server.pem", "tls/server-key.pem"] {
        assert!(owner.join(f).is_file(), "owner/{f} missing");
    }
    for f in ["infer.py", "infer.manifest", "ca.crt", "enc/input/model.json", "enc/input/input.csv"] {
        assert!(cloud.join(f).is_file(), "cloud/{f} missing");
    }
    let key_meta = fs::metadata(owner.join("wrap-key")).unwrap();
    assert_eq!(key_meta.len(), 16);
    assert_eq!(key_meta.permissions().mode() & 0o777, 0o600);
    let key: [u8; 16] = fs::read(owner.join("wrap-key")).unwrap().try_into().unwrap();

    // The result is a protected file bound to its URI path (not to the in-view path).
    let result = decrypt(&cloud, "enc/output/result.txt", &key, "enc/output/result.txt").expect("decrypts");
    let result = String::from_utf8(result).unwrap();
    assert_eq!(result.lines().count(), 6, "{result}");
    assert!(result.starts_with("input 0 (-2.10, -0.70): red"), "{result}");
    assert!(stdout.contains("| input 2 (0.20, 2.40): blue"), "the demo prints the result: {stdout}");
    assert!(decrypt(&cloud, "enc/output/result.txt", &key, "/output/result.txt").is_err());
    let model = decrypt(&cloud, "enc/input/model.json", &key, "enc/input/model.json").unwrap();
    let input = decrypt(&cloud, "enc/input/input.csv", &key, "enc/input/input.csv").unwrap();
    assert!(model.starts_with(b"{") && input.starts_with(b"x1,x2\n"));
    for f in ["enc/input/model.json", "enc/input/input.csv", "enc/output/result.txt"] {
        assert!(fs::read(cloud.join(f)).unwrap().starts_with(b"GRAFS_PF"), "{f}");
    }
    assert_no_plaintext(&dir, &[&model, &input, result.as_bytes()]);

    // The same measurement is what the policy names.
    let text = fs::read_to_string(cloud.join("infer.manifest")).unwrap();
    let (manifest, _) = libos::Manifest::parse(&text, libos::Mode::Run).unwrap();
    let policy = fs::read_to_string(owner.join("policy.toml")).unwrap();
    assert!(policy.contains(&libos::measure(&manifest).hex()), "{policy}");

    // A rerun replaces the earlier demo; a foreign directory is refused.
    run();
    let foreign = tmp.path().join("foreign");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("keep.txt"), "mine").unwrap();
    let out = Command::new(pfs_bin()).args(["demo", "--workdir"]).arg(&foreign).output().unwrap();
    assert!(!out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("was not made by `pfs demo`"), "{}", show(&out));
    assert_eq!(fs::read_to_string(foreign.join("keep.txt")).unwrap(), "mine");
}
