//! The `pfs` command line.
#![forbid(unsafe_code)]

mod cmd_attest;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Gramine-compatible protected files, attestation and key provisioning.
#[derive(Debug, Parser)]
#[command(name = "pfs", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Verify SGX DCAP evidence and check it against a key-release policy.
    #[command(subcommand)]
    Attest(cmd_attest::AttestCmd),
    /// Run the key server (Gramine secret-provisioning protocol over RA-TLS).
    Keyserver(cmd_attest::KeyserverArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Attest(c) => cmd_attest::run_attest(c),
        Cmd::Keyserver(a) => cmd_attest::run_keyserver(a),
    };
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
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
