//! Issue 13: when may a recovery file be applied? Files and recovery files laid out as
//! Gramine 1.9 leaves them, by a writer built from the spec alone
//! (`support/gramine_writer.rs`, not pfs-core's writer), then opened by pfs.
//!
//! Gramine keeps its recovery file after a completed flush (until the file is closed), so
//! a recovery file beside a damaged node 0 may belong to an earlier, completed flush.
//! pfs applies one only when node 0 started from the recovery file's copy of it
//! (`pfs_core::recovery::assess`); every outcome here must be the state of a completed
//! flush or a refusal that names its reason, never a mix reported as intact.

#[path = "support/gramine_writer.rs"]
mod gramine_writer;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use gramine_writer::{Crash, FLAGS_AT, GramineFile, NODE, SEALED_END, recover_blindly};
use pfs_core::recovery::{Assessment, JournalProblem, MIN_SHARED_SEALED_BYTES, assess};
use pfs_core::{CryptoProvider, Error, FileStore, Journal, Key, OpenOptions, ProtectedFile};

const KDK: [u8; 16] = [0x5e; 16];
const PATH: &[u8] = b"/enc/s.pf";
/// The issue's file: 300,000 bytes, 73 data nodes under the root MHT node.
const SIZE: usize = 300_000;
/// What Gramine's 48-node cache commits in its eviction flush while the file is being
/// overwritten: the inline bytes and the first 48 data nodes.
const EVICTED: usize = 3072 + 48 * 4096;
/// The first node-0 byte whose loss Gramine's metadata write can survive: the bytes
/// before it (file id, version, minor) are the same in every metadata image (spec §4.1).
const NONCE_AT: usize = 10;

fn key() -> Key {
    Key::from_bytes(KDK)
}

fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4] ^ seed).collect()
}

/// The issue's sequence up to its step 2: BASE written and closed, then overwritten with
/// NEW through one eviction flush and a completed `pf_flush`. Gramine's recovery file is
/// still there, holding the images from before that `pf_flush`.
struct History {
    g: GramineFile,
    /// State after the eviction flush: NEW up to `EVICTED`, BASE after it.
    s1: Vec<u8>,
    /// State after the completed `pf_flush`: NEW.
    s2: Vec<u8>,
}

fn history() -> History {
    let base = content(1, SIZE);
    let new = content(2, SIZE);
    let mut g = GramineFile::create(KDK, PATH, 7);
    g.write(0, &base);
    g.close();
    assert!(g.journal.is_none(), "spec §13: deleted after a successful close");
    g.write(0, &new[..EVICTED]);
    assert!(g.flush(Crash::None), "eviction flush");
    g.write(EVICTED, &new[EVICTED..]);
    assert!(g.flush(Crash::None), "pf_flush");
    assert!(g.journal.is_some(), "Gramine keeps the recovery file after a completed flush");
    let s1 = [&new[..EVICTED], &base[EVICTED..]].concat();
    History { g, s1, s2: new }
}

/// What pfs made of a host file and recovery file.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Opened (and read in full): the content, and the records restored at open.
    Opened(Vec<u8>, Option<usize>),
    /// Refused, with the recovery rule's reason.
    Refused { pending: bool, problem: JournalProblem },
    /// Any other error.
    Failed(String),
}

/// Puts `disk` and `journal` on real files (the recovery file's name spelled out from
/// spec §13) and opens them with pfs as a writable open with recovery does; returns the
/// outcome and whether pfs wrote to either file.
fn open_with_pfs(disk: &[u8], journal: Option<&[u8]>) -> (Outcome, bool) {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("s.pf");
    let journal_path = PathBuf::from(format!("{}.gramine.recovery", host.display()));
    fs::write(&host, disk).unwrap();
    if let Some(journal) = journal {
        fs::write(&journal_path, journal).unwrap();
    }
    let outcome = open_files(&host);
    let untouched = fs::read(&host).unwrap() == disk && fs::read(&journal_path).ok().as_deref() == journal;
    (outcome, !untouched)
}

