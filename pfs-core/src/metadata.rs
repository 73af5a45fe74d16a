//! The metadata node (node 0): plain header and encrypted part (spec §4).
//!
//! Every field is read through fixed-size copies from a node-sized array, so nothing read
//! from disk can index out of bounds.

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::{CryptoProvider, Key, Tag, derive_metadata_key};
use crate::error::{Error, HeaderProblem, Result};
use crate::layout::{
    INLINE_DATA_SIZE, KEY_SIZE, MAC_SIZE, MAX_PATH_LEN, NODE_SIZE, NONCE_SIZE, PATH_FIELD_SIZE,
};

/// `GRAFS_PF` as stored at offset 0 (u64 LE `0x46505F5346415247`).
pub const FILE_ID: [u8; 8] = *b"GRAFS_PF";
/// Size of the encrypted part of the metadata node.
pub const ENCRYPTED_PART_SIZE: usize = PATH_FIELD_SIZE + 8 + KEY_SIZE + MAC_SIZE + INLINE_DATA_SIZE;
/// Feature-flag bit 0 (v2): a write was interrupted; recovery may be needed (spec §13).
pub const FLAG_PENDING_WRITE: u8 = 0x01;

const NONCE_OFFSET: usize = 10;
const TAG_OFFSET: usize = 42;
const FLAGS_OFFSET_V2: usize = 58;

/// On-disk format major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatVersion {
    /// Gramine 1.0–1.8: encrypted part at offset 58, no flags byte.
    V1,
    /// Gramine ≥ 1.9: flags byte at 58, encrypted part at 59. The default for new files.
    #[default]
    V2,
}

impl FormatVersion {
    /// The major-version byte.
    pub fn major(self) -> u8 {
        match self {
            FormatVersion::V1 => 1,
            FormatVersion::V2 => 2,
        }
    }

    /// Parses a major-version byte.
    pub fn from_major(major: u8) -> Result<Self> {
        match major {
            1 => Ok(FormatVersion::V1),
            2 => Ok(FormatVersion::V2),
            _ => Err(Error::InvalidVersion { major }),
        }
    }

    fn encrypted_offset(self) -> usize {
        match self {
            FormatVersion::V1 => 58,
            FormatVersion::V2 => 59,
        }
    }
}

/// The plain (unauthenticated) header of node 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainHeader {
    /// Format major version.
    pub version: FormatVersion,
    /// Minor version byte (ignored on read, 0 on write).
    pub minor: u8,
    /// Feature flags (v2 only; always 0 for v1).
    pub flags: u8,
}

impl PlainHeader {
    /// Parses and checks the header of a metadata node (file id and major version).
    pub fn parse(node: &[u8; NODE_SIZE]) -> Result<Self> {
        if node[..8] != FILE_ID {
            return Err(Error::InvalidHeader(HeaderProblem::BadMagic));
        }
        let version = FormatVersion::from_major(node[8])?;
        let flags = match version {
            FormatVersion::V1 => 0,
            FormatVersion::V2 => node[FLAGS_OFFSET_V2],
        };
        Ok(PlainHeader { version, minor: node[9], flags })
    }

    /// Whether the v2 pending-write flag is set.
    pub fn pending_write(&self) -> bool {
        self.flags & FLAG_PENDING_WRITE != 0
    }
}

