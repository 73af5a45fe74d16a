//! The key server: TLS (rustls, ring) with RA-TLS client authentication,
//! speaking Gramine's secret-provisioning protocol (see [`crate::wire`]).
//!
//! Verification and the policy decision happen *inside* the TLS handshake.
//! Evidence that does not verify never completes the handshake and is sent
//! nothing (as in Gramine). Evidence that verifies but that the policy
//! refuses completes the handshake and is answered, instead of a secret, with
//! a `KEY_DENIED` message carrying the policy's reasons, so that the enclave
//! can tell its operator why (a stock Gramine client sees an unexpected
//! response and fails, still without a secret). Session resumption is
//! disabled so that every connection is verified at its own time and proves
//! possession of its key. The decision is logged only once the handshake has
//! completed, i.e. once the peer has proven that it holds the certificate's
//! private key; key bytes are never logged.
//!
//! Connections are admitted as [`crate::conn_table`] describes: `accept()`
//! never waits for a free slot, handshakes and authenticated connections are
//! bounded separately (handshakes also per source address), the whole
//! handshake has one deadline, and when a pool is full its oldest connection
//! is shed. Refusals are logged with a rate limit and counted in
//! [`ServerStats`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::time_provider::TimeProvider;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::conn_table::{Bounds, ConnTable, Shed, Ticket};
use crate::evidence::EvidenceSummary;
use crate::log_limit::{Category, LogLimiter};
use crate::policy::{Grant, KeyReleasePolicy};
use crate::ratls::{EvidenceFormat, RaTlsVerifier};
use crate::wire;

/// Server limits. The defaults are what `pfs keyserver --help` shows.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Deadline for the whole TLS handshake: the total time the server may wait for
    /// the peer's handshake messages, summed over the handshake (not per read).
    /// Time the server itself spends, including queueing under load, is not
    /// charged to the peer; `connection_timeout` bounds the total.
    pub handshake_timeout: Duration,
    /// Time allowed for each read from the client after the handshake.
    pub read_timeout: Duration,
    /// Total time a connection may stay open.
    pub connection_timeout: Duration,
    /// Authenticated connections (handshake done) served at once; when full,
    /// the oldest is shed.
    pub max_connections: usize,
    /// Handshakes in progress at once (unauthenticated connections); when full,
    /// the oldest is shed. `accept()` never waits.
    pub max_handshakes: usize,
    /// Handshakes in progress at once from one source (IPv4 address or IPv6
    /// /64); a source at its bound sheds its own oldest handshake.
    pub max_handshakes_per_source: usize,
    /// Extension key requests allowed per connection.
    pub max_key_requests: usize,
    /// Listen backlog asked of the kernel (which caps it at `net.core.somaxconn`).
    pub listen_backlog: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(DEFAULT_HANDSHAKE_TIMEOUT_SECS),
            read_timeout: Duration::from_secs(DEFAULT_HANDSHAKE_TIMEOUT_SECS),
            connection_timeout: Duration::from_secs(30),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_handshakes_per_source: DEFAULT_MAX_HANDSHAKES_PER_SOURCE,
            max_key_requests: 64,
            listen_backlog: DEFAULT_LISTEN_BACKLOG,
        }
    }
}

/// Default [`Limits::handshake_timeout`] (and read timeout), seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// Default [`Limits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default [`Limits::max_handshakes`].
pub const DEFAULT_MAX_HANDSHAKES: usize = 4096;
/// Default [`Limits::max_handshakes_per_source`]: large, because many enclaves
/// may share one NAT address; one source still cannot take the whole pool.
pub const DEFAULT_MAX_HANDSHAKES_PER_SOURCE: usize = 2048;
/// Default [`Limits::listen_backlog`]: room for a burst of several thousand
/// simultaneous connects (the kernel caps it at `net.core.somaxconn`).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;

