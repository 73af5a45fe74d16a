//! When a recovery file may be applied: the one rule every recovery path of pfs uses
//! (`ProtectedFile::open_with_journal`, and through it `pfs check --repair`, the FUSE
//! mount and `pfs run`'s encrypted mounts).
//!
//! # The rule
//!
//! Let `D` be node 0 as found on disk and `J` the recovery file's (last) record of node 0.
//! The recovery file is applied only if all of these hold:
//!
//! 1. a write is pending or was interrupted: `D`'s pending-write flag is set, or `D` fails
//!    authentication;
//! 2. the file is well formed (whole 4104-byte records, no longer than the host file can
//!    need) and holds a record of node 0;
//! 3. `J` authenticates under the key (and is bound to the expected path, when one is
//!    given): the state it restores is a state of this file;
//! 4. `D` *started from* `J`: the two share at least [`MIN_SHARED_SEALED_BYTES`]
//!    consecutive *sealed bytes* at the same positions. The sealed bytes of a metadata
//!    image are its KDF nonce (offset 10), its tag (42) and its encrypted part (59, or 58
//!    in format 1), each at the offsets of that image's own format version.
//!
//! Otherwise the recovery file is refused with its reason ([`JournalProblem`]), as
//! Gramine refuses a file it cannot recover.
//!
//! # Why it is right (spec §8, §13)
//!
//! Node 0 is written in two ways. A *metadata write* (every flush ends with one) seals the
//! metadata under a key derived from a fresh random nonce, so all its sealed bytes are
//! new: the nonce itself, and tag and ciphertext under a key never used before. The
//! *flag write* of a journaled flush rewrites the node's current image with bit 0 of byte
//! 58 set: that byte is not sealed, so it changes no sealed byte. A journaled flush `F`
//! first records `J`, the node 0 it starts from, then makes the flag write, then the tree
//! writes, and last its metadata write.
//!
//! * If `D` shares 16 consecutive sealed bytes with `J`, those bytes of `D` come from the
//!   write that produced `J` (or a flag write, which copies them): an independent
//!   metadata write agrees with `J` on 16 given bytes with probability 2⁻¹²⁸, under 2⁻¹¹⁶
//!   over all 3,917 positions. So since `J` no metadata write reached node 0 in full;
//!   the one `D` may show part of was torn. Every completed flush ends with a complete
//!   metadata write, so no flush completed after `J`: the flush that recorded `J` is the
//!   one that was interrupted, its records are the previous images of every node it
//!   overwrote, and writing them back yields exactly the state of `J`, the last
//!   completed flush.
//! * A recovery file left after its flush completed (Gramine 1.9 leaves it until the
//!   file is closed, older pfs versions too) holds the node 0 from *before* that flush,
//!   while `D` was written by that flush's metadata write or a later one: `D` shares no
//!   sealed bytes with `J`, so the file is refused. Applying it would restore the state
//!   before a completed flush, and after a later torn metadata-only write a mix of
//!   states that no flush ever wrote (issue 13).
//! * Every genuine interruption passes: a crash before the final metadata write leaves
//!   `D` = `J` with the flag (all sealed bytes shared), and a torn final write keeps the
//!   old bytes after the tear point, which are `J`'s. The exception is a tear within the
//!   last 15 sealed bytes (node 0 bytes 3928–3942): fewer than 16 old bytes remain, and
//!   the file is refused instead of recovered. Tears at 512-byte sector boundaries never
//!   fall there (the last one inside the sealed bytes is at 3584), a tear at byte 3943 or
//!   later leaves the new metadata complete (the flush completed), and a tear that keeps
//!   old sectors anywhere else, not only at the end, passes too.

use super::JournalProblem;
use super::journal::{Journal, Scan};
use crate::crypto::{CryptoProvider, Key};
use crate::error::{Error, Result};
use crate::layout::{MAC_SIZE, METADATA_NODE, NODE_SIZE, NODE_SIZE_U64};
use crate::metadata::{Metadata, PlainHeader, sealed_bytes};
use crate::storage::NodeStore;

