//! A writer of Gramine protected files and recovery files built from the spec alone
//! (`spec/pf-format.md` §2–§8, §13), independent of pfs-core's writer: its own node
//! arithmetic, Merkle-tree bookkeeping, flush order and recovery-file writer, and sealing
//! with RustCrypto (`aes-gcm`, `cmac`) directly. Shared by the recovery tests of several
//! crates (included with `#[path]`).
//!
//! It behaves as Gramine 1.9's PF code with `enable_recovery` does where recovery is
//! concerned. A flush that updates the tree (size > 3072 and a data node dirty) first
//! replaces the recovery file with the previous image of every node it will overwrite
//! (all zeros for a node never written), then node 1, then node 0; rewrites node 0 with
//! the pending-write flag set; writes the tree; and writes the new node 0 last. Any other
//! flush writes node 0 only. After a completed flush the recovery file is **left as it
//! is**; only `close` deletes it. Each flush numbers its writes (the recovery file is
//! write 1 of a tree flush) so that a test can stop it at any write or tear one.
#![allow(dead_code)]

use std::collections::BTreeSet;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, KeyInit};
use cmac::{Cmac, Mac};

/// Spec §1.
pub const NODE: usize = 4096;
const INLINE: usize = 3072;
const DATA_PER_MHT: u64 = 96;
const MHT_PER_MHT: u64 = 32;
const PATH_FIELD: usize = 772;
/// Spec §4.1 (format 2): nonce, tag, flags, encrypted part, padding.
const NONCE_AT: usize = 10;
const TAG_AT: usize = 42;
pub const FLAGS_AT: usize = 58;
const PART_AT: usize = 59;
const PART_SIZE: usize = 3884;
/// First node-0 byte after the sealed bytes (nonce, tag, encrypted part): 59 + 3884.
pub const SEALED_END: usize = PART_AT + PART_SIZE;

/// Spec §3: physical node of data node d, of MHT node m, parent of MHT node m.
pub fn phys_data(d: u64) -> u64 {
    d + 2 + d / DATA_PER_MHT
}
pub fn phys_mht(m: u64) -> u64 {
    1 + 97 * m
}
fn mht_parent(m: u64) -> u64 {
    (m - 1) / MHT_PER_MHT
}

/// How a flush ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// It completes.
    None,
    /// Its `n`-th write (counting from 1) and every later one never happen.
    Before(usize),
    /// Its `n`-th write lands only its first `keep` bytes (a host write; the recovery
    /// file's write either happens or not), and nothing after it happens.
    Tear { write: usize, keep: usize },
}

type Entry = ([u8; 16], [u8; 16]);

enum Write {
    Journal(Vec<u8>),
    Host { node: u64, bytes: Vec<u8> },
}

/// One protected file, its host file and its recovery file, as Gramine leaves them.
#[derive(Clone)]
pub struct GramineFile {
    kdk: [u8; 16],
    path: Vec<u8>,
    /// The plaintext the application has written so far.
    pub plain: Vec<u8>,
    /// The host file.
    pub disk: Vec<u8>,
    /// The recovery file (`None`: there is none).
    pub journal: Option<Vec<u8>>,
    /// Key and tag of every data node and MHT node (index m ≥ 1) as last sealed, and the
    /// root's (they live in the metadata).
    data: Vec<Entry>,
    mht: Vec<Entry>,
    root: Entry,
    /// Node 0 as last written by a completed metadata write (flag clear).
    meta_image: Vec<u8>,
    dirty: BTreeSet<u64>,
    rng: u64,
}

impl GramineFile {
    /// `pf_open(create)`: a new empty file bound to `path`, flushed at once (spec §8).
    pub fn create(kdk: [u8; 16], path: &[u8], seed: u64) -> Self {
        let mut file = GramineFile {
            kdk,
            path: path.to_vec(),
            plain: Vec::new(),
            disk: Vec::new(),
            journal: None,
            data: Vec::new(),
            mht: Vec::new(),
            root: ([0; 16], [0; 16]),
            meta_image: vec![0; NODE],
            dirty: BTreeSet::new(),
            rng: seed | 1,
        };
        assert!(file.flush(Crash::None));
        file
    }

    /// `pf_write`: bytes below 3072 go to node 0, others mark their data nodes dirty;
    /// writing past the end first extends the file with zeros (spec §8, §10).
    pub fn write(&mut self, offset: usize, bytes: &[u8]) {
        let start = offset.min(self.plain.len());
        let end = offset + bytes.len();
        if self.plain.len() < end {
            self.plain.resize(end, 0);
        }
        self.plain[offset..end].copy_from_slice(bytes);
        for at in (start.max(INLINE)..end).step_by(NODE) {
            self.dirty.insert(((at - INLINE) / NODE) as u64);
        }
        if end > INLINE {
            self.dirty.insert(((end - 1 - INLINE) / NODE) as u64);
        }
    }