impl Limits {
    /// Refuses limits under which the server cannot work (zero timeouts or bounds),
    /// naming the field.
    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |field: &'static str, why: &str| Err(ServerError::Limits(format!("{field}: {why}")));
        if self.handshake_timeout.is_zero() {
            return bad("handshake_timeout", "must be at least 1 s; 0 would fail every handshake");
        }
        if self.read_timeout.is_zero() {
            return bad("read_timeout", "must be positive; 0 would fail every read");
        }
        if self.connection_timeout < self.handshake_timeout {
            return bad("connection_timeout", "must not be shorter than handshake_timeout");
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1");
        }
        if self.max_handshakes == 0 {
            return bad("max_handshakes", "must be at least 1");
        }
        if self.max_handshakes_per_source == 0 {
            return bad("max_handshakes_per_source", "must be at least 1");
        }
        if self.listen_backlog == 0 {
            return bad("listen_backlog", "must be at least 1");
        }
        Ok(())
    }
}

/// Key server errors (setup and listening; per-connection errors are only logged).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The TLS configuration was refused.
    #[error("server TLS configuration: {0}")]
    Tls(String),
    /// A limit is unusable.
    #[error("key server limits: {0}")]
    Limits(String),
    /// Accepting connections failed.
    #[error("listening socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Why one connection ended without (complete) provisioning.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The handshake did not finish in time.
    #[error("peer used up its {0:?} handshake deadline without completing the handshake")]
    HandshakeTimeout(Duration),
    /// The handshake failed (including RA-TLS or policy refusal).
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    /// The client did not send in time.
    #[error("client sent nothing for {0:?}")]
    ReadTimeout(Duration),
    /// The connection exceeded its total time.
    #[error("connection exceeded {0:?}")]
    ConnectionTimeout(Duration),
    /// I/O error after the handshake.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The decision for the presented certificate is missing (should not happen).
    #[error("no verification decision recorded for the client certificate")]
    NoDecision,
}

/// Counters of what the server did since it started (all monotonic except the two gauges).
#[derive(Debug, Default)]
pub struct ServerStats {
    accepted: AtomicU64,
    handshakes_completed: AtomicU64,
    handshakes_failed: AtomicU64,
    handshake_timeouts: AtomicU64,
    evidence_refused: AtomicU64,
    policy_refused: AtomicU64,
    provisioned: AtomicU64,
    connection_errors: AtomicU64,
    accept_errors: AtomicU64,
}

/// A snapshot of [`ServerStats`] and of the pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Connections accepted.
    pub accepted: u64,
    /// TLS handshakes completed (key possession proven, evidence verified).
    pub handshakes_completed: u64,
    /// TLS handshakes that failed (bad TLS, no or bad evidence, closed early).
    pub handshakes_failed: u64,
    /// Handshakes that missed their deadline.
    pub handshake_timeouts: u64,
    /// Certificates whose evidence did not verify.
    pub evidence_refused: u64,
    /// Verified evidence that the policy refused (answered with KEY_DENIED).
    pub policy_refused: u64,
    /// Connections that received their first secret.
    pub provisioned: u64,
    /// Errors after the handshake (protocol violations, read timeouts).
    pub connection_errors: u64,
    /// `accept()` failures (for example out of file descriptors).
    pub accept_errors: u64,
    /// Handshakes shed because their source was at its bound.
    pub shed_source_full: u64,
    /// Handshakes shed because the handshake pool was full.
    pub shed_handshakes_full: u64,
    /// Authenticated connections shed because their pool was full.
    pub shed_authenticated_full: u64,
    /// Handshakes shed to free a file descriptor.
    pub shed_out_of_descriptors: u64,
    /// Handshakes in progress now.
    pub handshakes_now: u64,
    /// Authenticated connections now.
    pub authenticated_now: u64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

tokio::task_local! {
    static PEER: SocketAddr;
}

const DECISION_CACHE: usize = 4096;

/// Longest refusal reason sent to an enclave (the full reasons are in the server's log).
const MAX_REASON_LEN: usize = 2048;

/// Rate limit of refusal logs: this many full messages per category per window.
const LOG_BURST: u32 = 20;
/// Rate-limit window.
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// Grants decided during handshakes, keyed by SHA-256 of the client certificate.
#[derive(Default)]
struct Decisions {
    inner: Mutex<DecisionMap>,
}

