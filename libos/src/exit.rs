//! Named exit codes of `pfs run`.
//!
//! When the program runs, `pfs run` exits with the program's own status: its exit code, or
//! 128 + the signal number when a signal killed it (as shells report it). The codes below
//! are used only when the launcher itself fails before or around the program; they sit in
//! the 120–127 range that shells and container runtimes already reserve for such failures.

/// The manifest could not be read or is invalid.
pub const MANIFEST: u8 = 120;
/// The private mount namespace or the app's view could not be set up.
pub const VIEW: u8 = 121;
/// A trusted file is missing or its SHA-256 differs from the manifest.
pub const TRUSTED_FILE: u8 = 122;
/// Keys could not be obtained (insecure keys, provisioning).
pub const KEYS: u8 = 123;
/// The launcher binary does not match `loader.entrypoint.sha256`, or another launcher failure.
pub const LAUNCHER: u8 = 125;
/// The entrypoint exists in the view but cannot be executed.
pub const EXEC: u8 = 126;
/// The entrypoint does not exist in the view.
pub const NOT_FOUND: u8 = 127;
/// Bad command-line usage (clap's convention).
pub const USAGE: u8 = 2;
