//! `pfs-core`: a Rust engine for Gramine's Protected Files (PF) format.
//!
//! A protected file is an array of 4096-byte nodes: a metadata node holding the first
//! 3072 plaintext bytes, and a Merkle tree of AES-128-GCM tags over MHT and data nodes.
//! Files written here are byte-compatible with Gramine (format major versions 1 and 2),
//! and Gramine's files open here. The format is described in the project's
//! `spec/pf-format.md`; module [`layout`] holds its node arithmetic.
//!
//! ```
//! use pfs_core::{Key, MemStore, OpenOptions, ProtectedFile};
//!
//! let key = Key::from_bytes([7; 16]);
//! let disk = MemStore::new();
//! let mut file = ProtectedFile::create(disk.clone(), &key, b"enc/model.bin", &OpenOptions::new())?;
//! file.write_at(0, b"weights")?;
//! file.close()?;
//!
//! let mut file = ProtectedFile::open(disk, &key, Some(b"enc/model.bin"), &OpenOptions::new())?;
//! let mut buf = [0u8; 7];
//! assert_eq!(file.read_at(0, &mut buf)?, 7);
//! assert_eq!(&buf, b"weights");
//! # Ok::<(), pfs_core::Error>(())
//! ```
//!
//! The crate does no path policy, printing or networking; storage goes through the
//! [`NodeStore`] trait ([`FileStore`] for host files, [`MemStore`] in memory).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
pub mod crypto;
mod error;
mod file;
mod io;
pub mod layout;
pub mod metadata;
pub mod path;
pub mod recovery;
mod storage;

pub use cache::CacheStats;
pub use crypto::{CryptoProvider, Key};
pub use error::{Error, HeaderProblem, NodeKind, Result};
pub use file::{DEFAULT_CACHE_NODES, NodeProblem, OpenOptions, PendingWritePolicy, ProtectedFile};
pub use io::Stream;
pub use metadata::FormatVersion;
pub use recovery::{Journal, JournalOpener, MemJournal, PathOpener};
pub use storage::{FileStore, MemStore, NodeStore};