/// The policy's answer for one verified certificate, with what to log once the
/// handshake has proven key possession.
#[derive(Clone)]
struct Decision {
    summary: Arc<EvidenceSummary>,
    format: EvidenceFormat,
    /// The grant, or the refusal reasons.
    outcome: Result<Arc<Grant>, Arc<[String]>>,
}

/// Map from certificate hash to decision, plus insertion order for eviction.
type DecisionMap = (HashMap<[u8; 32], Decision>, VecDeque<[u8; 32]>);

impl Decisions {
    fn insert(&self, k: [u8; 32], g: Decision) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *guard;
        if map.insert(k, g).is_none() {
            order.push_back(k);
        }
        while order.len() > DECISION_CACHE {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }
    fn get(&self, k: &[u8; 32]) -> Option<Decision> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.get(k).cloned()
    }
}

/// What the server shares between the accept loop, the verifier and the connections.
struct Shared {
    stats: ServerStats,
    log: LogLimiter,
    table: Arc<ConnTable>,
}

struct RaTlsClientVerifier {
    ratls: RaTlsVerifier,
    policy: Arc<dyn KeyReleasePolicy>,
    sig_algs: rustls::crypto::WebPkiSupportedAlgorithms,
    decisions: Arc<Decisions>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RaTlsClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaTlsClientVerifier").finish_non_exhaustive()
    }
}

fn peer() -> String {
    PEER.try_with(|p| p.to_string()).unwrap_or_else(|_| "?".into())
}

fn refuse() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

impl ClientCertVerifier for RaTlsClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let sh = &self.shared;
        if !intermediates.is_empty() {
            bump(&sh.stats.evidence_refused);
            if sh.log.allow(Category::Evidence) {
                warn!(peer = %peer(), intermediates = intermediates.len(), "refused: RA-TLS client sent a certificate chain (depth 0 required)");
            }
            return Err(refuse());
        }
        let (ev, format) = match self.ratls.verify_certificate(end_entity, now) {
            Ok(v) => v,
            Err(e) => {
                bump(&sh.stats.evidence_refused);
                if sh.log.allow(Category::Evidence) {
                    warn!(peer = %peer(), reason = %e, "refused: evidence did not verify");
                }
                return Err(refuse());
            }
        };
        // The evidence is genuine and bound to the certificate's key, but the peer has
        // not yet proven that it holds that key (its CertificateVerify comes next): the
        // decision is recorded here and logged only after the handshake completes. A
        // policy refusal also completes the handshake, so that its reasons reach the
        // enclave instead of a bare alert.
        let outcome = self.policy.release(&ev).map(Arc::new).map_err(|r| Arc::from(r.reasons));
        let key: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        self.decisions.insert(key, Decision { summary: Arc::new(ev.summary()), format, outcome });
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.sig_algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.sig_algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.sig_algs.supported_schemes()
    }
}

/// The key server.
#[derive(Clone)]
pub struct KeyServer {
    acceptor: TlsAcceptor,
    decisions: Arc<Decisions>,
    limits: Limits,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KeyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyServer").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl KeyServer {
    /// Builds a server from its certificate chain and key, an RA-TLS verifier and a policy.
    ///
    /// Refuses unusable `limits` ([`Limits::validate`]) and a private key that does
    /// not belong to the certificate.
    pub fn new(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        ratls: RaTlsVerifier,
        policy: Arc<dyn KeyReleasePolicy>,
        limits: Limits,
    ) -> Result<Self, ServerError> {
        limits.validate()?;
        let provider = crate::tls::provider();
        let decisions = Arc::new(Decisions::default());
        let shared = Arc::new(Shared {
            stats: ServerStats::default(),
            log: LogLimiter::new(LOG_WINDOW, LOG_BURST),
            table: ConnTable::new(Bounds {
                handshakes: limits.max_handshakes,
                handshakes_per_source: limits.max_handshakes_per_source,
                authenticated: limits.max_connections,
            }),
        });
        let verifier = Arc::new(RaTlsClientVerifier {
            ratls,
            policy,
            sig_algs: crate::tls::client_signature_algorithms(),
            decisions: decisions.clone(),
            shared: shared.clone(),
        });
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ServerError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(cert_chain, key)
            .map_err(|e| ServerError::Tls(e.to_string()))?;
        // Every connection is verified afresh and proves possession of its key: no resumption.
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
        Ok(Self { acceptor: TlsAcceptor::from(Arc::new(cfg)), decisions, limits, shared })
    }

