//! The `pfs` command line: a thin layer over `pfs-core` that parses arguments, calls the
//! engine and prints.
//!
//! `pfs run` creates a mount namespace, which requires a single-threaded process: nothing
//! here may start a thread before `cmd_run::run_run` is called, and `pfs run` passes the
//! program's exit status through instead of returning an [`Outcome`].
//!
//! Every other subcommand returns `anyhow::Result<Outcome>`. An error is printed once, with its
//! whole cause chain, by [`main`]; commands that keep going across many files (directory
//! `encrypt`/`decrypt`, `check`) print each failure as it happens and return
//! [`Outcome::Failed`] so the exit status still says something went wrong.
// One exception, `input_map.rs`: mapping an input file (memmap2's `map` is unsafe).
#![deny(unsafe_code)]

mod cmd_attest;
mod cmd_bench;
mod cmd_demo;
mod cmd_mount;
mod cmd_pf;
mod cmd_run;
mod input_map;
mod keyfile;
mod output;
mod pipeline;
mod report;
mod size;
mod splitmix;
mod walk;
mod write_behind;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status: everything worked.
const EXIT_OK: u8 = 0;
/// Exit status: an error, or (for `check`) a damaged or unreadable file.
const EXIT_FAILURE: u8 = 1;
// Exit status 2 (usage error) is produced by clap itself.

/// Gramine-compatible protected files: create, read, inspect and check them.
///
/// Files are byte-compatible with Gramine's encrypted files ("protected files"), so a
/// Gramine enclave can read what `pfs encrypt` writes and `pfs decrypt` reads what Gramine
/// writes. Keys are 16-byte raw files, as with `gramine-sgx-pf-crypt`.
///
/// Exit status: 0 on success, 1 if anything failed (an error, a damaged or unreadable
/// file), 2 on a usage error.
#[derive(Debug, Parser)]
#[command(name = "pfs", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per subcommand; each family lives in its own `cmd_*` module.
#[derive(Debug, Subcommand)]
enum Command {
    /// Make a new 16-byte key file (mode 0600).
    #[command(long_about = cmd_pf::KEYGEN_ABOUT, after_help = cmd_pf::KEYGEN_EXAMPLES)]
    Keygen(cmd_pf::KeygenArgs),
    /// Encrypt a file or a directory tree into protected files.
    #[command(long_about = cmd_pf::ENCRYPT_ABOUT, after_help = cmd_pf::ENCRYPT_EXAMPLES)]
    Encrypt(cmd_pf::EncryptArgs),
    /// Decrypt a protected file or a directory tree of them.
    #[command(long_about = cmd_pf::DECRYPT_ABOUT, after_help = cmd_pf::DECRYPT_EXAMPLES)]
    Decrypt(cmd_pf::DecryptArgs),
    /// Show the header of a protected file (and, with a key, its path and size).
    #[command(long_about = cmd_pf::INFO_ABOUT, after_help = cmd_pf::INFO_EXAMPLES)]
    Info(cmd_pf::InfoArgs),
    /// Authenticate every node of protected files and report damage (fsck).
    #[command(long_about = cmd_pf::CHECK_ABOUT, after_help = cmd_pf::CHECK_EXAMPLES)]
    Check(cmd_pf::CheckArgs),
    /// Measure throughput and cache hit rate for several node-cache sizes.
    #[command(long_about = cmd_bench::BENCH_ABOUT, after_help = cmd_bench::BENCH_EXAMPLES)]
    Bench(cmd_bench::BenchArgs),
    /// Verify SGX DCAP evidence and check it against a key-release policy.
    #[command(subcommand)]
    Attest(cmd_attest::AttestCmd),
    /// Run the key server (Gramine secret-provisioning protocol over RA-TLS).
    Keyserver(cmd_attest::KeyserverArgs),
    /// Render a manifest template, validate it, hash its trusted files and print the
    /// simulated measurement.
    #[command(long_about = cmd_run::MANIFEST_ABOUT, after_help = cmd_run::MANIFEST_EXAMPLES)]
    Manifest(cmd_run::ManifestArgs),
    /// Run a manifest's program in the simulated TEE (private mount namespace, chroot view).
    #[command(long_about = cmd_run::RUN_ABOUT, after_help = cmd_run::RUN_EXAMPLES)]
    Run(cmd_run::RunArgs),
    /// Mount a directory of protected files as a plaintext view (FUSE).
    #[command(long_about = cmd_mount::MOUNT_ABOUT, after_help = cmd_mount::MOUNT_EXAMPLES)]
    Mount(cmd_mount::MountArgs),
    /// Flush and unmount a `pfs mount`.
    Umount(cmd_mount::UmountArgs),
    /// The paper's whole workflow in one command: key, encrypted model and input, key
    /// server, an unmodified Python program under `pfs run`, encrypted result.
    #[command(long_about = cmd_demo::DEMO_ABOUT)]
    Demo(cmd_demo::DemoArgs),
}

/// How a command that did not return an error ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Everything worked.
    Success,
    /// Some work failed and was already reported (keep-going commands).
    Failed,
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Keygen(args) => cmd_pf::keygen(&args),
        Command::Encrypt(args) => cmd_pf::encrypt(&args),
        Command::Decrypt(args) => cmd_pf::decrypt(&args),
        Command::Info(args) => cmd_pf::info(&args),
        Command::Check(args) => cmd_pf::check(&args),
        Command::Bench(args) => cmd_bench::bench(&args),
        Command::Attest(cmd) => cmd_attest::run_attest(cmd).map(Outcome::from_success),
        Command::Keyserver(args) => cmd_attest::run_keyserver(args).map(Outcome::from_success),
        Command::Manifest(args) => cmd_run::run_manifest(&args).map(|()| Outcome::Success),
        Command::Mount(args) => cmd_mount::run_mount(&args).map(|()| Outcome::Success),
        Command::Umount(args) => cmd_mount::run_umount(&args).map(|()| Outcome::Success),
        Command::Demo(args) => cmd_demo::run_demo(&args).map(|()| Outcome::Success),
        Command::Run(_) => unreachable!("BUG: `pfs run` is dispatched by main"),
    }
}

impl Outcome {
    fn from_success(success: bool) -> Self {
        if success { Outcome::Success } else { Outcome::Failed }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Run(args) = &cli.command {
        return ExitCode::from(cmd_run::run_run(args));
    }
    let attestation = matches!(cli.command, Command::Attest(_) | Command::Keyserver(_));
    match run(cli) {
        Ok(Outcome::Success) => ExitCode::from(EXIT_OK),
        Ok(Outcome::Failed) => ExitCode::from(EXIT_FAILURE),
        Err(error) => {
            if report::is_broken_pipe(&error) {
                return ExitCode::from(EXIT_OK);
            }
            eprintln!("pfs: error: {error:#}");
            // Attestation commands keep exit status 2 for usage and I/O errors (their
            // contract: 1 means "did not verify").
            if attestation { cmd_attest::exit_code_for(&error) } else { ExitCode::from(EXIT_FAILURE) }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
