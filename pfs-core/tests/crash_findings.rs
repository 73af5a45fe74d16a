//! Crash-consistency findings from reviewing the journal for the fuzz targets
//! (docs/RELIABILITY.md, "Findings"); each test states the behaviour the engine has since
//! the fix.

use pfs_core::layout::NODE_SIZE;
use pfs_core::{Journal, Key, MemJournal, MemStore, OpenOptions, ProtectedFile};

const PATH: &[u8] = b"/findings/file";

fn key() -> Key {
    Key::from_bytes([0x4d; 16])
}

/// A journal written by one flush stays until `close`. A later flush that changes only
/// the metadata node (an edit inside the first 3072 bytes) is not journaled; if its
/// single-node write is torn, the open finds node 0 unauthentic, sees that the stale
/// journal's metadata record authenticates, and restores the state from *before the
/// earlier, completed* flush, silently rolling back data whose flush returned Ok.
#[test]
fn torn_metadata_only_flush_does_not_roll_back_an_earlier_completed_flush() {
    let disk = MemStore::new();
    let journal = MemJournal::new();
    let mut file = ProtectedFile::create_with_journal(
        disk.clone(),
        Some(Journal::new(journal.clone())),
        &key(),
        PATH,
        &OpenOptions::new(),
    )
    .unwrap();
    // Flush 1 (journaled, completes): 100 000 bytes of 0x11.
    file.write_at(0, &vec![0x11; 100_000]).unwrap();
    file.flush().unwrap();
    // Flush 2 (metadata only, completes): the first byte becomes 0x22.
    file.write_at(0, &[0x22]).unwrap();
    file.flush().unwrap();
    // The process dies before close (the journal of flush 1 is still there) ...
    std::mem::forget(file);
    // ... and flush 2's write of node 0 had been torn: its second half never landed.
    disk.with_bytes(|bytes| bytes[NODE_SIZE / 2..NODE_SIZE].fill(0));

    let reopened = ProtectedFile::open_with_journal(
        disk.clone(),
        Some(Journal::new(journal.clone())),
        &key(),
        Some(PATH),
        &OpenOptions::new(),
    );
    match reopened {
        // Acceptable: the torn metadata is reported (no journal covers flush 2).
        Err(e) => assert!(e.is_integrity(), "{e:?}"),
        // Not acceptable: any state older than flush 1, which returned Ok.
        Ok(file) => {
            let mut buf = vec![0u8; 100_000];
            let n = file.read_at(0, &mut buf).unwrap();
            assert_eq!(n, 100_000, "recovered a {}-byte file: flush 1 was rolled back", file.len());
        }
    }
}