/// Consecutive sealed bytes `D` and `J` must share for `D` to have started from `J`: the
/// size of a GCM tag, so a chance agreement is as unlikely as guessing a tag.
pub const MIN_SHARED_SEALED_BYTES: usize = MAC_SIZE;

/// Whether the node 0 found on disk (`disk`) *started from* the recovery file's record of
/// node 0 (`journal`): they share at least [`MIN_SHARED_SEALED_BYTES`] consecutive
/// sealed bytes at the same positions (see the module documentation).
pub fn started_from(disk: &[u8; NODE_SIZE], journal: &[u8; NODE_SIZE]) -> bool {
    let (Some(d), Some(j)) = (sealed_bytes(disk), sealed_bytes(journal)) else { return false };
    let mut run = 0;
    for (a, b) in d.iter().zip(&j) {
        run = if a == b { run + 1 } else { 0 };
        if run >= MIN_SHARED_SEALED_BYTES {
            return true;
        }
    }
    false
}

/// What a recovery file can do for a protected file, decided without writing anything.
#[derive(Debug)]
#[non_exhaustive]
pub enum Assessment {
    /// Node 0 authenticates and no write is pending: nothing to recover. A recovery file
    /// beside the file is stale and must never be applied.
    Intact,
    /// A write was interrupted and the recovery file is the one its flush wrote: applying
    /// it restores the state of the last completed flush.
    Applicable {
        /// The pending-write flag is set (otherwise node 0 was torn by the final write).
        pending: bool,
        /// Records in the recovery file.
        records: u64,
    },
    /// A write is pending, or node 0 fails authentication, and the recovery file may not
    /// be applied (or there is none).
    Refused {
        /// The pending-write flag is set (otherwise node 0 fails authentication).
        pending: bool,
        /// Why not.
        problem: JournalProblem,
    },
}

/// The rule, as `open_with_journal` applies it (crate-internal form of [`assess`]).
pub(crate) enum Decision {
    /// No recovery needed.
    Intact,
    /// Apply this recovery file.
    Apply(Scan),
    /// Do not apply; a recovery was needed (flag set or node 0 unauthentic).
    Refuse(JournalProblem),
}

impl JournalProblem {
    /// Whether the recovery file's copy of node 0 authenticated under the key, which
    /// proves the key right: node 0 on disk is then damaged, not opened with a wrong key.
    pub fn proves_key(&self) -> bool {
        matches!(self, JournalProblem::BoundElsewhere { .. } | JournalProblem::UnrelatedToNodeZero)
    }
}

/// Applies the rule to node 0 as found on disk (`disk`, whose plain header is `header`)
/// of a host file of `host_nodes` nodes.
pub(crate) fn decide(
    disk: &[u8; NODE_SIZE],
    header: &PlainHeader,
    host_nodes: u64,
    journal: Option<&Journal>,
    kdk: &Key,
    expected_path: Option<&[u8]>,
    crypto: &CryptoProvider,
) -> Result<Decision> {
    let authentic = Metadata::open(disk, header, kdk, crypto).is_ok();
    if authentic && !header.pending_write() {
        return Ok(Decision::Intact);
    }
    let Some(journal) = journal else { return Ok(Decision::Refuse(JournalProblem::Absent)) };
    let scan = match journal.scan(host_nodes).map_err(|e| Error::io(None, e))? {
        Ok(scan) => scan,
        Err(problem) => return Ok(Decision::Refuse(problem)),
    };
    let Some(recorded) = scan.metadata_record() else {
        return Ok(Decision::Refuse(JournalProblem::NoMetadataRecord));
    };
    let opened = PlainHeader::parse(recorded).and_then(|h| Metadata::open(recorded, &h, kdk, crypto));
    let Ok(recorded_meta) = opened else {
        return Ok(Decision::Refuse(JournalProblem::MetadataDoesNotOpen));
    };
    if let Some(expected) = expected_path
        && recorded_meta.path != expected
    {
        return Ok(Decision::Refuse(JournalProblem::BoundElsewhere {
            embedded: recorded_meta.path.clone(),
            expected: expected.to_vec(),
        }));
    }
    if !started_from(disk, recorded) {
        return Ok(Decision::Refuse(JournalProblem::UnrelatedToNodeZero));
    }
    Ok(Decision::Apply(scan))
}

