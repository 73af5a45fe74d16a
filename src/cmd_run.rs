//! `pfs manifest` and `pfs run`: thin wrappers over the `libos` crate.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use libos::launcher::{
    EncryptedMount, EncryptedMountRequest, EncryptedMounter, KeyProvider, ProvisionRequest,
    ProvisionedSecret, QuoteProvider, SeamError,
};

/// Long help of `pfs manifest`.
pub const MANIFEST_ABOUT: &str = "\
Render a Gramine manifest template, validate it and hash its trusted files (gramine-manifest).

The template is Jinja (env, -D defines, python.*, ldd(), gramine.libos, gramine.runtimedir()).
The result is checked against the supported manifest subset (unknown keys and syntax Gramine
removed are errors, with the line), every sgx.trusted_files entry gets its SHA-256 (directories
ending in / are expanded), and the final manifest is written to OUTPUT. Relative file: URIs are
relative to the current directory. The printed simulated measurement is what a key server's
policy must expect; it is NOT an SGX MRENCLAVE (see docs/LIBOS.md).";

/// Examples of `pfs manifest`.
pub const MANIFEST_EXAMPLES: &str = "\
Examples:
  pfs manifest app.manifest.template app.manifest -Dentrypoint=/usr/bin/python3
  pfs manifest --pin-launcher app.manifest.template app.manifest  # measure this pfs too";

/// Long help of `pfs run`.
pub const RUN_ABOUT: &str = "\
Run a manifest's program in the simulated TEE (gramine-sgx / gramine-direct).

The program sees only the manifest's file system (fs.root and fs.mounts, in a private mount
namespace), its argv and environment; trusted files are verified before it starts. The exit
status is the program's (128+N for signal N); launcher failures use 120-127 (docs/LIBOS.md).
SIMULATED: nothing is protected against the host, as the first line of output says.";

/// Examples of `pfs run`.
pub const RUN_EXAMPLES: &str = "\
Examples:
  pfs run app.manifest
  pfs run app script.py --flag    # app.manifest; args used with loader.insecure__use_cmdline_argv";

/// `pfs manifest TEMPLATE OUTPUT [-D NAME=VALUE]...`
#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// The manifest template (Gramine-style Jinja).
    pub template: PathBuf,
    /// Where to write the final manifest.
    pub output: PathBuf,
    /// Template variable: `-D name=value`, or `-D name` for `true`.
    #[arg(short = 'D', value_name = "NAME[=VALUE]")]
    pub define: Vec<String>,
    /// Pin this `pfs` binary: record its SHA-256 in `loader.entrypoint` so that it becomes
    /// part of the simulated measurement and `pfs run` refuses any other launcher.
    #[arg(long)]
    pub pin_launcher: bool,
    /// The trusted-file hash cache [default: $XDG_CACHE_HOME/pfs/trusted-hashes.v1, else
    /// ~/.cache/pfs/trusted-hashes.v1]. Entries are keyed by (device, inode, size, mtime,
    /// ctime); a damaged cache is ignored and rewritten.
    #[arg(long, value_name = "FILE", conflicts_with = "no_hash_cache")]
    pub hash_cache: Option<PathBuf>,
    /// Hash every trusted file, reading and writing no cache.
    #[arg(long)]
    pub no_hash_cache: bool,
}

/// `pfs run MANIFEST [ARGS]...`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The manifest (`NAME` means `NAME.manifest` when `NAME` does not exist).
    pub manifest: PathBuf,
    /// Arguments for the program (used only with `loader.insecure__use_cmdline_argv`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

