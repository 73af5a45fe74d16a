//! Authenticated but hostile metadata: the target seals a metadata node with the key
//! itself, so the fuzzer controls the fields a random input can never authenticate (size,
//! root key and tag, version, pending flag). Opening and reading such a file must fail
//! cleanly (`Corrupted` beyond the maximum size, `NodeMissing`/`NodeMac` for nodes the
//! host file lacks) and never allocate according to the claimed size (run with
//! `-malloc_limit_mb`, see `.ci/fuzz-smoke`).
//!
//! Input: `flags: u8` (bit 0: format 1; bit 1: pending flag; bit 2: keep the genuine root
//! key/tag of a real file built from the payload), `size: u64 LE`, `offset: u64 LE`,
//! `root_key: [u8; 16]`, `root_tag: [u8; 16]`, then the payload: raw host nodes 1.. (bit 2
//! clear) or the plaintext of a genuine file (bit 2 set, at most 64 KiB).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pfs_core::layout::{INLINE_DATA_SIZE, MAX_PLAINTEXT_SIZE, NODE_SIZE};
use pfs_core::metadata::{Metadata, PlainHeader};
use pfs_core::{
    CryptoProvider, Error, FormatVersion, Key, MemStore, OpenOptions, PendingWritePolicy, ProtectedFile,
};

const KEY: [u8; 16] =
    [0x6c, 0xe2, 0x2a, 0x07, 0x1d, 0x53, 0xb9, 0xdd, 0x19, 0x32, 0x40, 0x53, 0xce, 0xa8, 0x1f, 0x4b];
const HEADER: usize = 1 + 8 + 8 + 16 + 16;
const READ_CAP: u64 = 1 << 20;
const CHECK_CAP: u64 = 64 << 20;

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER {
        return;
    }
    let flags = data[0];
    let size = u64::from_le_bytes(data[1..9].try_into().unwrap());
    let probe = u64::from_le_bytes(data[9..17].try_into().unwrap());
    let payload = &data[HEADER..];
    let version = if flags & 1 != 0 { FormatVersion::V1 } else { FormatVersion::V2 };
    let key = Key::from_bytes(KEY);
    let crypto = CryptoProvider::default_provider();

    let host: Vec<u8> = if flags & 4 != 0 {
        // A genuine file whose metadata is then re-sealed with the hostile size.
        let plain = &payload[..payload.len().min(64 << 10)];
        let disk = MemStore::new();
        let mut file =
            ProtectedFile::create(disk.clone(), &key, b"fuzz", &OpenOptions::new().format(version)).unwrap();
        file.write_at(0, plain).unwrap();
        file.close().unwrap();
        let mut bytes = disk.to_bytes();
        let mut node: [u8; NODE_SIZE] = bytes[..NODE_SIZE].try_into().unwrap();
        let header = PlainHeader::parse(&node).unwrap();
        let mut meta = Metadata::open(&node, &header, &key, &crypto).unwrap();
        meta.size = size;
        meta.seal_into(&mut node, version, (flags >> 1) & 1, &key, &crypto).unwrap();
        bytes[..NODE_SIZE].copy_from_slice(&node);
        bytes
    } else {
        let mut meta = Metadata::new(b"fuzz").unwrap();
        meta.size = size;
        meta.root_key = Key::from_bytes(data[17..33].try_into().unwrap());
        meta.root_tag = data[33..49].try_into().unwrap();
        let inline = payload.len().min(INLINE_DATA_SIZE);
        meta.inline[..inline].copy_from_slice(&payload[..inline]);
        let mut node = [0u8; NODE_SIZE];
        meta.seal_into(&mut node, version, (flags >> 1) & 1, &key, &crypto).unwrap();
        let mut bytes = node.to_vec();
        bytes.extend_from_slice(payload);
        // Whole nodes, so that open always reaches the metadata (pf_open_read covers
        // unaligned host files).
        bytes.resize(bytes.len().next_multiple_of(NODE_SIZE), 0);
        bytes
    };

    let options = OpenOptions::new().read_only(true).pending_write(PendingWritePolicy::Ignore).cache_nodes(4);
    let mut file = match ProtectedFile::open(MemStore::from_bytes(host), &key, Some(b"fuzz"), &options) {
        Ok(file) => file,
        Err(Error::Corrupted(_)) if size > MAX_PLAINTEXT_SIZE => return,
        Err(e) => {
            assert!(size <= MAX_PLAINTEXT_SIZE, "size {size} beyond the maximum gave {e:?}, not Corrupted");
            // Otherwise only the root node can be refused at open.
            assert!(e.is_integrity(), "unexpected error at open: {e:?}");
            return;
        }
    };
    assert!(size <= MAX_PLAINTEXT_SIZE, "a {size}-byte file opened");
    assert_eq!(file.len(), size);

    let mut buf = vec![0u8; 64 << 10];
    let mut offset = 0u64;
    while offset < size.min(READ_CAP) {
        match file.read_at(offset, &mut buf) {
            Ok(0) => panic!("short read at {offset} of a {size}-byte file"),
            Ok(n) => offset += n as u64,
            Err(_) => break,
        }
    }
    // Reads far into the claimed size: the last byte and a fuzzer-chosen offset.
    for at in [size.saturating_sub(1), probe % size.max(1), probe] {
        match file.read_at(at, &mut buf[..4096]) {
            Ok(n) => assert!(n as u64 <= size.saturating_sub(at)),
            Err(e) => assert!(e.is_integrity(), "read at {at} of {size}: unexpected {e:?}"),
        }
    }
    if size <= CHECK_CAP {
        let _ = file.check();
    }
});
