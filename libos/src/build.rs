//! The build step behind `pfs manifest TEMPLATE OUTPUT [-D NAME=VALUE]...`:
//! render → validate strictly → expand `sgx.trusted_files` with SHA-256 → final manifest
//! text → simulated measurement. Mirrors `gramine-manifest` (spec §1).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::hashcache::{FileKey, HashCache};
use crate::manifest::{Diagnostic, Manifest, ManifestError, Mode, TrustedFile};
use crate::measure::{SimMeasurement, measure};
use crate::template::{RenderOptions, TemplateError, render};

/// Options of the build step.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Template rendering inputs.
    pub render: RenderOptions,
    /// Pin this launcher binary: write `loader.entrypoint.uri`/`sha256` for it, which makes
    /// it part of the measurement and makes `pfs run` refuse any other launcher.
    pub pin_launcher: Option<PathBuf>,
}

/// The result of the build step.
#[derive(Debug, Clone)]
pub struct Built {
    /// The final manifest, as `pfs run` will parse it.
    pub manifest: Manifest,
    /// Its simulated measurement.
    pub measurement: SimMeasurement,
    /// Warnings found while validating.
    pub warnings: Vec<Diagnostic>,
    /// What hashing the trusted files did.
    pub hash_stats: HashStats,
}

/// Why the build step failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The template could not be rendered.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The rendered manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A trusted file could not be read.
    #[error("trusted file {uri}: {source}")]
    TrustedRead {
        /// The URI (without `file:`).
        uri: String,
        /// The I/O error.
        source: io::Error,
    },
    /// A trusted-file entry names the wrong kind of file.
    #[error("trusted file {uri}: {message}")]
    TrustedKind {
        /// The URI (without `file:`).
        uri: String,
        /// What is wrong.
        message: String,
    },
    /// The same trusted file is listed with two different hashes.
    #[error("trusted file {uri} is listed with two different hashes ({first} and {second})")]
    TrustedConflict {
        /// The URI (without `file:`).
        uri: String,
        /// The first hash (hex).
        first: String,
        /// The other hash (hex).
        second: String,
    },
    /// The launcher binary to pin could not be hashed.
    #[error("cannot hash launcher {}: {source}", path.display())]
    Launcher {
        /// The binary.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The final manifest could not be serialised (a bug).
    #[error("cannot write the final manifest: {0}")]
    Serialize(String),
}

/// Renders `template` (named `name` in messages), validates it strictly, expands the trusted
/// files relative to `cwd` and returns the final manifest with its measurement. Hashes on
/// all cores without a cache; [`build_with`] chooses.
pub fn build(name: &str, template: &str, cwd: &Path, options: &BuildOptions) -> Result<Built, BuildError> {
    build_with(name, template, cwd, options, &mut Hashing::default())
}

/// [`build`] with the trusted files hashed as `hashing` says (threads, cache, progress).
pub fn build_with(
    name: &str,
    template: &str,
    cwd: &Path,
    options: &BuildOptions,
    hashing: &mut Hashing<'_>,
) -> Result<Built, BuildError> {
    let rendered = render(name, template, &options.render)?;
    let (manifest, warnings) = Manifest::parse(&rendered, Mode::Build)?;
    let (trusted, hash_stats) = expand_trusted_files_with(&manifest.trusted_files, cwd, hashing)?;

    let mut doc: toml::Table =
        rendered.parse().map_err(|e: toml::de::Error| BuildError::Serialize(e.to_string()))?;
    if !trusted.is_empty() {
        let list = trusted
            .iter()
            .map(|(uri, hash)| {
                let mut t = toml::Table::new();
                t.insert("uri".into(), format!("file:{uri}").into());
                t.insert("sha256".into(), hex::encode(hash).into());
                toml::Value::Table(t)
            })
            .collect();
        table_at(&mut doc, "sgx").insert("trusted_files".into(), toml::Value::Array(list));
    }
    if let Some(launcher) = &options.pin_launcher {
        let hash = sha256_file(launcher)
            .map_err(|source| BuildError::Launcher { path: launcher.clone(), source })?;
        let entry = table_at(table_at(&mut doc, "loader"), "entrypoint");
        entry.insert("uri".into(), format!("file:{}", launcher.display()).into());
        entry.insert("sha256".into(), hex::encode(hash).into());
    }
    let text = toml::to_string(&doc).map_err(|e| BuildError::Serialize(e.to_string()))?;
    // The final text repeats the rendered one's warnings; report them once.
    let (manifest, _) = Manifest::parse(&text, Mode::Build)?;
    let measurement = measure(&manifest);
    Ok(Built { manifest, measurement, warnings, hash_stats })
}

