//! The metadata node on its own: `PlainHeader::parse` and `Metadata::open` on one
//! 4096-byte node (input zero-padded or truncated), with the interop vectors' key. A node
//! that authenticates must survive a seal/open round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pfs_core::layout::NODE_SIZE;
use pfs_core::metadata::{Metadata, PlainHeader};
use pfs_core::{CryptoProvider, Key};

const KEY: [u8; 16] =
    [0x6c, 0xe2, 0x2a, 0x07, 0x1d, 0x53, 0xb9, 0xdd, 0x19, 0x32, 0x40, 0x53, 0xce, 0xa8, 0x1f, 0x4b];

fuzz_target!(|data: &[u8]| {
    let mut node = [0u8; NODE_SIZE];
    let n = data.len().min(NODE_SIZE);
    node[..n].copy_from_slice(&data[..n]);
    let Ok(header) = PlainHeader::parse(&node) else { return };
    let _ = header.pending_write();
    let key = Key::from_bytes(KEY);
    let crypto = CryptoProvider::default_provider();
    let Ok(meta) = Metadata::open(&node, &header, &key, &crypto) else { return };
    assert!(meta.path.len() <= pfs_core::layout::PATH_FIELD_SIZE);
    assert!(!meta.path.contains(&0));

    // Round trip. A path of all 772 bytes (no NUL) is refused by seal_into.
    let mut again = node;
    match meta.seal_into(&mut again, header.version, header.flags, &key, &crypto) {
        Ok(()) => {
            let header2 = PlainHeader::parse(&again).expect("sealed header parses");
            assert_eq!(header2.version, header.version);
            let meta2 = Metadata::open(&again, &header2, &key, &crypto).expect("sealed metadata opens");
            assert_eq!(meta2.path, meta.path);
            assert_eq!(meta2.size, meta.size);
            assert_eq!(meta2.root_key.as_bytes(), meta.root_key.as_bytes());
            assert_eq!(meta2.root_tag, meta.root_tag);
            assert_eq!(meta2.inline[..], meta.inline[..]);
        }
        Err(e) => assert!(meta.path.len() > pfs_core::layout::MAX_PATH_LEN, "seal refused: {e}"),
    }
});
