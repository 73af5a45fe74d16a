//! `pfs check` and `pfs check --repair` on files whose flush was really interrupted: the
//! file is written through pfs-core with Gramine's recovery file, and the second flush runs
//! on a store that stops writing after its N-th write (the process "dies" there). Then the
//! built `pfs` binary is run on the result, as a user would.

#[path = "cli/util.rs"]
#[allow(dead_code)]
mod util;

#[path = "../pfs-core/tests/support/stop_after.rs"]
mod stop_after;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use pfs_core::{FileJournal, FileStore, Key, OpenOptions, ProtectedFile};
use stop_after::StopAfter;
use util::{pfs, plaintext, workdir};

/// The key of `util::workdir`'s `k.key`.
fn key() -> Key {
    Key::from_slice(&[0x42; 16]).expect("16-byte key")
}

fn open_rw(path: &Path) -> File {
    File::options().read(true).write(true).create(true).truncate(false).open(path).expect("open host file")
}

fn journal_of(path: &Path) -> PathBuf {
    FileJournal::for_host_file(path).path().to_owned()
}

/// Writes `old` as a complete protected file at `dir/name` (with a recovery journal), then
/// overwrites it in place with `new` and flushes on a store that stops after `writes`
/// writes. Returns whether that flush returned an error (it was interrupted).
fn interrupted_file(dir: &Path, name: &str, old: &[u8], new: &[u8], writes: usize) -> bool {
    let path = dir.join(name);
    let options = OpenOptions::new();
    let journal = Box::new(FileJournal::for_host_file(&path));
    let mut pf = ProtectedFile::create_with_journal(
        FileStore::new(open_rw(&path)),
        Some(journal),
        &key(),
        name.as_bytes(),
        &options,
    )
    .expect("create");
    pf.write_at(0, old).expect("write old content");
    pf.close().expect("close after the old content");

    let store = StopAfter { inner: FileStore::new(open_rw(&path)), left: writes };
    let journal = Box::new(FileJournal::for_host_file(&path));
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
        assert!(run.stdout.contains("a.pf.gramine.recovery holds"), "{}", run.stdout);
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
/// node fails authentication, and the recovery file's copy of the old one is the way back.
#[test]
fn check_repair_restores_a_file_whose_final_metadata_write_was_torn() {
    let dir = workdir();
    let d = dir.path();
    let old = plaintext("old", SIZE);
    // Three writes: the flag, the data nodes, the MHT nodes and root; the final metadata
    // write is the one that fails.
    assert!(interrupted_file(d, "a.pf", &old, &plaintext("new", SIZE), 3));
    let host = d.join("a.pf");
    let mut bytes = fs::read(&host).unwrap();
    // What a torn final write leaves: the flag clear (the new header) and half a node.
    bytes[58] &= !1;
    bytes[2048..4096].fill(0);
    fs::write(&host, &bytes).unwrap();

    let run = pfs(d, &["check", "-w", "k.key", "a.pf"]).fails();
    assert!(run.stdout.contains("a.pf: UNREADABLE"), "{}", run.stdout);
    assert!(run.stdout.contains("a.pf.gramine.recovery holds"), "{}", run.stdout);
    assert!(run.stdout.contains("`pfs check --repair` tries"), "{}", run.stdout);
    assert!(fs::read(&host).unwrap() == bytes, "check without --repair modified the file");

    let run = pfs(d, &["check", "-w", "k.key", "--repair", "a.pf"]).ok();
    assert!(run.stdout.contains("recovered "), "{}", run.stdout);
    assert!(run.stdout.contains("a.pf: ok (1000000 bytes"), "{}", run.stdout);
    pfs(d, &["decrypt", "-w", "k.key", "-i", "a.pf", "-o", "a.out"]).ok();
    assert!(fs::read(d.join("a.out")).unwrap() == old, "not the old content");
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
