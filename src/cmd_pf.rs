//! `pfs keygen`, `encrypt`, `decrypt`, `info` and `check`: the protected-file subcommands.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use pfs_core::layout::{self, NODE_SIZE, NODE_SIZE_U64};
use pfs_core::metadata::PlainHeader;
use pfs_core::path::{join_normalized, normalize};
use pfs_core::recovery::{Assessment, assess};
use pfs_core::{
    CryptoProvider, Error as PfError, FileStore, FormatVersion, Journal, Key, NodeStore, OpenOptions,
    PendingWritePolicy, ProtectedFile,
};
use serde::Serialize;

use crate::Outcome;
use crate::input_map::map_input;
use crate::keyfile::{read_key, write_new_key};
use crate::output::AtomicOutput;
use crate::pipeline::{overlap_stages, pump};
use crate::report::Reporter;
use crate::size::format_size;
use crate::walk::{ensure_not_inside, walk};
use crate::write_behind::WriteBehindStore;

/// Bytes moved per read/write call while streaming a file in or out of the engine. Measured
/// on the 2-core project machine: 1 MiB beat 64 KiB, 256 KiB and 4 MiB for a 256 MiB file
/// (docs/PERFORMANCE.md); three such buffers are in flight (see `pipeline::pump`).
const CHUNK_SIZE: usize = 1 << 20;

// ---------------------------------------------------------------------------------------
// keygen

/// Long help of `pfs keygen`.
pub const KEYGEN_ABOUT: &str = "\
Make a new key file: 16 random bytes from the OS, written with mode 0600.

The file has the format of `gramine-sgx-pf-crypt gen-key` (16 raw bytes) and can be used
with `-w` by every pfs subcommand, by gramine-sgx-pf-crypt, and as a Gramine key
(e.g. fs.insecure__keys.NAME takes its hex, `xxd -p KEYFILE`). pfs never prints key bytes.
An existing file is never overwritten unless --force is given.";

/// Examples of `pfs keygen`.
pub const KEYGEN_EXAMPLES: &str = "\
Examples:
  pfs keygen -o model.key
  pfs keygen -o model.key --force   # replace an existing key (files encrypted with it become unreadable)";

/// Arguments of `pfs keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key file.
    #[arg(short = 'o', long = "output", value_name = "KEYFILE")]
    output: PathBuf,
    /// Overwrite KEYFILE if it exists (its mode is reset to 0600).
    #[arg(long)]
    force: bool,
    /// Print nothing on success.
    #[arg(short, long)]
    quiet: bool,
}

/// Runs `pfs keygen`.
pub fn keygen(args: &KeygenArgs) -> Result<Outcome> {
    write_new_key(&args.output, args.force)?;
    if !args.quiet {
        println!("wrote a new 16-byte key to {} (mode 0600)", args.output.display());
    }
    Ok(Outcome::Success)
}

// ---------------------------------------------------------------------------------------
// encrypt

/// Long help of `pfs encrypt`.
pub const ENCRYPT_ABOUT: &str = "\
Encrypt a file, or a whole directory tree, into Gramine protected files.

Every protected file is bound to an \"embedded path\" that Gramine checks when it opens the
file. For a single file it is the -o path after Gramine's lexical normalization (`//` and
`.` removed, `..` resolved, relative stays relative), exactly as gramine-sgx-pf-crypt does,
and the output is written at that normalized path. For a Gramine encrypted mount with
uri = \"file:enc\", encrypt with `-o enc/NAME` (from the same working directory) or give
--path. The embedded path is printed; put the matching path in the manifest.

If IN is a directory, every regular file under it is encrypted into OUT with the same
relative name and bound to normalize(OUT/<relative name>) (or normalize(PATH/<relative
name>) with --path PATH). Symbolic links are skipped. A failing file is reported and the
others are still encrypted; the exit status is then 1.

Outputs are written to a temporary file beside the destination and renamed into place, so
an output is either complete or absent. Permission bits are copied from the input.";

/// Examples of `pfs encrypt`.
pub const ENCRYPT_EXAMPLES: &str = "\
Examples:
  pfs encrypt -w model.key -i model.onnx -o enc/model.onnx      # bound to enc/model.onnx
  pfs encrypt -w model.key -i data/ -o enc/data                 # bound to enc/data/<file>
  pfs encrypt -w model.key -i x.bin -o x.pf --path /enc/x.bin   # explicit embedded path
  pfs encrypt -w model.key -i x.bin -o x.pf --format 1          # for Gramine 1.8 and older";

/// Arguments of `pfs encrypt`.
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// Key file: exactly 16 raw bytes (see `pfs keygen`).
    #[arg(short = 'w', long = "wrap-key", value_name = "KEYFILE")]
    key: PathBuf,
    /// Plaintext file or directory to encrypt.
    #[arg(short = 'i', long = "input", value_name = "IN")]
    input: PathBuf,
    /// Output protected file (or directory, when IN is one).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: PathBuf,
    /// Embedded path to bind the file to, stored exactly as given (default: the
    /// normalized OUT). For a directory: the prefix, each file gets normalize(PATH/<name>).
    #[arg(long = "path", value_name = "EMBEDDED")]
    path: Option<PathBuf>,
    /// Format major version: 2 (Gramine 1.9 and newer) or 1 (Gramine 1.8 and older).
    #[arg(long, value_name = "1|2", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    format: u8,
    /// Fsync each output and its directory before reporting success.
    #[arg(long)]
    sync: bool,
    /// Read inputs with read(2) instead of mapping them into memory. Mapping is faster
    /// (no copy into a read buffer), but if another program truncates an input while it
    /// is being encrypted, pfs is killed by SIGBUS (no output is created; a hidden
    /// temporary file stays beside it). Use this for inputs that others may truncate.
    #[arg(long)]
    no_mmap: bool,
    /// Print only warnings and errors (no per-file lines, no progress bar).
    #[arg(short, long)]
    quiet: bool,
}

