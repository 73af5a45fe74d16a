//! The build step behind `pfs manifest TEMPLATE OUTPUT [-D NAME=VALUE]...`:
//! render → validate strictly → expand `sgx.trusted_files` with SHA-256 → final manifest
//! text → simulated measurement. Mirrors `gramine-manifest` (spec §1).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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
/// files relative to `cwd` and returns the final manifest with its measurement.
pub fn build(name: &str, template: &str, cwd: &Path, options: &BuildOptions) -> Result<Built, BuildError> {
    let rendered = render(name, template, &options.render)?;
    let (manifest, warnings) = Manifest::parse(&rendered, Mode::Build)?;
    let trusted = expand_trusted_files(&manifest.trusted_files, cwd)?;

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
    Ok(Built { manifest, measurement, warnings })
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
    io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// Expands trusted-file entries: hashes every file, recurses into directory URIs (ending in
/// `/`; sorted; symlinked directories are not descended), keeps hashes already present,
/// merges duplicates and refuses conflicting hashes. Relative URIs are relative to `cwd`.
/// Returns `(normalised URI without file:, sha256)` in first-seen order.
pub fn expand_trusted_files(
    entries: &[TrustedFile],
    cwd: &Path,
) -> Result<Vec<(String, [u8; 32])>, BuildError> {
    let mut out: Vec<(String, [u8; 32])> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut add = |uri: String, hash: [u8; 32]| -> Result<(), BuildError> {
        match index.get(&uri) {
            Some(&i) if out[i].1 != hash => Err(BuildError::TrustedConflict {
                uri,
                first: hex::encode(out[i].1),
                second: hex::encode(hash),
            }),
            Some(_) => Ok(()),
            None => {
                index.insert(uri.clone(), out.len());
                out.push((uri, hash));
                Ok(())
            }
        }
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
                let hash = sha256_file(&host.join(&rel))
                    .map_err(|source| BuildError::TrustedRead { uri: uri.clone(), source })?;
                add(uri, hash)?;
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
            let hash = match entry.sha256 {
                Some(h) => h,
                None => sha256_file(&host).map_err(read_err)?,
            };
            add(entry.uri.clone(), hash)?;
        }
    }
    Ok(out)
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
}
