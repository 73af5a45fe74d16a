//! The recovery file and the pending-write flag, checked byte by byte against the spec
//! (`spec/pf-format.md` §4.1 and §13) with a parser written here from the spec's words,
//! not the engine's `recovery::Journal::scan`. Real files: a `FileStore` host file and its
//! `Journal::beside` it, a flush stopped after its N-th store write as a crash would stop it.
//!
//! Both directions of interoperability are covered without Gramine itself: the spec's
//! recovery algorithm (as Gramine's LibOS runs it) applied to a pfs-written recovery file
//! restores the old file, and a recovery file laid out as Gramine writes it (its record
//! order, zero images for never-written nodes) is recovered by pfs.

#[path = "support/stop_after.rs"]
mod stop_after;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use pfs_core::{FileStore, Journal, Key, OpenOptions, ProtectedFile};
use stop_after::StopAfter;

const NODE: usize = 4096;
/// Spec §13: u64 LE physical node number, then a 4096-byte node image.
const RECORD: usize = 8 + NODE;
/// Spec §4.1: the v2 feature-flags byte; bit 0 = has pending write.
const FLAGS_OFFSET: usize = 58;

fn key() -> Key {
    Key::from_slice(&[0x5a; 16]).expect("16-byte key")
}

/// Spec §3: physical node of data node d.
fn phys_data(d: u64) -> u64 {
    d + 2 + d / 96
}

/// Spec §3: physical node of MHT node m.
fn phys_mht(m: u64) -> u64 {
    1 + 97 * m
}

/// Spec §3: logical data node of plaintext offset o ≥ 3072.
fn data_node_of(offset: u64) -> u64 {
    (offset - 3072) / 4096
}

/// Plaintext with a position-dependent pattern (`seed` tells versions apart).
fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4] ^ seed).collect()
}

fn open_rw(path: &Path) -> File {
    File::options().read(true).write(true).create(true).truncate(false).open(path).expect("open host file")
}

/// Spec §13: "the host file's URI + `.gramine.recovery`", spelled out here by hand.
fn recovery_path(host: &Path) -> PathBuf {
    PathBuf::from(format!("{}.gramine.recovery", host.display()))
}

/// Parses a recovery file from the spec's description alone.
fn parse_by_spec(bytes: &[u8]) -> Vec<(u64, &[u8])> {
    assert!(!bytes.is_empty(), "a recovery file is a non-empty sequence of records");
    assert_eq!(bytes.len() % RECORD, 0, "{} bytes: not whole 4104-byte records", bytes.len());
    bytes
        .chunks(RECORD)
        .map(|record| {
            let mut number = [0u8; 8];
            number.copy_from_slice(&record[..8]);
            (u64::from_le_bytes(number), &record[8..])
        })
        .collect()
}

/// The spec's recovery on open, as Gramine's LibOS runs it: every record written back at
/// `node_number * 4096` (the file grows if needed).
fn recover_by_spec(host: &mut Vec<u8>, journal: &[u8]) {
    for (node, image) in parse_by_spec(journal) {
        let at = node as usize * NODE;
        if host.len() < at + NODE {
            host.resize(at + NODE, 0);
        }
        host[at..at + NODE].copy_from_slice(image);
    }
}

fn read_all(pf: &mut ProtectedFile<FileStore>) -> Vec<u8> {
    let mut out = vec![0u8; pf.len() as usize];
    let mut done = 0;
    while done < out.len() {
        let n = pf.read_at(done as u64, &mut out[done..]).expect("read");
        assert!(n > 0, "short read at {done}");
        done += n;
    }
    out
}

/// 1,000,000 bytes: 244 data nodes, MHT #0 (the root) … #2, 248 host nodes (spec §3).
const SIZE: usize = 1_000_000;
/// Three edits, in the groups of MHT #0, #1 and #2.
const EDITS: [u64; 3] = [3072 + 10, 3072 + 100 * 4096 + 7, 3072 + 200 * 4096 + 4000];

