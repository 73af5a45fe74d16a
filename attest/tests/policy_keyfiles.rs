//! Key files named by a policy: only regular files of exactly 16 bytes, read with a bound,
//! so a policy that names a FIFO or a device fails at once instead of hanging the key
//! server's start-up.

use std::path::Path;
use std::process::Command;

use attest::{Policy, PolicyError};

fn load_key(dir: &Path, file: &str) -> Result<Policy, PolicyError> {
    let src = format!(
        "[keys.model]\nfile = \"{file}\"\n[[enclave]]\nname = \"app\"\nmrenclave = \"{}\"\n\
         first_secret = \"model\"\n",
        "11".repeat(32)
    );
    Policy::from_toml(&src, &dir.join("policy.toml"), dir)
}

fn key_file_reason(result: Result<Policy, PolicyError>) -> String {
    match result {
        Err(PolicyError::KeyFile { reason, line, name, .. }) => {
            assert_eq!((line, name.as_str()), (1, "model"));
            reason
        }
        Err(other) => panic!("expected a key-file error, got: {other}"),
        Ok(_) => panic!("the policy was accepted"),
    }
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.key");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(status.success(), "mkfifo failed");
    // No writer ever opens the FIFO: opening it for reading would block forever.
    let reason = key_file_reason(load_key(dir.path(), "model.key"));
    assert!(reason.contains("is a FIFO"), "{reason}");
    assert!(reason.contains("regular file"), "{reason}");
}

#[test]
fn devices_and_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let reason = key_file_reason(load_key(dir.path(), "/dev/zero"));
    assert!(reason.contains("is a character device"), "{reason}");
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let reason = key_file_reason(load_key(dir.path(), "keys"));
    assert!(reason.contains("is a directory"), "{reason}");
    // The error names the policy's field and the file, so the user knows what to fix.
    let err = load_key(dir.path(), "/dev/zero").err().unwrap().to_string();
    assert!(err.contains("keys.model.file") && err.contains("/dev/zero"), "{err}");
}

#[test]
fn sizes_are_reported_and_only_16_bytes_accepted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.key"), vec![7u8; 1 << 20]).unwrap();
    let reason = key_file_reason(load_key(dir.path(), "big.key"));
    assert!(reason.contains("has 1048576 bytes"), "{reason}");
    std::fs::write(dir.path().join("long.key"), [7u8; 17]).unwrap();
    assert!(key_file_reason(load_key(dir.path(), "long.key")).contains("has 17 bytes"));
    std::fs::write(dir.path().join("short.key"), [7u8; 15]).unwrap();
    assert!(key_file_reason(load_key(dir.path(), "short.key")).contains("has 15 bytes"));
    std::fs::write(dir.path().join("ok.key"), [7u8; 16]).unwrap();
    let policy = load_key(dir.path(), "ok.key").expect("a 16-byte key file loads");
    assert_eq!(policy.key_names(), ["model"]);
    // A symbolic link to a regular key file is fine (it is followed, as before).
    std::os::unix::fs::symlink(dir.path().join("ok.key"), dir.path().join("link.key")).unwrap();
    load_key(dir.path(), "link.key").expect("a link to a key file loads");
}