/// Applies the rule to the protected file in `store` and its recovery file `journal`
/// without writing either: what a writable `open_with_journal` with the same key and
/// expected path would do. Errors are those of reading node 0 (an unreadable or foreign
/// file) and I/O errors of the recovery file.
pub fn assess<S: NodeStore>(
    store: &S,
    journal: &Journal,
    kdk: &Key,
    expected_path: Option<&[u8]>,
    crypto: &CryptoProvider,
) -> Result<Assessment> {
    let host_size = store.byte_len().map_err(|e| Error::io(Some(METADATA_NODE), e))?;
    let mut disk = [0u8; NODE_SIZE];
    let read = store.read_nodes(METADATA_NODE, &mut disk).map_err(|e| Error::io(Some(METADATA_NODE), e))?;
    if read == 0 {
        return Err(Error::NodeMissing { kind: None, node: METADATA_NODE, offset: 0 });
    }
    let header = PlainHeader::parse(&disk)?;
    let pending = header.pending_write();
    let host_nodes = host_size / NODE_SIZE_U64;
    Ok(match decide(&disk, &header, host_nodes, Some(journal), kdk, expected_path, crypto)? {
        Decision::Intact => Assessment::Intact,
        Decision::Apply(scan) => Assessment::Applicable { pending, records: scan.records() },
        Decision::Refuse(problem) => Assessment::Refused { pending, problem },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::ENCRYPTED_PART_SIZE;

    /// A node 0 image with the given version and every sealed byte set to `fill`.
    fn image(version: u8, fill: u8) -> [u8; NODE_SIZE] {
        let mut node = [0u8; NODE_SIZE];
        node[..8].copy_from_slice(b"GRAFS_PF");
        node[8] = version;
        node[10..58].fill(fill);
        let part = if version == 1 { 58 } else { 59 };
        node[part..part + ENCRYPTED_PART_SIZE].fill(fill);
        node
    }

    #[test]
    fn a_run_of_sixteen_shared_sealed_bytes_is_needed() {
        let j = image(2, 0x11);
        let mut d = image(2, 0x22);
        assert!(!started_from(&d, &j));
        assert!(started_from(&j, &j));
        // 15 shared bytes at the very end of the encrypted part: not enough.
        let end = 59 + ENCRYPTED_PART_SIZE;
        d[end - 15..end].copy_from_slice(&j[end - 15..end]);
        assert!(!started_from(&d, &j));
        d[end - 16] = j[end - 16];
        assert!(started_from(&d, &j));
        // The padding and the flag byte are not sealed: sharing them proves nothing.
        let mut d = image(2, 0x22);
        d[end..].copy_from_slice(&j[end..]);
        d[..10].copy_from_slice(&j[..10]);
        d[58] = j[58] | 1;
        assert!(!started_from(&d, &j));
    }

    #[test]
    fn sealed_bytes_are_compared_at_each_images_own_offsets() {
        // A format-1 record and a format-2 node 0 holding the same sealed bytes (as a
        // flag write over an upgraded file would): the fields line up, the offsets do not.
        let mut j = image(1, 0x33);
        let mut d = image(2, 0x44);
        for i in 0..ENCRYPTED_PART_SIZE {
            j[58 + i] = i as u8;
            d[59 + i] = i as u8;
        }
        assert!(started_from(&d, &j));
        d[8] = 7;
        assert!(!started_from(&d, &j), "an image of no known version starts from nothing");
    }
}
