//! Tamper tests: flipping any single byte of a protected file either leaves the plaintext
//! intact (bytes no reader may look at: padding, unused header bytes) or makes opening or
//! reading fail. A flip never yields different plaintext.

use pfs_core::{Key, MemStore, OpenOptions, PendingWritePolicy, ProtectedFile};

fn build(size: usize) -> (Vec<u8>, Vec<u8>) {
    let key = Key::from_bytes([3; 16]);
    let disk = MemStore::new();
    let mut file = ProtectedFile::create(disk.clone(), &key, b"/t", &OpenOptions::new()).unwrap();
    let plain: Vec<u8> = (0..size).map(|i| (i * 7 + 1) as u8).collect();
    file.write_at(0, &plain).unwrap();
    file.close().unwrap();
    (disk.to_bytes(), plain)
}

fn read_back(bytes: Vec<u8>) -> Result<Vec<u8>, pfs_core::Error> {
    let key = Key::from_bytes([3; 16]);
    let options = OpenOptions::new().read_only(true).pending_write(PendingWritePolicy::Ignore);
    let file = ProtectedFile::open(MemStore::from_bytes(bytes), &key, Some(b"/t"), &options)?;
    let mut out = vec![0u8; file.len() as usize];
    let n = file.read_at(0, &mut out)?;
    out.truncate(n);
    Ok(out)
}

#[test]
fn every_single_byte_flip_is_detected_or_harmless() {
    // Three nodes: metadata, root MHT, one data node (plaintext 3073..7168 bytes).
    let (original, plain) = build(5000);
    assert_eq!(original.len(), 3 * 4096);
    let mut detected = 0;
    let mut harmless = 0;
    for at in 0..original.len() {
        let mut damaged = original.clone();
        damaged[at] ^= 0x01;
        match read_back(damaged) {
            Err(_) => detected += 1,
            Ok(out) => {
                assert!(out == plain, "flip at byte {at} produced different plaintext");
                harmless += 1;
            }
        }
    }
    // Only unauthenticated bytes may be harmless: minor version (9), the v2 flags byte
    // (58), and the metadata padding (3943..4096).
    assert_eq!(harmless, 1 + 1 + (4096 - 3943), "harmless flips");
    assert_eq!(detected, original.len() - harmless);
}

#[test]
fn swapping_files_or_nodes_is_detected() {
    let (a, _) = build(20_000);
    let (b, _) = build(20_000);
    // Data node 1 (host node 3) from another file with the same key and path.
    let mut mixed = a.clone();
    mixed[3 * 4096..4 * 4096].copy_from_slice(&b[3 * 4096..4 * 4096]);
    assert!(read_back(mixed).is_err());
    // Two data nodes of one file swapped.
    let mut swapped = a.clone();
    let (n2, n3) = (a[2 * 4096..3 * 4096].to_vec(), a[3 * 4096..4 * 4096].to_vec());
    swapped[2 * 4096..3 * 4096].copy_from_slice(&n3);
    swapped[3 * 4096..4 * 4096].copy_from_slice(&n2);
    assert!(read_back(swapped).is_err());
}