/// How [`encrypt_file`] reads its input and finishes its output.
#[derive(Debug, Clone, Copy)]
struct EncryptIo {
    /// Fsync the output and its directory.
    sync: bool,
    /// Map regular input files instead of reading them.
    mmap: bool,
    /// Read, seal and write on separate threads ([`overlap_stages`]).
    overlap: bool,
}

/// Runs `pfs encrypt`.
pub fn encrypt(args: &EncryptArgs) -> Result<Outcome> {
    let key = read_key(&args.key)?;
    let format = if args.format == 1 { FormatVersion::V1 } else { FormatVersion::V2 };
    // The engine's default cache (256 nodes) measured best for streaming: 64 nodes flush
    // too often, 1024 and 4096 cost more CPU (docs/PERFORMANCE.md).
    let options = OpenOptions::new().format(format);
    let input_meta =
        fs::metadata(&args.input).with_context(|| format!("cannot read input {}", args.input.display()))?;
    let mut reporter = Reporter::new(args.quiet);
    let io = EncryptIo { sync: args.sync, mmap: !args.no_mmap, overlap: overlap_stages() };

    if input_meta.is_dir() {
        let base = args.path.as_deref().unwrap_or(&args.output);
        return transform_tree(&args.input, &args.output, &mut reporter, "encrypt", |src, dest, rel, rep| {
            let embedded = join_normalized(base.as_os_str().as_bytes(), rel.as_os_str().as_bytes());
            encrypt_file(&key, src, dest, &embedded, &options, io, rep)
        });
    }

    let normalized_out = normalize(args.output.as_os_str().as_bytes());
    let dest = PathBuf::from(OsStr::from_bytes(&normalized_out));
    if dest.is_dir() {
        bail!(
            "the output {} is a directory; give the output file's name (it becomes the embedded path)",
            args.output.display()
        );
    }
    let embedded = match &args.path {
        Some(path) => {
            let bytes = path.as_os_str().as_bytes().to_vec();
            if normalize(&bytes) != bytes {
                reporter.warn(format_args!(
                    "--path {:?} is not in normalized form ({:?}); Gramine compares normalized paths \
                     and will refuse to open the file",
                    path.display().to_string(),
                    String::from_utf8_lossy(&normalize(&bytes))
                ));
            }
            bytes
        }
        None => normalized_out,
    };
    if !args.quiet && input_meta.len() >= 64 << 20 {
        reporter.start_progress(input_meta.len(), "encrypting");
    }
    let written = encrypt_file(&key, &args.input, &dest, &embedded, &options, io, &reporter)
        .with_context(|| format!("cannot encrypt {} to {}", args.input.display(), dest.display()))?;
    reporter.finish_progress();
    reporter.info(format_args!(
        "encrypted {} ({}) -> {}, format v{}, embedded path: {}",
        args.input.display(),
        format_size(written),
        dest.display(),
        format.major(),
        String::from_utf8_lossy(&embedded)
    ));
    Ok(Outcome::Success)
}

/// Encrypts `src` into a new protected file at `dest` bound to `embedded`; returns the
/// plaintext size.
///
/// With `io.overlap`, three stages overlap: reading the input (from a memory map, or with
/// `read` on a helper thread), sealing (this thread) and writing the ciphertext (a
/// write-behind thread). Without, all three run on this thread, which costs the least CPU.
fn encrypt_file(
    key: &Key,
    src: &Path,
    dest: &Path,
    embedded: &[u8],
    options: &OpenOptions,
    io: EncryptIo,
    reporter: &Reporter,
) -> Result<u64> {
    let mut input = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    let meta = input.metadata().with_context(|| format!("cannot read {}", src.display()))?;
    let mode = Some(meta.permissions().mode());
    let output = AtomicOutput::create(dest)?;
    let written = if io.overlap {
        let (store, writes) = WriteBehindStore::new(output.clone_file()?)
            .with_context(|| format!("cannot start writing {}", dest.display()))?;
        let written =
            encrypt_into(store, key, embedded, options, (&mut input, &meta, src), dest, io, reporter)?;
        writes.finish().with_context(|| format!("cannot write {}", dest.display()))?;
        written
    } else {
        let store = FileStore::new(output.clone_file()?);
        encrypt_into(store, key, embedded, options, (&mut input, &meta, src), dest, io, reporter)?
    };
    output.commit(mode, io.sync)?;
    Ok(written)
}

