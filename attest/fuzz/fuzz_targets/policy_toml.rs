//! The key-release policy loader, `Policy::from_toml`, on arbitrary text, with the key
//! files of the seeds present in a temporary base directory.
//!
//! The policy names key files by path and the loader reads them, so inputs that could
//! name a file outside the base directory (any `/`, `\` or `..`, which also covers TOML
//! escapes such as `\u002F`) are skipped: the fuzzer must not read `/dev/zero`.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use attest::Policy;
use libfuzzer_sys::fuzz_target;

static BASE: LazyLock<(tempfile::TempDir, PathBuf)> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("model.key", &[0xa1u8; 16][..]),
        ("inputs.key", &[0xb2; 16]),
        ("short.key", &[1; 5]),
        ("empty.key", &[]),
    ] {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let base = dir.path().to_path_buf();
    (dir, base)
});

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    if src.contains('/') || src.contains('\\') || src.contains("..") {
        return;
    }
    let base = &BASE.1;
    if let Ok(policy) = Policy::from_toml(src, Path::new("fuzz.toml"), base) {
        let names = policy.key_names();
        for e in policy.enclaves() {
            let _ = e;
        }
        let _ = (names, policy.collateral(), policy.insecure_allow_simulated());
    }
});
