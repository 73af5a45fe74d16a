//! Gramine's interop vectors through the CLI: every file behaves as `manifest.tsv` says.

use std::fs;

use crate::util::{pfs, plaintext, sha256_hex, temp_leftovers, vectors_dir};

struct Row {
    file: String,
    plaintext_size: usize,
    sha256: String,
    seed: String,
    embedded_path: String,
    expect: String,
}

fn manifest() -> Vec<Row> {
    let text = fs::read_to_string(vectors_dir().join("manifest.tsv")).expect("read manifest.tsv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
    let col =
        |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name}"));
    let (file, size, sha, seed, path, expect) =
        (col("file"), col("plaintext_size"), col("sha256"), col("seed"), col("embedded_path"), col("expect"));
    let rows: Vec<Row> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            Row {
                file: f[file].to_string(),
                plaintext_size: f[size].parse().expect("plaintext_size"),
                sha256: f[sha].to_string(),
                seed: f[seed].to_string(),
                embedded_path: f[path].to_string(),
                expect: f[expect].to_string(),
            }
        })
        .collect();
    assert!(rows.len() >= 30, "manifest.tsv has only {} rows", rows.len());
    rows
}

#[test]
fn every_vector_decrypts_or_fails_as_the_manifest_says() {
    let vectors = vectors_dir();
    let key = vectors.join("public.key");
    let key = key.to_str().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let (mut good, mut bad) = (0, 0);
    for row in manifest() {
        let input = vectors.join(&row.file);
        let input = input.to_str().unwrap();
        let out = out_dir.path().join(&row.file);
        let out_s = out.to_str().unwrap();
        let run = pfs(
            out_dir.path(),
            &["decrypt", "-w", key, "-i", input, "-o", out_s, "--expect-path", &row.embedded_path],
        );
        if row.expect == "ok" || row.expect == "ok_or_RECOVERY_NEEDED" {
            let run = run.ok();
            let plain = fs::read(&out).unwrap();
            assert_eq!(plain.len(), row.plaintext_size, "{}", row.file);
            assert_eq!(sha256_hex(&plain), row.sha256, "{}: plaintext hash", row.file);
            assert!(
                plain == plaintext(&row.seed, row.plaintext_size),
                "{}: differs from the seed formula",
                row.file
            );
            if row.expect == "ok_or_RECOVERY_NEEDED" {
                assert!(run.stderr.contains("pending-write flag"), "{}: {}", row.file, run.stderr);
            }
            good += 1;
        } else {
            assert!(row.expect.starts_with("OPEN:") || row.expect.starts_with("READ@"), "{}", row.expect);
            let run = run.fails();
            assert!(
                run.stderr.contains(&row.file),
                "{}: error does not name the file: {}",
                row.file,
                run.stderr
            );
            assert!(!out.exists(), "{}: output left behind", row.file);
            if row.expect.starts_with("READ@") {
                let offset = row.expect[5..].split(':').next().unwrap();
                assert!(run.stderr.contains(&format!("offset {offset}")), "{}: {}", row.file, run.stderr);
            }
            bad += 1;
        }
    }
    assert!(good >= 20 && bad >= 10, "good {good}, bad {bad}");
    assert!(temp_leftovers(out_dir.path()).is_empty());
}

#[test]
fn vectors_fail_with_the_wrong_key_or_path() {
    let vectors = vectors_dir();
    let dir = tempfile::tempdir().unwrap();
    let input = vectors.join("v2_size_0003073.pf");
    let input = input.to_str().unwrap();
    let wrong = vectors.join("wrong.key");
    let run = pfs(dir.path(), &["decrypt", "-w", wrong.to_str().unwrap(), "-i", input, "-o", "out"]).fails();
    assert!(run.stderr.contains("metadata node"), "{}", run.stderr);
    let key = vectors.join("public.key");
    let run = pfs(
        dir.path(),
        &["decrypt", "-w", key.to_str().unwrap(), "-i", input, "-o", "out", "--expect-path", "/other"],
    )
    .fails();
    assert!(run.stderr.contains("/vectors/gramine-pf/v2_size_0003073.pf"), "{}", run.stderr);
    assert!(!dir.path().join("out").exists());
}

#[test]
fn check_classifies_the_vectors() {
    let vectors = vectors_dir();
    let key = vectors.join("public.key");
    let files: Vec<String> =
        manifest().iter().map(|r| vectors.join(&r.file).to_str().unwrap().to_string()).collect();
    let mut args = vec!["check", "-q", "-w", key.to_str().unwrap()];
    args.extend(files.iter().map(String::as_str));
    let run = pfs(vectors.as_path(), &args).fails();
    let good = manifest().iter().filter(|r| r.expect.starts_with("ok")).count();
    let bad = manifest().len() - good;
    let summary = run.stdout.lines().last().unwrap().to_string();
    assert!(summary.starts_with(&format!("{good} files ok, ")), "{summary}");
    let nums: Vec<usize> =
        summary.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse().ok()).collect();
    assert_eq!(nums[1] + nums[2], bad, "{summary}");
    assert!(
        run.stdout.contains("bad_mht_node1.pf: DAMAGED") && run.stdout.contains("host node 98"),
        "{}",
        run.stdout
    );
}
