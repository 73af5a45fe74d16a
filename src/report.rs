//! Messages to the user while a command keeps going: errors and warnings on stderr (drawn
//! around an optional progress bar), results on stdout, and a count of failures so the
//! exit status can say something went wrong (ripgrep's `err_message!` + `ERRORED`).

use std::cell::Cell;
use std::fmt::Display;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Prints messages and remembers how many errors were reported.
pub struct Reporter {
    quiet: bool,
    progress: Option<ProgressBar>,
    errors: Cell<usize>,
}

impl Reporter {
    /// A reporter; `quiet` silences informational lines (never errors or warnings).
    pub fn new(quiet: bool) -> Self {
        Reporter { quiet, progress: None, errors: Cell::new(0) }
    }

    /// Shows a byte progress bar of `total` bytes on stderr, only when stderr is a
    /// terminal and the reporter is not quiet.
    pub fn start_progress(&mut self, total: u64, message: &str) {
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} ({wide_msg:.dim})",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(message.to_string());
        self.progress = Some(bar);
    }

    /// Advances the progress bar by `bytes`.
    pub fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.progress {
            bar.inc(bytes);
        }
    }

    /// Removes the progress bar from the terminal.
    pub fn finish_progress(&mut self) {
        if let Some(bar) = self.progress.take() {
            bar.finish_and_clear();
        }
    }

    fn print(&self, f: impl FnOnce()) {
        match &self.progress {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Reports one failure (the whole cause chain) and counts it.
    pub fn error(&self, error: &anyhow::Error) {
        self.errors.set(self.errors.get() + 1);
        self.print(|| eprintln!("pfs: error: {error:#}"));
    }

    /// Prints a warning on stderr (even when quiet); does not count as a failure.
    pub fn warn(&self, message: impl Display) {
        self.print(|| eprintln!("pfs: warning: {message}"));
    }

    /// Prints an informational line on stdout unless quiet.
    pub fn info(&self, message: impl Display) {
        if !self.quiet {
            self.print(|| println!("{message}"));
        }
    }

    /// Number of errors reported so far.
    pub fn errors(&self) -> usize {
        self.errors.get()
    }
}

/// Whether the error comes from writing to a closed pipe (e.g. `pfs check … | head`),
/// which ends the program quietly with success, as ripgrep does.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