fn table_at<'t>(table: &'t mut toml::Table, key: &str) -> &'t mut toml::Table {
    let slot = table.entry(key).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !slot.is_table() {
        *slot = toml::Value::Table(toml::Table::new());
    }
    match slot {
        toml::Value::Table(t) => t,
        _ => unreachable!("BUG: slot was just made a table"),
    }
}

/// SHA-256 of a file's contents.
pub fn sha256_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    hash_reader(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// Feeds `reader` to `hasher` in 256 KiB reads (io::copy's 8 KiB costs a syscall per 8 KiB).
fn hash_reader(reader: &mut impl Read, hasher: &mut Sha256) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Progress of trusted-file hashing, given to [`Hashing::progress`] after every file.
#[derive(Debug, Clone, Copy)]
pub struct HashProgress {
    /// Files done (hashed or found in the cache).
    pub done: usize,
    /// Files to do.
    pub total: usize,
}

/// A progress callback; it is called from the hashing threads.
pub type ProgressFn<'a> = dyn Fn(HashProgress) + Send + Sync + 'a;

/// How trusted files are hashed: threads, cache, progress.
#[derive(Default)]
pub struct Hashing<'a> {
    /// Hashing threads; `None` means `std::thread::available_parallelism`.
    pub threads: Option<usize>,
    /// The hash cache (see [`crate::hashcache`]); `None` hashes everything.
    pub cache: Option<&'a mut HashCache>,
    /// Called after every file.
    pub progress: Option<&'a ProgressFn<'a>>,
}

/// What hashing the trusted files did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashStats {
    /// Distinct files whose hash was needed.
    pub files: usize,
    /// Of those, files read and hashed.
    pub hashed: usize,
    /// Of those, files whose hash came from the cache.
    pub cached: usize,
    /// Bytes read to hash.
    pub bytes: u64,
    /// Hashing threads used.
    pub threads: usize,
}

/// One file to hash and what came of it.
struct Job {
    host: PathBuf,
    uri: String,
}

struct Hashed {
    hash: [u8; 32],
    /// The key to cache it under (`None`: not cacheable); cache hits keep theirs.
    key: Option<FileKey>,
    bytes: Option<u64>,
}

/// Answers from the cache when the file's key (a `stat`, no open) is there; otherwise opens
/// it (non-blocking, so a FIFO cannot hang the build), refuses non-regular files, and reads
/// and hashes it, keying the result by the opened file's own status.
fn hash_job(job: &Job, cache: Option<&HashCache>) -> io::Result<Hashed> {
    if let Some(cache) = cache {
        let meta = fs::metadata(&job.host)?;
        if meta.is_file() {
            let key = FileKey::of(&meta);
            if let Some(hash) = cache.get(&key) {
                return Ok(Hashed { hash, key: Some(key), bytes: None });
            }
        }
    }
    let mut file = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&job.host)?;
    let before = file.metadata()?;
    if !before.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "is not a regular file"));
    }
    let key = FileKey::of(&before);
    let mut hasher = Sha256::new();
    let bytes = hash_reader(&mut file, &mut hasher)?;
    let after = FileKey::of(&file.metadata()?);
    // Changed while read, or changed so recently that a same-tick write would not show:
    // the hash is right for what was read, but the key may not identify that content.
    let cacheable = after == key && bytes == before.len() && !key.is_racy(SystemTime::now());
    Ok(Hashed { hash: hasher.finalize().into(), key: cacheable.then_some(key), bytes: Some(bytes) })
}

