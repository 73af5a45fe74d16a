//! A cache of trusted-file SHA-256 hashes, so that `pfs manifest` re-rendering an unchanged
//! tree (the torch venv: 137,000 files, 5.4 GB) does not read it all again.
//!
//! An entry is keyed by what the kernel says about the file, `(device, inode, size, mtime,
//! ctime)` with nanoseconds, never by its path: a rename keeps the hash valid, and any write,
//! truncate, `chmod` or `touch -d` moves `ctime`, which user space cannot set back. A key is
//! only stored when the file's status was the same before and after it was read (a file
//! written while being hashed is not cached), and not when its ctime is less than
//! [`RACY_WINDOW`] old: a write in the same timestamp tick as the read could leave every key
//! field equal (git's "racy clean" problem).
//!
//! File format (`pfs-hashcache-v1`), all integers little endian:
//!
//! ```text
//! magic "pfs-hashcache-v1\n" (17 bytes) ‖ u64 count ‖ count × entry ‖ SHA-256(everything before)
//! entry = u64 dev ‖ u64 ino ‖ u64 size ‖ i64 mtime_s ‖ u32 mtime_ns ‖ i64 ctime_s ‖ u32 ctime_ns ‖ [u8; 32] sha256
//! ```
//!
//! A file that is short, long, has another magic, more than [`MAX_ENTRIES`] entries or a
//! wrong checksum is ignored as a whole (everything is hashed again): a bad cache costs time,
//! never a wrong hash. The checksum catches corruption, not an attacker: whoever can write
//! the cache file can also write the trusted files it describes. The file is written 0600 to
//! a temporary file in the same directory and renamed over the old one.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 17] = b"pfs-hashcache-v1\n";
const ENTRY_LEN: usize = 8 * 5 + 4 * 2 + 32;

/// At most this many entries are kept (about 80 MB on disk); the entries of the current
/// build are kept first, then older ones.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Files whose ctime is younger than this when they are hashed are not cached.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// The identity of one version of a file, as far as the kernel tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, u32),
    ctime: (i64, u32),
}

impl FileKey {
    /// The key of the file `meta` describes (its target's, for a followed symlink).
    pub fn of(meta: &fs::Metadata) -> Self {
        // Nanosecond fields are 0..1e9 by the kernel's contract; clamp rather than trust.
        let ns = |n: i64| u32::try_from(n.clamp(0, 999_999_999)).unwrap_or(0);
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), ns(meta.mtime_nsec())),
            ctime: (meta.ctime(), ns(meta.ctime_nsec())),
        }
    }

    /// Whether the ctime is recent enough that a later write might not change the key.
    pub fn is_racy(&self, now: SystemTime) -> bool {
        let ctime = match u64::try_from(self.ctime.0) {
            Ok(s) => SystemTime::UNIX_EPOCH + Duration::new(s, self.ctime.1),
            Err(_) => return false,
        };
        match now.duration_since(ctime) {
            Ok(age) => age < RACY_WINDOW,
            // A ctime in the future (clock step): do not trust it.
            Err(_) => true,
        }
    }
}

/// The default cache file: `$XDG_CACHE_HOME/pfs/trusted-hashes.v1`, else
/// `$HOME/.cache/pfs/trusted-hashes.v1`; `None` when neither variable is set.
pub fn default_path() -> Option<PathBuf> {
    let base =
        std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| {
            std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("pfs").join("trusted-hashes.v1"))
}

/// Hashes loaded from a cache file plus the ones found during this build.
#[derive(Debug, Default)]
pub struct HashCache {
    old: HashMap<FileKey, [u8; 32]>,
    new: HashMap<FileKey, [u8; 32]>,
}

/// What loading a cache file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// No cache file yet.
    Missing,
    /// The file was read; this many entries.
    Loaded(usize),
    /// The file was unusable and is ignored (the reason, for a warning).
    Ignored(String),
}

