//! Node arithmetic of the Protected Files format, in one pure module (spec §1, §3).
//!
//! Three numbering spaces exist and never mix: logical data nodes ([`DataNode`]), logical
//! Merkle-tree nodes ([`MhtNode`]) and physical nodes in the host file ([`PhysicalNode`]).
//! Plaintext offsets are plain `u64` byte offsets.

/// Size of every node in the host file, in bytes.
pub const NODE_SIZE: usize = 4096;
/// [`NODE_SIZE`] as `u64`, for offset arithmetic.
pub const NODE_SIZE_U64: u64 = NODE_SIZE as u64;
/// AES-128 key size in bytes.
pub const KEY_SIZE: usize = 16;
/// AES-GCM tag size in bytes.
pub const MAC_SIZE: usize = 16;
/// Size of the KDF nonce stored in the metadata node, in bytes.
pub const NONCE_SIZE: usize = 32;
/// Size of the path field of the encrypted metadata, including its NUL terminator.
pub const PATH_FIELD_SIZE: usize = 772;
/// Longest embedded path in bytes (the field needs one NUL).
pub const MAX_PATH_LEN: usize = PATH_FIELD_SIZE - 1;
/// Plaintext bytes stored inside the metadata node (plaintext offsets `0..3072`).
pub const INLINE_DATA_SIZE: usize = 3072;
/// [`INLINE_DATA_SIZE`] as `u64`.
pub const INLINE_DATA_SIZE_U64: u64 = INLINE_DATA_SIZE as u64;
/// Size of one (key, tag) entry in an MHT node.
pub const ENTRY_SIZE: usize = KEY_SIZE + MAC_SIZE;
/// Data children per MHT node.
pub const DATA_PER_MHT: u64 = 96;
/// MHT children per MHT node.
pub const MHT_PER_MHT: u64 = 32;
/// Nodes in one group: an MHT node followed by its 96 data nodes.
pub const NODES_PER_GROUP: u64 = 1 + DATA_PER_MHT;
/// Gramine's per-file LRU limit (behaviour, not format).
pub const GRAMINE_CACHE_NODES: usize = 48;

/// Largest plaintext size this engine accepts. Keeps every node number and host offset
/// far from `u64` overflow (2^62 bytes is about 4.6 EB).
pub const MAX_PLAINTEXT_SIZE: u64 = 1 << 62;

/// Largest plaintext size a writer lets a file grow to (by a write, a truncate or an
/// allocation): 16 TiB, ext4's own file-size limit. The format has no holes (spec §3), so
/// growing a file writes every node up to its new end: without a bound a truncate to 1 PB
/// would try to write 1 PB. Files found larger (up to [`MAX_PLAINTEXT_SIZE`]) are still read.
pub const MAX_WRITABLE_SIZE: u64 = 1 << 44;

/// A logical data node index `d`; data node `d` holds plaintext `3072 + 4096·d ..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DataNode(pub u64);

/// A logical Merkle-tree node number `m`; `MhtNode(0)` is the root (physical node 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MhtNode(pub u64);

/// A node index in the host file; node `p` occupies bytes `p·4096 .. (p+1)·4096`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysicalNode(pub u64);

/// Physical node 0: the metadata node.
pub const METADATA_NODE: PhysicalNode = PhysicalNode(0);
/// Physical node 1: the root MHT node.
pub const ROOT_MHT_NODE: PhysicalNode = PhysicalNode(1);

impl DataNode {
    /// The data node holding plaintext offset `offset` (which must be ≥ 3072).
    pub fn containing(offset: u64) -> Self {
        debug_assert!(offset >= INLINE_DATA_SIZE_U64);
        DataNode((offset - INLINE_DATA_SIZE_U64) / NODE_SIZE_U64)
    }

    /// Where this node lives in the host file: `d + 2 + d / 96`.
    pub fn physical(self) -> PhysicalNode {
        PhysicalNode(self.0 + 2 + self.0 / DATA_PER_MHT)
    }

    /// The MHT node whose data area holds this node's key and tag.
    pub fn parent(self) -> MhtNode {
        MhtNode(self.0 / DATA_PER_MHT)
    }

    /// Index of this node's entry in its parent's data area (`0..96`).
    pub fn slot(self) -> usize {
        (self.0 % DATA_PER_MHT) as usize
    }

