//! `pfs keygen` (mode 0600, no overwrite without --force) and `pfs info`.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::util::{info_json, pfs, plaintext, workdir};

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn keygen_writes_16_random_bytes_with_mode_0600() {
    let dir = workdir();
    let d = dir.path();
    let run = pfs(d, &["keygen", "-o", "a.key"]).ok();
    pfs(d, &["keygen", "-o", "b.key"]).ok();
    let (a, b) = (fs::read(d.join("a.key")).unwrap(), fs::read(d.join("b.key")).unwrap());
    assert_eq!(a.len(), 16);
    assert_ne!(a, b, "two keys must differ");
    assert_eq!(mode(&d.join("a.key")), 0o600);
    assert!(
        !run.stdout.contains(&hex::encode(&a)) && !run.stderr.contains(&hex::encode(&a)),
        "key bytes printed"
    );
}

#[test]
fn keygen_refuses_to_overwrite_without_force() {
    let dir = workdir();
    let d = dir.path();
    pfs(d, &["keygen", "-o", "a.key"]).ok();
    let before = fs::read(d.join("a.key")).unwrap();
    let run = pfs(d, &["keygen", "-o", "a.key"]).fails();
    assert!(run.stderr.contains("already exists") && run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(fs::read(d.join("a.key")).unwrap(), before, "the key must not change");

    fs::set_permissions(d.join("a.key"), fs::Permissions::from_mode(0o644)).unwrap();
    pfs(d, &["keygen", "-o", "a.key", "--force", "-q"]).ok();
    let after = fs::read(d.join("a.key")).unwrap();
    assert_eq!(after.len(), 16);
    assert_ne!(after, before);
    assert_eq!(mode(&d.join("a.key")), 0o600, "--force resets the mode to 0600");
}

#[test]
fn a_generated_key_encrypts_and_decrypts() {
    let dir = workdir();
    let d = dir.path();
    pfs(d, &["keygen", "-q", "-o", "new.key"]).ok();
    fs::write(d.join("p"), plaintext("keygen", 5000)).unwrap();
    pfs(d, &["encrypt", "-w", "new.key", "-i", "p", "-o", "p.pf"]).ok();
    pfs(d, &["decrypt", "-w", "new.key", "-i", "p.pf", "-o", "q"]).ok();
    assert_eq!(fs::read(d.join("q")).unwrap(), fs::read(d.join("p")).unwrap());
}

#[test]
fn info_json_without_a_key_has_the_plain_header_fields_only() {
    let dir = workdir();
    let d = dir.path();
    fs::write(d.join("p"), plaintext("info", 400_000)).unwrap();
    pfs(d, &["encrypt", "-w", "k.key", "-i", "p", "-o", "enc/p.pf", "--format", "1"]).ok();
    let info = info_json(d, &["enc/p.pf"]);
    assert_eq!(info["format_major"], 1);
    assert_eq!(info["format_minor"], 0);
    assert_eq!(info["flags"], 0);
    assert_eq!(info["pending_write"], false);
    assert_eq!(info["host_size"], 100 * 4096); // 1 + 2 MHT + 97 data nodes
    assert_eq!(info["host_nodes"], 100);
    assert!(info.get("embedded_path").is_none() && info.get("plaintext_size").is_none(), "{info}");
}

#[test]
fn info_json_with_a_key_adds_path_size_and_depth() {
    let dir = workdir();
    let d = dir.path();
    fs::write(d.join("p"), plaintext("info", 400_000)).unwrap();
    pfs(d, &["encrypt", "-w", "k.key", "-i", "p", "-o", "enc/p.pf"]).ok();
    let info = info_json(d, &["-w", "k.key", "enc/p.pf"]);
    assert_eq!(info["format_major"], 2);
    assert_eq!(info["embedded_path"], "enc/p.pf");
    assert_eq!(info["plaintext_size"], 400_000);
    assert_eq!(info["tree_depth"], 2);
    assert_eq!(info["data_nodes"], 97);
    assert_eq!(info["mht_nodes"], 2);
    assert_eq!(info["expected_host_nodes"], 100);

    let text = pfs(d, &["info", "-w", "k.key", "enc/p.pf"]).ok().stdout;
    assert!(text.contains("embedded path:   enc/p.pf") && text.contains("400000 bytes"), "{text}");
}

#[test]
fn info_with_a_wrong_key_shows_the_header_and_fails() {
    let dir = workdir();
    let d = dir.path();
    fs::write(d.join("p"), b"x").unwrap();
    fs::write(d.join("other.key"), [9u8; 16]).unwrap();
    pfs(d, &["encrypt", "-w", "k.key", "-i", "p", "-o", "p.pf"]).ok();
    let run = pfs(d, &["info", "--json", "-w", "other.key", "p.pf"]).fails();
    let info: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(info["format_major"], 2);
    assert!(info["error"].as_str().unwrap().contains("metadata node"), "{info}");
    assert!(run.stderr.contains("p.pf"), "{}", run.stderr);
}

#[test]
fn info_on_a_file_that_is_not_protected_fails() {
    let dir = workdir();
    let d = dir.path();
    fs::write(d.join("short"), b"hello").unwrap();
    fs::write(d.join("long"), vec![b'a'; 8192]).unwrap();
    let run = pfs(d, &["info", "short"]).fails();
    assert!(run.stderr.contains("not a protected file"), "{}", run.stderr);
    let run = pfs(d, &["info", "long"]).fails();
    assert!(run.stderr.contains("GRAFS_PF"), "{}", run.stderr);
}
