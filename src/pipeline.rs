//! Streaming with the producer on its own thread, so reading (disk, or decryption) overlaps
//! with the consumer's work (encryption, or writing), as `cp` overlaps with readahead.

use std::sync::mpsc;

use anyhow::Result;
use zeroize::Zeroizing;

/// Whether streaming commands overlap their stages on helper threads (the default), or
/// run them one after another on the calling thread (`PFS_OVERLAP=0`, for benchmarks).
/// Measured with `yes` beside and other builds at load 7 (docs/PERFORMANCE.md, "CLI
/// encrypt/decrypt on a busy machine"): the serial mode costs the least CPU but was no
/// faster for encrypt and 2.5× slower for decrypt, because the scheduler gives a process
/// with more runnable threads a larger share of a contended machine. So the count of
/// free cores is not consulted.
pub fn overlap_stages() -> bool {
    std::env::var("PFS_OVERLAP").as_deref() != Ok("0")
}

/// Buffers in flight: one being filled, one queued, one being drained.
const BUFFERS_IN_FLIGHT: usize = 3;

/// Moves a stream from `fill` to `drain` in chunks of `chunk` bytes and returns the bytes
/// moved. `fill` runs on a helper thread, fills as much of the buffer as it can and returns
/// 0 at the end; `drain` runs on the calling thread. The first error of either side ends
/// the transfer and is returned. Buffers are wiped when dropped (they may hold plaintext).
pub fn pump(
    chunk: usize,
    mut fill: impl FnMut(&mut [u8]) -> Result<usize> + Send,
    mut drain: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let (full_tx, full_rx) = mpsc::sync_channel::<Result<Zeroizing<Vec<u8>>>>(BUFFERS_IN_FLIGHT - 2);
    let (empty_tx, empty_rx) = mpsc::channel::<Zeroizing<Vec<u8>>>();
    for _ in 0..BUFFERS_IN_FLIGHT {
        empty_tx.send(Zeroizing::new(vec![0u8; chunk])).expect("BUG: receiver alive");
    }
    std::thread::scope(|scope| {
        scope.spawn(move || {
            // Ends when the input ends, on an error, or when the consumer hangs up.
            while let Ok(mut buf) = empty_rx.recv() {
                buf.resize(chunk, 0);
                match fill(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if full_tx.send(Ok(buf)).is_err() {
                            break;
                        }
                    }
                    Err(error) => {
                        let _ = full_tx.send(Err(error));
                        break;
                    }
                }
            }
        });
        // Owned here so both channels close when the consumer returns early (an error):
        // the producer then sees a hang-up instead of waiting forever for a buffer.
        let (full_rx, empty_tx) = (full_rx, empty_tx);
        let mut moved = 0u64;
        for message in &full_rx {
            let buf = message?;
            drain(&buf)?;
            moved += buf.len() as u64;
            // The producer may have finished already; then the buffer is just dropped.
            let _ = empty_tx.send(buf);
        }
        Ok(moved)
    })
}

#[cfg(test)]
mod tests {
    use anyhow::anyhow;

    use super::*;

    #[test]
    fn moves_every_byte_in_order() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut pos = 0;
        let mut out = Vec::new();
        let moved = pump(
            4096,
            |buf| {
                let n = (data.len() - pos).min(buf.len());
                buf[..n].copy_from_slice(&data[pos..pos + n]);
                pos += n;
                Ok(n)
            },
            |chunk| {
                out.extend_from_slice(chunk);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(moved, 100_000);
        assert_eq!(out, data);
    }

    #[test]
    fn an_error_on_either_side_ends_the_transfer() {
        let err = pump(16, |_| Err(anyhow!("disk on fire")), |_| Ok(())).unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        let err = pump(16, |buf| Ok(buf.len()), |_| Err(anyhow!("full"))).unwrap_err();
        assert_eq!(err.to_string(), "full");
    }
}
