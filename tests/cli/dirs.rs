//! Directory trees: each file bound to its own normalized output path; keep going on errors.

use std::fs;
use std::path::Path;

use crate::util::{flip_byte, info_json, pfs, plaintext, temp_leftovers, workdir};

const FILES: [(&str, usize); 5] =
    [("top.bin", 5000), ("a/one.txt", 0), ("a/b/two.bin", 400_000), ("a/b/c/three", 3073), ("z/four", 1)];

fn make_tree(root: &Path) {
    for (rel, size) in FILES {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, plaintext(rel, size)).unwrap();
    }
    fs::create_dir_all(root.join("empty/dir")).unwrap();
}

#[test]
fn a_directory_tree_round_trips_with_each_file_bound_to_its_output_path() {
    let dir = workdir();
    let d = dir.path();
    make_tree(&d.join("plain"));
    let run = pfs(d, &["encrypt", "-w", "k.key", "-i", "plain", "-o", "./enc//data/"]).ok();
    assert!(run.stdout.contains("5 file(s)"), "{}", run.stdout);
    assert!(run.stderr.is_empty(), "no progress bar or warnings off a terminal: {}", run.stderr);
    for (rel, size) in FILES {
        let enc = format!("enc/data/{rel}");
        let info = info_json(d, &["-w", "k.key", &enc]);
        assert_eq!(info["embedded_path"], enc.as_str(), "{rel}");
        assert_eq!(info["plaintext_size"], size as u64);
    }
    assert!(d.join("enc/data/empty/dir").is_dir(), "empty directories are kept");

    // -V: each file must be bound to normalize(IN/<rel>).
    pfs(d, &["decrypt", "-w", "k.key", "-i", "enc/data", "-o", "out", "-V"]).ok();
    for (rel, size) in FILES {
        assert!(fs::read(d.join("out").join(rel)).unwrap() == plaintext(rel, size), "{rel} differs");
    }
    // --expect-path for a tree is a prefix.
    pfs(d, &["decrypt", "-w", "k.key", "-i", "enc/data", "-o", "out2", "--expect-path", "enc/data"]).ok();
    let run =
        pfs(d, &["decrypt", "-w", "k.key", "-i", "enc/data", "-o", "out3", "--expect-path", "/elsewhere"])
            .fails();
    assert!(run.stderr.contains("embedded path mismatch"), "{}", run.stderr);
    for (rel, _) in FILES {
        assert!(!d.join("out3").join(rel).exists(), "{rel} must not be written on a path mismatch");
    }
}

#[test]
fn an_explicit_path_is_the_prefix_of_every_embedded_path_in_a_tree() {
    let dir = workdir();
    let d = dir.path();
    make_tree(&d.join("plain"));
    pfs(d, &["encrypt", "-w", "k.key", "-i", "plain", "-o", "enc", "--path", "/mnt/enc"]).ok();
    assert_eq!(info_json(d, &["-w", "k.key", "enc/a/b/two.bin"])["embedded_path"], "/mnt/enc/a/b/two.bin");
    pfs(d, &["decrypt", "-w", "k.key", "-i", "enc", "-o", "out", "--expect-path", "/mnt/enc/"]).ok();
    assert!(fs::read(d.join("out/a/b/two.bin")).unwrap() == plaintext("a/b/two.bin", 400_000));
}

#[test]
fn a_bad_file_in_a_tree_is_reported_and_the_others_are_still_decrypted() {
    let dir = workdir();
    let d = dir.path();
    make_tree(&d.join("plain"));
    pfs(d, &["encrypt", "-w", "k.key", "-i", "plain", "-o", "enc"]).ok();
    flip_byte(&d.join("enc/a/b/two.bin"), 50 * 4096 + 7);
    let run = pfs(d, &["decrypt", "-w", "k.key", "-i", "enc", "-o", "out"]).fails();
    assert!(run.stderr.contains("enc/a/b/two.bin") && run.stderr.contains("data node #48"), "{}", run.stderr);
    assert!(run.stdout.contains("1 file(s) failed"), "{}", run.stdout);
    assert!(!d.join("out/a/b/two.bin").exists());
    for (rel, size) in FILES.iter().filter(|(rel, _)| *rel != "a/b/two.bin") {
        assert!(fs::read(d.join("out").join(rel)).unwrap() == plaintext(rel, *size), "{rel}");
    }
    assert!(temp_leftovers(d).is_empty());
}

#[test]
fn an_output_directory_inside_the_input_is_refused() {
    let dir = workdir();
    let d = dir.path();
    make_tree(&d.join("plain"));
    let run = pfs(d, &["encrypt", "-w", "k.key", "-i", "plain", "-o", "plain/enc"]).fails();
    assert!(run.stderr.contains("inside the input directory"), "{}", run.stderr);
    assert!(!d.join("plain/enc").exists());
}