/// Renders, validates and expands a manifest template, writes the final manifest and prints
/// its simulated measurement.
pub fn run_manifest(args: &ManifestArgs) -> anyhow::Result<()> {
    let template = std::fs::read_to_string(&args.template)
        .with_context(|| format!("reading template {}", args.template.display()))?;
    let exe = std::env::current_exe().context("locating the pfs binary")?;
    let options = libos::build::BuildOptions {
        render: libos::template::RenderOptions {
            defines: args.define.iter().map(|d| libos::template::DefineValue::parse_define(d)).collect(),
            libos: exe.clone(),
            ..Default::default()
        },
        pin_launcher: args.pin_launcher.then_some(exe),
    };
    let cwd = std::env::current_dir().context("getting the current directory")?;
    let cache_path = if args.no_hash_cache {
        None
    } else {
        args.hash_cache.clone().or_else(libos::hashcache::default_path)
    };
    let mut cache = cache_path.as_ref().map(|p| {
        let (cache, outcome) = libos::hashcache::HashCache::load(p);
        if let libos::hashcache::LoadOutcome::Ignored(why) = outcome {
            eprintln!("pfs manifest: warning: hash cache {why}");
        }
        cache
    });
    let bar = hash_progress_bar();
    let bar = &bar;
    let progress = move |p: libos::build::HashProgress| {
        if let Some(bar) = bar {
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
        }
    };
    let mut hashing =
        libos::build::Hashing { threads: None, cache: cache.as_mut(), progress: Some(&progress) };
    let built = libos::build::build_with(
        &args.template.display().to_string(),
        &template,
        &cwd,
        &options,
        &mut hashing,
    );
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let built = built?;
    for w in &built.warnings {
        eprintln!("pfs manifest: warning: {w}");
    }
    if let (Some(cache), Some(path)) = (&cache, &cache_path) {
        // A cache that cannot be written costs the next run time, not correctness.
        if let Err(e) = cache.save(path) {
            eprintln!("pfs manifest: warning: cannot write hash cache {}: {e}", path.display());
        }
    }
    let s = built.hash_stats;
    eprintln!(
        "pfs manifest: {} trusted file(s): {} hashed ({}), {} from the cache, {} thread(s)",
        s.files,
        s.hashed,
        crate::size::format_size(s.bytes),
        s.cached,
        s.threads
    );
    std::fs::write(&args.output, built.manifest.text())
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!("wrote {} with {} trusted file(s)", args.output.display(), built.manifest.trusted_files.len());
    println!("simulated measurement (NOT an SGX MRENCLAVE): {}", built.measurement);
    Ok(())
}

/// A file-count progress line on stderr, only when stderr is a terminal.
fn hash_progress_bar() -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
    let style = indicatif::ProgressStyle::with_template(
        "hashing trusted files [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

/// Runs the program of a manifest in the simulated TEE and returns its exit code.
///
/// Encrypted mounts are served by pfs-fuse in this process and keys are provisioned by the
/// attest client with the simulated attester (builds with the `insecure-sim` feature).
/// Must be called before the process starts any thread (it creates the mount namespace).
pub fn run_run(args: &RunArgs) -> u8 {
    // pfs-fuse says why a file was refused (wrong key, tampering, a foreign or misplaced
    // file) in one `log` line per failure; the program itself only sees EACCES or EIO.
    if log::set_boxed_logger(Box::new(MountLogger)).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    let mut mounter = PfsFuseMounter;
    let mut provider = SimProvisioning;
    let launcher = libos::launcher::Launcher {
        mounter: Some(&mut mounter),
        key_provider: Some(&mut provider),
        quote_provider: sim_quotes(),
    };
    libos::launcher::main(&args.manifest, &args.args, launcher)
}

/// Prints pfs-fuse's warnings and errors during `pfs run`, naming their origin.
struct MountLogger;

impl log::Log for MountLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn && m.target().starts_with("pfs")
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let level = if r.level() == log::Level::Error { "error" } else { "warning" };
            eprintln!("pfs run: encrypted mount: {level}: {}", r.args());
        }
    }
    fn flush(&self) {}
}

/// The `EncryptedMounter` seam: an in-process pfs-fuse mount per encrypted directory.
///
/// Files are bound to `uri/REL` (the manifest's URI path, relative kept relative), exactly
/// Gramine's rule, because the request's `uri` is passed as pfs-fuse's path prefix.
struct PfsFuseMounter;

/// A live pfs-fuse mount of the launcher.
struct PfsFuseMount(pfs_fuse::MountHandle);

impl EncryptedMounter for PfsFuseMounter {
    fn mount(&mut self, r: &EncryptedMountRequest<'_>) -> Result<Box<dyn EncryptedMount>, SeamError> {
        let key = r.key.cloned().ok_or_else(|| {
            format!(
                "encrypted mount {}: no key named {:?}: set fs.insecure__keys.{0} or provision it with \
                 SECRET_PROVISION_SET_KEY = {0:?}",
                r.view_path, r.key_name
            )
        })?;
        let mut cfg = pfs_fuse::MountConfig::new(r.host_dir, key);
        cfg.path_prefix = Some(r.uri.as_bytes().to_vec());
        // Gramine keeps recovery files only for mounts that ask (`enable_recovery`).
        cfg.recovery = r.enable_recovery;
        let handle = pfs_fuse::mount(cfg, r.target)
            .map_err(|e| format!("encrypted mount {} (host {}): {e}", r.view_path, r.host_dir.display()))?;
        Ok(Box::new(PfsFuseMount(handle)))
    }
}