/// Hashes `jobs` on `threads` threads; results in job order, or the first job's error.
fn hash_all(
    jobs: &[Job],
    threads: usize,
    cache: Option<&HashCache>,
    progress: Option<&ProgressFn<'_>>,
) -> Result<Vec<Hashed>, BuildError> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let total = jobs.len();
    let mut results: Vec<(usize, io::Result<Hashed>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        let r = hash_job(job, cache);
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        mine.push((i, r));
                        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if let Some(p) = progress {
                            p(HashProgress { done: d, total });
                        }
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    results.sort_by_key(|(i, _)| *i);
    if let Some((i, Err(_))) = results.iter().find(|(_, r)| r.is_err()) {
        let i = *i;
        let (_, r) = results.swap_remove(results.iter().position(|(j, _)| *j == i).unwrap_or(0));
        let source = r.err().unwrap_or_else(|| io::Error::other("BUG: error vanished"));
        return Err(BuildError::TrustedRead { uri: jobs[i].uri.clone(), source });
    }
    Ok(results.into_iter().filter_map(|(_, r)| r.ok()).collect())
}

/// Expanded trusted files: `(normalised URI without file:, sha256)` in first-seen order.
pub type TrustedList = Vec<(String, [u8; 32])>;

/// Expands trusted-file entries with [`Hashing::default`] (all cores, no cache); see
/// [`expand_trusted_files_with`].
pub fn expand_trusted_files(
    entries: &[TrustedFile],
    cwd: &Path,
) -> Result<Vec<(String, [u8; 32])>, BuildError> {
    expand_trusted_files_with(entries, cwd, &mut Hashing::default()).map(|(v, _)| v)
}

