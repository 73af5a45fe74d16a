//! The `pfs` command line.
//!
//! `pfs run` creates a mount namespace, which requires a single-threaded process: nothing
//! here may start a thread before `cmd_run::run_run` is called.
#![forbid(unsafe_code)]

mod cmd_run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "pfs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Render a manifest template, validate it, hash its trusted files and print the
    /// simulated measurement.
    #[command(long_about = cmd_run::MANIFEST_ABOUT, after_help = cmd_run::MANIFEST_EXAMPLES)]
    Manifest(cmd_run::ManifestArgs),
    /// Run a manifest's program in the simulated TEE (private mount namespace, chroot view).
    #[command(long_about = cmd_run::RUN_ABOUT, after_help = cmd_run::RUN_EXAMPLES)]
    Run(cmd_run::RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Manifest(args) => match cmd_run::run_manifest(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pfs manifest: error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => ExitCode::from(cmd_run::run_run(&args)),
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
