//! Files written by pfs-core are read exactly by an independent reader of the format
//! (`tests/interop/pf_reader.py`, written from the spec with Python's `cryptography`),
//! including three-level trees that no Gramine vector covers.

use std::path::PathBuf;
use std::process::Command;

use pfs_core::{FileStore, FormatVersion, Key, OpenOptions, ProtectedFile};

fn reader() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/pf_reader.py")
}

fn python_reads(key_file: &std::path::Path, pf: &std::path::Path, path: &str) -> Vec<u8> {
    let out = Command::new("python3")
        .arg(reader())
        .arg(key_file)
        .arg(pf)
        .arg(path)
        .output()
        .expect("python3 must be installed (.ci/setup installs it with the `cryptography` package)");
    assert!(
        out.status.success(),
        "independent reader failed on {}: {}",
        pf.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn independent_reader_agrees_on_files_we_write() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::from_bytes(*b"0123456789abcdef");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, key.as_bytes()).unwrap();
    let sizes = [0usize, 1, 3071, 3072, 3073, 7168, 7169, 396_288, 396_289, 12_979_201, 13_500_000];
    for format in [FormatVersion::V1, FormatVersion::V2] {
        for (i, &size) in sizes.iter().enumerate() {
            let name = format!("f{}_{size}", format.major());
            let pf_path = dir.path().join(&name);
            let embedded = format!("out/{name}");
            let plain: Vec<u8> = (0..size).map(|j| (j.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
            let file = std::fs::File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&pf_path)
                .unwrap();
            let options = OpenOptions::new().format(format).cache_nodes(1 + i * 13);
            let mut pf =
                ProtectedFile::create(FileStore::new(file), &key, embedded.as_bytes(), &options).unwrap();
            // Write back to front in odd chunks, then rewrite a stretch, so nodes are
            // sealed several times and evicted in unusual orders.
            let chunk = 100_003;
            let mut starts: Vec<usize> = (0..size).step_by(chunk).collect();
            starts.reverse();
            for start in starts {
                pf.write_at(start as u64, &plain[start..(start + chunk).min(size)]).unwrap();
            }
            if size > 5000 {
                pf.write_at(1000, &plain[1000..5000]).unwrap();
            }
            pf.close().unwrap();
            let got = python_reads(&key_file, &pf_path, &embedded);
            assert_eq!(got.len(), size, "{name}");
            assert!(got == plain, "{name}: plaintext differs");
        }
    }
}
