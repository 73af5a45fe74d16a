//! `pfs check`: authenticate every node, report bad nodes with their plaintext ranges.

use std::fs;
use std::path::Path;

use crate::util::{flip_byte, pfs, plaintext, workdir};

const NODE: usize = 4096;

/// Encrypts `size` bytes into `name` inside `dir`.
fn make(dir: &Path, name: &str, size: usize) {
    fs::write(dir.join("plain"), plaintext(name, size)).unwrap();
    let run = pfs(dir, &["encrypt", "-q", "-w", "k.key", "-i", "plain", "-o", name]).ok();
    assert!(
        run.stdout.is_empty() && run.stderr.is_empty(),
        "-q must be quiet: {} {}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn intact_files_check_ok() {
    let dir = workdir();
    let d = dir.path();
    for (name, size) in [("a.pf", 0), ("b.pf", 3073), ("c.pf", 500_000)] {
        make(d, name, size);
    }
    let run = pfs(d, &["check", "-w", "k.key", "a.pf", "b.pf", "c.pf"]).ok();
    assert!(run.stdout.contains("c.pf: ok (500000 bytes"), "{}", run.stdout);
    assert!(run.stdout.contains("3 files ok, 0 damaged, 0 unreadable"), "{}", run.stdout);
}

#[test]
fn a_flipped_byte_in_a_data_node_is_reported_with_its_node_and_range() {
    let dir = workdir();
    let d = dir.path();
    make(d, "a.pf", 500_000);
    flip_byte(&d.join("a.pf"), 5 * NODE + 1000); // host node 5 = data node #3
    let run = pfs(d, &["check", "-w", "k.key", "a.pf"]).fails();
    assert!(run.stdout.contains("a.pf: DAMAGED: 1 bad node(s)"), "{}", run.stdout);
    assert!(run.stdout.contains("data node #3 (host node 5, plaintext offset 15360)"), "{}", run.stdout);
    assert!(run.stdout.contains("15360..19456 (4096 bytes)"), "{}", run.stdout);
    assert!(run.stdout.contains("0 files ok, 1 damaged, 0 unreadable"), "{}", run.stdout);
}

#[test]
fn a_flipped_byte_in_an_mht_node_reports_every_plaintext_byte_under_it() {
    let dir = workdir();
    let d = dir.path();
    // 500000 bytes: data nodes 96..121 hang under MHT node #1 = host node 98.
    make(d, "a.pf", 500_000);
    flip_byte(&d.join("a.pf"), 98 * NODE + 3000);
    let run = pfs(d, &["check", "-w", "k.key", "a.pf"]).fails();
    assert!(run.stdout.contains("MHT node #1 (host node 98, plaintext offset 396288)"), "{}", run.stdout);
    assert!(run.stdout.contains("396288..500000"), "{}", run.stdout);
}

#[test]
fn a_flipped_byte_in_the_root_mht_node_is_reported() {
    let dir = workdir();
    let d = dir.path();
    make(d, "a.pf", 10_000);
    flip_byte(&d.join("a.pf"), NODE + 17);
    let run = pfs(d, &["check", "-w", "k.key", "a.pf"]).fails();
    assert!(run.stdout.contains("a.pf: DAMAGED: root MHT node (host node 1"), "{}", run.stdout);
    assert!(run.stdout.contains("0 files ok, 1 damaged, 0 unreadable"), "{}", run.stdout);
}

#[test]
fn a_flipped_byte_in_the_metadata_node_makes_the_file_unreadable() {
    let dir = workdir();
    let d = dir.path();
    make(d, "a.pf", 10_000);
    flip_byte(&d.join("a.pf"), 1000); // inside the encrypted part of node 0
    let run = pfs(d, &["check", "-w", "k.key", "a.pf"]).fails();
    assert!(
        run.stdout.contains("a.pf: UNREADABLE: metadata node (node 0) failed authentication"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("0 files ok, 0 damaged, 1 unreadable"), "{}", run.stdout);
}

#[test]
fn truncated_files_are_reported() {
    let dir = workdir();
    let d = dir.path();
    make(d, "a.pf", 20_000); // host nodes 0..=6: metadata, root MHT, data nodes #0..#4
    make(d, "b.pf", 20_000);
    let a = fs::OpenOptions::new().write(true).open(d.join("a.pf")).unwrap();
    a.set_len(6 * NODE as u64).unwrap(); // data node #4 (host node 6) gone
    let b = fs::OpenOptions::new().write(true).open(d.join("b.pf")).unwrap();
    b.set_len(5 * NODE as u64 - 100).unwrap(); // not a whole number of nodes
    let run = pfs(d, &["check", "-w", "k.key", "a.pf", "b.pf"]).fails();
    assert!(
        run.stdout.contains("data node #4 (host node 6, plaintext offset 19456) is missing"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("19456..20000 (544 bytes)"), "{}", run.stdout);
    assert!(run.stdout.contains("b.pf: DAMAGED: invalid header: host file size 20380"), "{}", run.stdout);
}

#[test]
fn check_keeps_going_across_files_and_directories_and_sums_up() {
    let dir = workdir();
    let d = dir.path();
    fs::create_dir_all(d.join("tree/sub")).unwrap();
    make(d, "tree/good.pf", 8000);
    make(d, "tree/sub/bad.pf", 8000);
    flip_byte(&d.join("tree/sub/bad.pf"), 2 * NODE + 1);
    fs::write(d.join("tree/notes.txt"), "not a protected file, but longer than one node. ".repeat(100))
        .unwrap();
    make(d, "lone.pf", 100);
    let run = pfs(d, &["check", "-w", "k.key", "tree", "lone.pf", "missing.pf"]).fails();
    assert!(
        run.stdout.contains("tree/notes.txt: UNREADABLE: invalid header: file id is not GRAFS_PF"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("missing.pf: UNREADABLE: cannot open"), "{}", run.stdout);
    assert!(run.stdout.contains("tree/sub/bad.pf: DAMAGED"), "{}", run.stdout);
    assert!(run.stdout.contains("2 files ok, 1 damaged, 2 unreadable"), "{}", run.stdout);

    // -q lists only the problems.
    let run = pfs(d, &["check", "-q", "-w", "k.key", "tree", "lone.pf"]).fails();
    assert!(!run.stdout.contains("good.pf"), "{}", run.stdout);
    assert!(run.stdout.contains("bad.pf: DAMAGED"), "{}", run.stdout);
}

#[test]
fn check_reports_the_pending_write_flag_without_failing() {
    let dir = workdir();
    let d = dir.path();
    make(d, "a.pf", 100);
    let mut bytes = fs::read(d.join("a.pf")).unwrap();
    bytes[58] |= 1;
    fs::write(d.join("a.pf"), bytes).unwrap();
    let run = pfs(d, &["check", "-w", "k.key", "a.pf"]).ok();
    assert!(run.stdout.contains("pending-write flag set"), "{}", run.stdout);
}