/// Writes the old content as a complete file (journal on), then edits it in three places
/// and flushes on a store that stops after `writes` writes. Returns the host file's bytes
/// after the old content was written.
fn interrupted(host: &Path, writes: usize) -> Vec<u8> {
    let options = OpenOptions::new();
    let journal = Journal::beside(host);
    let mut pf = ProtectedFile::create_with_journal(
        FileStore::new(open_rw(host)),
        Some(journal),
        &key(),
        b"f.pf",
        &options,
    )
    .expect("create");
    pf.write_at(0, &content(1, SIZE)).expect("write");
    pf.close().expect("close");
    // Spec §13: "The recovery file is deleted after a successful close."
    assert!(!recovery_path(host).exists(), "the recovery file outlived a successful close");
    let old = fs::read(host).expect("read host");
    assert_eq!(old.len(), 248 * NODE, "spec §3 host size for 1,000,000 bytes");

    let store = StopAfter { inner: FileStore::new(open_rw(host)), left: writes };
    let journal = Journal::beside(host);
    let mut pf =
        ProtectedFile::open_with_journal(store, Some(journal), &key(), None, &options).expect("reopen");
    for offset in EDITS {
        pf.write_at(offset, &[0xee; 50]).expect("edit");
    }
    assert!(pf.flush().is_err(), "the flush should have been interrupted");
    drop(pf);
    old
}

#[test]
fn pfs_recovery_file_follows_spec_13_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("f.pf");
    // Two store writes: node 0 with the flag, then the data nodes; MHT, root and the final
    // metadata are never written.
    let old = interrupted(&host, 2);
    let now = fs::read(&host).unwrap();
    let journal = fs::read(recovery_path(&host)).expect("the recovery file beside the host file");

    let records = parse_by_spec(&journal);
    // Node numbers are little-endian: all of them are below 256 here, so bytes 1..8 of each
    // record are zero (a big-endian reader would see numbers ≥ 2^56).
    for record in journal.chunks(RECORD) {
        assert_eq!(record[1..8], [0u8; 7], "node number not u64 little-endian");
    }
    // One record per node the flush overwrites in place: the dirty data nodes, their MHT
    // nodes up to the root (node 1), and the metadata node (node 0); each exactly once.
    let mut expected: Vec<u64> = EDITS.iter().map(|&o| phys_data(data_node_of(o))).collect();
    expected.extend(EDITS.iter().map(|&o| phys_mht(data_node_of(o) / 96)));
    expected.push(0);
    expected.sort_unstable();
    let mut nodes: Vec<u64> = records.iter().map(|(n, _)| *n).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, expected, "records for nodes {:?}", records.iter().map(|r| r.0).collect::<Vec<_>>());
    assert_eq!(expected, [0, 1, 2, 98, 103, 195, 204]);
    // Each image is the node's previous on-disk image, byte for byte.
    for (node, image) in &records {
        let at = *node as usize * NODE;
        assert!(image == &&old[at..at + NODE], "record for node {node} is not its previous image");
    }
    // The old metadata comes last (spec: dirty nodes, then node 1, then node 0).
    assert_eq!(records.last().unwrap().0, 0);

    // Spec §4.1/§13: node 0 now holds the old metadata with flag bit 0 set, nothing else
    // changed (the flag is outside the authenticated part, so the old node still opens).
    assert_eq!(old[8], 2, "v2 file");
    assert_eq!(old[FLAGS_OFFSET] & 1, 0);
    assert_eq!(now[FLAGS_OFFSET], old[FLAGS_OFFSET] | 1);
    assert!(
        now[..FLAGS_OFFSET] == old[..FLAGS_OFFSET]
            && now[FLAGS_OFFSET + 1..NODE] == old[FLAGS_OFFSET + 1..NODE]
    );
    // The data nodes were overwritten before the crash, so the file needs its recovery.
    assert!(now[NODE..] != old[NODE..], "the interrupted flush wrote no data node");

    // Gramine's recovery on open, applied to pfs's recovery file, restores the old file
    // byte for byte, with the flag cleared; pfs then reads the old content from it.
    let mut recovered = now.clone();
    recover_by_spec(&mut recovered, &journal);
    assert_eq!(recovered[FLAGS_OFFSET] & 1, 0, "flag still set after recovery: RECOVERY_NEEDED");
    assert!(recovered == old, "the spec's recovery did not restore the old file");
    fs::write(&host, &recovered).unwrap();
    let mut pf = ProtectedFile::open(
        FileStore::new(File::open(&host).unwrap()),
        &key(),
        None,
        &OpenOptions::new().read_only(true),
    )
    .expect("open after the spec's recovery");
    assert!(read_all(&mut pf) == content(1, SIZE));
}

