//! `pfs encrypt` → `pfs decrypt` of single files, embedded paths and failure behaviour.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::util::{flip_byte, info_json, pfs, plaintext, temp_leftovers, workdir};

/// Sizes around every layout boundary: empty, inline-only, the 3072-byte inline limit, one
/// page, the largest root-only tree and the first two-level one, and a ~13 MB file whose
/// tree has MHT nodes past #32 (the first place a wrong parent formula shows).
const SIZES: [usize; 9] = [0, 1, 3071, 3072, 3073, 4096, 396288, 396289, 13_000_000];

#[test]
fn encrypt_then_decrypt_gives_back_the_plaintext_in_both_formats() {
    let dir = workdir();
    let d = dir.path();
    for format in ["1", "2"] {
        for size in SIZES {
            let plain = plaintext(&format!("cli-roundtrip-{size}"), size);
            let name = format!("plain_{size}");
            fs::write(d.join(&name), &plain).unwrap();
            let enc = format!("enc/v{format}/f_{size}.pf");
            let run = pfs(d, &["encrypt", "-w", "k.key", "-i", &name, "-o", &enc, "--format", format]).ok();
            assert!(run.stdout.contains(&format!("embedded path: {enc}")), "{}", run.stdout);

            let info = info_json(d, &["-w", "k.key", &enc]);
            assert_eq!(info["format_major"], format.parse::<u64>().unwrap(), "{info}");
            assert_eq!(info["plaintext_size"], size as u64);
            assert_eq!(info["embedded_path"], enc.as_str());

            // No path check, the exact path, and -V (the normalized -i path).
            let out = format!("out_{format}_{size}");
            pfs(d, &["decrypt", "-w", "k.key", "-i", &enc, "-o", &out]).ok();
            assert!(
                fs::read(d.join(&out)).unwrap() == plain,
                "format {format}, size {size}: plaintext differs"
            );
            pfs(d, &["decrypt", "-w", "k.key", "-i", &enc, "-o", &out, "--expect-path", &enc]).ok();
            assert!(fs::read(d.join(&out)).unwrap() == plain);
            let messy_input = format!("./enc//v{format}/../v{format}/f_{size}.pf");
            pfs(d, &["decrypt", "-w", "k.key", "-i", &messy_input, "-o", &out, "-V"]).ok();
            assert!(fs::read(d.join(&out)).unwrap() == plain);
            fs::remove_file(d.join(&out)).unwrap();
            fs::remove_file(d.join(&name)).unwrap();
        }
    }
    assert!(temp_leftovers(d).is_empty(), "temporary files left: {:?}", temp_leftovers(d));
}

#[test]
fn the_default_embedded_path_is_the_normalized_output_path_and_the_file_is_written_there() {
    let dir = workdir();
    let d = dir.path();
    fs::write(d.join("p"), b"hello").unwrap();
    let run = pfs(d, &["encrypt", "-w", "k.key", "-i", "p", "-o", "./enc//tmp/../model.pf"]).ok();
    assert!(run.stdout.contains("embedded path: enc/model.pf"), "{}", run.stdout);
    assert!(d.join("enc/model.pf").is_file());
    assert!(!d.join("enc/tmp").exists(), "the unnormalized path must not be created");
    assert_eq!(info_json(d, &["-w", "k.key", "enc/model.pf"])["embedded_path"], "enc/model.pf");

    // An absolute -o stays absolute.
    let abs = d.join("abs.pf");
    let abs = abs.to_str().unwrap();
    pfs(d, &["encrypt", "-w", "k.key", "-i", "p", "-o", abs]).ok();
    assert_eq!(info_json(d, &["-w", "k.key", abs])["embedded_path"], abs);
}

