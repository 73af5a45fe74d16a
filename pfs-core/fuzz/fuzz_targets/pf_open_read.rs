//! Arbitrary bytes as a host file: `ProtectedFile::open` (read-only, pending-write flag
//! ignored) with the key of Gramine's public interop vectors, a full read and `check()`.
//! Seeds: the small files of `tests/vectors/gramine-pf` (valid, tampered, truncated).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pfs_core::{Key, MemStore, OpenOptions, PendingWritePolicy, ProtectedFile};

/// `tests/vectors/gramine-pf/public.key`, so the Gramine vectors authenticate.
const KEY: [u8; 16] =
    [0x6c, 0xe2, 0x2a, 0x07, 0x1d, 0x53, 0xb9, 0xdd, 0x19, 0x32, 0x40, 0x53, 0xce, 0xa8, 0x1f, 0x4b];
/// Most plaintext bytes read per input; `check()` is skipped for larger claimed sizes
/// (the metadata is authenticated, so a valid file cannot claim more than the fuzzer
/// can supply anyway; `pf_sealed_meta` covers hostile sizes).
const READ_CAP: u64 = 64 << 20;

fuzz_target!(|data: &[u8]| {
    let key = Key::from_bytes(KEY);
    let options = OpenOptions::new().read_only(true).pending_write(PendingWritePolicy::Ignore).cache_nodes(8);
    let Ok(mut file) = ProtectedFile::open(MemStore::from_bytes(data.to_vec()), &key, None, &options) else {
        return;
    };
    let size = file.len();
    let mut buf = vec![0u8; 64 << 10];
    let mut offset = 0u64;
    while offset < size.min(READ_CAP) {
        match file.read_at(offset, &mut buf) {
            Ok(0) => panic!("short read at {offset} of a {size}-byte file"),
            Ok(n) => offset += n as u64,
            Err(_) => break,
        }
    }
    if size <= READ_CAP {
        let problems = file.check();
        // Every problem names at least one unreadable range inside the file.
        for p in &problems {
            assert!(!p.unreadable.is_empty());
            assert!(p.unreadable.iter().all(|r| r.start < r.end && r.end <= size));
        }
        // A read that succeeded end to end means check() finds nothing.
        if offset >= size {
            assert!(problems.is_empty(), "full read succeeded but check() reports {problems:?}");
        }
    }
});
