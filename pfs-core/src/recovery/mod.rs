//! Gramine 1.9's optional recovery ("shadow") file (spec §13): before a flush overwrites
//! tree nodes in place, the previous image of each such node is saved as a record, and
//! the metadata node carries the pending-write flag until the flush completes. After a
//! crash, writing the records back restores the state before the interrupted flush.
//!
//! Format: a sequence of 4104-byte records, each a u64 LE physical node number followed
//! by the 4096-byte node image. No header, no authentication (every restored node is
//! authenticated again by the normal open).
//!
//! This module is the one implementation of that file in pfs:
//!
//! * [`recovery_file_name`]: where the file lives (Gramine's name, or a fixed-length one
//!   when Gramine's would exceed `NAME_MAX`);
//! * [`Journal`]: writing, reading (bounded by the host file's size, streamed, never
//!   loaded whole) and removing it, through a [`JournalOpener`] that says how to reach
//!   the file (a path with [`PathOpener`], a directory fd in the FUSE mount, memory with
//!   [`MemJournal`]);
//! * [`assess`]: the rule that decides whether a recovery file may be applied at all.

mod journal;
mod rule;

pub use journal::{Journal, JournalFile, JournalOpener, MemJournal, PathOpener, Scan};
pub use rule::{Assessment, MIN_SHARED_SEALED_BYTES, assess, started_from};
pub(crate) use rule::{Decision, decide};

use crate::layout::{GRAMINE_CACHE_NODES, NODE_SIZE, PhysicalNode};

/// Suffix Gramine appends to a host file's name for its recovery file (spec §13).
pub const RECOVERY_SUFFIX: &str = ".gramine.recovery";
/// Size of one record: node number (8 bytes) and node image (4096 bytes).
pub const RECORD_SIZE: usize = 8 + NODE_SIZE;
/// The longest file name (one path component) Linux file systems accept, in bytes.
pub const NAME_MAX: usize = 255;
/// Records a genuine recovery file can hold beyond one per node of the host file: Gramine
/// records a zero image for each cached node it appends (its cache holds at most 48
/// nodes and flushes when a 49th arrives) and for a root that never existed; pfs records
/// only nodes inside the host file. A larger file is refused unread.
pub const MAX_RECORDS_PAST_END: u64 = GRAMINE_CACHE_NODES as u64 + 2;

/// Hex digits of the name hash in a shortened recovery-file name (128 bits).
const NAME_HASH_HEX: usize = 32;
/// Bytes of the host file's name kept at the start of a shortened recovery-file name:
/// `prefix.HASH.gramine.recovery` is then at most `NAME_MAX` bytes.
const LONG_NAME_PREFIX: usize = NAME_MAX - RECOVERY_SUFFIX.len() - 1 - NAME_HASH_HEX;

/// Appends one record to `out`.
pub fn encode_record(node: PhysicalNode, image: &[u8; NODE_SIZE], out: &mut Vec<u8>) {
    out.extend_from_slice(&node.0.to_le_bytes());
    out.extend_from_slice(image);
}

/// The name of the recovery file of the host file named `host_name` (one path component),
/// in the same directory.
///
/// Gramine's name, `host_name` + `.gramine.recovery`, whenever it fits in [`NAME_MAX`]
/// bytes (host names of up to 238 bytes). A longer host name would give a recovery file no
/// file system can create (Gramine's LibOS then fails the open of such a file on a mount
/// with `enable_recovery`; it never reads a recovery file for it), so pfs uses
/// `PREFIX.HASH.gramine.recovery` instead: the first 205 bytes of the host name (cut
/// back to a UTF-8 character boundary), a dot, and the first 128 bits of the SHA-256 of
/// the whole host name in hex. That is at most 255 bytes, ends in the same suffix (so it
/// is hidden like any recovery file), and is a function of the name alone (so it follows
/// renames and unlinks the same way). See docs/ENGINE.md, "Recovery-file names".
pub fn recovery_file_name(host_name: &[u8]) -> Vec<u8> {
    let mut name = Vec::with_capacity(NAME_MAX);
    if host_name.len() + RECOVERY_SUFFIX.len() <= NAME_MAX {
        name.extend_from_slice(host_name);
    } else {
        use sha2::{Digest, Sha256};
        let mut cut = LONG_NAME_PREFIX;
        // Never split a UTF-8 sequence (at most 3 continuation bytes to back over).
        while cut > LONG_NAME_PREFIX - 3 && host_name[cut] & 0xc0 == 0x80 {
            cut -= 1;
        }
        name.extend_from_slice(&host_name[..cut]);
        name.push(b'.');
        let digest = Sha256::digest(host_name);
        for byte in &digest[..NAME_HASH_HEX / 2] {
            name.extend_from_slice(format!("{byte:02x}").as_bytes());
        }
    }
    name.extend_from_slice(RECOVERY_SUFFIX.as_bytes());
    name
}

/// Whether `name` (one path component) is a recovery file's name: such names are hidden
/// from applications (Gramine hides them the same way) and skipped by directory walks.
pub fn is_recovery_file_name(name: &[u8]) -> bool {
    name.ends_with(RECOVERY_SUFFIX.as_bytes())
}

