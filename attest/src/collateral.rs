//! The collateral in force, and its refresh from a PCS/PCCS in the background.
//!
//! A [`CollateralStore`] holds the static sets (files named by the policy) and
//! one fetched set per [`Platform`]. The verifier reads a snapshot at each
//! verification, so a refreshed set is used by the next handshake without a
//! restart. A [`Refresher`] keeps each platform's set fresh:
//!
//! * at start it loads the on-disk cache (`FMSPC-CA.json`, dcap-qvl
//!   `QuoteCollateralV3` JSON), verifying it like a fetched set;
//! * it fetches when the set is missing, when its earliest `nextUpdate` is
//!   less than [`REFRESH_BEFORE_EXPIRY`] away, and at least every
//!   [`REFRESH_INTERVAL`] (to pick up TCB recoveries before expiry);
//! * a fetched set replaces the old one only after [`crate::pcs::check_collateral_with_root`]
//!   passed at the current time and its TCB info is not older than the one
//!   in use (no roll-back); it is then written to the cache with mode 0600
//!   through a temporary file and a rename (atomic);
//! * a failed fetch is logged and retried with exponential backoff
//!   ([`RETRY_MIN`] doubling to [`RETRY_MAX`]); the cached set keeps being
//!   served until it expires, and its expiry is logged once.
//!
//! Time comes from a [`TimeProvider`] (the key server's clock), so tests can
//! move "now" across a set's expiry; real waiting is done in steps of at most
//! `check_every`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::time_provider::TimeProvider;
use tracing::{error, info, warn};

use crate::dcap::{Collateral, RootCa};
use crate::pcs::{PcsClient, PcsError, Platform, Validity, check_collateral_with_root};

/// Refresh when the set in use expires in less than this.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Refresh at least this often, even long before expiry.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// First retry delay after a failed fetch.
pub const RETRY_MIN: Duration = Duration::from_secs(30);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);

/// A fetched, verified set and what is known about it.
#[derive(Debug, Clone)]
pub struct FetchedSet {
    /// The set.
    pub collateral: Collateral,
    /// Its validity (from verification).
    pub validity: Validity,
    /// When it was fetched or loaded (clock seconds).
    pub obtained_at: u64,
}

/// The collateral sets in force.
///
/// The store also holds the root CA its sets (and the quotes verified with
/// them) must chain to, so the verifier and the refresher cannot disagree.
#[derive(Debug, Default)]
pub struct CollateralStore {
    root: RootCa,
    static_sets: Vec<Collateral>,
    fetched: RwLock<BTreeMap<Platform, FetchedSet>>,
    snapshot: RwLock<Arc<Vec<Collateral>>>,
}

impl CollateralStore {
    /// A store with static sets only (more may be added by a refresher),
    /// anchored in the Intel SGX Root CA.
    pub fn new(static_sets: Vec<Collateral>) -> Self {
        Self::with_root(static_sets, RootCa::intel())
    }

    /// A store anchored in `root` (see [`RootCa`]: Intel's unless a test or private PKI).
    pub fn with_root(static_sets: Vec<Collateral>, root: RootCa) -> Self {
        let snapshot = RwLock::new(Arc::new(static_sets.clone()));
        Self { root, static_sets, fetched: RwLock::default(), snapshot }
    }

    /// The root CA every chain must end in.
    pub fn root(&self) -> &RootCa {
        &self.root
    }

    /// The sets to try, fetched ones first (they are the freshest).
    pub fn current(&self) -> Arc<Vec<Collateral>> {
        self.snapshot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The fetched set of `platform`, if any.
    pub fn fetched(&self, platform: &Platform) -> Option<FetchedSet> {
        self.fetched.read().unwrap_or_else(|p| p.into_inner()).get(platform).cloned()
    }

    fn install(&self, platform: Platform, set: FetchedSet) {
        let mut f = self.fetched.write().unwrap_or_else(|p| p.into_inner());
        f.insert(platform, set);
        let mut all: Vec<Collateral> = f.values().map(|s| s.collateral.clone()).collect();
        all.extend(self.static_sets.iter().cloned());
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(all);
    }
}

/// What one refresh attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshOutcome {
    /// A verified set was installed (and cached), valid until `next_update`.
    Installed {
        /// Earliest nextUpdate of the new set.
        next_update: u64,
    },
    /// The endpoint answered with the set already in use.
    Unchanged {
        /// Earliest nextUpdate of the set.
        next_update: u64,
    },
}