/// The body of [`encrypt_file`] over either store: creates the protected file in `store`,
/// streams `input` (the file, its metadata and its name) into it and closes it.
#[allow(clippy::too_many_arguments)]
fn encrypt_into<S: NodeStore>(
    store: S,
    key: &Key,
    embedded: &[u8],
    options: &OpenOptions,
    (input, meta, src): (&mut File, &fs::Metadata, &Path),
    dest: &Path,
    io: EncryptIo,
    reporter: &Reporter,
) -> Result<u64> {
    let mut pf =
        ProtectedFile::create(store, key, embedded, options).context("cannot create the protected file")?;
    let mut offset = 0u64;
    let mut write = |chunk: &[u8]| -> Result<()> {
        pf.write_at(offset, chunk).with_context(|| format!("cannot write {}", dest.display()))?;
        offset += chunk.len() as u64;
        reporter.advance(chunk.len() as u64);
        Ok(())
    };
    match io.mmap.then(|| map_input(input, meta, CHUNK_SIZE)).flatten() {
        Some(map) => {
            for chunk in map.chunks(CHUNK_SIZE) {
                write(chunk)?;
            }
        }
        None => {
            let read = |buf: &mut [u8]| {
                read_full(&mut *input, buf).with_context(|| format!("cannot read {}", src.display()))
            };
            if io.overlap {
                pump(CHUNK_SIZE, read, write)?;
            } else {
                serial_pump(CHUNK_SIZE, read, write)?;
            }
        }
    }
    pf.close().with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(offset)
}

/// [`pump`] on the calling thread: fills a buffer, drains it, until `fill` returns 0.
/// The buffer is wiped when dropped (it may hold plaintext).
fn serial_pump(
    chunk: usize,
    mut fill: impl FnMut(&mut [u8]) -> Result<usize>,
    mut drain: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let mut buf = zeroize::Zeroizing::new(vec![0u8; chunk]);
    let mut moved = 0u64;
    loop {
        let n = fill(&mut buf)?;
        if n == 0 {
            return Ok(moved);
        }
        drain(&buf[..n])?;
        moved += n as u64;
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match input.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Applies `per_file(src, dest, rel, reporter)` to every regular file under `input`,
/// writing into the same relative names under `output` (created as needed). Keeps going
/// after a failure and returns [`Outcome::Failed`] if any file failed.
fn transform_tree(
    input: &Path,
    output: &Path,
    reporter: &mut Reporter,
    verb: &str,
    mut per_file: impl FnMut(&Path, &Path, &Path, &Reporter) -> Result<u64>,
) -> Result<Outcome> {
    ensure_not_inside(input, output)?;
    let tree = walk(input);
    for error in &tree.errors {
        reporter.error(error);
    }
    for rel in &tree.skipped {
        reporter
            .warn(format_args!("skipping {} (not a regular file or directory)", input.join(rel).display()));
    }
    fs::create_dir_all(output).with_context(|| format!("cannot create directory {}", output.display()))?;
    for rel in &tree.dirs {
        let dir = output.join(rel);
        if let Err(e) = fs::create_dir_all(&dir) {
            reporter.error(&anyhow!(e).context(format!("cannot create directory {}", dir.display())));
        }
    }
    reporter.start_progress(tree.total_bytes(input), &format!("{verb}ing"));
    let (mut done, mut bytes) = (0usize, 0u64);
    for rel in &tree.files {
        let (src, dest) = (input.join(rel), output.join(rel));
        match per_file(&src, &dest, rel, reporter) {
            Ok(n) => {
                done += 1;
                bytes += n;
            }
            Err(e) => reporter.error(&e.context(format!("cannot {verb} {}", src.display()))),
        }
    }
    reporter.finish_progress();
    let failed = tree.files.len() - done;
    reporter.info(format_args!(
        "{verb}ed {done} file(s) ({}) from {} into {}{}",
        format_size(bytes),
        input.display(),
        output.display(),
        if failed > 0 { format!("; {failed} file(s) failed") } else { String::new() }
    ));
    Ok(if reporter.errors() > 0 { Outcome::Failed } else { Outcome::Success })
}

// ---------------------------------------------------------------------------------------
// decrypt

/// Long help of `pfs decrypt`.
pub const DECRYPT_ABOUT: &str = "\
Decrypt a protected file, or a directory tree of them.

Every node is authenticated while reading. On any failure (wrong key, wrong embedded path,
modified or truncated file) pfs exits with status 1 and a message naming the file, the
problem and the node and plaintext offset, and leaves no output file behind: the output is
written to a temporary file beside it and renamed into place only when complete.

Embedded path check: none by default (like gramine-sgx-pf-crypt decrypt); with
--expect-path PATH the file must be bound to exactly PATH; with -V to the normalized -i
path (like pf-crypt -V). For a directory, PATH or the -i directory is the prefix and each
file must be bound to normalize(PREFIX/<relative name>).

A file whose pending-write flag is set (an interrupted Gramine write) is decrypted as its
last committed state, like pf-crypt does, with a warning.";

/// Examples of `pfs decrypt`.
pub const DECRYPT_EXAMPLES: &str = "\
Examples:
  pfs decrypt -w model.key -i enc/model.onnx -o model.onnx
  pfs decrypt -w model.key -i enc/model.onnx -o model.onnx -V          # must be bound to enc/model.onnx
  pfs decrypt -w model.key -i out.pf -o out.bin --expect-path /enc/out.bin
  pfs decrypt -w model.key -i enc/results -o results                   # a whole tree";

/// Arguments of `pfs decrypt`.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// Key file: exactly 16 raw bytes.
    #[arg(short = 'w', long = "wrap-key", value_name = "KEYFILE")]
    key: PathBuf,
    /// Protected file or directory to decrypt.
    #[arg(short = 'i', long = "input", value_name = "IN")]
    input: PathBuf,
    /// Plaintext output file (or directory, when IN is one).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: PathBuf,
    /// Require the embedded path to be exactly PATH (for a directory: the prefix).
    #[arg(long = "expect-path", value_name = "PATH", conflicts_with = "verify")]
    expect_path: Option<PathBuf>,
    /// Require the embedded path to be the normalized -i path (as pf-crypt -V).
    #[arg(short = 'V', long = "verify")]
    verify: bool,
    /// Fsync each output and its directory before reporting success.
    #[arg(long)]
    sync: bool,
    /// Print only warnings and errors (no per-file lines, no progress bar).
    #[arg(short, long)]
    quiet: bool,
}

/// Runs `pfs decrypt`.
pub fn decrypt(args: &DecryptArgs) -> Result<Outcome> {
    let key = read_key(&args.key)?;
    let input_meta =
        fs::metadata(&args.input).with_context(|| format!("cannot read input {}", args.input.display()))?;
    let mut reporter = Reporter::new(args.quiet);
    // Decryption (the reading side) on a helper thread overlaps with writing.
    let overlap = overlap_stages();

    if input_meta.is_dir() {
        let prefix: Option<&Path> = match (&args.expect_path, args.verify) {
            (Some(path), _) => Some(path),
            (None, true) => Some(&args.input),
            (None, false) => None,
        };
        return transform_tree(&args.input, &args.output, &mut reporter, "decrypt", |src, dest, rel, rep| {
            let expected =
                prefix.map(|p| join_normalized(p.as_os_str().as_bytes(), rel.as_os_str().as_bytes()));
            decrypt_file(&key, src, dest, expected.as_deref(), (args.sync, overlap), rep)
        });
    }

    if args.output.is_dir() {
        bail!("the output {} is a directory; give the output file's name", args.output.display());
    }
    let expected: Option<Vec<u8>> = match (&args.expect_path, args.verify) {
        (Some(path), _) => Some(path.as_os_str().as_bytes().to_vec()),
        (None, true) => Some(normalize(args.input.as_os_str().as_bytes())),
        (None, false) => None,
    };
    if !args.quiet && input_meta.len() >= 64 << 20 {
        reporter.start_progress(input_meta.len(), "decrypting");
    }
    let size =
        decrypt_file(&key, &args.input, &args.output, expected.as_deref(), (args.sync, overlap), &reporter)
            .with_context(|| format!("cannot decrypt {}", args.input.display()))?;
    reporter.finish_progress();
    reporter.info(format_args!(
        "decrypted {} -> {} ({})",
        args.input.display(),
        args.output.display(),
        format_size(size)
    ));
    Ok(Outcome::Success)
}

/// Reads the plain header of a host file (no key needed), if it has a whole first node.
fn read_header(file: &File) -> Result<Option<PlainHeader>, PfError> {
    let mut node = Box::new([0u8; NODE_SIZE]);
    let mut done = 0;
    while done < NODE_SIZE {
        match file.read_at(&mut node[done..], done as u64) {
            Ok(0) => return Ok(None),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PfError::Io { node: Some(layout::METADATA_NODE), source: e }),
        }
    }
    PlainHeader::parse(&node).map(Some)
}

