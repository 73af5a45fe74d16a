//! The key server: TLS (rustls, ring) with RA-TLS client authentication,
//! speaking Gramine's secret-provisioning protocol (see [`crate::wire`]).
//!
//! Verification and the policy decision happen *inside* the TLS handshake,
//! as in Gramine: a refused enclave never completes the handshake and is
//! sent nothing. Session resumption is disabled so that every connection is
//! verified at its own time. Every decision is logged with `tracing` (peer,
//! identity, TCB status, advisories, granted key names or reasons); key
//! bytes are never logged.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::policy::{Grant, KeyReleasePolicy};
use crate::ratls::RaTlsVerifier;
use crate::wire;

/// Server limits. All are enforced per connection except `max_connections`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time allowed for the TLS handshake (including evidence verification).
    pub handshake_timeout: Duration,
    /// Time allowed for each read from the client.
    pub read_timeout: Duration,
    /// Total time a connection may stay open.
    pub connection_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Extension key requests allowed per connection.
    pub max_key_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_key_requests: 64,
        }
    }
}

/// Key server errors (setup and listening; per-connection errors are only logged).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The TLS configuration was refused.
    #[error("server TLS configuration: {0}")]
    Tls(String),
    /// Accepting connections failed.
    #[error("listening socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Why one connection ended without (complete) provisioning.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The handshake did not finish in time.
    #[error("TLS handshake timed out after {0:?}")]
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

tokio::task_local! {
    static PEER: SocketAddr;
}

const DECISION_CACHE: usize = 4096;

/// Grants decided during handshakes, keyed by SHA-256 of the client certificate.
#[derive(Default)]
struct Decisions {
    inner: Mutex<DecisionMap>,
}

/// Map from certificate hash to grant, plus insertion order for eviction.
type DecisionMap = (HashMap<[u8; 32], Arc<Grant>>, VecDeque<[u8; 32]>);

impl Decisions {
    fn insert(&self, k: [u8; 32], g: Arc<Grant>) {
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
    fn get(&self, k: &[u8; 32]) -> Option<Arc<Grant>> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.get(k).cloned()
    }
}