    /// First plaintext byte offset stored in this node.
    pub fn plaintext_offset(self) -> u64 {
        INLINE_DATA_SIZE_U64 + self.0 * NODE_SIZE_U64
    }
}

impl MhtNode {
    /// The root of the tree.
    pub const ROOT: MhtNode = MhtNode(0);

    /// Where this node lives in the host file: `1 + 97·m`.
    pub fn physical(self) -> PhysicalNode {
        PhysicalNode(1 + NODES_PER_GROUP * self.0)
    }

    /// The parent MHT node, or `None` for the root.
    pub fn parent(self) -> Option<MhtNode> {
        (self.0 > 0).then(|| MhtNode((self.0 - 1) / MHT_PER_MHT))
    }

    /// Index of this node's entry in its parent's MHT-child area (`0..32`); 0 for the root.
    pub fn slot(self) -> usize {
        if self.0 == 0 { 0 } else { ((self.0 - 1) % MHT_PER_MHT) as usize }
    }

    /// The chain from the root down to `self`, root first.
    pub fn path_from_root(self) -> Vec<MhtNode> {
        let mut chain = vec![self];
        let mut node = self;
        while let Some(parent) = node.parent() {
            chain.push(parent);
            node = parent;
        }
        chain.reverse();
        chain
    }

    /// First data node (by logical number) beneath this node's own data area.
    pub fn first_data_node(self) -> DataNode {
        DataNode(self.0 * DATA_PER_MHT)
    }

    /// Depth below the root (root = 0).
    pub fn depth(self) -> u32 {
        let mut depth = 0;
        let mut node = self;
        while let Some(parent) = node.parent() {
            depth += 1;
            node = parent;
        }
        depth
    }
}

/// Byte offset of a data child's (key, tag) entry inside an MHT node's plaintext.
pub fn data_entry_offset(slot: usize) -> usize {
    slot * ENTRY_SIZE
}

/// Byte offset of an MHT child's (key, tag) entry inside an MHT node's plaintext.
pub fn mht_entry_offset(slot: usize) -> usize {
    DATA_PER_MHT as usize * ENTRY_SIZE + slot * ENTRY_SIZE
}

/// Number of data nodes a file of `size` plaintext bytes has: `ceil((S - 3072) / 4096)`.
pub fn data_node_count(size: u64) -> u64 {
    if size <= INLINE_DATA_SIZE_U64 { 0 } else { (size - INLINE_DATA_SIZE_U64).div_ceil(NODE_SIZE_U64) }
}

/// Number of MHT nodes (root included) a file of `size` plaintext bytes has.
pub fn mht_node_count(size: u64) -> u64 {
    data_node_count(size).div_ceil(DATA_PER_MHT)
}

/// Number of nodes Gramine leaves in the host file for plaintext size `size` (spec §3).
pub fn host_node_count(size: u64) -> u64 {
    1 + mht_node_count(size) + data_node_count(size)
}

/// Size in bytes of the host file Gramine leaves for `size` plaintext bytes (spec §3): what
/// growing a file to `size` makes the host hold.
pub fn host_file_size(size: u64) -> u64 {
    host_node_count(size).saturating_mul(NODE_SIZE_U64)
}

/// Depth of the MHT for `size` plaintext bytes: 0 = metadata only, 1 = root only, ...
pub fn tree_depth(size: u64) -> u32 {
    match mht_node_count(size) {
        0 => 0,
        count => MhtNode(count - 1).depth() + 1,
    }
}

/// A piece of a plaintext range that falls into one storage location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// Bytes `skip .. skip + len` of the inline area of the metadata node.
    Inline {
        /// Offset inside the inline area.
        skip: usize,
        /// Number of bytes.
        len: usize,
    },
    /// Bytes `skip .. skip + len` of data node `node`.
    Data {
        /// The data node.
        node: DataNode,
        /// Offset inside the node.
        skip: usize,
        /// Number of bytes.
        len: usize,
    },
}

impl Span {
    /// Number of plaintext bytes covered.
    pub fn len(&self) -> usize {
        match *self {
            Span::Inline { len, .. } | Span::Data { len, .. } => len,
        }
    }

