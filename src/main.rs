//! The `pfs` command line.
//!
//! `pfs run` creates a mount namespace, which requires a single-threaded process: nothing
//! here may start a thread before `cmd_run::run_run` is called.
#![forbid(unsafe_code)]

mod cmd_attest;
mod cmd_mount;
mod cmd_run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Gramine-compatible protected files, attestation and key provisioning.
#[derive(Debug, Parser)]
#[command(name = "pfs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // `pfs run` passes the program's exit status through.
        Command::Run(args) => return ExitCode::from(cmd_run::run_run(&args)),
        Command::Attest(c) => cmd_attest::run_attest(c),
        Command::Keyserver(a) => cmd_attest::run_keyserver(a),
        Command::Manifest(args) => cmd_run::run_manifest(&args).map(|()| true),
        Command::Mount(args) => cmd_mount::run_mount(&args).map(|()| true),
        Command::Umount(args) => cmd_mount::run_umount(&args).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pfs: error: {e:#}");
            cmd_attest::exit_code_for(&e)
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
