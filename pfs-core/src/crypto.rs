//! Cryptographic primitives of the format (spec §2): AES-128-GCM with a zero IV and no AAD,
//! the SP 800-108 / AES-CMAC key derivation for the metadata key, and key generation.
//!
//! The AEAD backend and the random source are injected (see [`CryptoProvider`]) so that
//! backends can be measured side by side and tests can make deterministic files.

use std::fmt;
use std::sync::Mutex;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::layout::{KEY_SIZE, MAC_SIZE, NONCE_SIZE};

/// A 16-byte AES-128 key. Wiped on drop; never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Default)]
pub struct Key(pub(crate) [u8; KEY_SIZE]);

impl Key {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_SIZE]) -> Self {
        Key(bytes)
    }

    /// Reads a key from a slice that must be exactly 16 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Key(bytes.try_into().ok()?))
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_SIZE] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// A 16-byte AES-GCM authentication tag.
pub type Tag = [u8; MAC_SIZE];

/// The tag did not match: wrong key or modified ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticationFailed;

/// An AES-128-GCM implementation. IV is always 12 zero bytes and there is no AAD, which
/// is safe only because the engine never uses a key twice.
pub trait NodeCipher: Send + Sync + fmt::Debug {
    /// Encrypts `data` in place under `key` and returns the tag.
    fn seal_in_place(&self, key: &Key, data: &mut [u8]) -> Tag;

    /// Decrypts `data` in place under `key` if `tag` authenticates it. On failure the
    /// contents of `data` are zeroed, so unauthenticated plaintext never escapes.
    fn open_in_place(&self, key: &Key, data: &mut [u8], tag: &Tag) -> Result<(), AuthenticationFailed>;

    /// Short name for reports ("ring", "rustcrypto").
    fn name(&self) -> &'static str;
}

/// AES-128-GCM from `ring` (hardware AES and carry-less multiply; the fast default).
#[cfg(feature = "ring")]
#[derive(Debug, Default, Clone, Copy)]
pub struct RingCipher;

#[cfg(feature = "ring")]
impl RingCipher {
    fn key(key: &Key) -> ring::aead::LessSafeKey {
        // AES_128_GCM accepts any 16-byte key, so this cannot fail.
        let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, &key.0)
            .expect("BUG: ring rejected a 16-byte AES-128 key");
        ring::aead::LessSafeKey::new(unbound)
    }
}

#[cfg(feature = "ring")]
impl NodeCipher for RingCipher {
    fn seal_in_place(&self, key: &Key, data: &mut [u8]) -> Tag {
        let nonce = ring::aead::Nonce::assume_unique_for_key([0u8; 12]);
        let tag = Self::key(key)
            .seal_in_place_separate_tag(nonce, ring::aead::Aad::empty(), data)
            .expect("BUG: ring refused to seal a node-sized buffer");
        let mut out = [0u8; MAC_SIZE];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn open_in_place(&self, key: &Key, data: &mut [u8], tag: &Tag) -> Result<(), AuthenticationFailed> {
        let nonce = ring::aead::Nonce::assume_unique_for_key([0u8; 12]);
        let tag = ring::aead::Tag::from(*tag);
        match Self::key(key).open_in_place_separate_tag(nonce, ring::aead::Aad::empty(), tag, data, 0..) {
            Ok(_) => Ok(()),
            Err(_) => {
                data.zeroize();
                Err(AuthenticationFailed)
            }
        }
    }

    fn name(&self) -> &'static str {
        "ring"
    }
}

/// AES-128-GCM from RustCrypto's `aes-gcm` (pure Rust).
#[cfg(any(feature = "rustcrypto", not(feature = "ring")))]
#[derive(Debug, Default, Clone, Copy)]
pub struct RustCryptoCipher;

#[cfg(any(feature = "rustcrypto", not(feature = "ring")))]
impl NodeCipher for RustCryptoCipher {
    fn seal_in_place(&self, key: &Key, data: &mut [u8]) -> Tag {
        use aes_gcm::aead::{AeadInPlace, KeyInit};
        let cipher = aes_gcm::Aes128Gcm::new(&key.0.into());
        let tag = cipher
            .encrypt_in_place_detached(&[0u8; 12].into(), &[], data)
            .expect("BUG: aes-gcm refused to seal a node-sized buffer");
        tag.into()
    }

