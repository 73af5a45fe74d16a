//! The provisioning client (the enclave side).
//!
//! Connects to the first reachable server of a list, verifies the server's
//! certificate against a CA file (with host-name check, as Gramine does),
//! presents an RA-TLS certificate made by an [`Attester`], and receives the
//! first secret plus any further named keys through the extension in
//! [`crate::wire`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use crate::attester::Attester;
use crate::ratls::{Curve, RaTlsCertificate, RaTlsError, build_certificate};
use crate::tls::{TlsError, load_certs};
use crate::wire;

/// Client errors.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No server list was given.
    #[error("no key server given (expected host:port[,host:port...])")]
    NoServers,
    /// A server entry is not `host:port`.
    #[error("bad server address {0:?} (expected host:port)")]
    BadServer(String),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Building the RA-TLS certificate failed.
    #[error(transparent)]
    RaTls(#[from] RaTlsError),
    /// Every server failed.
    #[error("provisioning failed with every server: {}", .0.iter().map(|(s, e)| format!("{s}: {e}")).collect::<Vec<_>>().join("; "))]
    AllFailed(Vec<(String, String)>),
}

/// Keys received from a server. Zeroized on drop; `Debug` does not print them.
pub struct Provisioned {
    /// The server that answered.
    pub server: String,
    /// The first secret (what a stock Gramine client receives).
    pub first_secret: Zeroizing<Vec<u8>>,
    /// Further keys received by name.
    pub keys: BTreeMap<String, Zeroizing<Vec<u8>>>,
    /// Requested keys the server denied, with its reason.
    pub denied: BTreeMap<String, String>,
}

impl std::fmt::Debug for Provisioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioned")
            .field("server", &self.server)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("denied", &self.denied)
            .finish_non_exhaustive()
    }
}

/// Splits a Gramine-style server list (`host:port` separated by `,`, `;` or spaces).
pub fn parse_servers(list: &str) -> Vec<String> {
    list.split([',', ';', ' ', '\t', '\n']).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// A provisioning client with its RA-TLS identity.
#[derive(Clone)]
pub struct ProvisioningClient {
    connector: TlsConnector,
    servers: Vec<String>,
    timeout: Duration,
}

impl std::fmt::Debug for ProvisioningClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisioningClient").field("servers", &self.servers).finish_non_exhaustive()
    }
}

