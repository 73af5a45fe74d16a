//! A [`NodeStore`] whose writes happen on a background thread, for `pfs encrypt`.
//!
//! Encrypting a file has three stages: read the plaintext (the pump's helper thread),
//! seal it (the calling thread) and write the ciphertext into the page cache (`pwrite`,
//! a kernel copy plus page allocation). With the third stage on the sealing thread, that
//! thread did about two thirds of all the work and `pfs encrypt` of a page-cache-warm file
//! took 2.3× as long as `cp` (docs/PERFORMANCE.md). Here the sealing thread only copies each
//! batch of sealed nodes into a recycled buffer (a copy between caches) and queues it.
//!
//! The store only ever sees sealed nodes (ciphertext), so its buffers need no wiping.
//! Reads, size queries, truncation and `sync` first wait until every queued write is on
//! the file, so the engine always reads what it wrote. A write error is kept and returned
//! by the next of those calls, and by [`WriteBehindStatus::finish`] after the protected file
//! is closed: a caller must not trust the output before `finish` returns `Ok`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use pfs_core::layout::{NODE_SIZE, PhysicalNode};
use pfs_core::{FileStore, NodeStore};

/// Write batches queued at most (each up to the engine's longest run of nodes, 2 MiB):
/// enough to keep the writer busy while the sealer fills the next batch.
const QUEUE_DEPTH: usize = 4;

enum Job {
    Write {
        offset: u64,
        bytes: Vec<u8>,
    },
    /// Answered once every earlier job is done.
    Barrier(SyncSender<()>),
}

/// The first write error of the background thread, shared with [`WriteBehindStatus`].
#[derive(Default)]
struct Shared {
    error: Mutex<Option<io::Error>>,
}

impl Shared {
    fn take_error(&self) -> io::Result<()> {
        match self.error.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// A file store that writes on a background thread (see the module documentation).
pub struct WriteBehindStore {
    /// Serves reads, truncation and sync, after a barrier.
    inner: FileStore,
    jobs: Option<SyncSender<Job>>,
    recycled: Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

/// What the caller keeps to learn, after closing the protected file, whether every
/// background write succeeded.
pub struct WriteBehindStatus {
    shared: Arc<Shared>,
}

impl WriteBehindStatus {
    /// The first write error, if any. Call it after the store was dropped (closing the
    /// protected file drops it, which waits for the writer thread).
    pub fn finish(self) -> io::Result<()> {
        self.shared.take_error()
    }
}

impl WriteBehindStore {
    /// Wraps `file` (opened for writing) and starts the writer thread.
    pub fn new(file: File) -> io::Result<(WriteBehindStore, WriteBehindStatus)> {
        let writer_file = file.try_clone()?;
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE_DEPTH);
        let (give_back, recycled) = mpsc::channel::<Vec<u8>>();
        let shared = Arc::new(Shared::default());
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new().name("pfs-write-behind".into()).spawn(move || {
            for job in queue {
                match job {
                    Job::Write { offset, bytes } => {
                        let mut error = writer_shared.error.lock().unwrap_or_else(|e| e.into_inner());
                        // After the first error the file is unusable: later writes are
                        // dropped, and the error is what the caller sees.
                        if error.is_none()
                            && let Err(e) = writer_file.write_all_at(&bytes, offset)
                        {
                            *error = Some(e);
                        }
                        drop(error);
                        let _ = give_back.send(bytes);
                    }
                    Job::Barrier(done) => {
                        let _ = done.send(());
                    }
                }
            }
        })?;
        let store = WriteBehindStore {
            inner: FileStore::new(file),
            jobs: Some(jobs),
            recycled,
            shared: Arc::clone(&shared),
            writer: Some(writer),
        };
        Ok((store, WriteBehindStatus { shared }))
    }

    /// Waits until every queued write is on the file; returns the first write error.
    fn drain(&self) -> io::Result<()> {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        if let Some(jobs) = &self.jobs
            && jobs.send(Job::Barrier(done_tx)).is_ok()
        {
            // A closed reply channel means the writer is gone (it only ends when `jobs`
            // closes), so there is nothing left to wait for.
            let _ = done_rx.recv();
        }
        self.shared.take_error()
    }

    /// Queues `len` bytes at `offset`, filled by `fill` into a recycled buffer.
    fn queue(&mut self, offset: u64, len: usize, fill: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        self.shared.take_error()?;
        let mut bytes = self.recycled.try_recv().unwrap_or_default();
        bytes.clear();
        bytes.reserve(len);
        fill(&mut bytes);
        debug_assert_eq!(bytes.len(), len);
        let jobs = self.jobs.as_ref().expect("BUG: write-behind store used after shutdown");
        jobs.send(Job::Write { offset, bytes })
            .map_err(|_| io::Error::other("the background writer thread has stopped"))
    }
}

fn offset_of(node: PhysicalNode) -> io::Result<u64> {
    node.0
        .checked_mul(NODE_SIZE as u64)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "node offset overflows"))
}

