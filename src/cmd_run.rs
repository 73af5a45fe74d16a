//! `pfs manifest` and `pfs run`: thin wrappers over the `libos` crate.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

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
    let built = libos::build::build(&args.template.display().to_string(), &template, &cwd, &options)?;
    for w in &built.warnings {
        eprintln!("pfs manifest: warning: {w}");
    }
    std::fs::write(&args.output, built.manifest.text())
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!("wrote {} with {} trusted file(s)", args.output.display(), built.manifest.trusted_files.len());
    println!("simulated measurement (NOT an SGX MRENCLAVE): {}", built.measurement);
    Ok(())
}

/// Runs the program of a manifest in the simulated TEE and returns its exit code.
///
/// Must be called before the process starts any thread (it creates the mount namespace).
pub fn run_run(args: &RunArgs) -> u8 {
    libos::launcher::main(&args.manifest, &args.args, libos::launcher::Launcher::default())
}