/// Expands trusted-file entries: hashes every file, recurses into directory URIs (ending in
/// `/`; sorted; symlinked directories are not descended), keeps hashes already present,
/// merges duplicates and refuses conflicting hashes. Relative URIs are relative to `cwd`.
/// Returns `(normalised URI without file:, sha256)` in first-seen order.
///
/// The tree walk is sequential; the hashing runs on [`Hashing::threads`] threads and asks
/// [`Hashing::cache`] first. Each distinct host path is hashed once.
pub fn expand_trusted_files_with(
    entries: &[TrustedFile],
    cwd: &Path,
    hashing: &mut Hashing<'_>,
) -> Result<(TrustedList, HashStats), BuildError> {
    // Phase 1: the list, in order; `Err(j)` = the hash of jobs[j].
    let mut listed: Vec<(String, Result<[u8; 32], usize>)> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    // Keyed by the path's bytes: hashing a `Path` walks its components, 10× slower.
    let mut job_of: HashMap<std::ffi::OsString, usize> = HashMap::new();
    let mut want = |uri: String, host: PathBuf, jobs: &mut Vec<Job>| -> usize {
        *job_of.entry(host.clone().into_os_string()).or_insert_with(|| {
            jobs.push(Job { host, uri });
            jobs.len() - 1
        })
    };
    for entry in entries {
        let host = cwd.join(entry.uri.trim_end_matches('/'));
        let read_err = |source| BuildError::TrustedRead { uri: entry.uri.clone(), source };
        if entry.is_dir() {
            let meta = fs::metadata(&host).map_err(read_err)?;
            if !meta.is_dir() {
                return Err(BuildError::TrustedKind {
                    uri: entry.uri.clone(),
                    message: "is not a directory; drop the trailing `/`".into(),
                });
            }
            let mut files = Vec::new();
            walk(&host, "", &mut files).map_err(read_err)?;
            files.sort();
            for rel in files {
                let uri = format!("{}{rel}", entry.uri);
                let j = want(uri.clone(), host.join(&rel), &mut jobs);
                listed.push((uri, Err(j)));
            }
        } else {
            let meta = fs::metadata(&host).map_err(read_err)?;
            if meta.is_dir() {
                return Err(BuildError::TrustedKind {
                    uri: entry.uri.clone(),
                    message: format!(
                        "is a directory; write `file:{}/` to trust everything below it",
                        entry.uri
                    ),
                });
            }
            match entry.sha256 {
                Some(h) => listed.push((entry.uri.clone(), Ok(h))),
                None => {
                    let j = want(entry.uri.clone(), host, &mut jobs);
                    listed.push((entry.uri.clone(), Err(j)));
                }
            }
        }
    }

    // Phase 2: hash on all cores, the cache first.
    let threads = hashing
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, jobs.len().max(1));
    let hashed = hash_all(&jobs, threads, hashing.cache.as_deref(), hashing.progress)?;
    let mut stats = HashStats { files: jobs.len(), threads, ..HashStats::default() };
    for h in &hashed {
        match h.bytes {
            Some(b) => {
                stats.hashed += 1;
                stats.bytes += b;
            }
            None => stats.cached += 1,
        }
    }
    if let Some(cache) = hashing.cache.as_deref_mut() {
        cache.extend(hashed.iter().filter_map(|h| h.key.map(|k| (k, h.hash))));
    }

    // Phase 3: merge in first-seen order.
    let mut out: Vec<(String, [u8; 32])> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (uri, hash) in listed {
        let hash = match hash {
            Ok(h) => h,
            Err(j) => hashed[j].hash,
        };
        match index.get(&uri) {
            Some(&i) if out[i].1 != hash => {
                return Err(BuildError::TrustedConflict {
                    uri,
                    first: hex::encode(out[i].1),
                    second: hex::encode(hash),
                });
            }
            Some(_) => {}
            None => {
                index.insert(uri.clone(), out.len());
                out.push((uri, hash));
            }
        }
    }
    Ok((out, stats))
}