/// Keeps the fetched sets of a [`CollateralStore`] fresh.
pub struct Refresher {
    client: PcsClient,
    platforms: Vec<Platform>,
    cache_dir: PathBuf,
    store: Arc<CollateralStore>,
    clock: Arc<dyn TimeProvider>,
    check_every: Duration,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("endpoint", &self.client.base_url())
            .field("platforms", &self.platforms)
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

fn now_secs(clock: &dyn TimeProvider) -> u64 {
    clock.current_time().map_or(0, |t| t.as_secs())
}

/// Writes `bytes` to `path` with mode 0600 through a temporary file in the same
/// directory, fsync and rename: a reader sees the old file or the new one.
pub fn write_atomic_0600(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("collateral");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl Refresher {
    /// A refresher for `platforms` from `client`, caching in `cache_dir`.
    pub fn new(
        client: PcsClient,
        platforms: Vec<Platform>,
        cache_dir: PathBuf,
        store: Arc<CollateralStore>,
        clock: Arc<dyn TimeProvider>,
    ) -> Self {
        Self { client, platforms, cache_dir, store, clock, check_every: Duration::from_secs(60) }
    }

    /// How often (real time) the schedule is re-checked (default 60 s; tests use less).
    pub fn check_every(mut self, d: Duration) -> Self {
        self.check_every = d;
        self
    }

    /// The cache file of `platform`.
    pub fn cache_path(&self, platform: &Platform) -> PathBuf {
        self.cache_dir.join(platform.cache_file_name())
    }

    /// Loads the cached sets that still verify now; logs the others.
    pub fn load_cache(&self) {
        let now = now_secs(&*self.clock);
        for p in &self.platforms {
            let path = self.cache_path(p);
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let loaded = Collateral::from_json(&bytes, path.display().to_string())
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    check_collateral_with_root(c.as_qvl(), p, now, self.store.root()).map(|v| (c, v))
                });
            match loaded {
                Ok((collateral, validity)) => {
                    info!(platform = %p, file = %path.display(), next_update = validity.next_update, "collateral loaded from the cache");
                    self.store.install(p.clone(), FetchedSet { collateral, validity, obtained_at: now });
                }
                Err(reason) => {
                    warn!(platform = %p, file = %path.display(), %reason, "cached collateral not used; fetching anew")
                }
            }
        }
    }

    /// Fetches, verifies and installs the set of `platform` once.
    pub async fn refresh(&self, platform: &Platform) -> Result<RefreshOutcome, PcsError> {
        let fetched = self.client.fetch(platform).await?;
        let now = now_secs(&*self.clock);
        let refused = |reason: String| PcsError::Refused { platform: platform.to_string(), reason };
        let validity =
            check_collateral_with_root(&fetched, platform, now, self.store.root()).map_err(refused)?;
        let old = self.store.fetched(platform);
        if let Some(old) = &old {
            if validity.tcb_info_issued < old.validity.tcb_info_issued {
                return Err(refused(format!(
                    "its TCB info (issued {}) is older than the one in use (issued {}): roll-back refused",
                    validity.tcb_info_issued, old.validity.tcb_info_issued
                )));
            }
            if old.collateral.as_qvl() == &fetched {
                self.store.install(platform.clone(), FetchedSet { obtained_at: now, ..old.clone() });
                return Ok(RefreshOutcome::Unchanged { next_update: validity.next_update });
            }
        }
        let path = self.cache_path(platform);
        let json = serde_json::to_vec_pretty(&fetched).map_err(|e| refused(e.to_string()))?;
        if let Err(e) = write_atomic_0600(&path, &json) {
            // Still use it: the cache only matters across restarts.
            error!(platform = %platform, file = %path.display(), error = %e, "cannot write the collateral cache");
        }
        let collateral =
            Collateral::from_qvl(fetched, format!("{} from {}", platform, self.client.base_url()));
        self.store.install(platform.clone(), FetchedSet { collateral, validity, obtained_at: now });
        Ok(RefreshOutcome::Installed { next_update: validity.next_update })
    }

    /// When (clock seconds) `platform` should next be refreshed.
    fn due(&self, platform: &Platform) -> u64 {
        match self.store.fetched(platform) {
            None => 0,
            Some(s) => (s.obtained_at + REFRESH_INTERVAL.as_secs())
                .min(s.validity.next_update.saturating_sub(REFRESH_BEFORE_EXPIRY.as_secs())),
        }
    }

    /// Runs forever: loads the cache, then refreshes each platform when due.
    pub async fn run(self) {
        self.load_cache();
        let mut retry: BTreeMap<Platform, (u64, Duration)> = BTreeMap::new();
        let mut expired_logged: BTreeMap<Platform, u64> = BTreeMap::new();
        loop {
            let now = now_secs(&*self.clock);
            for p in &self.platforms {
                if let Some(s) = self.store.fetched(p)
                    && now > s.validity.next_update
                    && expired_logged.get(p) != Some(&s.validity.next_update)
                {
                    error!(platform = %p, next_update = s.validity.next_update, "collateral expired: SGX evidence of this platform is refused until a refresh succeeds");
                    expired_logged.insert(p.clone(), s.validity.next_update);
                }
                let due = retry.get(p).map_or_else(|| self.due(p), |(at, _)| *at);
                if now < due {
                    continue;
                }
                match self.refresh(p).await {
                    Ok(outcome) => {
                        retry.remove(p);
                        info!(platform = %p, endpoint = %self.client.base_url(), ?outcome, "collateral refreshed");
                    }
                    Err(e) => {
                        let delay = retry.get(p).map_or(RETRY_MIN, |(_, d)| (*d * 2).min(RETRY_MAX));
                        let kept = self.store.fetched(p).map(|s| s.validity.next_update);
                        warn!(platform = %p, error = %e, retry_in_secs = delay.as_secs(), serving_until = ?kept, "collateral refresh failed; the set in use (if any) is served until it expires");
                        retry.insert(p.clone(), (now + delay.as_secs(), delay));
                    }
                }
            }
            tokio::time::sleep(self.check_every).await;
        }
    }
}
