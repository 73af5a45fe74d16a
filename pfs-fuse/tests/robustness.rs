//! Gramine's interop vectors through a mount, and damaged, foreign, wrong-key and
//! misplaced files: they list normally, fail with EIO or EACCES with one log line that
//! says why, and every other file keeps working.

mod common;

use std::fs;
use std::io::Read;
use std::path::PathBuf;

use common::{TestMount, errno, log_lines_with};
use sha2::{Digest, Sha256};

fn vectors_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/gramine-pf");
    assert!(dir.join("manifest.tsv").is_file(), "Gramine vectors not found at {}", dir.display());
    dir
}

fn read_all(p: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut f = fs::File::open(p)?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

#[test]
fn gramine_vectors_read_through_the_mount() {
    let dir = vectors_dir();
    let key: [u8; 16] = fs::read(dir.join("public.key")).unwrap().try_into().unwrap();
    let t = TestMount::with(|c| {
        c.key = pfs_core::Key::from_bytes(key);
        c.path_prefix = Some(b"/vectors/gramine-pf".to_vec());
    });
    let manifest = fs::read_to_string(dir.join("manifest.tsv")).unwrap();
    let rows: Vec<Vec<String>> =
        manifest.lines().skip(1).map(|l| l.split('\t').map(str::to_string).collect()).collect();
    for r in &rows {
        fs::copy(dir.join(&r[0]), t.e(&r[0])).unwrap();
    }
    let good = "v2_size_0396289.pf";
    let good_sha = rows.iter().find(|r| r[0] == good).unwrap()[3].clone();
    let mut listed: Vec<String> =
        fs::read_dir(&t.plain).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    listed.sort();
    assert_eq!(listed.len(), rows.len(), "every vector is listed, good or bad");

    let mut ok = 0;
    for r in &rows {
        let (file, size, sha, embedded, expect) = (&r[0], &r[2], &r[3], &r[5], &r[6]);
        let path = t.p(file);
        let bound_elsewhere = !embedded.starts_with("/vectors/gramine-pf/");
        let result = read_all(&path);
        if expect == "ok" && !bound_elsewhere {
            let data = result.unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(hex::encode(Sha256::digest(&data)), *sha, "{file}");
            assert_eq!(
                fs::metadata(&path).unwrap().len(),
                size.parse::<u64>().unwrap(),
                "{file}: plaintext size"
            );
            ok += 1;
        } else {
            let e = result.expect_err(file);
            let code = errno(&e);
            assert!(code == libc::EIO || code == libc::EACCES, "{file} ({expect}): errno {code}");
            assert!(!log_lines_with(&[file.as_str()]).is_empty(), "{file}: a log line says why");
            if bound_elsewhere {
                assert_eq!(code, libc::EACCES, "{file}: path mismatch");
            }
        }
        // The mount keeps serving the others.
        let data = read_all(&t.p(good)).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&data)), good_sha);
    }
    assert!(ok >= 18, "only {ok} good vectors read");
    // The relative-path vector opens when the check is off... in a mount with that option.
    drop(t);
    let t2 = TestMount::with(|c| {
        c.key = pfs_core::Key::from_bytes(key);
        c.path_check = false;
    });
    fs::copy(dir.join("v2_relative_path.pf"), t2.e("v2_relative_path.pf")).unwrap();
    assert_eq!(read_all(&t2.p("v2_relative_path.pf")).unwrap().len(), 5000);
}

#[test]
fn damaged_foreign_wrong_key_and_misplaced_files() {
    let t = TestMount::new();
    let body: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
    for name in ["good", "flipped", "cut", "moved-away"] {
        fs::write(t.p(name), &body).unwrap();
    }
    // Damage on the host side.
    let mut host = fs::read(t.e("flipped")).unwrap();
    host[3 * 4096 + 100] ^= 1; // a data node
    fs::write(t.e("flipped"), &host).unwrap();
    let host = fs::read(t.e("cut")).unwrap();
    fs::write(t.e("cut"), &host[..host.len() - 1000]).unwrap(); // unaligned
    fs::write(t.e("foreign.txt"), b"just a plain file, not a protected one").unwrap();
    fs::write(t.e("empty"), b"").unwrap();
    // A protected file bound to another name (copied on the host): EACCES.
    fs::copy(t.e("moved-away"), t.e("copy-of-moved")).unwrap();
    // A file made with another key at the right path: EACCES.
    {
        let f = fs::File::create(t.e("other-key")).unwrap();
        let k = pfs_core::Key::from_bytes([9; 16]);
        let mut pf = pfs_core::ProtectedFile::create(
            pfs_core::FileStore::new(f),
            &k,
            &t.embedded("other-key"),
            &Default::default(),
        )
        .unwrap();
        pf.write_at(0, b"secret").unwrap();
        pf.close().unwrap();
    }
    // Wait out the attribute TTL so sizes are re-read from the host.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let mut names: Vec<String> =
        fs::read_dir(&t.plain).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        ["copy-of-moved", "cut", "empty", "flipped", "foreign.txt", "good", "moved-away", "other-key"]
    );
    assert_eq!(fs::metadata(t.p("foreign.txt")).unwrap().len(), 0, "unreadable metadata lists as size 0");

    let cases = [
        ("flipped", libc::EIO, "failed authentication"),
        ("cut", libc::EIO, "invalid header"),
        ("foreign.txt", libc::EIO, "invalid header"),
        ("empty", libc::EIO, "missing"),
        ("copy-of-moved", libc::EACCES, "moved-away"),
        ("other-key", libc::EACCES, "wrong key"),
    ];
    for (name, want, why) in cases {
        let e = read_all(&t.p(name)).expect_err(name);
        assert_eq!(errno(&e), want, "{name}: {e}");
        assert!(!log_lines_with(&[name, why]).is_empty(), "{name}: no log line mentioning {why:?}");
        assert_eq!(read_all(&t.p("good")).unwrap(), body, "other files keep working");
    }
    // The path-mismatch line names the expected and the found path.
    let line = &log_lines_with(&["copy-of-moved", "embedded path mismatch"])[0];
    assert!(line.contains(&String::from_utf8_lossy(&t.embedded("moved-away")).into_owned()), "{line}");
    assert!(line.contains(&String::from_utf8_lossy(&t.embedded("copy-of-moved")).into_owned()), "{line}");
    // No plaintext reached the host.
    for entry in fs::read_dir(&t.enc).unwrap() {
        let data = fs::read(entry.unwrap().path()).unwrap();
        assert!(!data.windows(64).any(|w| w == &body[..64]), "plaintext on the host");
    }
}