fn open_files(host: &Path) -> Outcome {
    let file = File::options().read(true).write(true).open(host).unwrap();
    let opened = ProtectedFile::open_with_journal(
        FileStore::new(file),
        Some(Journal::beside(host)),
        &key(),
        Some(PATH),
        &OpenOptions::new(),
    );
    match opened {
        Ok(pf) => {
            let mut out = vec![0u8; pf.len() as usize];
            match pf.read_at(0, &mut out) {
                Ok(n) if n == out.len() => Outcome::Opened(out, pf.recovered_nodes()),
                other => Outcome::Failed(format!("read: {other:?}")),
            }
        }
        Err(Error::RecoveryRefused { pending, problem, .. }) => Outcome::Refused { pending, problem },
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// The same files through `recovery::assess`, which must agree with the open.
fn assessed(disk: &[u8], journal: &[u8]) -> Assessment {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("s.pf");
    fs::write(&host, disk).unwrap();
    fs::write(dir.path().join("s.pf.gramine.recovery"), journal).unwrap();
    let store = FileStore::new(File::open(&host).unwrap());
    assess(&store, &Journal::beside(&host), &key(), Some(PATH), &CryptoProvider::default_provider()).unwrap()
}

fn refused(pending: bool) -> Outcome {
    Outcome::Refused { pending, problem: JournalProblem::UnrelatedToNodeZero }
}

/// The content a reader of `disk` gets with `journal` applied by the spec's recovery
/// algorithm alone (what Gramine's LibOS does), read-only.
fn blindly_recovered(disk: &[u8], journal: &[u8]) -> Vec<u8> {
    let mut recovered = disk.to_vec();
    recover_blindly(&mut recovered, journal);
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("s.pf");
    fs::write(&host, &recovered).unwrap();
    let options = OpenOptions::new().read_only(true);
    let pf = ProtectedFile::open(FileStore::new(File::open(&host).unwrap()), &key(), Some(PATH), &options)
        .expect("the blindly recovered file authenticates");
    let mut out = vec![0u8; pf.len() as usize];
    assert_eq!(pf.read_at(0, &mut out).unwrap(), out.len());
    out
}

/// Issue 13 §1, the case Gramine's crash states found: after the completed `pf_flush`,
/// the first 100 bytes change and the metadata-only flush's single write of node 0 is torn
/// after 2,048 bytes.
#[test]
fn the_issues_torn_metadata_write_over_a_stale_recovery_file_is_refused() {
    let History { mut g, s1, s2 } = history();
    g.write(0, &[0xcc; 100]);
    assert_eq!(g.writes_of_next_flush(), 1, "a metadata-only flush: node 0 alone");
    assert!(!g.flush(Crash::Tear { write: 1, keep: 2048 }));
    let journal = g.journal.clone().unwrap();
    assert_eq!(g.disk[FLAGS_AT] & 1, 0, "the new header has the flag clear");

    // What the spec's recovery, applied without the rule, makes of it: every MAC valid,
    // but the state before the completed pf_flush (NEW up to 199,680, then BASE).
    let blind = blindly_recovered(&g.disk, &journal);
    assert!(blind == s1 && blind != s2, "the blind recovery should roll back past the pf_flush");

    let (outcome, wrote) = open_with_pfs(&g.disk, Some(&journal));
    assert_eq!(outcome, refused(false));
    assert!(!wrote, "a refused recovery wrote to the file or its recovery file");
    assert!(matches!(
        assessed(&g.disk, &journal),
        Assessment::Refused { pending: false, problem: JournalProblem::UnrelatedToNodeZero }
    ));
    // The error says what and why.
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("s.pf");
    fs::write(&host, &g.disk).unwrap();
    fs::write(dir.path().join("s.pf.gramine.recovery"), &journal).unwrap();
    let file = File::options().read(true).write(true).open(&host).unwrap();
    let err = ProtectedFile::open_with_journal(
        FileStore::new(file),
        Some(Journal::beside(&host)),
        &key(),
        Some(PATH),
        &OpenOptions::new(),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("s.pf.gramine.recovery cannot be applied"), "{message}");
    assert!(message.contains("fails authentication, as a torn write leaves it"), "{message}");
    assert!(message.contains("roll the file back"), "{message}");
    assert!(err.is_integrity(), "{err:?}");
}

/// The same torn write at every interesting offset: a tear before the nonce changes no
/// sealed byte (the completed pf_flush stands), a tear after the sealed bytes leaves the
/// new metadata whole (the edit stands), anything between is refused.
#[test]
fn a_torn_metadata_only_write_gives_a_completed_state_or_a_refusal_at_every_offset() {
    let mut s3 = None;
    for keep in
        [0, 1, 9, 10, 11, 42, 58, 59, 512, 1024, 2048, 3000, 3584, 3900, 3927, 3928, 3942, 3943, 4000, 4095]
    {
        let History { mut g, s1, s2 } = history();
        g.write(0, &[0xcc; 100]);
        let edited = [&[0xcc; 100][..], &s2[100..]].concat();
        s3.get_or_insert_with(|| edited.clone());
        assert!(!g.flush(Crash::Tear { write: 1, keep }));
        let (outcome, wrote) = open_with_pfs(&g.disk, g.journal.as_deref());
        let expected = if keep <= NONCE_AT {
            Outcome::Opened(s2.clone(), None)
        } else if keep >= SEALED_END {
            Outcome::Opened(edited, None)
        } else {
            refused(false)
        };
        assert_eq!(outcome, expected, "torn after {keep} bytes");
        assert_ne!(outcome, Outcome::Opened(s1, None), "torn after {keep} bytes: rolled back");
        assert!(!wrote, "torn after {keep} bytes: pfs wrote");
    }
}

/// A recovery file left after its flush completed, and no crash since: ignored, nothing
/// written, the completed state opens.
#[test]
fn a_stale_recovery_file_without_a_tear_is_never_applied() {
    let History { g, s2, .. } = history();
    let journal = g.journal.clone().unwrap();
    assert!(matches!(assessed(&g.disk, &journal), Assessment::Intact));
    let (outcome, wrote) = open_with_pfs(&g.disk, Some(&journal));
    assert_eq!(outcome, Outcome::Opened(s2, None));
    assert!(!wrote);
}

/// The recovery file of the pf_flush, then two metadata-only flushes: the first completes,
/// the second is torn. The recovery file is two flushes old.
#[test]
fn a_recovery_file_from_two_flushes_back_is_refused() {
    let History { mut g, s2, .. } = history();
    g.write(0, &[0xcc; 100]);
    assert!(g.flush(Crash::None));
    let s3 = [&[0xcc; 100][..], &s2[100..]].concat();
    g.write(200, &[0xdd; 100]);
    let s4 = [&s3[..200], &[0xdd; 100][..], &s3[300..]].concat();
    assert!(!g.flush(Crash::Tear { write: 1, keep: 2048 }));
    let (outcome, wrote) = open_with_pfs(&g.disk, g.journal.as_deref());
    assert_eq!(outcome, refused(false));
    assert!(!wrote);

    // Untorn, the last flush stands and the old recovery file is ignored.
    let History { mut g, .. } = history();
    g.write(0, &[0xcc; 100]);
    assert!(g.flush(Crash::None));
    g.write(200, &[0xdd; 100]);
    assert!(g.flush(Crash::None));
    let (outcome, _) = open_with_pfs(&g.disk, g.journal.as_deref());
    assert_eq!(outcome, Outcome::Opened(s4, None));
}

/// The journaled pf_flush itself interrupted at every write, and torn at each of them:
/// the recovery file is then the one of the interrupted flush, and pfs restores the state
/// of the eviction flush (the last completed one), or the pf_flush's own state when its
/// metadata write landed in full.
#[test]
fn every_crash_of_the_journaled_flush_gives_the_last_completed_flush() {
    let base = content(1, SIZE);
    let new = content(2, SIZE);
    let prepare = || {
        let mut g = GramineFile::create(KDK, PATH, 7);
        g.write(0, &base);
        g.close();
        g.write(0, &new[..EVICTED]);
        assert!(g.flush(Crash::None));
        g.write(EVICTED, &new[EVICTED..]);
        g
    };
    let s1 = [&new[..EVICTED], &base[EVICTED..]].concat();
    let writes = prepare().writes_of_next_flush();
    // Recovery file, flag, 25 data nodes (48..72), root, metadata.
    assert_eq!(writes, 2 + 25 + 2);
    let mut recovered_states = 0;
    for n in 1..=writes + 1 {
        let mut g = prepare();
        let completed = g.flush(Crash::Before(n));
        let (outcome, _) = open_with_pfs(&g.disk, g.journal.as_deref());
        match outcome {
            _ if completed => {
                assert_eq!(outcome, Outcome::Opened(new.clone(), None), "crash before write {n}")
            }
            // Before the flag: nothing of the flush is on disk but its recovery file.
            Outcome::Opened(content, None) if n <= 2 => assert!(content == s1, "crash before write {n}"),
            Outcome::Opened(content, Some(_)) => {
                assert!(content == s1, "crash before write {n}: not the eviction flush's state");
                recovered_states += 1;
            }
            other => panic!("crash before write {n}: {other:?}"),
        }
    }
    assert_eq!(recovered_states, writes - 2, "every crash after the flag is recovered");

    // Torn writes: the flag write, a data node, the root, and the final metadata write at
    // offsets before, inside and after the sealed bytes.
    let last = writes;
    let mut cases: Vec<(usize, usize)> = [2, 3, 10, last - 1].iter().map(|&w| (w, 2048)).collect();
    cases.extend([0, 10, 11, 58, 59, 512, 2048, 3584, 3927, 3928, 3935, 3942, 3943, 4095].map(|k| (last, k)));
    for (write, keep) in cases {
        let mut g = prepare();
        assert!(!g.flush(Crash::Tear { write, keep }));
        let (outcome, _) = open_with_pfs(&g.disk, g.journal.as_deref());
        let old_sealed_bytes = SEALED_END.saturating_sub(keep.max(NONCE_AT));
        let label = format!("write {write} torn after {keep} bytes");
        if write == last && keep >= SEALED_END {
            assert_eq!(outcome, Outcome::Opened(new.clone(), None), "{label}: the new metadata is whole");
        } else if write == last && old_sealed_bytes < MIN_SHARED_SEALED_BYTES {
            // The documented exception: too few old sealed bytes left to prove anything.
            assert_eq!(outcome, refused(false), "{label}");
        } else {
            match outcome {
                Outcome::Opened(content, Some(_)) => {
                    assert!(content == s1, "{label}: not the eviction state")
                }
                other => panic!("{label}: {other:?}"),
            }
        }
    }
}

/// A tear that keeps the *first* sectors of node 0 old and the rest new (a device may
/// write the sectors of a 4 KiB write in any order): still the interrupted flush's own.
#[test]
fn a_tear_that_keeps_old_sectors_at_the_start_recovers() {
    let base = content(1, SIZE);
    let mut g = GramineFile::create(KDK, PATH, 9);
    g.write(0, &base);
    g.close();
    g.write(5000, &[0x77; 50_000]);
    let writes = g.writes_of_next_flush();
    let mut done = GramineFile::clone(&g);
    assert!(done.flush(Crash::None));
    assert!(!g.flush(Crash::Before(writes)), "everything but the final metadata write");
    // Sectors 0-3 keep the flagged old node 0, sectors 4-7 hold the new metadata.
    g.disk[2048..NODE].copy_from_slice(&done.disk[2048..NODE]);
    assert_eq!(g.disk[FLAGS_AT] & 1, 1);
    let (outcome, _) = open_with_pfs(&g.disk, g.journal.as_deref());
    match outcome {
        Outcome::Opened(content, Some(_)) => assert!(content == base, "not the old content"),
        other => panic!("{other:?}"),
    }
}

/// Power loss without write barriers: the flag of a new journaled flush reached the disk,
/// its recovery file did not, and the one beside the file is the previous flush's.
#[test]
fn a_stale_recovery_file_under_a_pending_flag_is_refused() {
    let History { mut g, s1, s2 } = history();
    let stale = g.journal.clone().unwrap();
    g.write(100_000, &[0x99; 20_000]);
    // Write 1 replaces the recovery file, write 2 sets the flag, write 3 would be the tree.
    assert!(!g.flush(Crash::Before(3)));
    let genuine = g.journal.clone().unwrap();
    assert_eq!(g.disk[FLAGS_AT] & 1, 1);
    assert!(blindly_recovered(&g.disk, &stale) == s1, "the stale file would roll back past pf_flush");
    let (outcome, wrote) = open_with_pfs(&g.disk, Some(&stale));
    assert_eq!(outcome, refused(true));
    assert!(!wrote);
    // With its own recovery file the same state recovers to the completed pf_flush.
    let (outcome, _) = open_with_pfs(&g.disk, Some(&genuine));
    match outcome {
        Outcome::Opened(content, Some(_)) => assert!(content == s2),
        other => panic!("{other:?}"),
    }
}

/// The genuine recovery file of another file under the same key, beside an interrupted
/// file: refused as bound to another path, or (without a path check) as unrelated.
#[test]
fn the_recovery_file_of_another_file_is_refused() {
    let interrupted = |path: &[u8], seed: u8| {
        let mut g = GramineFile::create(KDK, path, seed as u64);
        g.write(0, &content(seed, 100_000));
        g.close();
        g.write(50_000, &[seed; 10_000]);
        assert!(!g.flush(Crash::Before(3)));
        g
    };
    let b = interrupted(PATH, 3);
    let a = interrupted(b"/enc/a.pf", 4);
    let (outcome, wrote) = open_with_pfs(&b.disk, a.journal.as_deref());
    assert!(
        matches!(&outcome, Outcome::Refused { pending: true, problem: JournalProblem::BoundElsewhere { embedded, .. } } if embedded == b"/enc/a.pf"),
        "{outcome:?}"
    );
    assert!(!wrote);
    // Without an expected path, the rule still tells the two files apart.
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("s.pf");
    fs::write(&host, &b.disk).unwrap();
    fs::write(dir.path().join("s.pf.gramine.recovery"), a.journal.as_deref().unwrap()).unwrap();
    let store = FileStore::new(File::open(&host).unwrap());
    let verdict = assess(&store, &Journal::beside(&host), &key(), None, &CryptoProvider::default_provider());
    assert!(
        matches!(
            verdict,
            Ok(Assessment::Refused { pending: true, problem: JournalProblem::UnrelatedToNodeZero })
        ),
        "{verdict:?}"
    );
}