impl EncryptedMount for PfsFuseMount {
    fn unmount(self: Box<Self>) -> Result<(), SeamError> {
        let at = self.0.mountpoint().to_owned();
        self.0.unmount().map_err(|e| format!("unmounting the encrypted mount at {}: {e}", at.display()))?;
        Ok(())
    }
}

/// The `KeyProvider` seam: Gramine's secret provisioning through the attest client.
///
/// There is no SGX here, so the evidence comes from `attest::sim::SimAttester` (its report
/// carries the simulated measurement); only builds with the `insecure-sim` feature have it,
/// and only key servers whose policy opts in to simulated evidence accept it.
struct SimProvisioning;

impl KeyProvider for SimProvisioning {
    #[cfg(feature = "insecure-sim")]
    fn provision(&mut self, r: &ProvisionRequest<'_>) -> Result<ProvisionedSecret, SeamError> {
        let identity = sim_identity(&r.manifest.identity, r.measurement);
        let attester = attest::sim::SimAttester::dangerous_new(identity);
        let ca = r.ca_chain_host_path.as_deref().ok_or(
            "SECRET_PROVISION_CA_CHAIN_PATH is required: set loader.env.SECRET_PROVISION_CA_CHAIN_PATH to the \
             key server's CA certificate (an in-view path, listed in sgx.trusted_files)",
        )?;
        let servers = r.servers.join(",");
        let client = attest::client::ProvisioningClient::with_attester(&servers, ca, &attester)
            .map_err(|e| format!("secret provisioning: {e}"))?;
        let got = client.provision_blocking(&[]).map_err(|e| {
            format!(
                "secret provisioning refused or failed (simulated measurement {}): {e}{}",
                r.measurement,
                if e.to_string().contains("TLS handshake") {
                    "; the key server rejected the connection during the TLS handshake (its log names the \
                     reason: unverifiable evidence or a server certificate this CA does not sign)"
                } else {
                    ""
                }
            )
        })?;
        match r.set_key {
            Some(name) => {
                let key = pfs_core::Key::from_slice(&got.first_secret).ok_or_else(|| {
                    format!(
                        "the key server {} released a secret of {} bytes for key {name:?}; \
                         SECRET_PROVISION_SET_KEY needs exactly 16",
                        got.server,
                        got.first_secret.len()
                    )
                })?;
                Ok(ProvisionedSecret::Key { name: name.to_owned(), key })
            }
            None => Ok(ProvisionedSecret::String(String::from_utf8_lossy(&got.first_secret).into_owned())),
        }
    }

    #[cfg(not(feature = "insecure-sim"))]
    fn provision(&mut self, _r: &ProvisionRequest<'_>) -> Result<ProvisionedSecret, SeamError> {
        Err("the manifest asks for secret provisioning, but this build of pfs has no simulated attester \
             (there is no SGX here): rebuild with `cargo build --release --features insecure-sim`, or use \
             fs.insecure__keys for a test"
            .into())
    }
}

/// The identity simulated evidence claims for a manifest: its simulated measurement, no
/// signer (there is no signing step yet, `sim_mrsigner`), its `isvprodid`/`isvsvn`/`debug`.
#[cfg(feature = "insecure-sim")]
fn sim_identity(
    id: &libos::manifest::Identity,
    measurement: &libos::SimMeasurement,
) -> attest::evidence::EnclaveIdentity {
    attest::evidence::EnclaveIdentity {
        mrenclave: measurement.value,
        mrsigner: [0; 32],
        isv_prod_id: id.isvprodid,
        isv_svn: id.isvsvn,
        attributes: [0; 16],
        debug: id.debug,
    }
}

/// The `QuoteProvider` seam: `/dev/attestation/quote` serves SIMULATED quotes
/// (`attest::sim::encode_quote`, tagged so that no SGX verifier accepts them) and
/// `attestation_type` reads `sim`. Only builds with `insecure-sim` have it; others report
/// `none` and have no quote.
#[cfg(feature = "insecure-sim")]
struct SimQuotes;

#[cfg(feature = "insecure-sim")]
impl QuoteProvider for SimQuotes {
    fn attestation_type(&self) -> &'static str {
        "sim"
    }

    fn quote(&self, r: &libos::launcher::QuoteRequest<'_>) -> Result<Vec<u8>, SeamError> {
        Ok(attest::sim::encode_quote(&sim_identity(r.identity, r.measurement), r.report_data))
    }
}

#[cfg(feature = "insecure-sim")]
fn sim_quotes() -> Option<std::sync::Arc<dyn QuoteProvider>> {
    Some(std::sync::Arc::new(SimQuotes))
}

#[cfg(not(feature = "insecure-sim"))]
fn sim_quotes() -> Option<std::sync::Arc<dyn QuoteProvider>> {
    None
}