/// Opens a protected file for reading: every node authenticated, the pending-write flag
/// ignored (reported through `reporter`), the embedded path checked when `expected`.
fn open_for_reading(
    key: &Key,
    src: &Path,
    expected: Option<&[u8]>,
    reporter: &Reporter,
) -> Result<ProtectedFile<FileStore>> {
    let file = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    if let Ok(Some(header)) = read_header(&file)
        && header.pending_write()
    {
        reporter.warn(format_args!(
            "{}: the pending-write flag is set (a Gramine write was interrupted); reading the last \
             committed state",
            src.display()
        ));
    }
    let options = OpenOptions::new().read_only(true).pending_write(PendingWritePolicy::Ignore);
    Ok(ProtectedFile::open(FileStore::new(file), key, expected, &options)?)
}

/// Decrypts `src` into `dest`; returns the plaintext size. `(sync, overlap)`: fsync the
/// output; decrypt on a helper thread while this one writes.
fn decrypt_file(
    key: &Key,
    src: &Path,
    dest: &Path,
    expected: Option<&[u8]>,
    (sync, overlap): (bool, bool),
    reporter: &Reporter,
) -> Result<u64> {
    let pf = open_for_reading(key, src, expected, reporter)?;
    let mode = fs::metadata(src).ok().map(|m| m.permissions().mode());
    let output = AtomicOutput::create(dest)?;
    let mut out = output.file();
    let mut offset = 0u64;
    let read = |buf: &mut [u8]| {
        let n = pf.read_at(offset, buf)?;
        offset += n as u64;
        Ok(n)
    };
    let write = |chunk: &[u8]| {
        out.write_all(chunk).with_context(|| format!("cannot write {}", dest.display()))?;
        reporter.advance(chunk.len() as u64);
        Ok(())
    };
    let size = if overlap { pump(CHUNK_SIZE, read, write)? } else { serial_pump(CHUNK_SIZE, read, write)? };
    output.commit(mode, sync)?;
    Ok(size)
}