/// The decrypted, authenticated part of the metadata node.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Metadata {
    /// Embedded path bytes (without NUL).
    pub path: Vec<u8>,
    /// Plaintext file size.
    pub size: u64,
    /// Key of the root MHT node (stale when size ≤ 3072).
    pub root_key: Key,
    /// Tag of the root MHT node.
    pub root_tag: Tag,
    /// Plaintext bytes 0..3072.
    pub inline: Box<[u8; INLINE_DATA_SIZE]>,
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metadata")
            .field("path", &String::from_utf8_lossy(&self.path))
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Metadata {
    /// Metadata of a new, empty file bound to `path`.
    pub fn new(path: &[u8]) -> Result<Self> {
        check_path_len(path)?;
        Ok(Metadata {
            path: path.to_vec(),
            size: 0,
            root_key: Key::default(),
            root_tag: [0; MAC_SIZE],
            inline: Box::new([0; INLINE_DATA_SIZE]),
        })
    }

    /// Decrypts and authenticates the encrypted part of `node` with the user key `kdk`.
    pub fn open(
        node: &[u8; NODE_SIZE],
        header: &PlainHeader,
        kdk: &Key,
        crypto: &CryptoProvider,
    ) -> Result<Self> {
        let nonce: [u8; NONCE_SIZE] = copy_array(node, NONCE_OFFSET);
        let tag: Tag = copy_array(node, TAG_OFFSET);
        let start = header.version.encrypted_offset();
        let mut part = vec![0u8; ENCRYPTED_PART_SIZE];
        part.copy_from_slice(&node[start..start + ENCRYPTED_PART_SIZE]);
        let key = derive_metadata_key(kdk, &nonce);
        if crypto.cipher.open_in_place(&key, &mut part, &tag).is_err() {
            return Err(Error::MetadataMac);
        }
        let metadata = Self::decode(&part);
        part.zeroize();
        Ok(metadata)
    }

    fn decode(part: &[u8]) -> Self {
        let field: [u8; PATH_FIELD_SIZE] = copy_array(part, 0);
        // The scan is bounded by the 772-byte field; a missing NUL keeps all 772 bytes,
        // which the length check of any later write refuses.
        let path_len = field.iter().position(|&b| b == 0).unwrap_or(PATH_FIELD_SIZE);
        let size = u64::from_le_bytes(copy_array(part, PATH_FIELD_SIZE));
        let root_key = Key::from_bytes(copy_array(part, PATH_FIELD_SIZE + 8));
        let root_tag = copy_array(part, PATH_FIELD_SIZE + 8 + KEY_SIZE);
        let mut inline = Box::new([0u8; INLINE_DATA_SIZE]);
        inline.copy_from_slice(&part[PATH_FIELD_SIZE + 8 + KEY_SIZE + MAC_SIZE..]);
        Metadata { path: field[..path_len].to_vec(), size, root_key, root_tag, inline }
    }

    /// Encrypts this metadata into `node` under a fresh nonce. `node` must already hold
    /// the padding to carry over (zeros for a new file); header fields are overwritten.
    pub fn seal_into(
        &self,
        node: &mut [u8; NODE_SIZE],
        version: FormatVersion,
        flags: u8,
        kdk: &Key,
        crypto: &CryptoProvider,
    ) -> Result<()> {
        check_path_len(&self.path)?;
        let mut nonce = [0u8; NONCE_SIZE];
        crypto.random.fill(&mut nonce).map_err(|e| Error::io(None, e))?;
        let key = derive_metadata_key(kdk, &nonce);

        let start = version.encrypted_offset();
        let part = &mut node[start..start + ENCRYPTED_PART_SIZE];
        part.fill(0);
        part[..self.path.len()].copy_from_slice(&self.path);
        let mut at = PATH_FIELD_SIZE;
        part[at..at + 8].copy_from_slice(&self.size.to_le_bytes());
        at += 8;
        part[at..at + KEY_SIZE].copy_from_slice(self.root_key.as_bytes());
        at += KEY_SIZE;
        part[at..at + MAC_SIZE].copy_from_slice(&self.root_tag);
        at += MAC_SIZE;
        part[at..].copy_from_slice(&self.inline[..]);
        let tag = crypto.cipher.seal_in_place(&key, part);

        node[..8].copy_from_slice(&FILE_ID);
        node[8] = version.major();
        node[9] = 0;
        node[NONCE_OFFSET..NONCE_OFFSET + NONCE_SIZE].copy_from_slice(&nonce);
        node[TAG_OFFSET..TAG_OFFSET + MAC_SIZE].copy_from_slice(&tag);
        if version == FormatVersion::V2 {
            node[FLAGS_OFFSET_V2] = flags;
        }
        Ok(())
    }
}

/// Sets or clears the pending-write flag in a sealed v2 metadata node image.
pub fn set_pending_flag(node: &mut [u8; NODE_SIZE], pending: bool) {
    if node[8] == FormatVersion::V2.major() {
        if pending {
            node[FLAGS_OFFSET_V2] |= FLAG_PENDING_WRITE;
        } else {
            node[FLAGS_OFFSET_V2] &= !FLAG_PENDING_WRITE;
        }
    }
}

/// Size of the sealed bytes of a metadata image (see [`sealed_bytes`]).
pub(crate) const SEALED_SIZE: usize = NONCE_SIZE + MAC_SIZE + ENCRYPTED_PART_SIZE;