#[test]
fn an_explicit_path_overrides_the_embedded_path() {
    let dir = workdir();
    let d = dir.path();
    fs::write(d.join("p"), b"hello").unwrap();
    pfs(d, &["encrypt", "-w", "k.key", "-i", "p", "-o", "x.pf", "--path", "/enc/data/x.bin"]).ok();
    assert_eq!(info_json(d, &["-w", "k.key", "x.pf"])["embedded_path"], "/enc/data/x.bin");
    pfs(d, &["decrypt", "-w", "k.key", "-i", "x.pf", "-o", "y", "--expect-path", "/enc/data/x.bin"]).ok();
    assert_eq!(fs::read(d.join("y")).unwrap(), b"hello");
    // -V compares with the normalized -i path, which is not the embedded one here.
    let run = pfs(d, &["decrypt", "-w", "k.key", "-i", "x.pf", "-o", "z", "-V"]).fails();
    assert!(run.stderr.contains("/enc/data/x.bin") && run.stderr.contains("x.pf"), "{}", run.stderr);
    assert!(!d.join("z").exists());
}

#[test]
fn a_wrong_expected_path_fails_and_leaves_no_output() {
    let dir = workdir();
    let d = dir.path();
    fs::write(d.join("p"), plaintext("wrong-path", 50_000)).unwrap();
    pfs(d, &["encrypt", "-w", "k.key", "-i", "p", "-o", "enc/a.pf"]).ok();
    let run = pfs(d, &["decrypt", "-w", "k.key", "-i", "enc/a.pf", "-o", "out", "--expect-path", "enc/b.pf"])
        .fails();
    assert!(run.stderr.contains("embedded path mismatch"), "{}", run.stderr);
    assert!(run.stderr.contains("enc/a.pf") && run.stderr.contains("enc/b.pf"), "{}", run.stderr);
    assert!(!d.join("out").exists());
    assert!(temp_leftovers(d).is_empty());
}

#[test]
fn decrypting_with_the_wrong_key_fails_and_leaves_no_output() {
    let dir = workdir();
    let d = dir.path();
    fs::write(d.join("p"), b"secret").unwrap();
    fs::write(d.join("other.key"), [7u8; 16]).unwrap();
    pfs(d, &["encrypt", "-w", "k.key", "-i", "p", "-o", "a.pf"]).ok();
    let run = pfs(d, &["decrypt", "-w", "other.key", "-i", "a.pf", "-o", "out"]).fails();
    assert!(run.stderr.contains("a.pf") && run.stderr.contains("metadata node"), "{}", run.stderr);
    assert!(!d.join("out").exists());
}

#[test]
fn decrypting_a_damaged_file_names_the_node_and_offset_and_leaves_no_output() {
    let dir = workdir();
    let d = dir.path();
    fs::write(d.join("p"), plaintext("damaged", 20_000)).unwrap();
    pfs(d, &["encrypt", "-w", "k.key", "-i", "p", "-o", "a.pf"]).ok();
    flip_byte(&d.join("a.pf"), 3 * 4096 + 100); // data node #1 = host node 3
    let run = pfs(d, &["decrypt", "-w", "k.key", "-i", "a.pf", "-o", "out"]).fails();
    assert!(run.stderr.contains("a.pf"), "{}", run.stderr);
    assert!(run.stderr.contains("data node #1"), "{}", run.stderr);
    assert!(run.stderr.contains("host node 3") && run.stderr.contains("offset 7168"), "{}", run.stderr);
    assert!(!d.join("out").exists(), "no partial plaintext may be left");
    assert!(temp_leftovers(d).is_empty(), "{:?}", temp_leftovers(d));
}

#[test]
fn a_failed_decrypt_keeps_an_existing_output_file_unchanged() {
    let dir = workdir();
    let d = dir.path();
    fs::write(d.join("p"), plaintext("keep", 10_000)).unwrap();
    pfs(d, &["encrypt", "-w", "k.key", "-i", "p", "-o", "a.pf"]).ok();
    flip_byte(&d.join("a.pf"), 2 * 4096 + 5);
    fs::write(d.join("out"), b"previous").unwrap();
    pfs(d, &["decrypt", "-w", "k.key", "-i", "a.pf", "-o", "out"]).fails();
    assert_eq!(fs::read(d.join("out")).unwrap(), b"previous");
}

