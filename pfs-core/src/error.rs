//! Errors of the engine. They mirror Gramine's PF statuses (spec §7) and carry the node
//! number and plaintext offset wherever one applies.

use std::fmt;
use std::io;

use crate::layout::{DataNode, MhtNode, PhysicalNode};
use crate::recovery::JournalProblem;

/// Why the plain header of node 0 was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderProblem {
    /// The host file size is not a multiple of 4096 bytes.
    UnalignedHostSize {
        /// The host file size in bytes.
        host_size: u64,
    },
    /// The first 8 bytes are not `GRAFS_PF`.
    BadMagic,
}

impl fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderProblem::UnalignedHostSize { host_size } => {
                write!(f, "host file size {host_size} is not a multiple of 4096")
            }
            HeaderProblem::BadMagic => f.write_str("file id is not GRAFS_PF (not a protected file)"),
        }
    }
}

/// Which node of the tree failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// The root MHT node (physical node 1).
    RootMht,
    /// A non-root MHT node.
    Mht(MhtNode),
    /// A data node.
    Data(DataNode),
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeKind::RootMht => f.write_str("root MHT node"),
            NodeKind::Mht(m) => write!(f, "MHT node #{}", m.0),
            NodeKind::Data(d) => write!(f, "data node #{}", d.0),
        }
    }
}

/// An engine error. Integrity errors name the physical node and the first plaintext
/// offset that the node covers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Gramine `INVALID_HEADER`: not a protected file, or a damaged header.
    #[error("invalid header: {0}")]
    InvalidHeader(HeaderProblem),

    /// Gramine `INVALID_VERSION`: a major version other than 1 or 2.
    #[error("unsupported format major version {major} (pfs reads 1 and 2)")]
    InvalidVersion {
        /// The major version byte found at offset 8.
        major: u8,
    },

    /// Gramine `INVALID_PATH`: the embedded path differs from the expected one.
    #[error(
        "embedded path mismatch: the file is bound to {:?} but {:?} was expected",
        String::from_utf8_lossy(embedded),
        String::from_utf8_lossy(expected)
    )]
    PathMismatch {
        /// Path stored in the file's metadata.
        embedded: Vec<u8>,
        /// Path the caller required.
        expected: Vec<u8>,
    },

    /// Gramine `PATH_TOO_LONG`: more than 771 bytes.
    #[error("path of {len} bytes is too long for the metadata field (at most 771 bytes)")]
    PathTooLong {
        /// Length of the refused path in bytes.
        len: usize,
    },

    /// Gramine `MAC_MISMATCH` on the metadata node: wrong key, or modified metadata.
    #[error("metadata node (node 0) failed authentication: wrong key or modified file")]
    MetadataMac,

    /// Gramine `MAC_MISMATCH` on an MHT or data node.
    #[error("{kind} (host node {}, plaintext offset {offset}) failed authentication: the file was modified or damaged", node.0)]
    NodeMac {
        /// Which tree node failed.
        kind: NodeKind,
        /// Its position in the host file.
        node: PhysicalNode,
        /// First plaintext byte offset covered by the node (for an MHT node: by its subtree).
        offset: u64,
    },

    /// A node needed for the plaintext size is missing from the host file (truncated file).
    #[error(
        "{} (host node {}, plaintext offset {offset}) is missing: the host file is truncated",
        kind.map_or("metadata node".to_string(), |k| k.to_string()),
        node.0
    )]
    NodeMissing {
        /// Which tree node is missing (`None` for the metadata node).
        kind: Option<NodeKind>,
        /// Its position in the host file.
        node: PhysicalNode,
        /// First plaintext byte offset it covers.
        offset: u64,
    },

    /// Gramine `CORRUPTED`: authenticated metadata that makes no sense, or a file left
    /// unusable by an earlier failed flush.
    #[error("corrupted: {0}")]
    Corrupted(String),

    /// Gramine `RECOVERY_NEEDED`: the pending-write flag is set and this open refuses it.
    #[error(
        "an interrupted write left the pending-write flag set; recovery is needed \
         (open with PendingWritePolicy::Ignore to read the last committed state)"
    )]
    RecoveryNeeded,

    /// A write was interrupted (the pending-write flag is set, or node 0 fails
    /// authentication although the recovery file proves the key right) and the recovery
    /// file may not be applied (see [`crate::recovery::assess`]). Nothing was written.
    #[error("{} the recovery file {journal} cannot be applied: {problem}", refused_context(*pending))]
    RecoveryRefused {
        /// The recovery file's name.
        journal: String,
        /// The pending-write flag is set (otherwise node 0 fails authentication).
        pending: bool,
        /// Why it may not be applied.
        problem: JournalProblem,
    },

    /// The requested size or offset is beyond what the format can address.
    #[error("size or offset {0} is beyond the largest supported protected file")]
    TooLarge(u64),

    /// The file was opened read-only.
    #[error("the protected file is open read-only")]
    ReadOnly,

    /// Gramine `CALLBACK_FAILED`: the node store failed.
    #[error("I/O error{}: {source}", node.map(|n| format!(" at host node {}", n.0)).unwrap_or_default())]
    Io {
        /// The node being read or written, when known.
        node: Option<PhysicalNode>,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Gramine's numeric status for this error (spec §7), for logs and interop reports.
    pub fn gramine_status(&self) -> i32 {
        match self {
            Error::InvalidHeader(_) => -7,
            Error::InvalidVersion { .. } => -6,
            Error::PathMismatch { .. } => -8,
            Error::PathTooLong { .. } => -12,
            Error::MetadataMac | Error::NodeMac { .. } => -9,
            Error::NodeMissing { .. } | Error::Io { .. } => -11,
            Error::Corrupted(_) => -16,
            Error::RecoveryNeeded | Error::RecoveryRefused { .. } => -13,
            Error::TooLarge(_) => -3,
            Error::ReadOnly => -4,
        }
    }

    /// Whether the error means the file's content cannot be trusted (as opposed to a
    /// usage or environment problem). Integrity errors map to `EIO` in a mount.
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            Error::InvalidHeader(_)
                | Error::InvalidVersion { .. }
                | Error::MetadataMac
                | Error::NodeMac { .. }
                | Error::NodeMissing { .. }
                | Error::Corrupted(_)
                | Error::RecoveryRefused { .. }
        )
    }

    /// The closest `errno` for this error, as a FUSE layer reports it: `EACCES` for a
    /// wrong key or path (like Gramine), `EIO` for damage, and the OS error for I/O.
    pub fn errno(&self) -> i32 {
        const EACCES: i32 = 13;
        const EIO: i32 = 5;
        const EFBIG: i32 = 27;
        const EROFS: i32 = 30;
        const ENAMETOOLONG: i32 = 36;
        match self {
            Error::PathMismatch { .. } | Error::MetadataMac | Error::RecoveryNeeded => EACCES,
            Error::PathTooLong { .. } => ENAMETOOLONG,
            Error::TooLarge(_) => EFBIG,
            Error::ReadOnly => EROFS,
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(EIO),
            _ => EIO,
        }
    }

    pub(crate) fn io(node: Option<PhysicalNode>, source: io::Error) -> Self {
        Error::Io { node, source }
    }
}

fn refused_context(pending: bool) -> &'static str {
    if pending {
        "an interrupted write left the pending-write flag set, and"
    } else {
        "the metadata node (node 0) fails authentication, as a torn write leaves it, and"
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