impl NodeStore for WriteBehindStore {
    fn byte_len(&self) -> io::Result<u64> {
        self.drain()?;
        self.inner.byte_len()
    }

    fn read_nodes(&self, first: PhysicalNode, buf: &mut [u8]) -> io::Result<usize> {
        self.drain()?;
        self.inner.read_nodes(first, buf)
    }

    fn read_nodes_into(&self, first: PhysicalNode, bufs: &mut [&mut [u8; NODE_SIZE]]) -> io::Result<usize> {
        self.drain()?;
        self.inner.read_nodes_into(first, bufs)
    }

    fn write_nodes(&mut self, first: PhysicalNode, buf: &[u8]) -> io::Result<()> {
        let offset = offset_of(first)?;
        self.queue(offset, buf.len(), |bytes| bytes.extend_from_slice(buf))
    }

    fn write_nodes_from(&mut self, first: PhysicalNode, nodes: &[&[u8; NODE_SIZE]]) -> io::Result<()> {
        let offset = offset_of(first)?;
        self.queue(offset, nodes.len() * NODE_SIZE, |bytes| {
            for node in nodes {
                bytes.extend_from_slice(&node[..]);
            }
        })
    }

    fn set_node_count(&mut self, nodes: u64) -> io::Result<()> {
        self.drain()?;
        self.inner.set_node_count(nodes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.drain()?;
        self.inner.sync()
    }
}

impl Drop for WriteBehindStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer after the queued writes; waiting for it means
        // no write is still in flight when the caller renames or removes the file. A
        // late error stays in `shared` for `WriteBehindStatus::finish`.
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use pfs_core::{Key, OpenOptions, ProtectedFile};

    use super::*;

    /// errno of a write through a descriptor opened read-only (Linux).
    const EBADF: i32 = 9;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 4096) as u8).collect()
    }

    #[test]
    fn a_file_written_behind_reads_back_through_a_plain_file_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.pf");
        let key = Key::from_bytes([3; 16]);
        // 3 MiB with a 16-node cache: many flushes, evicted MHT nodes read back while
        // writes are still queued (the barrier path).
        let data = pattern(3 << 20);
        let options = OpenOptions::new().cache_nodes(16);
        let file = File::options().read(true).write(true).create_new(true).open(&path).unwrap();
        let (store, status) = WriteBehindStore::new(file).unwrap();
        let mut pf = ProtectedFile::create(store, &key, b"out.pf", &options).unwrap();
        for (i, chunk) in data.chunks(100_000).enumerate() {
            pf.write_at((i * 100_000) as u64, chunk).unwrap();
        }
        // Overwrite a range already written (and possibly still queued), then read it
        // back through the engine before closing.
        pf.write_at(1_000_000, &[0xAB; 9000]).unwrap();
        let mut back = vec![0u8; 9000];
        assert_eq!(pf.read_at(1_000_000, &mut back).unwrap(), 9000);
        assert_eq!(back, vec![0xAB; 9000]);
        pf.close().unwrap();
        status.finish().unwrap();

        let mut expected = data;
        expected[1_000_000..1_009_000].fill(0xAB);
        let file = File::open(&path).unwrap();
        let mut pf =
            ProtectedFile::open(FileStore::new(file), &key, Some(b"out.pf"), &OpenOptions::new()).unwrap();
        let mut all = vec![0u8; expected.len()];
        assert_eq!(pf.read_at(0, &mut all).unwrap(), expected.len());
        assert!(all == expected, "content differs from what was written");
        assert!(pf.check().is_empty());
    }

    #[test]
    fn a_write_error_is_reported_by_finish() {
        // A file opened read-only: every background pwrite fails with EBADF.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.pf");
        std::fs::write(&path, b"").unwrap();
        let file = File::open(&path).unwrap();
        let (mut store, status) = WriteBehindStore::new(file).unwrap();
        store.write_nodes(PhysicalNode(0), &[7u8; NODE_SIZE]).unwrap();
        drop(store);
        let error = status.finish().expect_err("a write to a read-only descriptor must fail");
        assert_eq!(error.raw_os_error(), Some(EBADF), "{error}");
    }

    #[test]
    fn a_write_error_is_reported_by_the_next_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro2.pf");
        std::fs::write(&path, b"").unwrap();
        let (mut store, _status) = WriteBehindStore::new(File::open(&path).unwrap()).unwrap();
        store.write_nodes(PhysicalNode(0), &[7u8; NODE_SIZE]).unwrap();
        let mut buf = [0u8; NODE_SIZE];
        assert!(store.read_nodes(PhysicalNode(0), &mut buf).is_err());
    }
}