    /// Uses `clock` instead of the system clock for evidence and collateral
    /// validity (tests and rehearsals of collateral expiry).
    pub fn with_clock(mut self, clock: Arc<dyn TimeProvider>) -> Self {
        let mut cfg = (*self.acceptor.config().clone()).clone();
        cfg.time_provider = clock;
        self.acceptor = TlsAcceptor::from(Arc::new(cfg));
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A snapshot of the counters and pool occupancy.
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.shared.stats;
        let t = &self.shared.table;
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (h, a) = t.occupancy();
        StatsSnapshot {
            accepted: r(&s.accepted),
            handshakes_completed: r(&s.handshakes_completed),
            handshakes_failed: r(&s.handshakes_failed),
            handshake_timeouts: r(&s.handshake_timeouts),
            evidence_refused: r(&s.evidence_refused),
            policy_refused: r(&s.policy_refused),
            provisioned: r(&s.provisioned),
            connection_errors: r(&s.connection_errors),
            accept_errors: r(&s.accept_errors),
            shed_source_full: r(&t.shed_counts[0]),
            shed_handshakes_full: r(&t.shed_counts[1]),
            shed_authenticated_full: r(&t.shed_counts[2]),
            shed_out_of_descriptors: r(&t.shed_counts[3]),
            handshakes_now: h as u64,
            authenticated_now: a as u64,
        }
    }

