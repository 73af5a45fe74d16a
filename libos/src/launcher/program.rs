//! The program's argv and environment (spec §3).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use super::{LaunchError, Log, TrustedFailure};
use crate::manifest::{ArgvSource, EnvValue, Manifest};

/// Reads a NUL-separated file (`gramine-argv-serializer` format), checking its hash when
/// it is a trusted file.
fn read_nul_file(
    manifest: &Manifest,
    uri: &str,
    cwd: &Path,
    what: &str,
    log: &Log,
) -> Result<Vec<OsString>, LaunchError> {
    let bytes = std::fs::read(cwd.join(uri))
        .map_err(|e| LaunchError::Config(format!("cannot read {what} file:{uri}: {e}")))?;
    match manifest.trusted_files.iter().find(|t| t.uri == uri).and_then(|t| t.sha256) {
        Some(expected) => {
            let actual: [u8; 32] =
                sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes)).into();
            if actual != expected {
                return Err(LaunchError::Trusted {
                    uri: uri.to_owned(),
                    failure: TrustedFailure::Mismatch {
                        expected: hex::encode(expected),
                        actual: hex::encode(actual),
                    },
                });
            }
        }
        None => log.warn(format_args!(
            "{what} file:{uri} is not a hashed trusted file; its content is not verified"
        )),
    }
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let Some(body) = bytes.strip_suffix(b"\0") else {
        return Err(LaunchError::Config(format!("{what} file:{uri} must end with a NUL byte")));
    };
    Ok(body.split(|&b| b == 0).map(|s| OsString::from_vec(s.to_vec())).collect())
}

/// argv per spec §3.
pub(super) fn build_argv(
    manifest: &Manifest,
    args: &[OsString],
    cwd: &Path,
    log: &Log,
) -> Result<Vec<OsString>, LaunchError> {
    let discard = |source: &str| {
        if !args.is_empty() {
            log.error(format_args!(
                "command-line arguments are discarded ({source}); set loader.insecure__use_cmdline_argv = true to use them"
            ));
        }
    };
    Ok(match &manifest.argv {
        ArgvSource::Explicit(argv) => {
            discard("the manifest sets loader.argv");
            argv.iter().map(OsString::from).collect()
        }
        ArgvSource::SrcFile(uri) => {
            discard("the manifest sets loader.argv_src_file");
            let argv = read_nul_file(manifest, uri, cwd, "loader.argv_src_file", log)?;
            if argv.is_empty() {
                return Err(LaunchError::Config(format!("loader.argv_src_file file:{uri} is empty")));
            }
            argv
        }
        ArgvSource::CommandLine => {
            std::iter::once(OsString::from(&manifest.entrypoint)).chain(args.iter().cloned()).collect()
        }
        ArgvSource::Entrypoint => {
            discard("the manifest sets no argv");
            vec![OsString::from(&manifest.entrypoint)]
        }
    })
}

/// The environment per spec §3: empty by default, plus `loader.env_src_file`, plus
/// `loader.env.*` (which wins), or the whole host environment with
/// `loader.insecure__use_host_env`.
pub(super) fn build_env(
    manifest: &Manifest,
    cwd: &Path,
    log: &Log,
) -> Result<Vec<(OsString, OsString)>, LaunchError> {
    let mut env: Vec<(OsString, OsString)> =
        if manifest.env.use_host_env { std::env::vars_os().collect() } else { Vec::new() };
    let set = |env: &mut Vec<(OsString, OsString)>, name: OsString, value: OsString| match env
        .iter_mut()
        .find(|(k, _)| *k == name)
    {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    };
    if let Some(uri) = &manifest.env.src_file {
        for entry in read_nul_file(manifest, uri, cwd, "loader.env_src_file", log)? {
            let bytes = entry.into_vec();
            let Some(eq) = bytes.iter().position(|&b| b == b'=') else {
                return Err(LaunchError::Config(format!(
                    "loader.env_src_file file:{uri}: an entry has no `=`"
                )));
            };
            set(
                &mut env,
                OsString::from_vec(bytes[..eq].to_vec()),
                OsString::from_vec(bytes[eq + 1..].to_vec()),
            );
        }
    }
    for (name, value) in &manifest.env.vars {
        match value {
            EnvValue::Value(v) => set(&mut env, name.into(), v.into()),
            EnvValue::Passthrough => {
                if let Some(v) = std::env::var_os(name) {
                    set(&mut env, name.into(), v);
                }
            }
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{LogLevel, Mode};

    fn manifest(text: &str) -> Manifest {
        Manifest::parse(text, Mode::Run).unwrap().0
    }

    const QUIET: Log = Log { level: LogLevel::None, file: None };

    #[test]
    fn argv_rules() {
        let args = vec![OsString::from("a"), OsString::from("b")];
        let cwd = Path::new("/");
        let m = manifest("libos.entrypoint = \"/bin/x\"\n");
        assert_eq!(build_argv(&m, &args, cwd, &QUIET).unwrap(), vec![OsString::from("/bin/x")]);
        let m = manifest("libos.entrypoint = \"/bin/x\"\nloader.argv = [\"x\", \"-v\"]\n");
        assert_eq!(build_argv(&m, &args, cwd, &QUIET).unwrap(), vec![OsString::from("x"), "-v".into()]);
        let m = manifest("libos.entrypoint = \"/bin/x\"\nloader.insecure__use_cmdline_argv = true\n");
        assert_eq!(
            build_argv(&m, &args, cwd, &QUIET).unwrap(),
            vec![OsString::from("/bin/x"), "a".into(), "b".into()]
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("args"), b"prog\0--flag\0\0").unwrap();
        let m = manifest("libos.entrypoint = \"/bin/x\"\nloader.argv_src_file = \"file:args\"\n");
        assert_eq!(
            build_argv(&m, &[], dir.path(), &QUIET).unwrap(),
            vec![OsString::from("prog"), "--flag".into(), "".into()]
        );
        std::fs::write(dir.path().join("args"), b"prog").unwrap();
        assert!(build_argv(&m, &[], dir.path(), &QUIET).unwrap_err().to_string().contains("NUL"));
    }

    #[test]
    fn env_is_empty_by_default_and_manifest_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("env"), b"A=from-file\0B=b\0").unwrap();
        let m = manifest(
            "libos.entrypoint = \"/bin/x\"\nloader.env_src_file = \"file:env\"\nloader.env.A = \"manifest\"\n\
             loader.env.PATH = { passthrough = true }\nloader.env.NOT_SET_ANYWHERE_X = { passthrough = true }\n",
        );
        let env = build_env(&m, dir.path(), &QUIET).unwrap();
        let names: Vec<_> = env.iter().map(|(k, _)| k.to_string_lossy().into_owned()).collect();
        assert_eq!(names, vec!["A", "B", "PATH"]);
        assert_eq!(env[0].1, "manifest");
        assert_eq!(env[2].1, std::env::var_os("PATH").unwrap());
        let m = manifest("libos.entrypoint = \"/bin/x\"\nloader.insecure__use_host_env = true\n");
        assert!(build_env(&m, dir.path(), &QUIET).unwrap().iter().any(|(k, _)| k == "PATH"));
    }
}