#[test]
fn a_key_file_of_the_wrong_size_is_refused_with_a_clear_message() {
    let dir = workdir();
    let d = dir.path();
    fs::write(d.join("p"), b"x").unwrap();
    fs::write(d.join("short.key"), [1u8; 15]).unwrap();
    fs::write(d.join("hex.key"), b"6ce22a071d53b9dd19324053cea81f4b\n").unwrap();
    for bad in ["short.key", "hex.key"] {
        let run = pfs(d, &["encrypt", "-w", bad, "-i", "p", "-o", "a.pf"]).fails();
        assert!(run.stderr.contains(bad) && run.stderr.contains("exactly 16 raw bytes"), "{}", run.stderr);
        assert!(!d.join("a.pf").exists());
    }
    let run = pfs(d, &["encrypt", "-w", "missing.key", "-i", "p", "-o", "a.pf"]).fails();
    assert!(run.stderr.contains("missing.key"), "{}", run.stderr);
}

#[test]
fn a_pending_write_flag_is_ignored_by_decrypt_with_a_warning() {
    let dir = workdir();
    let d = dir.path();
    let plain = plaintext("pending", 9_000);
    fs::write(d.join("p"), &plain).unwrap();
    pfs(d, &["encrypt", "-w", "k.key", "-i", "p", "-o", "a.pf"]).ok();
    let mut bytes = fs::read(d.join("a.pf")).unwrap();
    bytes[58] |= 1; // v2 feature flags: has pending write (not authenticated)
    fs::write(d.join("a.pf"), bytes).unwrap();
    let run = pfs(d, &["decrypt", "-w", "k.key", "-i", "a.pf", "-o", "out"]).ok();
    assert!(run.stderr.contains("pending-write flag"), "{}", run.stderr);
    assert!(fs::read(d.join("out")).unwrap() == plain);
    assert_eq!(info_json(d, &["a.pf"])["pending_write"], true);
}

#[test]
fn usage_errors_exit_with_status_2() {
    let dir = workdir();
    let run = pfs(dir.path(), &["decrypt", "-w", "k.key", "-i", "a", "-o", "b", "-V", "--expect-path", "x"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = pfs(dir.path(), &["encrypt", "-w", "k.key", "-i", "a", "-o", "b", "--format", "3"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    let dir = workdir();
    for sub in ["keygen", "encrypt", "decrypt", "info", "check", "bench"] {
        let run = pfs(dir.path(), &[sub, "--help"]).ok();
        assert!(run.stdout.contains("Examples:"), "{sub} --help has no examples:\n{}", run.stdout);
        assert!(run.stdout.contains(&format!("pfs {sub}")), "{sub} --help shows no invocation");
    }
}

#[test]
fn mapped_and_read_inputs_encrypt_to_the_same_plaintext() {
    // Inputs of at least one chunk (1 MiB) are mapped; --no-mmap reads them with read(2).
    // Both paths must give files that decrypt to the input, with the input's mode.
    let dir = workdir();
    let d = dir.path();
    let plain = plaintext("cli-mmap", (3 << 20) + 12_345);
    fs::write(d.join("big"), &plain).unwrap();
    fs::set_permissions(d.join("big"), fs::Permissions::from_mode(0o640)).unwrap();
    pfs(d, &["encrypt", "-w", "k.key", "-i", "big", "-o", "mapped.pf"]).ok();
    pfs(d, &["encrypt", "-w", "k.key", "-i", "big", "-o", "read.pf", "--no-mmap"]).ok();
    for name in ["mapped.pf", "read.pf"] {
        assert_eq!(fs::metadata(d.join(name)).unwrap().permissions().mode() & 0o777, 0o640, "{name}");
        let out = format!("{name}.out");
        pfs(d, &["decrypt", "-w", "k.key", "-i", name, "-o", &out, "-V"]).ok();
        assert!(fs::read(d.join(&out)).unwrap() == plain, "{name} does not decrypt to the input");
    }
}
