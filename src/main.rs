//! The `pfs` command line.
//!
//! This branch carries only `mount` and `umount` (see `cmd_mount.rs`); the lead merges
//! them into the full command enum.
#![forbid(unsafe_code)]

mod cmd_mount;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Gramine-compatible protected files.
#[derive(Debug, Parser)]
#[command(name = "pfs", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mount a directory of protected files as a plaintext view (FUSE).
    #[command(long_about = cmd_mount::MOUNT_ABOUT, after_help = cmd_mount::MOUNT_EXAMPLES)]
    Mount(cmd_mount::MountArgs),
    /// Flush and unmount a `pfs mount`.
    Umount(cmd_mount::UmountArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Mount(args) => cmd_mount::run_mount(args),
        Command::Umount(args) => cmd_mount::run_umount(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pfs: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
