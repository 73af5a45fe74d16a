//! Mounts a backing directory with a chosen recovery-journal setting, in the foreground,
//! for measuring what the journal and its write barriers cost (docs/FUSE.md, "Recovery
//! journal"). Unmount with `fusermount3 -u MOUNTPOINT` or Ctrl-C.
//!
//! ```text
//! cargo run --release -p pfs-fuse --example journal_mount -- barriers|no-barriers|no-recovery ENC PLAIN
//! /work/shared/bench/fsbench.sh PLAIN
//! ```
//!
//! The key is a fixed test key: this is a benchmark tool, not a way to protect data.

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, enc, plain] = args.as_slice() else {
        eprintln!("usage: journal_mount barriers|no-barriers|no-recovery BACKING MOUNTPOINT");
        std::process::exit(2);
    };
    let mut cfg = pfs_fuse::MountConfig::new(enc, pfs_core::Key::from_bytes(*b"journal-bench-k!"));
    match mode.as_str() {
        "barriers" => cfg.write_barriers = true,
        "no-barriers" => cfg.write_barriers = false,
        "no-recovery" => cfg.recovery = false,
        other => {
            eprintln!("unknown mode {other:?}: barriers, no-barriers or no-recovery");
            std::process::exit(2);
        }
    }
    pfs_fuse::run_until_signal(cfg, plain, || {
        println!("mounted {enc} on {plain} ({mode}), pid {}", std::process::id())
    })
}
