//! Rate-limited logging of refusals, so that a hostile peer cannot grow the
//! key server's log at will.
//!
//! Per category, the first [`LogLimiter::burst`] events of each window are
//! logged in full; later ones are only counted, and one summary line per
//! category reports how many were suppressed when the window ends. Grants
//! (keys sent) are not rate-limited: only an enclave the policy accepts can
//! cause them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::warn;

/// Categories of rate-limited messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Category {
    /// TLS handshake failed or timed out (includes evidence that did not verify).
    Handshake,
    /// Evidence did not verify.
    Evidence,
    /// Genuine evidence that the policy refused.
    PolicyRefused,
    /// A connection was shed to make room.
    Shed,
    /// Protocol errors and timeouts after the handshake.
    Connection,
    /// `accept()` failed.
    Accept,
}

impl Category {
    fn name(self) -> &'static str {
        match self {
            Category::Handshake => "handshake failures",
            Category::Evidence => "evidence refusals",
            Category::PolicyRefused => "policy refusals",
            Category::Shed => "shed connections",
            Category::Connection => "connection errors",
            Category::Accept => "accept errors",
        }
    }
}

#[derive(Default)]
struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// The limiter: `burst` full messages per category per `window`.
pub(crate) struct LogLimiter {
    window: Duration,
    burst: u32,
    state: Mutex<BTreeMap<Category, Window>>,
}

impl LogLimiter {
    pub(crate) fn new(window: Duration, burst: u32) -> Self {
        Self { window, burst, state: Mutex::new(BTreeMap::new()) }
    }

    /// Whether an event of `cat` should be logged in full now.
    pub(crate) fn allow(&self, cat: Category) -> bool {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let w = st.entry(cat).or_default();
        if w.start.is_none_or(|s| now.duration_since(s) >= self.window) {
            report(cat, w.suppressed, self.window);
            *w = Window { start: Some(now), logged: 0, suppressed: 0 };
        }
        if w.logged < self.burst {
            w.logged += 1;
            if w.logged == self.burst {
                warn!(
                    category = cat.name(),
                    "rate limit reached: further {} are counted, not logged, until {}s have passed",
                    cat.name(),
                    self.window.as_secs()
                );
            }
            true
        } else {
            w.suppressed += 1;
            false
        }
    }

    /// Reports and resets the windows that have ended (called periodically).
    pub(crate) fn flush(&self) {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for (cat, w) in st.iter_mut() {
            if w.start.is_some_and(|s| now.duration_since(s) >= self.window) {
                report(*cat, w.suppressed, self.window);
                *w = Window::default();
            }
        }
    }
}

fn report(cat: Category, suppressed: u64, window: Duration) {
    if suppressed > 0 {
        warn!(
            category = cat.name(),
            suppressed,
            "{suppressed} {} were not logged in the last {}s (rate limit; see the counters)",
            cat.name(),
            window.as_secs()
        );
    }
}
