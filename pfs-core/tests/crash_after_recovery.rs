//! Finding F4 (found while writing `pfs check --repair`): a recovery file that was applied
//! at open must not stay usable afterwards. If it did, a later torn write of the metadata
//! node could replay it and roll the file back past flushes that completed after the
//! recovery: the F3 pattern, reached through recovery. Since issue 13 the recovery rule
//! refuses such a replay on its own (node 0 no longer started from the recovery file's
//! copy); the applied file is still emptied.

#[path = "support/stop_after.rs"]
mod stop_after;

use pfs_core::layout::NODE_SIZE;
use pfs_core::{Journal, Key, MemJournal, MemStore, OpenOptions, ProtectedFile};
use stop_after::StopAfter;

const PATH: &[u8] = b"/findings/recovered";

fn key() -> Key {
    Key::from_bytes([0x4e; 16])
}

fn read_all(file: &mut ProtectedFile<MemStore>) -> Vec<u8> {
    let mut buf = vec![0u8; file.len() as usize];
    let n = file.read_at(0, &mut buf).unwrap();
    assert_eq!(n, buf.len());
    buf
}

#[test]
fn a_recovery_applied_at_open_cannot_roll_back_later_completed_flushes() {
    let disk = MemStore::new();
    let journal = MemJournal::new();
    let options = OpenOptions::new();
    // S0: 100 000 bytes of 0x11, flushed and closed.
    let mut file = ProtectedFile::create_with_journal(
        disk.clone(),
        Some(Journal::new(journal.clone())),
        &key(),
        PATH,
        &options,
    )
    .unwrap();
    file.write_at(0, &vec![0x11; 100_000]).unwrap();
    file.close().unwrap();

    // A flush of 0x33 everywhere dies after the flag and the data nodes are written.
    let store = StopAfter { inner: disk.clone(), left: 2 };
    let mut file = ProtectedFile::open_with_journal(
        store,
        Some(Journal::new(journal.clone())),
        &key(),
        Some(PATH),
        &options,
    )
    .unwrap();
    file.write_at(0, &vec![0x33; 100_000]).unwrap();
    assert!(file.flush().is_err());
    drop(file);

    // The next open recovers S0 ...
    let mut file = ProtectedFile::open_with_journal(
        disk.clone(),
        Some(Journal::new(journal.clone())),
        &key(),
        Some(PATH),
        &options,
    )
    .unwrap();
    assert!(file.recovered_nodes().is_some_and(|n| n > 0));
    assert_eq!(read_all(&mut file), vec![0x11; 100_000]);
    // ... and the applied records are no longer a usable recovery file.
    let usable = Journal::new(journal.clone()).scan(1 << 20).unwrap().is_ok();
    assert!(!usable, "the recovery file applied at open is still usable");
    // S1: a metadata-only flush (first byte 0x22) completes.
    file.write_at(0, &[0x22]).unwrap();
    file.flush().unwrap();
    // S2: another one, whose write of node 0 is torn by a crash.
    file.write_at(1, &[0x44]).unwrap();
    file.flush().unwrap();
    std::mem::forget(file);
    disk.with_bytes(|bytes| bytes[NODE_SIZE / 2..NODE_SIZE].fill(0));

    match ProtectedFile::open_with_journal(
        disk.clone(),
        Some(Journal::new(journal.clone())),
        &key(),
        Some(PATH),
        &options,
    ) {
        // Acceptable: the torn metadata node is reported.
        Err(e) => assert!(e.is_integrity(), "{e:?}"),
        // Not acceptable: S0, older than S1, whose flush returned Ok.
        Ok(mut file) => {
            let content = read_all(&mut file);
            assert_eq!(content[0], 0x22, "S1 (a completed flush) was rolled back to S0");
        }
    }
}
