//! Every compiled-in AES-GCM backend runs the whole engine, and files written with one
//! backend read back with every other (they implement the same AES-128-GCM).

use pfs_core::crypto::CryptoProvider;
use pfs_core::{Key, MemStore, OpenOptions, ProtectedFile};

fn providers() -> Vec<CryptoProvider> {
    CryptoProvider::available_ciphers()
        .into_iter()
        .map(|cipher| CryptoProvider { cipher, ..CryptoProvider::default_provider() })
        .collect()
}

#[test]
fn each_backend_writes_and_every_backend_reads() {
    let key = Key::from_bytes([0x11; 16]);
    // Two MHT levels (MHT node #1 exists), partial last node, and a stale-tail shrink.
    let plain: Vec<u8> = (0..500_000u32).map(|i| (i % 251) as u8).collect();
    for writer in providers() {
        let disk = MemStore::new();
        let options = OpenOptions::new().crypto(writer).cache_nodes(7);
        let mut file = ProtectedFile::create(disk.clone(), &key, b"/b", &options).unwrap();
        for (i, chunk) in plain.chunks(65_536).enumerate() {
            file.write_at((i * 65_536) as u64, chunk).unwrap();
        }
        file.set_len(450_001).unwrap();
        file.write_at(10, b"patched").unwrap();
        file.close().unwrap();
        let mut expected = plain[..450_001].to_vec();
        expected[10..17].copy_from_slice(b"patched");
        for reader in providers() {
            let options = OpenOptions::new().crypto(reader).read_only(true);
            let mut file = ProtectedFile::open(disk.clone(), &key, Some(b"/b"), &options).unwrap();
            let mut out = vec![0u8; expected.len()];
            assert_eq!(file.read_at(0, &mut out).unwrap(), expected.len());
            assert!(
                out == expected,
                "written with {}, read with {}",
                writer.cipher.name(),
                reader.cipher.name()
            );
            assert!(file.check().is_empty());
        }
    }
}
