//! `std::io` adapters for streaming over a [`ProtectedFile`].

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::error::Error;
use crate::file::ProtectedFile;
use crate::storage::NodeStore;

/// A [`ProtectedFile`] with a cursor, implementing [`Read`], [`Write`] and [`Seek`].
///
/// Engine errors become `io::Error`s whose inner error is the [`Error`] (get it back
/// with `io::Error::get_ref` and `downcast_ref`).
#[derive(Debug)]
pub struct Stream<S: NodeStore> {
    file: ProtectedFile<S>,
    position: u64,
}

impl<S: NodeStore> Stream<S> {
    /// Wraps `file` with the cursor at 0.
    pub fn new(file: ProtectedFile<S>) -> Self {
        Stream { file, position: 0 }
    }

    /// The wrapped file.
    pub fn get_mut(&mut self) -> &mut ProtectedFile<S> {
        &mut self.file
    }

    /// Unwraps the file (not flushed; call `close` on it).
    pub fn into_inner(self) -> ProtectedFile<S> {
        self.file
    }
}

fn to_io(error: Error) -> io::Error {
    let kind = match &error {
        Error::Io { source, .. } => source.kind(),
        Error::ReadOnly => io::ErrorKind::PermissionDenied,
        Error::TooLarge(_) => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, error)
}

impl<S: NodeStore> Read for Stream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(self.position, buf).map_err(to_io)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl<S: NodeStore> Write for Stream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_at(self.position, buf).map_err(to_io)?;
        self.position += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush().map_err(to_io)
    }
}

impl<S: NodeStore> Seek for Stream<S> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(delta) => self.file.len().checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        match target {
            Some(n) => {
                self.position = n;
                Ok(n)
            }
            None => Err(io::Error::new(io::ErrorKind::InvalidInput, "seek before the start of the file")),
        }
    }
}