    /// `pf_flush` (spec §8, §13). Returns whether the flush completed; after a crash the
    /// object is only good for reading `disk` and `journal`.
    pub fn flush(&mut self, crash: Crash) -> bool {
        let size = self.plain.len();
        let tree = size > INLINE && !self.dirty.is_empty();
        let mut writes = Vec::new();
        if tree {
            let dirty_mht = self.dirty_mht();
            // The recovery file: previous images of the nodes about to be overwritten, in
            // Gramine's cache order (here: MHT nodes, then data nodes, highest first), then
            // node 1, then node 0.
            let mut records = Vec::new();
            let nodes = dirty_mht
                .iter()
                .rev()
                .map(|&m| phys_mht(m))
                .chain(self.dirty.iter().rev().map(|&d| phys_data(d)));
            for node in nodes.chain([1, 0]) {
                records.extend_from_slice(&node.to_le_bytes());
                records.extend_from_slice(&self.on_disk(node));
            }
            writes.push(Write::Journal(records));
            let mut flagged = self.meta_image.clone();
            flagged[FLAGS_AT] |= 1;
            writes.push(Write::Host { node: 0, bytes: flagged });
            // Seal: data nodes, MHT nodes deepest (highest number) first, the root.
            let mut tree_writes = Vec::new();
            for &d in &self.dirty.clone() {
                let mut node = self.data_plain(d);
                let entry = self.seal(&mut node);
                if self.data.len() <= d as usize {
                    self.data.resize(d as usize + 1, ([0; 16], [0; 16]));
                }
                self.data[d as usize] = entry;
                tree_writes.push((phys_data(d), node));
            }
            for &m in dirty_mht.iter().rev() {
                let mut node = self.mht_plain(m);
                let entry = self.seal(&mut node);
                if self.mht.len() <= m as usize {
                    self.mht.resize(m as usize + 1, ([0; 16], [0; 16]));
                }
                self.mht[m as usize] = entry;
                tree_writes.push((phys_mht(m), node));
            }
            tree_writes.sort_by_key(|(node, _)| *node);
            for (node, bytes) in tree_writes {
                writes.push(Write::Host { node, bytes });
            }
            let mut root = self.mht_plain(0);
            self.root = self.seal(&mut root);
            writes.push(Write::Host { node: 1, bytes: root });
        }
        let meta = self.seal_metadata();
        writes.push(Write::Host { node: 0, bytes: meta.clone() });

        for (i, write) in writes.into_iter().enumerate() {
            let n = i + 1;
            match (crash, write) {
                (Crash::Before(at), _) if n >= at => return false,
                (Crash::Tear { write: at, .. }, _) if n > at => return false,
                (Crash::Tear { write: at, .. }, Write::Journal(_)) if n == at => return false,
                (Crash::Tear { write: at, keep }, Write::Host { node, bytes }) if n == at => {
                    self.put(node, &bytes[..keep.min(NODE)]);
                    return false;
                }
                (_, Write::Journal(records)) => self.journal = Some(records),
                (_, Write::Host { node, bytes }) => self.put(node, &bytes),
            }
        }
        self.meta_image = meta;
        self.dirty.clear();
        true
    }

    /// `pf_close`: a flush, then the recovery file is deleted.
    pub fn close(&mut self) {
        assert!(self.flush(Crash::None));
        self.journal = None;
    }

    /// How many writes the next flush issues.
    pub fn writes_of_next_flush(&self) -> usize {
        if self.plain.len() > INLINE && !self.dirty.is_empty() {
            // Recovery file, flag, tree nodes, root, metadata.
            2 + self.dirty.len() + self.dirty_mht().len() + 2
        } else {
            1
        }
    }

    fn dirty_mht(&self) -> BTreeSet<u64> {
        let mut out = BTreeSet::new();
        for &d in &self.dirty {
            let mut m = d / DATA_PER_MHT;
            while m != 0 {
                out.insert(m);
                m = mht_parent(m);
            }
        }
        out
    }

    fn on_disk(&self, node: u64) -> Vec<u8> {
        let at = node as usize * NODE;
        self.disk.get(at..at + NODE).map_or_else(|| vec![0; NODE], <[u8]>::to_vec)
    }