/// Collects the regular files below `dir` as relative paths; symlinks to directories are
/// not followed, symlinks to files are (their target's content is what a reader gets).
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            walk(&entry.path(), &rel, out)?;
        } else if file_type.is_file() || (file_type.is_symlink() && entry.path().is_file()) {
            out.push(rel);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::RenderOptions;

    fn opts() -> BuildOptions {
        BuildOptions {
            render: RenderOptions { env: Default::default(), ..RenderOptions::default() },
            pin_launcher: None,
        }
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[test]
    fn expands_directories_sorted_merges_duplicates_and_keeps_given_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("lib/sub")).unwrap();
        fs::write(d.join("lib/b.py"), "b").unwrap();
        fs::write(d.join("lib/a.py"), "a").unwrap();
        fs::write(d.join("lib/sub/c.py"), "c").unwrap();
        fs::write(d.join("app.py"), "print(1)").unwrap();
        std::os::unix::fs::symlink(d.join("lib"), d.join("lib/sub/loop")).unwrap();
        let given = "11".repeat(32);
        let template = format!(
            "libos.entrypoint = \"/usr/bin/python3\"\nsgx.trusted_files = [\n  \"file:{{{{ app }}}}\",\n  \
             \"file:lib/\",\n  \"file:./lib/a.py\",\n  {{ uri = \"file:pinned\", sha256 = \"{given}\" }},\n]\n"
        );
        fs::write(d.join("pinned"), "whatever").unwrap();
        let mut o = opts();
        o.render.defines.push(("app".into(), crate::template::DefineValue::Str("app.py".into())));
        let built = build("t", &template, d, &o).unwrap();
        let got: Vec<(String, String)> = built
            .manifest
            .trusted_files
            .iter()
            .map(|t| (t.uri.clone(), hex::encode(t.sha256.expect("hashed"))))
            .collect();
        assert_eq!(
            got,
            vec![
                ("app.py".into(), sha(b"print(1)")),
                ("lib/a.py".into(), sha(b"a")),
                ("lib/b.py".into(), sha(b"b")),
                ("lib/sub/c.py".into(), sha(b"c")),
                ("pinned".into(), given),
            ]
        );
        // The final text parses back to the same manifest and carries the measurement inputs.
        let (again, _) = Manifest::parse(built.manifest.text(), Mode::Run).unwrap();
        assert_eq!(again.trusted_files, built.manifest.trusted_files);
        assert_eq!(measure(&again), built.measurement);
    }

    #[test]
    fn conflicting_hashes_and_wrong_kinds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("lib")).unwrap();
        fs::write(d.join("f"), "x").unwrap();
        let base = "libos.entrypoint = \"/x\"\n";
        let conflict = format!(
            "{base}sgx.trusted_files = [ \"file:f\", {{ uri = \"file:f\", sha256 = \"{}\" }} ]\n",
            "00".repeat(32)
        );
        assert!(
            matches!(build("t", &conflict, d, &opts()), Err(BuildError::TrustedConflict { uri, .. }) if uri == "f")
        );
        let dir_without_slash = format!("{base}sgx.trusted_files = [ \"file:lib\" ]\n");
        let e = build("t", &dir_without_slash, d, &opts()).unwrap_err();
        assert!(e.to_string().contains("file:lib/"), "{e}");
        let file_with_slash = format!("{base}sgx.trusted_files = [ \"file:f/\" ]\n");
        assert!(matches!(build("t", &file_with_slash, d, &opts()), Err(BuildError::TrustedKind { .. })));
        let missing = format!("{base}sgx.trusted_files = [ \"file:nope\" ]\n");
        let e = build("t", &missing, d, &opts()).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn unknown_keys_fail_the_build() {
        let e =
            build("t", "libos.entrypoint = \"/x\"\nsgx.bogus = 1\n", Path::new("."), &opts()).unwrap_err();
        assert!(e.to_string().contains("line 2: `sgx.bogus`: unknown key"), "{e}");
    }

    #[test]
    fn measurement_depends_on_every_input() {
        let d = Path::new(".");
        let m = |t: &str| build("t", t, d, &opts()).unwrap().measurement;
        let base = m("libos.entrypoint = \"/x\"\n");
        assert_eq!(base, m("libos.entrypoint = \"/x\"\n"), "deterministic");
        assert_eq!(base.launcher_digest, [0; 32], "launcher unpinned by default");
        assert_ne!(base.value, m("libos.entrypoint = \"/y\"\n").value);
        assert_ne!(base.value, m("libos.entrypoint = \"/x\"\nsgx.max_threads = 8\n").value);
        assert_ne!(base.value, m("libos.entrypoint = \"/x\"\nsgx.edmm_enable = true\n").value);

        let launcher = tempfile::NamedTempFile::new().unwrap();
        fs::write(launcher.path(), "launcher v1").unwrap();
        let mut o = opts();
        o.pin_launcher = Some(launcher.path().to_owned());
        let pinned = build("t", "libos.entrypoint = \"/x\"\n", d, &o).unwrap();
        assert_eq!(pinned.measurement.launcher_digest, Sha256::digest(b"launcher v1").as_slice());
        assert_eq!(pinned.manifest.loader_entrypoint.sha256, Some(pinned.measurement.launcher_digest));
    }

    #[test]
    fn measurement_matches_its_documented_definition() {
        let (m, _) = Manifest::parse(
            "libos.entrypoint = \"/x\"\nsgx.enclave_size = \"1G\"\nsgx.max_threads = 2\n",
            Mode::Run,
        )
        .unwrap();
        let mut h = Sha256::new();
        h.update(b"ppml-sim-mrenclave-v1");
        h.update(Sha256::digest(m.text().as_bytes()));
        h.update([0u8; 32]);
        h.update((1u64 << 30).to_le_bytes());
        h.update(2u32.to_le_bytes());
        h.update([0u8]);
        assert_eq!(measure(&m).value, <[u8; 32]>::from(h.finalize()));
    }

    /// A tree of `n` files (content derived from the index) and a template trusting it.
    fn tree(d: &Path, n: usize) -> String {
        for i in 0..n {
            let sub = d.join(format!("t/{}", i % 7));
            fs::create_dir_all(&sub).unwrap();
            fs::write(sub.join(format!("f{i}")), format!("file {i} ").repeat(i % 50)).unwrap();
        }
        "libos.entrypoint = \"/x\"\nsgx.trusted_files = [ \"file:t/\" ]\n".into()
    }

    #[test]
    fn threads_do_not_change_the_result() {
        let dir = tempfile::tempdir().unwrap();
        let t = tree(dir.path(), 300);
        let one =
            build_with("t", &t, dir.path(), &opts(), &mut Hashing { threads: Some(1), ..Default::default() })
                .unwrap();
        let four =
            build_with("t", &t, dir.path(), &opts(), &mut Hashing { threads: Some(4), ..Default::default() })
                .unwrap();
        assert_eq!(one.manifest.text(), four.manifest.text());
        assert_eq!((one.hash_stats.threads, four.hash_stats.threads), (1, 4));
        assert_eq!(four.hash_stats.hashed, 300);
        // Every hash is the file's SHA-256, in sorted order.
        let mut expect: Vec<(String, String)> = Vec::new();
        for i in 0..300 {
            let uri = format!("t/{}/f{i}", i % 7);
            expect.push((uri.clone(), sha(&fs::read(dir.path().join(&uri)).unwrap())));
        }
        expect.sort();
        let got: Vec<(String, String)> = four
            .manifest
            .trusted_files
            .iter()
            .map(|t| (t.uri.clone(), hex::encode(t.sha256.unwrap())))
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn cache_is_used_and_invalidated() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let t = tree(d, 50);
        // Past the racy window, so that the first build may cache every file.
        std::thread::sleep(crate::hashcache::RACY_WINDOW + std::time::Duration::from_millis(200));
        let cache_file = d.join("cache/hashes");
        let run = |expect_cached: usize, expect_hashed: usize| {
            let (mut cache, _) = HashCache::load(&cache_file);
            let built = build_with(
                "t",
                &t,
                d,
                &opts(),
                &mut Hashing { cache: Some(&mut cache), ..Default::default() },
            )
            .unwrap();
            cache.save(&cache_file).unwrap();
            assert_eq!(
                (built.hash_stats.cached, built.hash_stats.hashed),
                (expect_cached, expect_hashed),
                "cached, hashed"
            );
            let plain = build("t", &t, d, &opts()).unwrap();
            assert_eq!(built.manifest.text(), plain.manifest.text(), "the cache never changes a hash");
        };
        run(0, 50);
        run(50, 0);
        // Same size, same mtime (set back with utimensat), new content: ctime moved.
        let f = d.join("t/3/f3");
        let mtime = fs::metadata(&f).unwrap().modified().unwrap();
        fs::write(&f, b"FILE 3 FILE 3 FILE 3 ").unwrap();
        fs::File::options().write(true).open(&f).unwrap().set_modified(mtime).unwrap();
        run(49, 1);
        // The rewritten file is racy now (fresh ctime), so it is hashed again until it ages.
        run(49, 1);
        // A damaged cache file means hash everything, with the same result.
        let mut bytes = fs::read(&cache_file).unwrap();
        bytes[40] ^= 1;
        fs::write(&cache_file, &bytes).unwrap();
        run(0, 50);
    }
}