// ---------------------------------------------------------------------------------------
// info

/// Long help of `pfs info`.
pub const INFO_ABOUT: &str = "\
Show what a protected file's header says.

Without a key: format version (major, minor), feature flags and the pending-write flag,
host file size and node count. These bytes are not authenticated. With -w KEYFILE the
metadata node is also decrypted and authenticated, adding the embedded path, plaintext size,
Merkle-tree depth and the node counts the size implies. --json prints one JSON object.";

/// Examples of `pfs info`.
pub const INFO_EXAMPLES: &str = "\
Examples:
  pfs info enc/model.onnx
  pfs info -w model.key enc/model.onnx
  pfs info -w model.key --json enc/model.onnx | jq .embedded_path";

/// Arguments of `pfs info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Key file; with it the embedded path, plaintext size and tree depth are shown too.
    #[arg(short = 'w', long = "wrap-key", value_name = "KEYFILE")]
    key: Option<PathBuf>,
    /// Print a JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The protected file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// What `pfs info` reports (also its JSON shape).
#[derive(Debug, Serialize)]
struct Info {
    file: String,
    host_size: u64,
    host_nodes: u64,
    format_major: u8,
    format_minor: u8,
    flags: u8,
    pending_write: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    embedded_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tree_depth: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_nodes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mht_nodes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_host_nodes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Runs `pfs info`.
pub fn info(args: &InfoArgs) -> Result<Outcome> {
    let key = args.key.as_deref().map(read_key).transpose()?;
    let path = &args.file;
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let host_size = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?.len();
    let header = read_header(&file)
        .with_context(|| format!("{} is not a valid protected file", path.display()))?
        .ok_or_else(|| {
            anyhow!(
                "{} is not a protected file: it has {host_size} bytes, less than one 4096-byte node",
                path.display()
            )
        })?;
    let mut info = Info {
        file: path.display().to_string(),
        host_size,
        host_nodes: host_size / NODE_SIZE_U64,
        format_major: header.version.major(),
        format_minor: header.minor,
        flags: header.flags,
        pending_write: header.pending_write(),
        embedded_path: None,
        plaintext_size: None,
        tree_depth: None,
        data_nodes: None,
        mht_nodes: None,
        expected_host_nodes: None,
        error: None,
    };
    if let Some(key) = &key {
        let options = OpenOptions::new().read_only(true).pending_write(PendingWritePolicy::Ignore);
        match ProtectedFile::open(FileStore::new(file), key, None, &options) {
            Ok(pf) => {
                let size = pf.len();
                info.embedded_path = Some(String::from_utf8_lossy(pf.path()).into_owned());
                info.plaintext_size = Some(size);
                info.tree_depth = Some(pf.tree_depth());
                info.data_nodes = Some(layout::data_node_count(size));
                info.mht_nodes = Some(layout::mht_node_count(size));
                info.expected_host_nodes = Some(layout::host_node_count(size));
            }
            Err(error) => info.error = Some(error.to_string()),
        }
    }
    if args.json {
        let mut stdout = io::stdout().lock();
        serde_json::to_writer_pretty(&mut stdout, &info).context("cannot write JSON")?;
        writeln!(stdout).context("cannot write to stdout")?;
    } else {
        print_info(&info).context("cannot write to stdout")?;
    }
    match &info.error {
        Some(error) => {
            eprintln!("pfs: error: cannot open {} with the key: {error}", path.display());
            Ok(Outcome::Failed)
        }
        None => Ok(Outcome::Success),
    }
}

fn print_info(info: &Info) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "file:            {}", info.file)?;
    writeln!(out, "format:          v{} (minor {})", info.format_major, info.format_minor)?;
    writeln!(
        out,
        "flags:           0x{:02x}{}",
        info.flags,
        if info.pending_write {
            " (pending write: an interrupted write, recovery needed in Gramine)"
        } else {
            ""
        }
    )?;
    let aligned = if info.host_size.is_multiple_of(NODE_SIZE_U64) {
        ""
    } else {
        " (not a multiple of 4096: truncated)"
    };
    writeln!(out, "host size:       {} bytes, {} nodes{aligned}", info.host_size, info.host_nodes)?;
    if let Some(path) = &info.embedded_path {
        writeln!(out, "embedded path:   {path}")?;
    }
    if let Some(size) = info.plaintext_size {
        writeln!(out, "plaintext size:  {size} bytes ({})", format_size(size))?;
    }
    if let Some(depth) = info.tree_depth {
        writeln!(out, "tree depth:      {depth} MHT level(s)")?;
    }
    if let (Some(data), Some(mht), Some(expected)) =
        (info.data_nodes, info.mht_nodes, info.expected_host_nodes)
    {
        let note = match info.host_nodes.cmp(&expected) {
            std::cmp::Ordering::Equal => String::new(),
            std::cmp::Ordering::Greater => {
                format!(" ({} trailing node(s), ignored)", info.host_nodes - expected)
            }
            std::cmp::Ordering::Less => {
                format!(" ({} node(s) missing: truncated)", expected - info.host_nodes)
            }
        };
        writeln!(out, "nodes:           1 metadata + {mht} MHT + {data} data = {expected}{note}")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// check

/// Long help of `pfs check`.
pub const CHECK_ABOUT: &str = "\
Authenticate every node of every given protected file (directories are searched
recursively) and report each bad node with its number and the plaintext range it makes
unreadable. Without --repair it reads only; nothing is modified. It goes through the same
read path as decrypt, so a file that checks ok decrypts.

