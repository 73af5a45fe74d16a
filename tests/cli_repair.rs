//! `pfs check` and `pfs check --repair` on files whose flush was really interrupted: the
//! file is written through pfs-core with Gramine's recovery file, and the second flush runs
//! on a store that stops writing after its N-th write (the process "dies" there). Then the
//! built `pfs` binary is run on the result, as a user would.

#[path = "cli/util.rs"]
#[allow(dead_code)]
mod util;

#[path = "../pfs-core/tests/support/stop_after.rs"]
mod stop_after;

#[path = "../pfs-core/tests/support/gramine_writer.rs"]
mod gramine_writer;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use gramine_writer::{Crash, GramineFile};
use pfs_core::NodeStore;
use pfs_core::{FileStore, Journal, Key, OpenOptions, PathOpener, ProtectedFile};
use stop_after::{StopAfter, TearAfter};
use util::{pfs, plaintext, workdir};

/// The key of `util::workdir`'s `k.key`.
fn key() -> Key {
    Key::from_slice(&[0x42; 16]).expect("16-byte key")
}

fn open_rw(path: &Path) -> File {
    File::options().read(true).write(true).create(true).truncate(false).open(path).expect("open host file")
}

fn journal_of(path: &Path) -> PathBuf {
    PathOpener::for_host_file(path).path().to_owned()
}

/// Writes `old` as a complete protected file at `dir/name` (with a recovery journal), then
/// overwrites it in place with `new` and flushes on a store that stops after `writes`
/// writes. Returns whether that flush returned an error (it was interrupted).
fn interrupted_file(dir: &Path, name: &str, old: &[u8], new: &[u8], writes: usize) -> bool {
    let path = dir.join(name);
    write_old(&path, name, old);
    let store = StopAfter { inner: FileStore::new(open_rw(&path)), left: writes };
    rewrite(store, &path, new)
}

/// Like `interrupted_file`, but the write after the first `whole` ones is torn: only its
/// first `keep` bytes land.
fn torn_file(dir: &Path, name: &str, old: &[u8], new: &[u8], whole: usize, keep: usize) -> bool {
    let path = dir.join(name);
    write_old(&path, name, old);
    let store = TearAfter { inner: FileStore::new(open_rw(&path)), left: whole, keep, torn: false };
    rewrite(store, &path, new)
}

fn write_old(path: &Path, name: &str, old: &[u8]) {
    let options = OpenOptions::new();
    let journal = Journal::beside(path);
    let mut pf = ProtectedFile::create_with_journal(
        FileStore::new(open_rw(path)),
        Some(journal),
        &key(),
        name.as_bytes(),
        &options,
    )
    .expect("create");
    pf.write_at(0, old).expect("write old content");
    pf.close().expect("close after the old content");
}

/// Overwrites the file at `path` with `new` through `store` and flushes; whether the flush
/// failed.
fn rewrite(store: impl NodeStore, path: &Path, new: &[u8]) -> bool {
    let options = OpenOptions::new();
    let journal = Journal::beside(path);
    let mut pf =
        ProtectedFile::open_with_journal(store, Some(journal), &key(), None, &options).expect("reopen");
    pf.write_at(0, new).expect("write new content (cached)");
    let interrupted = pf.flush().is_err();
    // Dropping a file whose flush failed writes nothing more (it is poisoned), like a crash.
    drop(pf);
    interrupted
}

/// The v2 pending-write flag (spec §4.1: bit 0 of the byte at offset 58).
fn pending_flag(path: &Path) -> bool {
    fs::read(path).expect("read host file")[58] & 1 == 1
}

/// 1 MB: a two-level tree (the root MHT node and three child MHT nodes).
const SIZE: usize = 1_000_000;

