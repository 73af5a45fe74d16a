//! Concurrent appenders and readers on one file, and kill -9 of the daemon after fsync.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use common::{ChildMount, TestMount};

#[test]
fn daemon_entry() {
    common::daemon_entry();
}

const RECORD: usize = 100;

fn record(writer: u8, seq: u32) -> Vec<u8> {
    let mut r = vec![b'a' + writer; RECORD];
    r[..4].copy_from_slice(&seq.to_le_bytes());
    r[RECORD - 1] = b'\n';
    r
}

#[test]
fn concurrent_appenders_and_readers_lose_and_tear_nothing() {
    let t = TestMount::new();
    fs::write(t.p("log"), b"").unwrap();
    let per_writer = 2000u32;
    let path = t.p("log");
    std::thread::scope(|s| {
        for w in 0..2u8 {
            let path = path.clone();
            s.spawn(move || {
                // Each writer has its own descriptor, as two processes would.
                let mut f = OpenOptions::new().append(true).open(&path).unwrap();
                for seq in 0..per_writer {
                    f.write_all(&record(w, seq)).unwrap();
                }
            });
        }
        let path = path.clone();
        s.spawn(move || {
            let f = fs::File::open(&path).unwrap();
            for _ in 0..200 {
                let len = f.metadata().unwrap().len() as usize / RECORD * RECORD;
                let mut buf = vec![0u8; len];
                let n = f.read_at(&mut buf, 0).unwrap();
                for rec in buf[..n / RECORD * RECORD].chunks(RECORD) {
                    assert!(
                        rec[RECORD - 1] == b'\n' && rec[4..RECORD - 1].iter().all(|&b| b == rec[4]),
                        "torn record"
                    );
                }
            }
        });
    });
    let mut data = Vec::new();
    fs::File::open(&path).unwrap().read_to_end(&mut data).unwrap();
    assert_eq!(data.len(), 2 * per_writer as usize * RECORD, "lost appends");
    let mut next = [0u32; 2];
    for rec in data.chunks(RECORD) {
        let w = (rec[4] - b'a') as usize;
        assert!(rec[4..RECORD - 1].iter().all(|&b| b == rec[4]) && rec[RECORD - 1] == b'\n', "torn record");
        let seq = u32::from_le_bytes(rec[..4].try_into().unwrap());
        assert_eq!(seq, next[w], "writer {w} out of order");
        next[w] += 1;
    }
    assert_eq!(t.decrypt_direct("log"), data);
}

#[test]
fn kill_9_after_fsync_loses_nothing() {
    let mut t = TestMount::new();
    t.unmount();
    let mut daemon = ChildMount::spawn(&t.enc, &t.plain, None);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let mut f = fs::File::create(t.p("precious")).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    // More changes after the fsync, then an fsync of those too, but keep the file open.
    f.write_all_at(b"patched", 1_000_000).unwrap();
    f.sync_data().unwrap();
    fs::create_dir(t.p("d")).unwrap();
    let mut g = fs::File::create(t.p("d/small")).unwrap();
    g.write_all(b"small file").unwrap();
    g.sync_all().unwrap();
    daemon.kill9();
    drop(f);
    drop(g);
    let mut want = data.clone();
    want[1_000_000..1_000_007].copy_from_slice(b"patched");
    t.mount(|_| {});
    assert_eq!(fs::read(t.p("precious")).unwrap(), want);
    assert_eq!(fs::read(t.p("d/small")).unwrap(), b"small file");
    t.unmount();
    assert_eq!(t.decrypt_direct("precious"), want);
}