    fn put(&mut self, node: u64, bytes: &[u8]) {
        let at = node as usize * NODE;
        if self.disk.len() < at + NODE {
            self.disk.resize(at + NODE, 0);
        }
        self.disk[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn data_plain(&self, d: u64) -> Vec<u8> {
        let mut node = vec![0u8; NODE];
        let start = INLINE + d as usize * NODE;
        let end = (start + NODE).min(self.plain.len());
        node[..end - start].copy_from_slice(&self.plain[start..end]);
        node
    }

    /// Spec §5: 96 data-child entries, then 32 MHT-child entries, each key then tag.
    fn mht_plain(&self, m: u64) -> Vec<u8> {
        let data_nodes = (self.plain.len().saturating_sub(INLINE)).div_ceil(NODE) as u64;
        let mut node = vec![0u8; NODE];
        for i in 0..DATA_PER_MHT {
            let d = m * DATA_PER_MHT + i;
            if d < data_nodes {
                let (key, tag) = self.data[d as usize];
                node[32 * i as usize..][..16].copy_from_slice(&key);
                node[32 * i as usize + 16..][..16].copy_from_slice(&tag);
            }
        }
        let mht_nodes = data_nodes.div_ceil(DATA_PER_MHT);
        for j in 0..MHT_PER_MHT {
            let child = m * MHT_PER_MHT + 1 + j;
            if child < mht_nodes {
                let (key, tag) = self.mht[child as usize];
                node[3072 + 32 * j as usize..][..16].copy_from_slice(&key);
                node[3072 + 32 * j as usize + 16..][..16].copy_from_slice(&tag);
            }
        }
        node
    }

    fn random(&mut self, out: &mut [u8]) {
        for byte in out {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            *byte = (self.rng >> 24) as u8;
        }
    }

    /// Spec §2: a fresh random key, AES-128-GCM with a zero IV and no AAD, in place.
    fn seal(&mut self, node: &mut [u8]) -> Entry {
        let mut key = [0u8; 16];
        self.random(&mut key);
        (key, gcm(&key, node))
    }

    /// Spec §4, §8 step 3: a fresh nonce, the CMAC KDF, the encrypted part sealed; the
    /// padding carried over from the previous image.
    fn seal_metadata(&mut self) -> Vec<u8> {
        let mut node = self.meta_image.clone();
        let mut nonce = [0u8; 32];
        self.random(&mut nonce);
        let mut part = vec![0u8; PART_SIZE];
        part[..self.path.len()].copy_from_slice(&self.path);
        part[PATH_FIELD..PATH_FIELD + 8].copy_from_slice(&(self.plain.len() as u64).to_le_bytes());
        part[PATH_FIELD + 8..PATH_FIELD + 24].copy_from_slice(&self.root.0);
        part[PATH_FIELD + 24..PATH_FIELD + 40].copy_from_slice(&self.root.1);
        let inline = self.plain.len().min(INLINE);
        part[PATH_FIELD + 40..PATH_FIELD + 40 + inline].copy_from_slice(&self.plain[..inline]);
        let tag = gcm(&metadata_key(&self.kdk, &nonce), &mut part);
        node[..8].copy_from_slice(b"GRAFS_PF");
        node[8] = 2;
        node[9] = 0;
        node[NONCE_AT..NONCE_AT + 32].copy_from_slice(&nonce);
        node[TAG_AT..TAG_AT + 16].copy_from_slice(&tag);
        node[FLAGS_AT] = 0;
        node[PART_AT..PART_AT + PART_SIZE].copy_from_slice(&part);
        node
    }
}

fn gcm(key: &[u8; 16], buf: &mut [u8]) -> [u8; 16] {
    let cipher = Aes128Gcm::new(key.into());
    let tag = cipher.encrypt_in_place_detached(&[0u8; 12].into(), b"", buf).expect("AES-GCM seal");
    tag.into()
}

/// Spec §2: SP 800-108 counter mode, AES-CMAC, one block: counter 1, the 64-byte label
/// field, the nonce, the output length 128.
fn metadata_key(kdk: &[u8; 16], nonce: &[u8; 32]) -> [u8; 16] {
    let mut input = Vec::with_capacity(104);
    input.extend_from_slice(&1u32.to_le_bytes());
    let mut label = [0u8; 64];
    label[..29].copy_from_slice(b"SGX-PROTECTED-FS-METADATA-KEY");
    input.extend_from_slice(&label);
    input.extend_from_slice(nonce);
    input.extend_from_slice(&128u32.to_le_bytes());
    let mut mac = <Cmac<aes::Aes128> as Mac>::new_from_slice(kdk).expect("16-byte key");
    mac.update(&input);
    mac.finalize().into_bytes().into()
}

/// Spec §13: the recovery file's records, as (node number, image).
pub fn records(journal: &[u8]) -> Vec<(u64, &[u8])> {
    assert_eq!(journal.len() % (8 + NODE), 0);
    journal.chunks(8 + NODE).map(|r| (u64::from_le_bytes(r[..8].try_into().unwrap()), &r[8..])).collect()
}

/// The spec's recovery on open, as Gramine's LibOS runs it (no questions asked): every
/// record written back at `node * 4096`.
pub fn recover_blindly(disk: &mut Vec<u8>, journal: &[u8]) {
    for (node, image) in records(journal) {
        let at = node as usize * NODE;
        if disk.len() < at + NODE {
            disk.resize(at + NODE, 0);
        }
        disk[at..at + NODE].copy_from_slice(image);
    }
}

#[test]
fn the_metadata_key_follows_the_kdf_vector_of_the_spec() {
    // Spec §2: KDK 00..0f, nonce 20..3f → 70ed96c7236900467f5461579ab272f8.
    let kdk: [u8; 16] = std::array::from_fn(|i| i as u8);
    let nonce: [u8; 32] = std::array::from_fn(|i| 0x20 + i as u8);
    let key = metadata_key(&kdk, &nonce);
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "70ed96c7236900467f5461579ab272f8");
}