#[test]
fn check_reports_a_pending_recovery_and_modifies_nothing() {
    let dir = workdir();
    let d = dir.path();
    fs::create_dir(d.join("enc")).unwrap();
    // Two writes: the flag in node 0, then the first batch of new data nodes.
    assert!(interrupted_file(&d.join("enc"), "a.pf", &plaintext("old", SIZE), &plaintext("new", SIZE), 2));
    let host = d.join("enc/a.pf");
    assert!(pending_flag(&host), "the interrupted flush should leave the pending-write flag set");
    let before = (fs::read(&host).unwrap(), fs::read(journal_of(&host)).unwrap());

    for target in ["enc/a.pf", "enc"] {
        let run = pfs(d, &["check", "-w", "k.key", target]);
        // The overwritten data nodes do not match the old tree: the last written state is damaged.
        assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("recovery pending"), "{}", run.stdout);
        assert!(run.stdout.contains("a.pf.gramine.recovery holds the"), "{}", run.stdout);
        assert!(run.stdout.contains("`pfs check --repair`"), "{}", run.stdout);
        // The recovery file is not checked as a file of its own in a directory walk.
        assert!(run.stdout.contains("0 files ok, 1 damaged, 0 unreadable"), "{}", run.stdout);
    }
    let after = (fs::read(&host).unwrap(), fs::read(journal_of(&host)).unwrap());
    assert!(before == after, "pfs check without --repair modified the file or its recovery file");
}

#[test]
fn check_repair_restores_the_last_completed_flush() {
    let dir = workdir();
    let d = dir.path();
    let old = plaintext("old", SIZE);
    assert!(interrupted_file(d, "a.pf", &old, &plaintext("new", SIZE), 2));
    assert!(pending_flag(&d.join("a.pf")));

    let run = pfs(d, &["check", "-w", "k.key", "--repair", "a.pf"]).ok();
    let line =
        run.stdout.lines().find(|l| l.contains("recovered")).unwrap_or_else(|| panic!("{}", run.stdout));
    let nodes: usize = line
        .split("recovered ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no node count in {line:?}"));
    // At least the flagged metadata, the old root and the overwritten data nodes.
    assert!(nodes >= 3, "{line}");
    assert!(line.contains("from a.pf.gramine.recovery"), "{line}");
    assert!(line.contains("state of its last completed flush"), "{line}");
    assert!(run.stdout.contains("a.pf: ok (1000000 bytes"), "{}", run.stdout);
    assert!(run.stdout.contains("1 files ok, 0 damaged, 0 unreadable; 1 recovered"), "{}", run.stdout);
    assert!(!pending_flag(&d.join("a.pf")));
    assert!(!journal_of(&d.join("a.pf")).exists(), "the applied recovery file should be deleted");

    pfs(d, &["decrypt", "-w", "k.key", "-i", "a.pf", "-o", "a.out"]).ok();
    assert!(fs::read(d.join("a.out")).unwrap() == old, "the repaired file does not hold the old content");

    let again = pfs(d, &["check", "-w", "k.key", "--repair", "a.pf"]).ok();
    assert!(again.stdout.contains("a.pf: no recovery pending"), "{}", again.stdout);
    assert!(again.stdout.contains("0 recovered"), "{}", again.stdout);
}

/// Every crash point of the flush: the repaired file decrypts to exactly the old content.
#[test]
fn check_repair_after_a_crash_at_every_write_of_the_flush() {
    let old = plaintext("old", SIZE);
    let new = plaintext("new", SIZE);
    let mut interrupted_points = 0;
    for writes in 0..64 {
        let dir = workdir();
        let d = dir.path();
        if !interrupted_file(d, "a.pf", &old, &new, writes) {
            // The flush needed fewer writes: it completed, and the new content stands.
            pfs(d, &["check", "-w", "k.key", "--repair", "a.pf"]).ok();
            pfs(d, &["decrypt", "-w", "k.key", "-i", "a.pf", "-o", "a.out"]).ok();
            assert!(fs::read(d.join("a.out")).unwrap() == new, "completed flush lost");
            break;
        }
        interrupted_points += 1;
        let flagged = pending_flag(&d.join("a.pf"));
        let run = pfs(d, &["check", "-w", "k.key", "--repair", "a.pf"]).ok();
        assert_eq!(flagged, run.stdout.contains(" recovered "), "after {writes} write(s): {}", run.stdout);
        pfs(d, &["decrypt", "-w", "k.key", "-i", "a.pf", "-o", "a.out"]).ok();
        assert!(fs::read(d.join("a.out")).unwrap() == old, "after {writes} write(s): not the old content");
    }
    // At least: before the flag write, after it, after the tree nodes, before the final
    // metadata write (4 with this file size: the data nodes go in one vectored write).
    assert!(interrupted_points >= 4, "only {interrupted_points} crash points");
}