    /// Serves connections from `listener` forever.
    ///
    /// Accepts without waiting for a free slot; admission and shedding are done by the
    /// connection table. When `accept()` fails for lack of file descriptors, the
    /// oldest handshake is shed to free one.
    pub async fn serve(self, listener: TcpListener) -> Result<(), ServerError> {
        let sh = self.shared.clone();
        let flusher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(LOG_WINDOW);
            loop {
                tick.tick().await;
                sh.log.flush();
            }
        });
        let _flusher = AbortOnDrop(flusher);
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    bump(&self.shared.stats.accept_errors);
                    let out_of_fds = matches!(e.raw_os_error(), Some(24 | 23)); // EMFILE, ENFILE
                    if self.shared.log.allow(Category::Accept) {
                        warn!(error = %e, "accept failed{}", if out_of_fds { "; shedding the oldest handshake" } else { "" });
                    }
                    if !(out_of_fds && self.shared.table.shed_oldest_handshake(Shed::OutOfDescriptors)) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    continue;
                }
            };
            bump(&self.shared.stats.accepted);
            let (ticket, shed) = self.shared.table.admit(addr.ip());
            let this = self.clone();
            tokio::spawn(PEER.scope(addr, async move {
                let total = this.limits.connection_timeout;
                let result = tokio::select! {
                    biased;
                    why = shed => Err(why.ok()),
                    r = tokio::time::timeout(total, this.handle(stream, &ticket)) => {
                        Ok(r.unwrap_or(Err(ConnectionError::ConnectionTimeout(total))))
                    }
                };
                drop(ticket);
                this.log_end(addr, result);
            }));
        }
    }

    fn log_end(&self, addr: SocketAddr, result: Result<Result<(), ConnectionError>, Option<Shed>>) {
        let sh = &self.shared;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let cat = match &e {
                    ConnectionError::HandshakeTimeout(_) => {
                        bump(&sh.stats.handshake_timeouts);
                        Category::Handshake
                    }
                    ConnectionError::Handshake(_) => {
                        bump(&sh.stats.handshakes_failed);
                        Category::Handshake
                    }
                    _ => {
                        bump(&sh.stats.connection_errors);
                        Category::Connection
                    }
                };
                if sh.log.allow(cat) {
                    info!(peer = %addr, error = %e, "connection ended");
                }
            }
            Err(why) => {
                if sh.log.allow(Category::Shed) {
                    let why = why.map_or("the server is shutting down", Shed::as_str);
                    info!(peer = %addr, reason = why, "connection shed");
                }
            }
        }
    }

    async fn handle(&self, stream: TcpStream, ticket: &Ticket) -> Result<(), ConnectionError> {
        let _ = stream.set_nodelay(true);
        let lim = &self.limits;
        let (stream, wait) = crate::peer_wait::Metered::new(stream);
        let accept = self.acceptor.accept(stream);
        tokio::pin!(accept);
        let mut tls = loop {
            // Only time spent waiting for the peer counts against the deadline (see
            // `peer_wait`); while the server works, the check is merely postponed.
            let at = wait
                .expires_at(lim.handshake_timeout)
                .unwrap_or_else(|| Instant::now() + lim.handshake_timeout);
            tokio::select! {
                biased;
                r = &mut accept => match r {
                    Ok(s) => break s,
                    Err(e) => return Err(ConnectionError::Handshake(e)),
                },
                _ = tokio::time::sleep_until(at.into()) => {
                    if wait.waited(Instant::now()) >= lim.handshake_timeout {
                        return Err(ConnectionError::HandshakeTimeout(lim.handshake_timeout));
                    }
                }
            }
        };
        ticket.promote();
        bump(&self.shared.stats.handshakes_completed);
        let decision = {
            let (_, conn) = tls.get_ref();
            let cert = conn.peer_certificates().and_then(|c| c.first()).ok_or(ConnectionError::NoDecision)?;
            let key: [u8; 32] = Sha256::digest(cert.as_ref()).into();
            self.decisions.get(&key).ok_or(ConnectionError::NoDecision)?
        };
        // The handshake completed: the peer proved possession of the certificate's key.
        let s = &decision.summary;
        let grant = match &decision.outcome {
            Ok(grant) => {
                if s.tee != "sgx-dcap" {
                    warn!(peer = %peer(), "accepting SIMULATED-INSECURE evidence (policy opted in)");
                }
                info!(
                    peer = %peer(), tee = %s.tee, evidence = ?decision.format, mrenclave = %s.mrenclave,
                    mrsigner = %s.mrsigner, isv_prod_id = s.isv_prod_id, isv_svn = s.isv_svn, debug = s.debug,
                    tcb_status = %s.tcb_status, advisories = ?s.advisory_ids,
                    entry = %grant.entry, first_secret = %grant.first_secret_name, granted = ?grant.key_names(),
                    "policy accepts evidence; handshake proved possession of the certificate key"
                );
                Ok(grant.clone())
            }
            Err(reasons) => {
                bump(&self.shared.stats.policy_refused);
                if self.shared.log.allow(Category::PolicyRefused) {
                    warn!(
                        peer = %peer(), tee = %s.tee, mrenclave = %s.mrenclave, mrsigner = %s.mrsigner,
                        isv_prod_id = s.isv_prod_id, isv_svn = s.isv_svn, debug = s.debug,
                        tcb_status = %s.tcb_status, advisories = ?s.advisory_ids,
                        reasons = ?reasons, "refused by policy (the enclave is told the reasons, no key is sent)"
                    );
                }
                Err(reasons.clone())
            }
        };
        let mut req = [0u8; 35];
        read_exact_timeout(&mut tls, &mut req, lim.read_timeout).await?;
        if &req != wire::REQUEST {
            return Err(ConnectionError::Protocol(
                "first message is not SECRET_PROVISION_RA_TLS_REQUEST_V1".into(),
            ));
        }
        let grant = match grant {
            Ok(grant) => grant,
            Err(reasons) => {
                let mut reason =
                    format!("key server policy: {}", crate::policy::Refusal { reasons: reasons.to_vec() });
                if reason.len() > MAX_REASON_LEN {
                    let mut end = MAX_REASON_LEN;
                    while !reason.is_char_boundary(end) {
                        end -= 1;
                    }
                    reason.truncate(end);
                }
                tls.write_all(&wire::encode_denied(&reason)).await?;
                tls.flush().await?;
                let _ = tls.shutdown().await;
                return Ok(());
            }
        };
        let msg = zeroize::Zeroizing::new(wire::encode_response(grant.first_secret.expose()));
        info!(peer = %peer(), key = %grant.first_secret_name, entry = %grant.entry, "sent first secret");
        tls.write_all(&msg).await?;
        tls.flush().await?;
        bump(&self.shared.stats.provisioned);
        for _ in 0..lim.max_key_requests {
            let mut prefix = [0u8; 23];
            if !read_exact_or_eof(&mut tls, &mut prefix, lim.read_timeout).await? {
                let _ = tls.shutdown().await;
                return Ok(());
            }
            if &prefix != wire::KEY_REQUEST {
                return Err(ConnectionError::Protocol("unexpected message after the first secret".into()));
            }
            let mut len = [0u8; 4];
            read_exact_timeout(&mut tls, &mut len, lim.read_timeout).await?;
            let len = u32::from_be_bytes(len);
            if len == 0 || len > wire::MAX_KEY_NAME_LEN {
                let reason = format!("key name length {len} not in 1..={}", wire::MAX_KEY_NAME_LEN);
                tls.write_all(&wire::encode_denied(&reason)).await?;
                let _ = tls.shutdown().await;
                return Err(ConnectionError::Protocol(reason));
            }
            let mut name = vec![0u8; len as usize];
            read_exact_timeout(&mut tls, &mut name, lim.read_timeout).await?;
            let name = String::from_utf8_lossy(&name).into_owned();
            match grant.keys.get(&name) {
                Some(k) => {
                    let msg = zeroize::Zeroizing::new(wire::encode_response(k.expose()));
                    info!(peer = %peer(), key = %name, entry = %grant.entry, "sent named key");
                    tls.write_all(&msg).await?;
                }
                None => {
                    let reason = format!("key {name:?} is not granted to this enclave");
                    warn!(peer = %peer(), entry = %grant.entry, %reason, "refused key request");
                    tls.write_all(&wire::encode_denied(&reason)).await?;
                }
            }
            tls.flush().await?;
        }
        let _ = tls.shutdown().await;
        Err(ConnectionError::Protocol(format!("more than {} key requests", lim.max_key_requests)))
    }
}