/// The *sealed bytes* of a metadata image: its KDF nonce, its tag and its encrypted part,
/// each at the offsets of the image's own version byte. Every metadata write makes all of
/// them new (a fresh nonce, hence a fresh key); `None` for an image of no known version.
pub(crate) fn sealed_bytes(node: &[u8; NODE_SIZE]) -> Option<[u8; SEALED_SIZE]> {
    let start = FormatVersion::from_major(node[8]).ok()?.encrypted_offset();
    let mut out = [0u8; SEALED_SIZE];
    out[..NONCE_SIZE].copy_from_slice(&node[NONCE_OFFSET..NONCE_OFFSET + NONCE_SIZE]);
    out[NONCE_SIZE..NONCE_SIZE + MAC_SIZE].copy_from_slice(&node[TAG_OFFSET..TAG_OFFSET + MAC_SIZE]);
    out[NONCE_SIZE + MAC_SIZE..].copy_from_slice(&node[start..start + ENCRYPTED_PART_SIZE]);
    Some(out)
}

/// Refuses paths that do not fit the 772-byte field with its NUL.
pub fn check_path_len(path: &[u8]) -> Result<()> {
    if path.len() > MAX_PATH_LEN || path.contains(&0) {
        return Err(Error::PathTooLong { len: path.len() });
    }
    Ok(())
}

fn copy_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::RandomSource;
    use sha2::{Digest, Sha256};

    #[derive(Debug)]
    struct FixedNonce;
    impl RandomSource for FixedNonce {
        fn fill(&self, out: &mut [u8]) -> std::io::Result<()> {
            for (i, b) in out.iter_mut().enumerate() {
                *b = 0x20 + i as u8;
            }
            Ok(())
        }
    }

    fn spec_node(version: FormatVersion) -> [u8; NODE_SIZE] {
        static FIXED: FixedNonce = FixedNonce;
        let crypto = CryptoProvider { random: &FIXED, ..CryptoProvider::default_provider() };
        let kdk = Key::from_bytes(std::array::from_fn(|i| i as u8));
        let mut meta = Metadata::new(b"/x").unwrap();
        meta.inline[..5].copy_from_slice(b"hello");
        meta.size = 5;
        let mut node = [0u8; NODE_SIZE];
        meta.seal_into(&mut node, version, 0, &kdk, &crypto).unwrap();
        node
    }

    #[test]
    fn byte_exact_single_node_file_of_the_spec() {
        let node = spec_node(FormatVersion::V2);
        assert_eq!(hex::encode(&node[42..58]), "fa588ec6921e9d60ad80182c9301bc6e");
        assert_eq!(hex::encode(&node[59..75]), "96cf5391bcd9f42ea9d36779867b03e9");
        assert_eq!(
            hex::encode(Sha256::digest(node)),
            "1afc14c3a7267deb15d793273de0de25c8d4be0d0af06b86be764119648d0cb1"
        );
        let v1 = spec_node(FormatVersion::V1);
        assert_eq!(
            hex::encode(Sha256::digest(v1)),
            "11eaa6ee9c65ee5c07c648a1ba9465e5f1b2a95859810ef83f0b80d19d17c7df"
        );
    }

    #[test]
    fn sealed_metadata_opens_again() {
        for version in [FormatVersion::V1, FormatVersion::V2] {
            let node = spec_node(version);
            let header = PlainHeader::parse(&node).unwrap();
            assert_eq!(header.version, version);
            let kdk = Key::from_bytes(std::array::from_fn(|i| i as u8));
            let meta = Metadata::open(&node, &header, &kdk, &CryptoProvider::default()).unwrap();
            assert_eq!(meta.path, b"/x");
            assert_eq!(meta.size, 5);
            assert_eq!(&meta.inline[..5], b"hello");
            let wrong = Key::from_bytes([1; 16]);
            assert!(matches!(
                Metadata::open(&node, &header, &wrong, &CryptoProvider::default()),
                Err(Error::MetadataMac)
            ));
        }
    }

    #[test]
    fn header_rejects_magic_and_version() {
        let mut node = spec_node(FormatVersion::V2);
        node[8] = 3;
        assert!(matches!(PlainHeader::parse(&node), Err(Error::InvalidVersion { major: 3 })));
        node[0] ^= 0x20;
        assert!(matches!(PlainHeader::parse(&node), Err(Error::InvalidHeader(HeaderProblem::BadMagic))));
    }

    #[test]
    fn path_length_limit() {
        assert!(Metadata::new(&[b'a'; MAX_PATH_LEN]).is_ok());
        assert!(matches!(Metadata::new(&[b'a'; MAX_PATH_LEN + 1]), Err(Error::PathTooLong { len: 772 })));
    }
}