#[test]
fn check_repair_without_a_recovery_file_cannot_repair() {
    let dir = workdir();
    let d = dir.path();
    assert!(interrupted_file(d, "a.pf", &plaintext("old", SIZE), &plaintext("new", SIZE), 2));
    fs::remove_file(journal_of(&d.join("a.pf"))).unwrap();
    let before = fs::read(d.join("a.pf")).unwrap();

    let run = pfs(d, &["check", "-w", "k.key", "--repair", "a.pf"]).fails();
    assert!(run.stdout.contains("pending-write flag set but no usable recovery file"), "{}", run.stdout);
    assert!(run.stdout.contains("there is no recovery file"), "{}", run.stdout);
    assert!(run.stdout.contains("cannot repair"), "{}", run.stdout);
    assert!(run.stdout.contains("1 pending write(s) not recoverable"), "{}", run.stdout);
    assert!(fs::read(d.join("a.pf")).unwrap() == before, "a failed repair modified the file");

    // A malformed recovery file (not a multiple of 4104 bytes) is refused the same way.
    fs::write(journal_of(&d.join("a.pf")), [0u8; 5000]).unwrap();
    let run = pfs(d, &["check", "-w", "k.key", "--repair", "a.pf"]).fails();
    assert!(run.stdout.contains("not a multiple of 4104"), "{}", run.stdout);
    assert!(fs::read(d.join("a.pf")).unwrap() == before, "a failed repair modified the file");
}

#[test]
fn check_repair_of_an_intact_file_changes_nothing() {
    let dir = workdir();
    let d = dir.path();
    fs::write(d.join("p"), plaintext("p", 50_000)).unwrap();
    pfs(d, &["encrypt", "-w", "k.key", "-i", "p", "-o", "p.pf"]).ok();
    let before = fs::read(d.join("p.pf")).unwrap();
    let run = pfs(d, &["check", "-w", "k.key", "--repair", "p.pf"]).ok();
    assert!(run.stdout.contains("p.pf: no recovery pending"), "{}", run.stdout);
    assert!(
        run.stdout.contains("1 files ok, 0 damaged, 0 unreadable; 0 recovered, 0 pending"),
        "{}",
        run.stdout
    );
    assert!(fs::read(d.join("p.pf")).unwrap() == before);
}

/// The last write of a flush (node 0, flag already clear) torn by the crash: the metadata
/// node fails authentication, and the rest of it still holds the recovery file's copy of
/// the old one, which ties the recovery file to this flush.
#[test]
fn check_repair_restores_a_file_whose_final_metadata_write_was_torn() {
    let dir = workdir();
    let d = dir.path();
    let old = plaintext("old", SIZE);
    // Three whole writes: the flag, the data nodes, the MHT nodes and root; the final
    // metadata write lands its first 2048 bytes only.
    assert!(torn_file(d, "a.pf", &old, &plaintext("new", SIZE), 3, 2048));
    let host = d.join("a.pf");
    let bytes = fs::read(&host).unwrap();
    assert!(!pending_flag(&host), "the torn write's new header clears the flag");

    let run = pfs(d, &["check", "-w", "k.key", "a.pf"]).fails();
    assert!(run.stdout.contains("a.pf: UNREADABLE"), "{}", run.stdout);
    assert!(run.stdout.contains("a.pf.gramine.recovery holds the"), "{}", run.stdout);
    assert!(run.stdout.contains("of the interrupted flush; `pfs check --repair` restores"), "{}", run.stdout);
    assert!(fs::read(&host).unwrap() == bytes, "check without --repair modified the file");

    let run = pfs(d, &["check", "-w", "k.key", "--repair", "a.pf"]).ok();
    assert!(run.stdout.contains("recovered "), "{}", run.stdout);
    assert!(run.stdout.contains("a.pf: ok (1000000 bytes"), "{}", run.stdout);
    pfs(d, &["decrypt", "-w", "k.key", "-i", "a.pf", "-o", "a.out"]).ok();
    assert!(fs::read(d.join("a.out")).unwrap() == old, "not the old content");
}

