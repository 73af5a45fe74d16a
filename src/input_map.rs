//! Read-only memory maps of `pfs encrypt` inputs.
//!
//! Encrypting from a map saves the copy of every input byte into a read buffer: the engine
//! copies straight from the page cache into its node buffers. Measured on the 2-core project
//! machine with one core busy (docs/PERFORMANCE.md): 256 MiB from a warm page cache took
//! 0.255 s (0.195 s CPU) from a map against 0.324 s (0.248 s CPU) with `read` on a helper
//! thread. The price is the one every mmap reader pays (ripgrep documents the same): if
//! another program truncates the file while it is mapped, touching the lost pages raises
//! SIGBUS, which ends pfs. `pfs encrypt --no-mmap` avoids it.

use std::fs::{File, Metadata};

use memmap2::{Advice, Mmap, MmapOptions};

/// Maps `file` (described by `meta`) for reading, or returns `None` when it should be read
/// with `read` instead: not a regular file, smaller than `min_len` (a map costs more than
/// it saves), or the map failed (the caller's `read` then reports any real I/O problem).
pub fn map_input(file: &File, meta: &Metadata, min_len: usize) -> Option<Mmap> {
    if !meta.file_type().is_file() || meta.len() < min_len as u64 {
        return None;
    }
    // SAFETY: the map is read-only and private to this process, and it is only read as
    // bytes (any content is valid). Another process may change the file while it is mapped;
    // writes then show up in the map, as they would in `read`, and a truncation raises
    // SIGBUS on the lost pages (documented above and in `pfs encrypt --help`).
    #[allow(unsafe_code)]
    let map = unsafe { MmapOptions::new().map(file) }.ok()?;
    // Sequential access: the kernel reads ahead aggressively and drops pages behind.
    let _ = map.advise(Advice::Sequential);
    Some(map)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn maps_regular_files_of_at_least_min_len_only() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&[5u8; 10_000]).unwrap();
        let meta = file.as_file().metadata().unwrap();
        let map = map_input(file.as_file(), &meta, 4096).expect("a 10 kB regular file is mapped");
        assert_eq!(&map[..], &[5u8; 10_000][..]);
        assert!(map_input(file.as_file(), &meta, 20_000).is_none(), "below min_len: read instead");
        let dir = File::open(file.path().parent().unwrap()).unwrap();
        let dir_meta = dir.metadata().unwrap();
        assert!(map_input(&dir, &dir_meta, 0).is_none(), "a directory is never mapped");
    }
}
