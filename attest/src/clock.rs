//! Clocks for the key server: the system clock, or a manual one.
//!
//! Verification never reads the clock itself (time is an argument); the key
//! server and the collateral refresher take a [`TimeProvider`] so that tests
//! and rehearsals can put "now" anywhere, for instance inside the validity
//! window of stored Intel collateral, or one hour before it expires.

use std::sync::atomic::{AtomicU64, Ordering};

pub use rustls::time_provider::TimeProvider;
use rustls_pki_types::UnixTime;

/// A clock that says what it was told (Unix seconds). For tests and rehearsals.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock at `secs`.
    pub fn at(secs: u64) -> Self {
        Self(AtomicU64::new(secs))
    }
    /// Sets the time.
    pub fn set(&self, secs: u64) {
        self.0.store(secs, Ordering::SeqCst);
    }
    /// The time.
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl TimeProvider for ManualClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(crate::dcap::unix_time(self.now()))
    }
}

/// The system clock.
pub fn system() -> std::sync::Arc<dyn TimeProvider> {
    std::sync::Arc::new(rustls::time_provider::DefaultTimeProvider)
}