/// Why a recovery file may not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JournalProblem {
    /// There is no recovery file.
    #[error("there is no recovery file")]
    Absent,
    /// The file is empty (pfs empties it once its flush has completed).
    #[error("the recovery file is empty")]
    Empty,
    /// The length is not a multiple of 4104 bytes.
    #[error("the recovery file is {len} bytes, not a multiple of {RECORD_SIZE}")]
    BadLength {
        /// Its length in bytes.
        len: u64,
    },
    /// Longer than any recovery file of this host file can be; it is not read.
    #[error(
        "the recovery file is {len} bytes, more than a recovery file of a {host_nodes}-node \
         host file can hold ({limit} bytes); it was not read"
    )]
    TooLarge {
        /// Its length in bytes.
        len: u64,
        /// Nodes of the host file.
        host_nodes: u64,
        /// The largest length accepted for that host file.
        limit: u64,
    },
    /// A record names a node number no file can have.
    #[error("record {index} names node {node}, beyond any protected file")]
    BadNode {
        /// Index of the record.
        index: u64,
        /// The node number found.
        node: u64,
    },
    /// No record holds node 0, so nothing ties the records to a state of the file.
    #[error("the recovery file holds no record of the metadata node (node 0)")]
    NoMetadataRecord,
    /// The recovery file's copy of node 0 does not authenticate under the key.
    #[error(
        "the recovery file's copy of the metadata node does not authenticate under this key \
         (another key, another file, or a damaged record)"
    )]
    MetadataDoesNotOpen,
    /// The recovery file's copy of node 0 is bound to another path.
    #[error(
        "the recovery file's copy of the metadata node is bound to {:?}, not {:?}",
        String::from_utf8_lossy(embedded),
        String::from_utf8_lossy(expected)
    )]
    BoundElsewhere {
        /// The path in the recovery file's metadata.
        embedded: Vec<u8>,
        /// The path the caller required.
        expected: Vec<u8>,
    },
    /// Node 0 on disk did not start from the recovery file's copy of it (the recovery
    /// rule, [`assess`]): nothing ties the interrupted write to the flush that wrote the
    /// recovery file.
    #[error(
        "node 0 shares no 16 consecutive sealed bytes with the recovery file's copy of it, so \
         nothing ties the interrupted write to the flush that wrote the recovery file: it is \
         most likely left from an earlier flush that completed (Gramine keeps it until the \
         file is closed), and applying it could roll the file back past that flush"
    )]
    UnrelatedToNodeZero,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_node_number_then_image() {
        let mut bytes = Vec::new();
        encode_record(PhysicalNode(7), &[0xab; NODE_SIZE], &mut bytes);
        encode_record(PhysicalNode(0), &[0x01; NODE_SIZE], &mut bytes);
        assert_eq!(bytes.len(), 2 * 4104);
        assert_eq!(&bytes[..8], &7u64.to_le_bytes());
        assert_eq!(bytes[8], 0xab);
        assert_eq!(&bytes[4104..4112], &0u64.to_le_bytes());
    }

    #[test]
    fn short_names_get_gramines_recovery_file_name() {
        assert_eq!(recovery_file_name(b"model.bin"), b"model.bin.gramine.recovery");
        let longest = vec![b'a'; NAME_MAX - RECOVERY_SUFFIX.len()];
        assert_eq!(longest.len(), 238);
        let name = recovery_file_name(&longest);
        assert_eq!(name.len(), NAME_MAX);
        assert!(name.starts_with(&longest) && name.ends_with(b".gramine.recovery"));
    }

    #[test]
    fn long_names_get_a_name_that_fits_and_is_their_own() {
        for len in [239usize, 240, 254, 255] {
            let host = vec![b'x'; len];
            let name = recovery_file_name(&host);
            assert!(name.len() <= NAME_MAX, "{len}: {} bytes", name.len());
            assert_eq!(name.len(), 255, "{len}: ASCII names give the full length");
            assert!(is_recovery_file_name(&name));
            assert!(name.starts_with(&host[..205]));
            // Names that share the kept prefix still differ.
            let mut other = host.clone();
            *other.last_mut().unwrap() = b'y';
            assert_ne!(recovery_file_name(&other), name);
            // The same name always maps to the same recovery file.
            assert_eq!(recovery_file_name(&host), name);
        }
        // SHA-256("x" * 239), first 16 bytes, computed independently:
        // python3 -c 'import hashlib;print(hashlib.sha256(b"x"*239).hexdigest()[:32])'
        let name = recovery_file_name(&[b'x'; 239]);
        let hash = &name[206..238];
        assert_eq!(name[205], b'.');
        assert_eq!(std::str::from_utf8(hash).unwrap(), "d959a0932265e47f8a755175668180a2");
    }

    #[test]
    fn a_shortened_name_never_splits_a_utf8_character() {
        // 'é' is two bytes: 102 of them put a character boundary at 204, not 205.
        let host = "é".repeat(120);
        assert_eq!(host.len(), 240);
        let name = recovery_file_name(host.as_bytes());
        assert!(name.len() <= NAME_MAX);
        let text = std::str::from_utf8(&name).expect("still UTF-8");
        assert!(text.starts_with(&"é".repeat(102)) && text.ends_with(".gramine.recovery"));
    }

    #[test]
    fn recovery_file_names_are_recognised() {
        assert!(is_recovery_file_name(b"a.gramine.recovery"));
        assert!(!is_recovery_file_name(b"a.gramine.recovery.bak"));
        assert!(!is_recovery_file_name(b"gramine"));
    }
}