#[test]
fn a_crash_right_after_the_flag_leaves_only_the_flag_changed() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("f.pf");
    let old = interrupted(&host, 1);
    let now = fs::read(&host).unwrap();
    // The recovery file is complete before node 0 is touched (spec §13 order: records,
    // then the flag), and the host file differs from the old one in the flag bit only.
    assert_eq!(parse_by_spec(&fs::read(recovery_path(&host)).unwrap()).len(), 7);
    let mut expected = old.clone();
    expected[FLAGS_OFFSET] |= 1;
    assert!(now == expected, "more than the flag changed");
}

#[test]
fn a_recovery_file_laid_out_as_gramine_writes_it_is_recovered_by_pfs() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("f.pf");
    // A complete old file, written by pfs.
    let options = OpenOptions::new();
    let mut pf = ProtectedFile::create(FileStore::new(open_rw(&host)), &key(), b"f.pf", &options).unwrap();
    pf.write_at(0, &content(2, SIZE)).unwrap();
    pf.close().unwrap();
    let old = fs::read(&host).unwrap();

    // Gramine's flush of an append plus edits, interrupted after the data nodes: its
    // recovery file holds the dirty nodes in its cache order (here descending), a zero
    // image for the never-written node it appends (data node 244 at host node 248), then
    // node 1, then node 0.
    let dirty = [204u64, 195, 103, 98, 2, 248];
    let mut journal = Vec::new();
    for node in dirty {
        journal.extend_from_slice(&node.to_le_bytes());
        let at = node as usize * NODE;
        journal.extend_from_slice(if at < old.len() { &old[at..at + NODE] } else { &[0u8; NODE] });
    }
    for node in [1u64, 0] {
        journal.extend_from_slice(&node.to_le_bytes());
        journal.extend_from_slice(&old[node as usize * NODE..][..NODE]);
    }
    fs::write(recovery_path(&host), &journal).unwrap();
    // The host file as the crash left it: flag set in the old node 0, new (here: garbage)
    // images in the dirty nodes, and the appended node already written.
    let mut now = old.clone();
    now[FLAGS_OFFSET] |= 1;
    for node in dirty {
        let at = node as usize * NODE;
        if now.len() < at + NODE {
            now.resize(at + NODE, 0);
        }
        now[at..at + NODE].fill(0xa5);
    }
    fs::write(&host, &now).unwrap();

    // Without the recovery file, the LibOS policy refuses the flagged file.
    let refused = ProtectedFile::open(FileStore::new(open_rw(&host)), &key(), None, &options);
    assert!(matches!(refused, Err(pfs_core::Error::RecoveryNeeded)), "{:?}", refused.err());
    // With it, pfs writes every record back and opens the old content.
    let journal_box = Journal::beside(&host);
    let mut pf = ProtectedFile::open_with_journal(
        FileStore::new(open_rw(&host)),
        Some(journal_box),
        &key(),
        None,
        &options,
    )
    .expect("pfs recovers a Gramine-layout recovery file");
    assert_eq!(pf.recovered_nodes(), Some(8));
    assert_eq!(pf.len(), SIZE as u64);
    assert!(read_all(&mut pf) == content(2, SIZE), "not the old content after recovery");
    drop(pf);
    let after = fs::read(&host).unwrap();
    assert_eq!(after[FLAGS_OFFSET] & 1, 0, "the flag is cleared by the restored node 0");
    // Node 248 was restored to Gramine's zero image: a trailing node, ignored (spec §3).
    assert!(after[..old.len()] == old[..] && after[old.len()..] == [0u8; NODE][..]);
}

#[test]
fn gramine_pending_flag_vector_without_recovery_file_needs_recovery() {
    // tests/vectors/gramine-pf/bad_flag_pending_write.pf: a Gramine-made 10000-byte file
    // with the flag set and no recovery file (the vectors hold no Gramine recovery file).
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/gramine-pf");
    let bytes =
        fs::read(vectors.join("bad_flag_pending_write.pf")).expect("the repository's Gramine vectors");
    let key_bytes = fs::read(vectors.join("public.key")).expect("vector key");
    let key = Key::from_slice(&key_bytes).expect("16-byte key");
    assert_eq!(bytes[FLAGS_OFFSET] & 1, 1);
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("v.pf");
    fs::write(&host, &bytes).unwrap();
    let journal = Journal::beside(&host);
    let result = ProtectedFile::open_with_journal(
        FileStore::new(open_rw(&host)),
        Some(journal),
        &key,
        None,
        &OpenOptions::new(),
    );
    assert!(matches!(result, Err(pfs_core::Error::RecoveryNeeded)), "{:?}", result.err());
    assert!(fs::read(&host).unwrap() == bytes, "a refused recovery modified the file");
}