/// Issue 13 §1 through the CLI: Gramine left its recovery file after a completed flush,
/// then a metadata-only flush's write of node 0 was torn. `--repair` must refuse, say
/// why, and write nothing; it must not claim the last completed flush.
#[test]
fn check_repair_refuses_a_recovery_file_left_by_a_completed_gramine_flush() {
    let dir = workdir();
    let d = dir.path();
    let (base, new) = (plaintext("base", 300_000), plaintext("new", 300_000));
    let evicted = 3072 + 48 * 4096;
    let mut g = GramineFile::create([0x42; 16], b"s.pf", 11);
    g.write(0, &base);
    g.close();
    g.write(0, &new[..evicted]);
    assert!(g.flush(Crash::None), "the eviction flush");
    g.write(evicted, &new[evicted..]);
    assert!(g.flush(Crash::None), "pf_flush; Gramine keeps its recovery file");
    let (completed, stale) = (g.disk.clone(), g.journal.clone().unwrap());
    g.write(0, &[0xcc; 100]);
    assert!(!g.flush(Crash::Tear { write: 1, keep: 2048 }));
    fs::write(d.join("s.pf"), &g.disk).unwrap();
    let journal = d.join("s.pf.gramine.recovery");
    fs::write(&journal, &stale).unwrap();

    let run = pfs(d, &["check", "-w", "k.key", "s.pf"]).fails();
    assert!(run.stdout.contains("s.pf: UNREADABLE"), "{}", run.stdout);
    assert!(run.stdout.contains("s.pf.gramine.recovery cannot restore it"), "{}", run.stdout);
    let run = pfs(d, &["check", "-w", "k.key", "--repair", "s.pf"]).fails();
    assert!(run.stdout.contains("s.pf: cannot repair"), "{}", run.stdout);
    assert!(run.stdout.contains("no 16 consecutive sealed bytes"), "{}", run.stdout);
    assert!(run.stdout.contains("roll the file back"), "{}", run.stdout);
    assert!(!run.stdout.contains("recovered "), "{}", run.stdout);
    assert!(!run.stdout.contains("last completed flush"), "{}", run.stdout);
    assert!(run.stdout.contains("0 recovered, 1 pending write(s) not recoverable"), "{}", run.stdout);
    assert!(fs::read(d.join("s.pf")).unwrap() == g.disk, "a refused repair wrote the file");
    assert!(fs::read(&journal).unwrap() == stale, "a refused repair touched the recovery file");

    // Without the torn write, the same stale recovery file is ignored and then deleted.
    fs::write(d.join("s.pf"), &completed).unwrap();
    let run = pfs(d, &["check", "-w", "k.key", "--repair", "s.pf"]).ok();
    assert!(
        run.stdout.contains("no recovery pending (the last flush completed; s.pf.gramine.recovery is stale)")
    );
    assert!(run.stdout.contains("s.pf: deleted s.pf.gramine.recovery"), "{}", run.stdout);
    assert!(fs::read(d.join("s.pf")).unwrap() == completed);
    pfs(d, &["decrypt", "-w", "k.key", "-i", "s.pf", "-o", "s.out"]).ok();
    assert!(fs::read(d.join("s.out")).unwrap() == new, "not the completed flush's content");
}

#[test]
fn check_repair_deletes_a_stale_recovery_file_of_an_intact_file() {
    let dir = workdir();
    let d = dir.path();
    fs::write(d.join("p"), plaintext("p", 50_000)).unwrap();
    pfs(d, &["encrypt", "-w", "k.key", "-i", "p", "-o", "p.pf"]).ok();
    let before = fs::read(d.join("p.pf")).unwrap();
    // A crash after a flush completed but before its recovery file was emptied: records of
    // an older state, and the pending flag clear.
    let mut stale = 0u64.to_le_bytes().to_vec();
    stale.extend_from_slice(&before[..4096]);
    let journal = journal_of(&d.join("p.pf"));
    fs::write(&journal, &stale).unwrap();

    let run = pfs(d, &["check", "-w", "k.key", "p.pf"]).ok();
    assert!(run.stdout.contains("p.pf: ok"), "{}", run.stdout);
    assert!(journal.exists(), "check without --repair deleted the recovery file");
    let run = pfs(d, &["check", "-w", "k.key", "--repair", "p.pf"]).ok();
    assert!(
        run.stdout.contains("no recovery pending (the last flush completed; p.pf.gramine.recovery is stale)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("p.pf: deleted p.pf.gramine.recovery"), "{}", run.stdout);
    assert!(!journal.exists());
    assert!(fs::read(d.join("p.pf")).unwrap() == before, "the file itself changed");
}

#[test]
fn check_help_documents_repair_and_exit_status() {
    let dir = workdir();
    let run = pfs(dir.path(), &["check", "--help"]).ok();
    assert!(run.stdout.contains("--repair"), "{}", run.stdout);
    assert!(run.stdout.contains("Exit status: 0 if every file is ok"), "{}", run.stdout);
}