Each file is reported as ok, DAMAGED (it opens with the key but some nodes fail
authentication or are missing) or UNREADABLE (it cannot be opened at all: I/O error, not a
protected file, or the metadata node fails authentication, which means a wrong key or a
modified metadata node; the two cannot be told apart). The last line sums up:
\"N files ok, M damaged, K unreadable\".

Interrupted writes: a flush that Gramine 1.9 (with enable_recovery) or pfs interrupted
leaves the pending-write flag set and the old image of every node it overwrites in
FILE.gramine.recovery (for a file name over 238 bytes, a shortened name with the same
ending: docs/ENGINE.md). Without --repair the flag is reported, the file's last written state
is checked, and when a usable recovery file exists the report says that --repair restores
the last completed flush. Recovery files met in a directory walk are not checked on their
own.

With --repair, a pending recovery is performed before the check when the recovery file
passes pfs's recovery rule: it must be the one the interrupted flush wrote, that is, node 0
still holds part of the recovery file's copy of it (a genuine crash or torn write leaves
that), and that copy authenticates under the key. Then the records are written back and
synced (the file must be writable), the file is in the state of its last completed flush,
and the applied recovery file is deleted. The same holds when node 0 was torn by the last
write of a flush (its flag already clear). Any other recovery file is refused with the
reason and nothing is written: one left over from an earlier flush that completed (Gramine
keeps its recovery file until the file is closed) would roll the file back past that flush.
A pending-write flag without a usable recovery file cannot be repaired; the file's last
written state is checked (pfs decrypt reads it). A stale recovery file (left after its flush
completed) is deleted once the file checks ok.

Exit status: 0 if every file is ok (and, with --repair, every pending recovery was
performed); 1 if any file is damaged or unreadable, or with --repair if a pending write
could not be recovered; 2 on a usage error.";

/// Examples of `pfs check`.
pub const CHECK_EXAMPLES: &str = "\
Examples:
  pfs check -w model.key enc/model.onnx
  pfs check -w model.key -q enc/          # only problems and the summary
  pfs check -w model.key --repair enc/    # perform pending recoveries, then check";

/// Arguments of `pfs check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Key file: exactly 16 raw bytes.
    #[arg(short = 'w', long = "wrap-key", value_name = "KEYFILE")]
    key: PathBuf,
    /// Protected files or directories to check.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// Do not list files that are ok (problems and the summary are still printed).
    #[arg(short, long)]
    quiet: bool,
    /// Perform a pending recovery from FILE.gramine.recovery first (writes the file).
    #[arg(long)]
    repair: bool,
}

/// The verdict on one file.
enum Verdict {
    Ok,
    Damaged,
    Unreadable,
}

/// Runs `pfs check`.
pub fn check(args: &CheckArgs) -> Result<Outcome> {
    let key = read_key(&args.key)?;
    let (mut ok, mut damaged, mut unreadable) = (0usize, 0usize, 0usize);
    let (mut recovered, mut unrepaired) = (0usize, 0usize);
    let mut count = |verdict: Verdict| match verdict {
        Verdict::Ok => ok += 1,
        Verdict::Damaged => damaged += 1,
        Verdict::Unreadable => unreadable += 1,
    };
    let mut one_file = |path: &Path| -> Result<Verdict> {
        if args.repair {
            match repair_file(&key, path, args.quiet)? {
                Repair::Recovered => recovered += 1,
                Repair::Impossible => unrepaired += 1,
                Repair::NotNeeded => {}
            }
        }
        let verdict = check_file(&key, path, args.quiet, args.repair)?;
        if args.repair && matches!(verdict, Verdict::Ok) {
            remove_stale_journal(path)?;
        }
        Ok(verdict)
    };
    for arg in &args.files {
        if arg.is_dir() {
            let tree = walk(arg);
            for error in &tree.errors {
                println!("{}: UNREADABLE: {error:#}", arg.display());
                count(Verdict::Unreadable);
            }
            // A recovery file belongs to its host file and is read with it (Gramine hides
            // them from applications the same way).
            for rel in tree.files.iter().filter(|rel| !is_recovery_file(rel)) {
                count(one_file(&arg.join(rel))?);
            }
        } else {
            count(one_file(arg)?);
        }
    }
    if args.repair {
        println!(
            "{ok} files ok, {damaged} damaged, {unreadable} unreadable; \
             {recovered} recovered, {unrepaired} pending write(s) not recoverable"
        );
    } else {
        println!("{ok} files ok, {damaged} damaged, {unreadable} unreadable");
    }
    Ok(if damaged + unreadable + unrepaired > 0 { Outcome::Failed } else { Outcome::Success })
}