struct RaTlsClientVerifier {
    ratls: RaTlsVerifier,
    policy: Arc<dyn KeyReleasePolicy>,
    provider: Arc<CryptoProvider>,
    decisions: Arc<Decisions>,
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
        let peer = peer();
        if !intermediates.is_empty() {
            warn!(%peer, intermediates = intermediates.len(), "refused: RA-TLS client sent a certificate chain (depth 0 required)");
            return Err(refuse());
        }
        let (ev, format) = match self.ratls.verify_certificate(end_entity, now) {
            Ok(v) => v,
            Err(e) => {
                warn!(%peer, reason = %e, "refused: evidence did not verify");
                return Err(refuse());
            }
        };
        let s = ev.summary();
        match self.policy.release(&ev) {
            Ok(grant) => {
                if s.tee != "sgx-dcap" {
                    warn!(%peer, "accepting SIMULATED-INSECURE evidence (policy opted in)");
                }
                info!(
                    %peer, tee = %s.tee, evidence = ?format, mrenclave = %s.mrenclave, mrsigner = %s.mrsigner,
                    isv_prod_id = s.isv_prod_id, isv_svn = s.isv_svn, debug = s.debug,
                    tcb_status = %s.tcb_status, advisories = ?s.advisory_ids,
                    entry = %grant.entry, first_secret = %grant.first_secret_name, granted = ?grant.key_names(),
                    "policy accepts evidence (keys are sent only after the handshake completes)"
                );
                let key: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
                self.decisions.insert(key, Arc::new(grant));
                Ok(ClientCertVerified::assertion())
            }
            Err(refusal) => {
                warn!(
                    %peer, tee = %s.tee, mrenclave = %s.mrenclave, mrsigner = %s.mrsigner,
                    isv_prod_id = s.isv_prod_id, isv_svn = s.isv_svn, debug = s.debug,
                    tcb_status = %s.tcb_status, advisories = ?s.advisory_ids,
                    reasons = ?refusal.reasons, "refused by policy"
                );
                Err(refuse())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The key server.
#[derive(Clone)]
pub struct KeyServer {
    acceptor: TlsAcceptor,
    decisions: Arc<Decisions>,
    limits: Limits,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for KeyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyServer").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl KeyServer {
    /// Builds a server from its certificate chain and key, an RA-TLS verifier and a policy.
    pub fn new(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        ratls: RaTlsVerifier,
        policy: Arc<dyn KeyReleasePolicy>,
        limits: Limits,
    ) -> Result<Self, ServerError> {
        let provider = crate::tls::provider();
        let decisions = Arc::new(Decisions::default());
        let verifier = Arc::new(RaTlsClientVerifier {
            ratls,
            policy,
            provider: provider.clone(),
            decisions: decisions.clone(),
        });
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ServerError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(cert_chain, key)
            .map_err(|e| ServerError::Tls(e.to_string()))?;
        // Every connection is verified afresh: no resumption.
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        Ok(Self { acceptor: TlsAcceptor::from(Arc::new(cfg)), decisions, limits, slots })
    }

    /// Serves connections from `listener` forever.
    pub async fn serve(self, listener: TcpListener) -> Result<(), ServerError> {
        loop {
            let permit = match self.slots.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return Ok(()),
            };
            let (stream, addr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: log, back off briefly, keep serving.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let this = self.clone();
            tokio::spawn(PEER.scope(addr, async move {
                let total = this.limits.connection_timeout;
                match tokio::time::timeout(total, this.handle(stream)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => info!(peer = %addr, error = %e, "connection ended"),
                    Err(_) => info!(peer = %addr, error = %ConnectionError::ConnectionTimeout(total), "connection ended"),
                }
                drop(permit);
            }));
        }
    }

    async fn handle(&self, stream: TcpStream) -> Result<(), ConnectionError> {
        let _ = stream.set_nodelay(true);
        let lim = &self.limits;
        let mut tls = match tokio::time::timeout(lim.handshake_timeout, self.acceptor.accept(stream)).await {
            Err(_) => return Err(ConnectionError::HandshakeTimeout(lim.handshake_timeout)),
            Ok(Err(e)) => return Err(ConnectionError::Handshake(e)),
            Ok(Ok(s)) => s,
        };
        let grant = {
            let (_, conn) = tls.get_ref();
            let cert = conn.peer_certificates().and_then(|c| c.first()).ok_or(ConnectionError::NoDecision)?;
            let key: [u8; 32] = Sha256::digest(cert.as_ref()).into();
            self.decisions.get(&key).ok_or(ConnectionError::NoDecision)?
        };
        let mut req = [0u8; 35];
        read_exact_timeout(&mut tls, &mut req, lim.read_timeout).await?;
        if &req != wire::REQUEST {
            return Err(ConnectionError::Protocol(
                "first message is not SECRET_PROVISION_RA_TLS_REQUEST_V1".into(),
            ));
        }
        let msg = zeroize::Zeroizing::new(wire::encode_response(grant.first_secret.expose()));
        info!(peer = %peer(), key = %grant.first_secret_name, entry = %grant.entry, "sent first secret");
        tls.write_all(&msg).await?;
        tls.flush().await?;
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
                warn!(peer = %peer(), %reason, "refused key request");
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
/// collateral files and, only with the `insecure-sim` feature *and*
/// `insecure_allow_simulated = true`, the simulated verifier.
pub fn verifier_for_policy(
    policy: &crate::policy::Policy,
) -> Result<RaTlsVerifier, crate::dcap::CollateralError> {
    let collateral = policy
        .collateral()
        .iter()
        .map(|p| crate::dcap::Collateral::from_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    let v = RaTlsVerifier::new(Arc::new(crate::dcap::DcapVerifier::new(collateral)));
    #[cfg(feature = "insecure-sim")]
    if policy.insecure_allow_simulated() {
        warn!(
            "policy sets insecure_allow_simulated = true: SIMULATED-INSECURE evidence can match entries with tee = \"simulated\""
        );
        return Ok(v.dangerous_with_simulated(Arc::new(crate::sim::SimVerifier::dangerous_new())));
    }
    Ok(v)
}
