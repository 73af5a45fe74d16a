//! Key files: exactly 16 raw bytes, as `gramine-sgx-pf-crypt -w` reads them (spec §12).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use pfs_core::layout::KEY_SIZE;
use pfs_core::{CryptoProvider, Key};
use zeroize::Zeroizing;

/// Reads a key file, which must hold exactly 16 bytes. The error never shows key bytes.
pub fn read_key(path: &Path) -> Result<Key> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot open key file {}", path.display()))?;
    // Read one byte more than a key so an oversized file is recognised without reading it all.
    let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_SIZE + 1));
    (&mut file)
        .take(KEY_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    if bytes.len() != KEY_SIZE {
        let size = fs::metadata(path).map(|m| m.len()).unwrap_or(bytes.len() as u64);
        bail!(
            "key file {} holds {size} bytes, but a key file must be exactly {KEY_SIZE} raw bytes \
             (the format of `gramine-sgx-pf-crypt gen-key`; make one with `pfs keygen -o FILE`)",
            path.display()
        );
    }
    Ok(Key::from_slice(&bytes).expect("BUG: length checked above"))
}

/// Writes a fresh random key to `path` with mode 0600. Without `force` an existing file is
/// an error; with it the file is overwritten and its mode reset to 0600.
pub fn write_new_key(path: &Path, force: bool) -> Result<()> {
    let key = CryptoProvider::default().fresh_key().context("cannot get random bytes from the OS")?;
    let mut options = fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{} already exists; refusing to overwrite a key (use --force)", path.display())
        } else {
            anyhow::Error::new(e).context(format!("cannot create key file {}", path.display()))
        }
    })?;
    // `mode` applies only to new files; an overwritten one keeps its old mode otherwise.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set mode 0600 on {}", path.display()))?;
    file.write_all(key.as_bytes()).with_context(|| format!("cannot write key file {}", path.display()))?;
    file.sync_all().with_context(|| format!("cannot sync key file {}", path.display()))?;
    Ok(())
}