/// Whether `path` names a Gramine recovery file (`*.gramine.recovery`).
fn is_recovery_file(path: &Path) -> bool {
    path.file_name().is_some_and(|name| pfs_core::recovery::is_recovery_file_name(name.as_bytes()))
}

/// What `--repair` did to one file.
enum Repair {
    /// Nothing was pending (a stale recovery file is deleted after the check if the file
    /// is ok).
    NotNeeded,
    /// The recovery file's records were written back.
    Recovered,
    /// A recovery was pending but could not be performed.
    Impossible,
}

/// The recovery rule's verdict on FILE and its recovery file, for reports: the journal
/// and `None` when FILE cannot be read as a protected file (the check reports why).
/// Never writes.
fn assess_file(key: &Key, path: &Path) -> (Journal, Option<Assessment>) {
    let journal = Journal::beside(path);
    let assessment = File::open(path).ok().and_then(|file| {
        assess(&FileStore::new(file), &journal, key, None, &CryptoProvider::default_provider()).ok()
    });
    (journal, assessment)
}

/// `--repair` for one file: decides with the engine's recovery rule (`recovery::assess`,
/// the rule every writable open applies), performs an applicable recovery through
/// `open_with_journal`, and prints what it did or why it refused. Errors are only those
/// of writing to stdout; the check that follows reports a file that cannot be opened.
fn repair_file(key: &Key, path: &Path, quiet: bool) -> Result<Repair> {
    let mut out = io::stdout().lock();
    let (journal, assessment) = assess_file(key, path);
    let name = journal.describe();
    match assessment {
        // Not a readable protected file: the check reports it.
        None => Ok(Repair::NotNeeded),
        Some(Assessment::Intact) => {
            if !quiet {
                match journal.exists() {
                    Ok(true) => writeln!(
                        out,
                        "{}: no recovery pending (the last flush completed; {name} is stale)",
                        path.display()
                    )?,
                    _ => writeln!(out, "{}: no recovery pending", path.display())?,
                }
            }
            Ok(Repair::NotNeeded)
        }
        Some(Assessment::Refused { pending: true, problem }) => {
            writeln!(
                out,
                "{}: pending-write flag set but no usable recovery file ({name}: {problem}): cannot \
                 repair; the file's last written state is checked below and can be read with `pfs decrypt`",
                path.display()
            )?;
            Ok(Repair::Impossible)
        }
        Some(Assessment::Refused { pending: false, problem }) if problem.proves_key() => {
            writeln!(
                out,
                "{}: cannot repair: the metadata node (node 0) fails authentication, as a torn \
                 write leaves it, and {name} cannot restore it: {problem}",
                path.display()
            )?;
            Ok(Repair::Impossible)
        }
        // Node 0 fails authentication and no recovery file explains it (wrong key, or no
        // recovery file): nothing to repair; the check reports the file.
        Some(Assessment::Refused { pending: false, .. }) => Ok(Repair::NotNeeded),
        Some(_) => repair_applicable(key, path, journal, &mut out),
    }
}

/// Performs a recovery the rule allows, through a writable `open_with_journal`.
fn repair_applicable(key: &Key, path: &Path, journal: Journal, out: &mut impl Write) -> Result<Repair> {
    let name = journal.describe();
    let file = match File::options().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) => {
            writeln!(out, "{}: cannot repair: cannot open it for writing: {e}", path.display())?;
            return Ok(Repair::Impossible);
        }
    };
    let options = OpenOptions::new().pending_write(PendingWritePolicy::Refuse);
    let opened = ProtectedFile::open_with_journal(FileStore::new(file), Some(journal), key, None, &options);
    // Nothing was written in this session apart from the recovery; closing flushes nothing.
    match opened.and_then(|pf| {
        let recovered = pf.recovered_nodes();
        pf.close().map(|()| recovered)
    }) {
        Ok(Some(nodes)) => {
            // The rule proved that the interrupted flush wrote this recovery file, so its
            // records restore exactly the state that flush started from.
            writeln!(
                out,
                "{}: recovered {nodes} node(s) from {name}, the recovery file of the interrupted \
                 flush; file now in the state of its last completed flush",
                path.display()
            )?;
            Ok(Repair::Recovered)
        }
        Ok(None) => Ok(Repair::NotNeeded), // changed since it was assessed
        Err(error) => {
            writeln!(out, "{}: cannot repair: {error}", path.display())?;
            Ok(Repair::Impossible)
        }
    }
}

/// After a `--repair` check found the file ok: deletes a stale recovery file (one left by
/// Gramine or a crash after its flush had completed; an applied one is already deleted
/// by the engine on close). The rule would never apply it, but left in place it would be
/// listed as pending work by every later check.
fn remove_stale_journal(path: &Path) -> Result<()> {
    let pending = File::open(path)
        .ok()
        .and_then(|file| read_header(&file).ok().flatten())
        .is_some_and(|header| header.pending_write());
    let mut journal = Journal::beside(path);
    if !pending && journal.exists().unwrap_or(false) {
        journal.remove().with_context(|| {
            format!("cannot delete the recovery file {} (no longer needed)", journal.describe())
        })?;
        println!("{}: deleted {} (no longer needed)", path.display(), journal.describe());
    }
    Ok(())
}

