//! Helpers: run the `pfs` binary, make plaintexts, read files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

/// The result of one `pfs` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the whole output unless the run exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "pfs failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }

    /// Panics unless the run exited 1 (failure, not a usage error).
    #[track_caller]
    pub fn fails(self) -> Self {
        assert_eq!(self.code, 1, "expected exit 1:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
}

/// Runs `pfs ARGS` with the working directory `dir`.
pub fn pfs(dir: &Path, args: &[&str]) -> Run {
    let output: Output =
        Command::new(env!("CARGO_BIN_EXE_pfs")).args(args).current_dir(dir).output().expect("cannot run pfs");
    Run {
        code: output.status.code().expect("pfs killed by a signal"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A temporary working directory with a key file `k.key` in it.
pub fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("k.key"), [0x42u8; 16]).expect("write key");
    dir
}

/// `plaintext(seed, n)` of the vectors README: SHA256(seed || u64le(j)) blocks.
pub fn plaintext(seed: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut j = 0u64;
    while out.len() < n {
        let mut h = Sha256::new();
        h.update(seed.as_bytes());
        h.update(j.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        j += 1;
    }
    out.truncate(n);
    out
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Parses `pfs info --json` output.
pub fn info_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["info", "--json"];
    all.extend_from_slice(args);
    let run = pfs(dir, &all).ok();
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("info --json is not JSON ({e}): {}", run.stdout))
}

/// Names of leftover temporary files (`*.pfs-tmp`) anywhere under `dir`.
pub fn temp_leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".pfs-tmp") {
                found.push(path);
            }
        }
    }
    found
}

/// Flips one bit of the byte at `offset` of a file.
pub fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset] ^= 0x10;
    fs::write(path, bytes).expect("write");
}

/// The directory of Gramine's interop vectors; panics (never skips) when missing.
pub fn vectors_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/gramine-pf");
    assert!(
        dir.join("manifest.tsv").is_file(),
        "Gramine PF vectors not found at {} (they are part of the repository)",
        dir.display()
    );
    dir
}