    fn open_in_place(&self, key: &Key, data: &mut [u8], tag: &Tag) -> Result<(), AuthenticationFailed> {
        use aes_gcm::aead::{AeadInPlace, KeyInit};
        let cipher = aes_gcm::Aes128Gcm::new(&key.0.into());
        match cipher.decrypt_in_place_detached(&[0u8; 12].into(), &[], data, tag.into()) {
            Ok(()) => Ok(()),
            Err(_) => {
                data.zeroize();
                Err(AuthenticationFailed)
            }
        }
    }

    fn name(&self) -> &'static str {
        "rustcrypto"
    }
}

/// A source of cryptographically secure random bytes for node keys and nonces.
pub trait RandomSource: Send + Sync + fmt::Debug {
    /// Fills `out` with random bytes.
    fn fill(&self, out: &mut [u8]) -> std::io::Result<()>;
}

/// The operating system's CSPRNG (`getrandom(2)`), read 4 KiB at a time so that one
/// system call yields 256 node keys. The buffer is wiped as it is consumed and on drop.
#[derive(Debug, Default)]
pub struct OsRandom {
    pool: Mutex<Pool>,
}

#[derive(Default)]
struct Pool {
    bytes: Vec<u8>,
    used: usize,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pool(<redacted>)")
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

const RANDOM_POOL_SIZE: usize = 4096;

impl RandomSource for OsRandom {
    fn fill(&self, out: &mut [u8]) -> std::io::Result<()> {
        if out.len() > RANDOM_POOL_SIZE {
            return getrandom::getrandom(out).map_err(std::io::Error::other);
        }
        let mut pool = self.pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if pool.bytes.len() - pool.used < out.len() {
            pool.bytes.resize(RANDOM_POOL_SIZE, 0);
            getrandom::getrandom(&mut pool.bytes).map_err(std::io::Error::other)?;
            pool.used = 0;
        }
        let start = pool.used;
        let end = start + out.len();
        out.copy_from_slice(&pool.bytes[start..end]);
        pool.bytes[start..end].zeroize();
        pool.used = end;
        Ok(())
    }
}

/// The primitives an engine instance uses, chosen once at construction.
#[derive(Debug, Clone, Copy)]
pub struct CryptoProvider {
    /// The AES-128-GCM implementation for nodes and metadata.
    pub cipher: &'static dyn NodeCipher,
    /// Where node keys and metadata nonces come from.
    pub random: &'static dyn RandomSource,
}

static OS_RANDOM: std::sync::LazyLock<OsRandom> = std::sync::LazyLock::new(OsRandom::default);

impl CryptoProvider {
    /// The fastest backend compiled in (ring when available) with the OS random source.
    pub fn default_provider() -> Self {
        #[cfg(feature = "ring")]
        let cipher: &'static dyn NodeCipher = &RingCipher;
        #[cfg(not(feature = "ring"))]
        let cipher: &'static dyn NodeCipher = &RustCryptoCipher;
        CryptoProvider { cipher, random: &*OS_RANDOM }
    }

    /// Every cipher backend compiled into this build, for benchmarks and tests.
    pub fn available_ciphers() -> Vec<&'static dyn NodeCipher> {
        let ring: Option<&'static dyn NodeCipher> = {
            #[cfg(feature = "ring")]
            {
                Some(&RingCipher)
            }
            #[cfg(not(feature = "ring"))]
            {
                None
            }
        };
        let rustcrypto: Option<&'static dyn NodeCipher> = {
            #[cfg(any(feature = "rustcrypto", not(feature = "ring")))]
            {
                Some(&RustCryptoCipher)
            }
            #[cfg(not(any(feature = "rustcrypto", not(feature = "ring"))))]
            {
                None
            }
        };
        ring.into_iter().chain(rustcrypto).collect()
    }

    /// A fresh random key (one is drawn for every node encryption).
    pub fn fresh_key(&self) -> std::io::Result<Key> {
        let mut key = Key::default();
        self.random.fill(&mut key.0)?;
        Ok(key)
    }
}