/// Checks one file and prints its report; errors are only those of writing to stdout.
/// Never writes the file. `repaired`: `--repair` ran before, so the notes do not advise it.
fn check_file(key: &Key, path: &Path, quiet: bool, repaired: bool) -> Result<Verdict> {
    let mut out = io::stdout().lock();
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) => {
            writeln!(out, "{}: UNREADABLE: cannot open: {e}", path.display())?;
            return Ok(Verdict::Unreadable);
        }
    };
    let host_size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let pending = match read_header(&file) {
        Ok(Some(header)) => header.pending_write(),
        Ok(None) if host_size > 0 => {
            writeln!(
                out,
                "{}: UNREADABLE: not a protected file ({host_size} bytes, less than one 4096-byte node)",
                path.display()
            )?;
            return Ok(Verdict::Unreadable);
        }
        Ok(None) => false, // empty: the engine reports the missing metadata node
        Err(error @ (PfError::InvalidHeader(_) | PfError::InvalidVersion { .. } | PfError::Io { .. })) => {
            writeln!(out, "{}: UNREADABLE: {error}", path.display())?;
            return Ok(Verdict::Unreadable);
        }
        Err(_) => false,
    };
    let options = OpenOptions::new().read_only(true).pending_write(PendingWritePolicy::Ignore);
    let mut pf = match ProtectedFile::open(FileStore::new(file), key, None, &options) {
        Ok(pf) => pf,
        Err(error) => {
            // The root MHT node is authenticated at open: a bad one makes all data past the
            // inline 3072 bytes unreadable, but the file did open with this key.
            let verdict = match &error {
                PfError::NodeMac { .. } | PfError::NodeMissing { kind: Some(_), .. } => Verdict::Damaged,
                PfError::InvalidHeader(pfs_core::HeaderProblem::UnalignedHostSize { .. }) => Verdict::Damaged,
                _ => Verdict::Unreadable,
            };
            let label = if matches!(verdict, Verdict::Damaged) { "DAMAGED" } else { "UNREADABLE" };
            writeln!(out, "{}: {label}: {error}", path.display())?;
            if let PfError::NodeMac { offset, .. } | PfError::NodeMissing { kind: Some(_), offset, .. } =
                &error
            {
                writeln!(out, "  unreadable plaintext: from offset {offset} to the end of the file")?;
            }
            if !repaired {
                match assess_file(key, path) {
                    (journal, Some(Assessment::Applicable { records, .. })) => writeln!(
                        out,
                        "  note: {} holds the {records} node record(s) of the interrupted flush; \
                         `pfs check --repair` restores the last completed flush from it",
                        journal.describe()
                    )?,
                    (journal, Some(Assessment::Refused { problem, .. })) if problem.proves_key() => writeln!(
                        out,
                        "  note: the key is right (the recovery file's copy of node 0 \
                             authenticates under it), so node 0 is damaged, as a torn write leaves \
                             it; {} cannot restore it: {problem}",
                        journal.describe()
                    )?,
                    _ => {}
                }
            }
            return Ok(verdict);
        }
    };
    let problems = pf.check();
    let size = pf.len();
    let mut notes = Vec::new();
    if pending {
        notes.push(match (repaired, assess_file(key, path)) {
            (true, _) => "pending-write flag set (last committed state checked)".to_string(),
            (false, (journal, Some(Assessment::Applicable { records, .. }))) => format!(
                "pending-write flag set, recovery pending: {} holds the {records} node record(s) \
                 of the interrupted flush; the last written state was checked; `pfs check \
                 --repair` restores the last completed flush",
                journal.describe()
            ),
            (false, (journal, Some(Assessment::Refused { problem, .. }))) => format!(
                "pending-write flag set (last committed state checked); no usable recovery file \
                 ({}: {problem}), so it cannot be repaired",
                journal.describe()
            ),
            (false, _) => "pending-write flag set (last committed state checked)".to_string(),
        });
    }
    let expected_nodes = layout::host_node_count(size);
    if host_size / NODE_SIZE_U64 > expected_nodes {
        notes.push(format!(
            "{} trailing node(s) beyond the size, ignored",
            host_size / NODE_SIZE_U64 - expected_nodes
        ));
    }
    let notes = if notes.is_empty() { String::new() } else { format!("; note: {}", notes.join("; ")) };
    if problems.is_empty() {
        if !quiet {
            writeln!(out, "{}: ok ({} bytes, {} nodes){notes}", path.display(), size, expected_nodes)?;
        }
        return Ok(Verdict::Ok);
    }
    let lost: u64 = problems.iter().flat_map(|p| &p.unreadable).map(|r| r.end - r.start).sum();
    writeln!(
        out,
        "{}: DAMAGED: {} bad node(s), {lost} of {size} plaintext bytes unreadable{notes}",
        path.display(),
        problems.len()
    )?;
    for problem in &problems {
        let ranges: Vec<String> = problem
            .unreadable
            .iter()
            .map(|r| format!("{}..{} ({} bytes)", r.start, r.end, r.end - r.start))
            .collect();
        writeln!(out, "  {}; unreadable plaintext: {}", problem.error, ranges.join(", "))?;
    }
    Ok(Verdict::Damaged)
}