/// Aborts a background task when dropped (when `serve` ends).
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds a listening TCP socket with `backlog` (tokio's own `bind` asks for 1024).
///
/// The kernel silently caps the backlog at `net.core.somaxconn`; the value in
/// force is returned with the listener so that the caller can log it.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<(TcpListener, u32)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // Keep "[::]" from also taking the IPv4 port, as the standard library does.
        let _ = sock.set_only_v6(true);
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(u32::MAX);
    let asked = i32::try_from(backlog).unwrap_or(i32::MAX);
    sock.listen(asked)?;
    let listener = TcpListener::from_std(std::net::TcpListener::from(sock))?;
    Ok((listener, backlog.min(somaxconn)))
}

/// Raises this process's soft open-file limit to its hard limit (as Go programs and
/// most servers do), so that the connection bounds, not `ulimit -n`, decide how
/// many peers are served. Returns the (soft, hard) limit now in force.
pub fn raise_fd_limit() -> (u64, u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    if cur.current != cur.maximum {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: cur.maximum, maximum: cur.maximum });
    }
    let now = getrlimit(Resource::Nofile);
    (now.current.unwrap_or(u64::MAX), now.maximum.unwrap_or(u64::MAX))
}

async fn read_exact_timeout<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut [u8],
    t: Duration,
) -> Result<(), ConnectionError> {
    match tokio::time::timeout(t, s.read_exact(buf)).await {
        Err(_) => Err(ConnectionError::ReadTimeout(t)),
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(_)) => Ok(()),
    }
}

/// Reads exactly `buf.len()` bytes; returns `false` on a clean end of stream before the first byte.
async fn read_exact_or_eof<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut [u8],
    t: Duration,
) -> Result<bool, ConnectionError> {
    let Some((first, rest)) = buf.split_first_mut() else {
        return Ok(true);
    };
    let mut one = [0u8; 1];
    let n = match tokio::time::timeout(t, s.read(&mut one)).await {
        Err(_) => return Err(ConnectionError::ReadTimeout(t)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(n)) => n,
    };
    if n == 0 {
        return Ok(false);
    }
    *first = one[0];
    read_exact_timeout(s, rest, t).await?;
    Ok(true)
}