impl ProvisioningClient {
    /// A client that presents `identity` (or no certificate at all when `None`,
    /// which every key server refuses; useful only for tests).
    pub fn new(
        servers: Vec<String>,
        ca_certs: Vec<CertificateDer<'static>>,
        identity: Option<&RaTlsCertificate>,
    ) -> Result<Self, ClientError> {
        if servers.is_empty() {
            return Err(ClientError::NoServers);
        }
        let mut roots = rustls::RootCertStore::empty();
        for c in ca_certs {
            roots.add(c).map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let mut cfg = match identity {
            Some(id) => builder
                .with_client_auth_cert(vec![id.cert.clone()], id.private_key())
                .map_err(|e| TlsError::Config(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        cfg.resumption = rustls::client::Resumption::disabled();
        Ok(Self { connector: TlsConnector::from(Arc::new(cfg)), servers, timeout: Duration::from_secs(10) })
    }

    /// A client for `servers` (Gramine list syntax) trusting the CA file, with
    /// a fresh P-384 RA-TLS certificate from `attester`.
    pub fn with_attester(
        servers: &str,
        ca_file: &Path,
        attester: &dyn Attester,
    ) -> Result<Self, ClientError> {
        let cert = build_certificate(attester, Curve::P384)?;
        Self::new(parse_servers(servers), load_certs(ca_file)?, Some(&cert))
    }

    /// Sets the timeout for connecting and for each read (default 10 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Provisions from the first server that answers; requests `extra_keys` by name.
    pub async fn provision(&self, extra_keys: &[&str]) -> Result<Provisioned, ClientError> {
        let mut failures = Vec::new();
        for s in &self.servers {
            match self.provision_from(s, extra_keys).await {
                Ok(p) => return Ok(p),
                Err(e) => failures.push((s.clone(), e)),
            }
        }
        Err(ClientError::AllFailed(failures))
    }

    /// Blocking wrapper around [`ProvisioningClient::provision`] (own current-thread runtime).
    pub fn provision_blocking(&self, extra_keys: &[&str]) -> Result<Provisioned, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::AllFailed(vec![("runtime".into(), e.to_string())]))?;
        rt.block_on(self.provision(extra_keys))
    }

    async fn provision_from(&self, server: &str, extra: &[&str]) -> Result<Provisioned, String> {
        let (host, _port) =
            server.rsplit_once(':').ok_or_else(|| format!("bad server address {server:?}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name =
            ServerName::try_from(host.to_string()).map_err(|e| format!("bad host name {host:?}: {e}"))?;
        let t = self.timeout;
        let tcp = tokio::time::timeout(t, TcpStream::connect(server))
            .await
            .map_err(|_| format!("connect timed out after {t:?}"))?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut tls = tokio::time::timeout(t, self.connector.connect(name, tcp))
            .await
            .map_err(|_| format!("TLS handshake timed out after {t:?}"))?
            .map_err(|e| format!("TLS handshake: {e}"))?;
        tls.write_all(wire::REQUEST).await.map_err(|e| format!("sending request: {e}"))?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let first_secret =
            read_secret(&mut tls, t).await?.map_err(|reason| format!("server denied: {reason}"))?;
        let mut keys = BTreeMap::new();
        let mut denied = BTreeMap::new();
        for k in extra {
            tls.write_all(&wire::encode_key_request(k)).await.map_err(|e| format!("requesting {k}: {e}"))?;
            tls.flush().await.map_err(|e| e.to_string())?;
            match read_secret(&mut tls, t).await? {
                Ok(v) => {
                    keys.insert((*k).to_string(), v);
                }
                Err(reason) => {
                    denied.insert((*k).to_string(), reason);
                }
            }
        }
        let _ = tls.shutdown().await;
        Ok(Provisioned { server: server.to_string(), first_secret, keys, denied })
    }
}

async fn read_exact_t<S: AsyncRead + Unpin>(s: &mut S, buf: &mut [u8], t: Duration) -> Result<(), String> {
    tokio::time::timeout(t, s.read_exact(buf))
        .await
        .map_err(|_| format!("server sent nothing for {t:?}"))?
        .map_err(|e| format!("reading response: {e}"))?;
    Ok(())
}

/// Reads a RESPONSE (Ok) or KEY_DENIED (Err(reason)) message.
async fn read_secret<S: AsyncRead + Unpin>(
    s: &mut S,
    t: Duration,
) -> Result<Result<Zeroizing<Vec<u8>>, String>, String> {
    let mut head = [0u8; 22];
    read_exact_t(s, &mut head, t).await?;
    if &head == wire::KEY_DENIED {
        let mut len = [0u8; 4];
        read_exact_t(s, &mut len, t).await?;
        let len = u32::from_be_bytes(len);
        if len > wire::MAX_SECRET_LEN {
            return Err(format!("denial reason of {len} bytes is too long"));
        }
        let mut reason = vec![0u8; len as usize];
        read_exact_t(s, &mut reason, t).await?;
        return Ok(Err(String::from_utf8_lossy(&reason).into_owned()));
    }
    let mut rest = [0u8; 15];
    read_exact_t(s, &mut rest, t).await?;
    if head[..] != wire::RESPONSE[..22] || rest[..] != wire::RESPONSE[22..] {
        return Err("server response is not SECRET_PROVISION_RA_TLS_RESPONSE_V1".into());
    }
    let mut len = [0u8; 4];
    read_exact_t(s, &mut len, t).await?;
    let len = u32::from_be_bytes(len);
    if len > wire::MAX_SECRET_LEN {
        return Err(format!("secret length {len} exceeds {}", wire::MAX_SECRET_LEN));
    }
    let mut secret = Zeroizing::new(vec![0u8; len as usize]);
    read_exact_t(s, &mut secret, t).await?;
    Ok(Ok(secret))
}