impl Default for CryptoProvider {
    fn default() -> Self {
        Self::default_provider()
    }
}

/// The KDF label of spec §2.
pub const KDF_LABEL: &[u8; 29] = b"SGX-PROTECTED-FS-METADATA-KEY";

/// Builds the 104-byte KDF input of spec §2: counter 1, zero-padded label, nonce, 128 bits.
pub fn kdf_input(nonce: &[u8; NONCE_SIZE]) -> [u8; 104] {
    let mut input = [0u8; 104];
    input[0..4].copy_from_slice(&1u32.to_le_bytes());
    input[4..4 + KDF_LABEL.len()].copy_from_slice(KDF_LABEL);
    input[68..100].copy_from_slice(nonce);
    input[100..104].copy_from_slice(&128u32.to_le_bytes());
    input
}

/// Derives the metadata key: `AES-128-CMAC(KDK, kdf_input(nonce))` (NIST SP 800-108
/// counter mode, one iteration).
pub fn derive_metadata_key(kdk: &Key, nonce: &[u8; NONCE_SIZE]) -> Key {
    use cmac::Mac;
    let mut mac =
        <cmac::Cmac<aes::Aes128> as Mac>::new_from_slice(&kdk.0).expect("BUG: CMAC rejected a 16-byte key");
    let mut input = kdf_input(nonce);
    mac.update(&input);
    input.zeroize();
    let out: [u8; KEY_SIZE] = mac.finalize().into_bytes().into();
    Key(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn spec_nonce() -> [u8; 32] {
        std::array::from_fn(|i| 0x20 + i as u8)
    }

    #[test]
    fn kdf_input_matches_the_spec_vector() {
        let input = kdf_input(&spec_nonce());
        assert_eq!(
            hex::encode(Sha256::digest(input)),
            "b509d18e5083c49aacff12a8d739449312d86da2996fcc202e5685444a449334"
        );
    }

    #[test]
    fn metadata_key_matches_the_spec_vector() {
        let kdk = Key(std::array::from_fn(|i| i as u8));
        let key = derive_metadata_key(&kdk, &spec_nonce());
        assert_eq!(hex::encode(key.as_bytes()), "70ed96c7236900467f5461579ab272f8");
    }

    #[test]
    fn every_backend_round_trips_and_rejects_tampering() {
        for cipher in CryptoProvider::available_ciphers() {
            let key = Key([7; 16]);
            let plain: Vec<u8> = (0..4096u32).map(|i| (i * 31) as u8).collect();
            let mut data = plain.clone();
            let tag = cipher.seal_in_place(&key, &mut data);
            assert_ne!(data, plain, "{}", cipher.name());
            let mut copy = data.clone();
            cipher.open_in_place(&key, &mut copy, &tag).unwrap();
            assert_eq!(copy, plain, "{}", cipher.name());
            data[100] ^= 1;
            assert_eq!(cipher.open_in_place(&key, &mut data, &tag), Err(AuthenticationFailed));
            assert!(data.iter().all(|&b| b == 0), "{} leaked unauthenticated bytes", cipher.name());
        }
    }

    #[test]
    fn backends_agree_byte_for_byte() {
        let ciphers = CryptoProvider::available_ciphers();
        let key = Key([9; 16]);
        let mut reference: Option<(Vec<u8>, Tag)> = None;
        for cipher in ciphers {
            let mut data = vec![0x5a; 4096];
            let tag = cipher.seal_in_place(&key, &mut data);
            match &reference {
                None => reference = Some((data, tag)),
                Some((d, t)) => assert!(d == &data && t == &tag, "{} disagrees", cipher.name()),
            }
        }
    }

    #[test]
    fn os_random_gives_distinct_keys() {
        let provider = CryptoProvider::default_provider();
        let keys: Vec<Key> = (0..600).map(|_| provider.fresh_key().unwrap()).collect();
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