    /// Whether the span is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Splits the plaintext range `offset .. offset + len` into per-node spans, in order.
pub fn spans(offset: u64, len: usize) -> impl Iterator<Item = Span> {
    let end = offset.saturating_add(len as u64);
    let mut pos = offset;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let span = if pos < INLINE_DATA_SIZE_U64 {
            let skip = pos as usize;
            let len = (end.min(INLINE_DATA_SIZE_U64) - pos) as usize;
            Span::Inline { skip, len }
        } else {
            let node = DataNode::containing(pos);
            let skip = (pos - node.plaintext_offset()) as usize;
            let len = (end - pos).min((NODE_SIZE - skip) as u64) as usize;
            Span::Data { node, skip, len }
        };
        pos += span.len() as u64;
        Some(span)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_of_the_spec() {
        // Plaintext offset 400000 → data node 96, byte 3712, host node 99, MHT #1 at node 98.
        let d = DataNode::containing(400_000);
        assert_eq!(d, DataNode(96));
        assert_eq!(400_000 - d.plaintext_offset(), 3712);
        assert_eq!(d.physical(), PhysicalNode(99));
        assert_eq!(d.parent(), MhtNode(1));
        assert_eq!(d.slot(), 0);
        assert_eq!(MhtNode(1).physical(), PhysicalNode(98));
        assert_eq!(MhtNode(1).parent(), Some(MhtNode::ROOT));
        assert_eq!(mht_entry_offset(MhtNode(1).slot()), 3072);
    }

    #[test]
    fn group_layout() {
        assert_eq!(DataNode(0).physical(), PhysicalNode(2));
        assert_eq!(DataNode(95).physical(), PhysicalNode(97));
        assert_eq!(DataNode(191).physical(), PhysicalNode(194));
        assert_eq!(DataNode(192).physical(), PhysicalNode(196));
        assert_eq!(MhtNode(2).physical(), PhysicalNode(195));
    }

    #[test]
    fn mht_parent_first_differs_from_naive_formula_at_32() {
        assert_eq!(MhtNode(31).parent(), Some(MhtNode(0)));
        assert_eq!(MhtNode(32).parent(), Some(MhtNode(0)));
        assert_eq!(MhtNode(33).parent(), Some(MhtNode(1)));
        assert_eq!(MhtNode(33).slot(), 0);
        assert_eq!(MhtNode(64).parent(), Some(MhtNode(1)));
        assert_eq!(MhtNode(65).parent(), Some(MhtNode(2)));
        assert_eq!(MhtNode(65).path_from_root(), vec![MhtNode(0), MhtNode(2), MhtNode(65)]);
    }

    #[test]
    fn host_sizes_of_the_spec() {
        for (size, bytes) in [
            (0, 4096),
            (3072, 4096),
            (3073, 12288),
            (7168, 12288),
            (7169, 16384),
            (396_288, 401_408),
            (396_289, 409_600),
        ] {
            assert_eq!(host_node_count(size) * NODE_SIZE_U64, bytes, "size {size}");
            assert_eq!(host_file_size(size), bytes, "size {size}");
        }
    }

    #[test]
    fn depth_table_of_the_spec() {
        assert_eq!(tree_depth(3072), 0);
        assert_eq!(tree_depth(3073), 1);
        assert_eq!(tree_depth(396_288), 1);
        assert_eq!(tree_depth(396_289), 2);
        assert_eq!(tree_depth(12_979_200), 2);
        assert_eq!(tree_depth(12_979_201), 3);
        assert_eq!(tree_depth(415_632_384), 3);
        assert_eq!(tree_depth(415_632_385), 4);
    }

    #[test]
    fn spans_cover_ranges_exactly_and_in_order() {
        for offset in (0..10_000u64).step_by(97) {
            for len in [0usize, 1, 100, 3072, 4096, 9000] {
                let mut pos = offset;
                for span in spans(offset, len) {
                    match span {
                        Span::Inline { skip, len } => {
                            assert_eq!(skip as u64, pos);
                            assert!(skip + len <= INLINE_DATA_SIZE);
                        }
                        Span::Data { node, skip, len } => {
                            assert_eq!(node.plaintext_offset() + skip as u64, pos);
                            assert!(skip + len <= NODE_SIZE);
                        }
                    }
                    assert!(!span.is_empty());
                    pos += span.len() as u64;
                }
                assert_eq!(pos, offset + len as u64);
            }
        }
    }

    #[test]
    fn node_counts_are_monotonic() {
        let mut last = (0, 0, 0);
        for size in 0..100_000u64 {
            let now = (data_node_count(size), mht_node_count(size), host_node_count(size));
            assert!(now.0 >= last.0 && now.1 >= last.1 && now.2 >= last.2);
            last = now;
        }
    }
}
