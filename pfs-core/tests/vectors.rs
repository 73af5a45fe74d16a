//! Gramine's own files (`tests/vectors/gramine-pf/`) behave as `manifest.tsv` says.

use std::path::PathBuf;

use pfs_core::{Error, FileStore, Key, NodeKind, OpenOptions, PendingWritePolicy, ProtectedFile};
use sha2::{Digest, Sha256};

fn vectors_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/gramine-pf");
    assert!(
        dir.join("manifest.tsv").is_file(),
        "Gramine PF vectors not found at {} (they are part of the repository: is the checkout complete?)",
        dir.display()
    );
    dir
}

struct Row {
    file: String,
    major: u8,
    size: u64,
    sha256: String,
    seed: String,
    path: String,
    expect: String,
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(vectors_dir().join("manifest.tsv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            Row {
                file: f[0].into(),
                major: f[1].parse().unwrap(),
                size: f[2].parse().unwrap(),
                sha256: f[3].into(),
                seed: f[4].into(),
                path: f[5].into(),
                expect: f[6].into(),
            }
        })
        .collect()
}

/// `plaintext(seed, n)` of the vectors README.
fn plaintext(seed: &str, n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n as usize);
    let mut block = 0u64;
    while (out.len() as u64) < n {
        let mut h = Sha256::new();
        h.update(seed.as_bytes());
        h.update(block.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        block += 1;
    }
    out.truncate(n as usize);
    out
}

fn key(name: &str) -> Key {
    Key::from_slice(&std::fs::read(vectors_dir().join(name)).unwrap()).unwrap()
}

fn open(
    row: &Row,
    key: &Key,
    expected: Option<&[u8]>,
    policy: PendingWritePolicy,
) -> Result<ProtectedFile<FileStore>, Error> {
    let file = std::fs::File::open(vectors_dir().join(&row.file)).unwrap();
    let options = OpenOptions::new().read_only(true).pending_write(policy);
    ProtectedFile::open(FileStore::new(file), key, expected, &options)
}

fn read_all(pf: &mut ProtectedFile<FileStore>) -> Result<Vec<u8>, Error> {
    let mut out = vec![0u8; pf.len() as usize];
    let mut done = 0;
    while done < out.len() {
        let stop = (done + 65536).min(out.len());
        let n = pf.read_at(done as u64, &mut out[done..stop])?;
        assert!(n > 0);
        done += n;
    }
    Ok(out)
}

fn error_name(e: &Error) -> &'static str {
    match e {
        Error::InvalidHeader(_) => "INVALID_HEADER",
        Error::InvalidVersion { .. } => "INVALID_VERSION",
        Error::MetadataMac => "METADATA_MAC_MISMATCH",
        Error::NodeMac { kind: NodeKind::RootMht, .. } => "ROOT_MHT_MAC_MISMATCH",
        Error::NodeMac { kind: NodeKind::Mht(_), .. } => "MHT_MAC_MISMATCH",
        Error::NodeMac { kind: NodeKind::Data(_), .. } => "DATA_MAC_MISMATCH",
        Error::NodeMissing { .. } => "EOF",
        Error::RecoveryNeeded => "RECOVERY_NEEDED",
        Error::PathMismatch { .. } => "INVALID_PATH",
        _ => "OTHER",
    }
}

#[test]
fn every_vector_behaves_as_the_manifest_says() {
    let good = key("public.key");
    let rows = rows();
    assert!(rows.len() >= 30, "manifest has only {} rows", rows.len());
    let mut checked = 0;
    for row in &rows {
        if !vectors_dir().join(&row.file).exists() {
            // The README lists a few files the public set does not ship; say so.
            eprintln!("note: {} is listed but not shipped", row.file);
            continue;
        }
        checked += 1;
        let path = row.path.as_bytes();
        let expected_plain = plaintext(&row.seed, row.size);
        assert_eq!(hex::encode(Sha256::digest(&expected_plain)), row.sha256, "{}: seed formula", row.file);
        let expect = row.expect.as_str();
        if expect == "ok" || expect == "ok_or_RECOVERY_NEEDED" {
            if expect == "ok_or_RECOVERY_NEEDED" {
                // Our default policy (documented): refuse, like Gramine's LibOS.
                let err = open(row, &good, Some(path), PendingWritePolicy::Refuse).unwrap_err();
                assert_eq!(error_name(&err), "RECOVERY_NEEDED", "{}", row.file);
            }
            let mut pf = open(row, &good, Some(path), PendingWritePolicy::Ignore)
                .unwrap_or_else(|e| panic!("{}: {e}", row.file));
            assert_eq!(pf.len(), row.size, "{}", row.file);
            assert_eq!(pf.version().major(), row.major, "{}", row.file);
            let plain = read_all(&mut pf).unwrap_or_else(|e| panic!("{}: {e}", row.file));
            assert_eq!(hex::encode(Sha256::digest(&plain)), row.sha256, "{}", row.file);
            assert!(pf.check().is_empty(), "{}: check found problems", row.file);
            // Path binding: any other expected path fails.
            let err = open(row, &good, Some(b"/some/other/path"), PendingWritePolicy::Ignore).unwrap_err();
            assert_eq!(error_name(&err), "INVALID_PATH", "{}", row.file);
            // Wrong key fails at open with a metadata MAC error.
            let err = open(row, &key("wrong.key"), Some(path), PendingWritePolicy::Ignore).unwrap_err();
            assert_eq!(error_name(&err), "METADATA_MAC_MISMATCH", "{}", row.file);
        } else if let Some(want) = expect.strip_prefix("OPEN:") {
            let err = open(row, &good, Some(path), PendingWritePolicy::Ignore).unwrap_err();
            assert_eq!(error_name(&err), want, "{}: got {err}", row.file);
        } else if let Some(rest) = expect.strip_prefix("READ@") {
            let (offset, want) = rest.split_once(':').unwrap();
            let offset: u64 = offset.parse().unwrap();
            let mut pf = open(row, &good, Some(path), PendingWritePolicy::Ignore)
                .unwrap_or_else(|e| panic!("{}: {e}", row.file));
            let mut before = vec![0u8; offset as usize];
            let mut done = 0;
            while done < before.len() {
                let n = pf.read_at(done as u64, &mut before[done..]).unwrap();
                done += n;
            }
            assert_eq!(before, expected_plain[..offset as usize], "{}: bytes before the damage", row.file);
            let err = pf.read_at(offset, &mut [0u8; 1]).unwrap_err();
            assert_eq!(error_name(&err), want, "{}: got {err}", row.file);
            assert!(read_all(&mut pf).is_err(), "{}: whole-file read must fail", row.file);
            let problems = pf.check();
            assert!(!problems.is_empty(), "{}: check must report the damage", row.file);
            assert_eq!(problems[0].unreadable[0].start, offset, "{}", row.file);
        } else {
            panic!("{}: unknown expectation {expect}", row.file);
        }
    }
    assert!(checked >= 30, "only {checked} vectors checked");
}

#[test]
fn errors_name_the_node_and_offset() {
    let row = rows().into_iter().find(|r| r.file == "bad_mht_node1.pf").unwrap();
    let pf = open(&row, &key("public.key"), None, PendingWritePolicy::Ignore).unwrap();
    let err = pf.read_at(396_288, &mut [0u8; 10]).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("MHT node #1") && text.contains("host node 98") && text.contains("396288"),
        "{text}"
    );
}