/// Spawns `server` on `listener` and returns the address it serves (for tests and examples).
pub fn spawn(
    server: KeyServer,
    listener: TcpListener,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<Result<(), ServerError>>)> {
    let addr = listener.local_addr()?;
    Ok((addr, tokio::spawn(server.serve(listener))))
}

/// Builds the RA-TLS verifier a policy asks for: DCAP with the policy's
/// collateral files (and, with `pccs_url`, the cached fetched sets that still
/// verify; nothing is fetched here: see [`verifier_and_refresher`]) and, only with
/// the `insecure-sim` feature *and* `insecure_allow_simulated = true`, the
/// simulated verifier.
pub fn verifier_for_policy(
    policy: &crate::policy::Policy,
) -> Result<RaTlsVerifier, crate::dcap::CollateralError> {
    let (v, refresher) = verifier_and_refresher(policy, crate::clock::system())?;
    if let Some(r) = refresher {
        r.load_cache();
    }
    Ok(v)
}

/// Like [`verifier_for_policy`], and also returns the [`Refresher`] that keeps the
/// fetched collateral fresh (when the policy sets `pccs_url`); the caller runs it
/// (`tokio::spawn(refresher.run())`). `clock` is the time used for collateral validity.
///
/// [`Refresher`]: crate::collateral::Refresher
pub fn verifier_and_refresher(
    policy: &crate::policy::Policy,
    clock: Arc<dyn TimeProvider>,
) -> Result<(RaTlsVerifier, Option<crate::collateral::Refresher>), crate::dcap::CollateralError> {
    let collateral = policy
        .collateral_files()
        .iter()
        .map(|c| {
            crate::dcap::Collateral::from_file(&c.path).map_err(|e| crate::dcap::CollateralError::InPolicy {
                policy: policy.source().to_path_buf(),
                line: c.line,
                field: c.field.clone(),
                inner: Box::new(e),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let root = match policy.root_ca() {
        None => crate::dcap::RootCa::intel(),
        Some(r) => {
            let root = crate::dcap::RootCa::from_file(&r.path).map_err(|reason| {
                crate::dcap::CollateralError::RootCa {
                    policy: policy.source().to_path_buf(),
                    line: r.line,
                    reason,
                }
            })?;
            if !root.is_intel() {
                warn!(
                    policy = %policy.source().display(),
                    root_ca = %r.path.display(),
                    sha256 = root.sha256(),
                    "[attestation] root_ca is NOT the Intel SGX Root CA: SGX evidence is trusted because this CA says so (test or private PKI only)"
                );
            }
            root
        }
    };
    let store = Arc::new(crate::collateral::CollateralStore::with_root(collateral, root));
    let refresher = match policy.pccs() {
        None => None,
        Some(cfg) => {
            let client = crate::pcs::PcsClient::new(&cfg.url, cfg.ca.as_deref(), Duration::from_secs(30))
                .map_err(|e| crate::dcap::CollateralError::Endpoint {
                    policy: policy.source().to_path_buf(),
                    reason: e.to_string(),
                })?;
            Some(crate::collateral::Refresher::new(
                client,
                cfg.platforms.clone(),
                cfg.cache_dir.clone(),
                store.clone(),
                clock,
            ))
        }
    };
    let v = RaTlsVerifier::new(Arc::new(crate::dcap::DcapVerifier::with_store(store)));
    #[cfg(feature = "insecure-sim")]
    if policy.insecure_allow_simulated() {
        warn!(
            "policy sets insecure_allow_simulated = true: SIMULATED-INSECURE evidence can match entries with tee = \"simulated\""
        );
        return Ok((
            v.dangerous_with_simulated(Arc::new(crate::sim::SimVerifier::dangerous_new())),
            refresher,
        ));
    }
    Ok((v, refresher))
}