impl HashCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `path`; an unusable file gives an empty cache and [`LoadOutcome::Ignored`].
    pub fn load(path: &Path) -> (Self, LoadOutcome) {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (Self::new(), LoadOutcome::Missing),
            Err(e) => {
                return (Self::new(), LoadOutcome::Ignored(format!("cannot read {}: {e}", path.display())));
            }
        };
        match decode(&bytes) {
            Ok(old) => {
                let n = old.len();
                (HashCache { old, new: HashMap::new() }, LoadOutcome::Loaded(n))
            }
            Err(why) => (
                Self::new(),
                LoadOutcome::Ignored(format!("{}: {why}; hashing everything again", path.display())),
            ),
        }
    }

    /// The cached hash of the file version `key`, if any; a hit is kept on save.
    pub fn get(&self, key: &FileKey) -> Option<[u8; 32]> {
        self.new.get(key).or_else(|| self.old.get(key)).copied()
    }

    /// Records hashes used by this build (kept first on save).
    pub fn extend(&mut self, entries: impl IntoIterator<Item = (FileKey, [u8; 32])>) {
        self.new.extend(entries);
    }

    /// Number of entries [`HashCache::save`] would write.
    pub fn len(&self) -> usize {
        let old_only = self.old.keys().filter(|k| !self.new.contains_key(k)).count();
        (self.new.len() + old_only).min(MAX_ENTRIES)
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the cache to `path` atomically (0600 temporary file, fsync, rename), creating
    /// its directory 0700 if needed.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let mut entries: Vec<(&FileKey, &[u8; 32])> = self.new.iter().collect();
        entries.extend(self.old.iter().filter(|(k, _)| !self.new.contains_key(k)));
        entries.truncate(MAX_ENTRIES);
        let bytes = encode(&entries);
        let mut tmp = tempfile::Builder::new()
            .prefix(".trusted-hashes.")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile_in(dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

fn encode(entries: &[(&FileKey, &[u8; 32])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 8 + entries.len() * ENTRY_LEN + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (k, h) in entries {
        out.extend_from_slice(&k.dev.to_le_bytes());
        out.extend_from_slice(&k.ino.to_le_bytes());
        out.extend_from_slice(&k.size.to_le_bytes());
        out.extend_from_slice(&k.mtime.0.to_le_bytes());
        out.extend_from_slice(&k.mtime.1.to_le_bytes());
        out.extend_from_slice(&k.ctime.0.to_le_bytes());
        out.extend_from_slice(&k.ctime.1.to_le_bytes());
        out.extend_from_slice(*h);
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// A bounds-checked reader over the cache bytes (never slices by a length it was not given).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

fn decode(bytes: &[u8]) -> Result<HashMap<FileKey, [u8; 32]>, String> {
    if bytes.len() < MAGIC.len() + 8 + 32 {
        return Err("too short".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err("checksum mismatch (corrupt)".into());
    }
    let mut r = Reader(body);
    if r.take(MAGIC.len()) != Some(&MAGIC[..]) {
        return Err("not a pfs-hashcache-v1 file".into());
    }
    let count = u64::from_le_bytes(r.array().ok_or("truncated count")?);
    let count = usize::try_from(count).ok().filter(|&c| c <= MAX_ENTRIES).ok_or("too many entries")?;
    if r.0.len() != count * ENTRY_LEN {
        return Err(format!("{} bytes of entries for a count of {count}", r.0.len()));
    }
    let mut map = HashMap::with_capacity(count);
    for _ in 0..count {
        let key = FileKey {
            dev: u64::from_le_bytes(r.array().ok_or("truncated")?),
            ino: u64::from_le_bytes(r.array().ok_or("truncated")?),
            size: u64::from_le_bytes(r.array().ok_or("truncated")?),
            mtime: (
                i64::from_le_bytes(r.array().ok_or("truncated")?),
                u32::from_le_bytes(r.array().ok_or("truncated")?),
            ),
            ctime: (
                i64::from_le_bytes(r.array().ok_or("truncated")?),
                u32::from_le_bytes(r.array().ok_or("truncated")?),
            ),
        };
        map.insert(key, r.array().ok_or("truncated")?);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> FileKey {
        FileKey { dev: 1, ino: i, size: 10 * i, mtime: (100, 5), ctime: (200, 7) }
    }

    #[test]
    fn round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cache");
        let mut c = HashCache::new();
        c.extend((0..100).map(|i| (key(i), [i as u8; 32])));
        c.save(&path).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        let (again, outcome) = HashCache::load(&path);
        assert_eq!(outcome, LoadOutcome::Loaded(100));
        for i in 0..100 {
            assert_eq!(again.get(&key(i)), Some([i as u8; 32]));
        }
        assert_eq!(again.get(&key(100)), None);
    }

    #[test]
    fn any_damage_empties_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let mut c = HashCache::new();
        c.extend((0..3).map(|i| (key(i), [7; 32])));
        c.save(&path).unwrap();
        let good = fs::read(&path).unwrap();
        // Every single-byte flip and every truncation is detected.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            fs::write(&path, &bad).unwrap();
            let (c, outcome) = HashCache::load(&path);
            assert!(matches!(outcome, LoadOutcome::Ignored(_)), "flip at {i}: {outcome:?}");
            assert!(c.is_empty());
            fs::write(&path, &good[..i]).unwrap();
            assert!(matches!(HashCache::load(&path).1, LoadOutcome::Ignored(_)), "cut at {i}");
        }
        // A well-formed file that claims more entries than allowed is refused before allocating.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        let sum = Sha256::digest(&huge);
        huge.extend_from_slice(&sum);
        fs::write(&path, &huge).unwrap();
        assert!(matches!(HashCache::load(&path).1, LoadOutcome::Ignored(m) if m.contains("too many")));
        assert_eq!(HashCache::load(&dir.path().join("none")).1, LoadOutcome::Missing);
    }

    #[test]
    fn recent_ctime_is_racy() {
        let now = SystemTime::now();
        let secs = now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
        let mut k = key(1);
        k.ctime = (secs, 0);
        assert!(k.is_racy(now + Duration::from_millis(500)));
        assert!(!k.is_racy(now + RACY_WINDOW + Duration::from_secs(1)));
        k.ctime = (secs + 3600, 0);
        assert!(k.is_racy(now), "a future ctime is not trusted");
    }
}
