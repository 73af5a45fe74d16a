//! `pfs attest ...` and `pfs keyserver ...`: thin wrappers over the `attest` crate.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use attest::dcap::{Collateral, DcapVerifier, unix_time};
use attest::ratls::RaTlsVerifier;
use attest::server::{KeyServer, Limits};
use attest::{KeyReleasePolicy, Policy, VerifiedEvidence};
use clap::{Args, Subcommand};

/// `pfs attest` subcommands.
#[derive(Debug, Subcommand)]
pub enum AttestCmd {
    /// Verify an SGX DCAP quote or a Gramine RA-TLS certificate offline (no policy).
    ///
    /// Checks the quote's signatures and certificate chain up to the pinned
    /// Intel SGX Root CA, the collateral (TCB info, QE identity, CRLs) at the
    /// given time, and for a certificate the binding between its key and the
    /// quote's REPORTDATA. A debug enclave still verifies (reported as
    /// debug: true). Exit status: 0 verified, 1 not verified, 2 usage or I/O error.
    Verify(VerifyArgs),
    /// Say which keys a policy would release to this evidence, or why none.
    ///
    /// Exit status: 0 keys would be released, 1 refused or not verified, 2 usage or I/O error.
    PolicyCheck(PolicyCheckArgs),
    /// Fetch one platform's collateral from Intel PCS or a PCCS, verify it, and save it.
    ///
    /// Uses the PCS API v4 (TCB info, QE identity, PCK CRL, Root CA CRL with their
    /// issuer chains) and verifies every signature and chain up to the pinned
    /// Intel SGX Root CA at the given time before writing. The output (mode 0600,
    /// written atomically) is dcap-qvl QuoteCollateralV3 JSON, usable as a policy's
    /// [attestation] collateral file or with `pfs attest verify --collateral` on a
    /// machine without network access. Exit status: 0 saved, 1 the fetched set did
    /// not verify, 2 usage, network or I/O error.
    FetchCollateral(FetchCollateralArgs),
}

/// Arguments of `pfs attest fetch-collateral`.
#[derive(Debug, Args)]
pub struct FetchCollateralArgs {
    /// PCS or PCCS base URL, e.g. https://api.trustedservices.intel.com or https://pccs.example:8081.
    #[arg(long, value_name = "URL")]
    pub pccs_url: String,
    /// Extra CA certificate (PEM) to trust for the endpoint (a PCCS usually has its own).
    #[arg(long, value_name = "CA.pem")]
    pub pccs_ca: Option<PathBuf>,
    /// The platform's FMSPC (12 hex characters, from its PCK certificate).
    #[arg(long)]
    pub fmspc: String,
    /// The CA that issued the platform's PCK certificate.
    #[arg(long, value_name = "processor|platform")]
    pub ca: attest::pcs::PckCa,
    /// Where to write the collateral JSON.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Verification time in Unix seconds (default: now).
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub at: Option<u64>,
}

/// Where the evidence comes from.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct EvidenceSource {
    /// A raw SGX DCAP quote (binary).
    #[arg(long, value_name = "FILE")]
    pub quote: Option<PathBuf>,
    /// An RA-TLS certificate (PEM or DER), as made by Gramine's ra_tls_attest.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
}

/// Arguments of `pfs attest verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub source: EvidenceSource,
    /// Collateral in dcap-qvl QuoteCollateralV3 JSON (repeat for several platforms).
    #[arg(long, value_name = "FILE", required = true)]
    pub collateral: Vec<PathBuf>,
    /// Verification time in Unix seconds (default: now).
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub at: Option<u64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pfs attest policy-check`.
#[derive(Debug, Args)]
pub struct PolicyCheckArgs {
    /// The key-release policy (TOML).
    #[arg(value_name = "POLICY.toml")]
    pub policy: PathBuf,
    #[command(flatten)]
    pub source: EvidenceSource,
    /// Collateral JSON files (default: the policy's [attestation] collateral).
    #[arg(long, value_name = "FILE")]
    pub collateral: Vec<PathBuf>,
    /// Verification time in Unix seconds (default: now).
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub at: Option<u64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pfs keyserver`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct KeyserverArgs {
    #[command(subcommand)]
    pub cmd: Option<KeyserverCmd>,
    /// The key-release policy (TOML): enclaves, keys, collateral.
    #[arg(long, value_name = "POLICY.toml", required = true)]
    pub policy: Option<PathBuf>,
    /// Address to listen on. Enclaves dial the name in SECRET_PROVISION_SERVERS.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4433")]
    pub listen: String,
    /// Server certificate chain (PEM); its name must match what enclaves dial.
    #[arg(long, value_name = "CERT.pem", required = true)]
    pub cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, value_name = "KEY.pem", required = true)]
    pub key: Option<PathBuf>,
    /// Authenticated connections (TLS handshake done) served at once; when all are
    /// taken, the oldest is closed to admit a new one.
    #[arg(long, default_value_t = attest::server::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// TLS handshakes in progress at once (unauthenticated peers). accept() never
    /// waits: when all are taken, the oldest handshake is closed.
    #[arg(long, default_value_t = attest::server::DEFAULT_MAX_HANDSHAKES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_handshakes: usize,
    /// Handshakes in progress at once from one source address (IPv4 address or
    /// IPv6 /64); a source at this bound loses its own oldest handshake.
    #[arg(long, default_value_t = attest::server::DEFAULT_MAX_HANDSHAKES_PER_SOURCE,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_handshakes_per_source: usize,
    /// Deadline in seconds for the whole TLS handshake (from accept, including
    /// evidence verification), and for each read after it. A connection lives at most 30 s.
    #[arg(long, default_value_t = attest::server::DEFAULT_HANDSHAKE_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=30))]
    pub timeout_secs: u64,
    /// Listen backlog asked of the kernel (it caps it at net.core.somaxconn).
    #[arg(long, default_value_t = attest::server::DEFAULT_LISTEN_BACKLOG,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub listen_backlog: u32,
    /// Start even if key files or the TLS private key are readable by group or
    /// others (as ssh, the server refuses them by default).
    #[arg(long)]
    pub allow_insecure_key_permissions: bool,
}

/// `pfs keyserver` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyserverCmd {
    /// Create a development CA and a server certificate for localhost in DIR.
    ///
    /// Writes ca.pem (give it to enclaves as SECRET_PROVISION_CA_CHAIN_PATH),
    /// ca-key.pem, server.pem and server-key.pem; private keys get mode 0600.
    /// Existing files are never overwritten.
    InitTls {
        /// Output directory (created if missing).
        dir: PathBuf,
    },
}

/// A failure that maps to exit status 1 (evidence not verified / refused).
#[derive(Debug)]
struct NotVerified(String);
impl std::fmt::Display for NotVerified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NotVerified {}

/// Maps an error to the exit status: 1 for verification failures, 2 otherwise.
pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    if err.downcast_ref::<NotVerified>().is_some() { ExitCode::from(1) } else { ExitCode::from(2) }
}

fn now_or(at: Option<u64>) -> Result<rustls_pki_types::UnixTime> {
    Ok(match at {
        Some(t) => unix_time(t),
        None => rustls_pki_types::UnixTime::now(),
    })
}

fn read_cert(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading certificate {}", path.display()))?;
    if bytes.starts_with(b"-----BEGIN") {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("certificate {} is not valid PEM: {e}", path.display()))?;
        Ok(der.to_vec())
    } else {
        Ok(bytes)
    }
}

fn verify_source(
    source: &EvidenceSource,
    collateral: &[PathBuf],
    at: Option<u64>,
) -> Result<VerifiedEvidence> {
    let bundles = collateral.iter().map(|p| Collateral::from_file(p)).collect::<Result<Vec<_>, _>>()?;
    let dcap = Arc::new(DcapVerifier::new(bundles));
    let now = now_or(at)?;
    if let Some(q) = &source.quote {
        let bytes = std::fs::read(q).with_context(|| format!("reading quote {}", q.display()))?;
        dcap.verify(&bytes, now).map_err(|e| NotVerified(format!("quote {}: {e}", q.display())).into())
    } else if let Some(c) = &source.cert {
        let der = read_cert(c)?;
        RaTlsVerifier::new(dcap)
            .verify_certificate(&der, now)
            .map(|(ev, _)| ev)
            .map_err(|e| NotVerified(format!("certificate {}: {e}", c.display())).into())
    } else {
        bail!("give --quote FILE or --cert FILE")
    }
}

fn print_evidence(ev: &VerifiedEvidence) {
    let s = ev.summary();
    println!("verified: {} quote, TCB status {}", s.tee, s.tcb_status);
    println!("  mrenclave    {}", s.mrenclave);
    println!("  mrsigner     {}", s.mrsigner);
    println!("  isv_prod_id  {}", s.isv_prod_id);
    println!("  isv_svn      {}", s.isv_svn);
    println!("  debug        {}", s.debug);
    println!(
        "  advisories   {}",
        if s.advisory_ids.is_empty() { "-".into() } else { s.advisory_ids.join(", ") }
    );
    println!("  report_data  {}", s.report_data);
    println!("  verified at  {}", s.verified_at);
}

fn fetch_collateral(a: &FetchCollateralArgs) -> Result<()> {
    use attest::pcs::{PcsClient, Platform, check_collateral};
    let platform = Platform::new(&a.fmspc, a.ca).map_err(|e| anyhow::anyhow!("--fmspc: {e}"))?;
    let client = PcsClient::new(&a.pccs_url, a.pccs_ca.as_deref(), Duration::from_secs(60))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let set = rt.block_on(client.fetch(&platform))?;
    let now = now_or(a.at)?.as_secs();
    let v = check_collateral(&set, &platform, now)
        .map_err(|e| NotVerified(format!("collateral for {platform} from {} refused: {e}", a.pccs_url)))?;
    let json = serde_json::to_vec_pretty(&set)?;
    attest::collateral::write_atomic_0600(&a.out, &json)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "saved collateral for {platform} to {} (verified at {now}; valid until {})",
        a.out.display(),
        v.next_update
    );
    Ok(())
}

/// Runs `pfs attest ...`. `Ok(true)`: verified / keys granted; `Ok(false)`: the policy
/// refused (already reported on stdout); `Err`: not verified or a usage/I/O error (see
/// [`exit_code_for`]).
pub fn run_attest(cmd: AttestCmd) -> Result<bool> {
    match cmd {
        AttestCmd::FetchCollateral(a) => {
            fetch_collateral(&a)?;
            Ok(true)
        }
        AttestCmd::Verify(a) => {
            let ev = verify_source(&a.source, &a.collateral, a.at)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&ev.summary())?);
            } else {
                print_evidence(&ev);
            }
            Ok(true)
        }
        AttestCmd::PolicyCheck(a) => {
            let policy = Policy::load(&a.policy)?;
            let collateral = if a.collateral.is_empty() { policy.collateral() } else { a.collateral.clone() };
            if collateral.is_empty() {
                bail!("no collateral: pass --collateral FILE or set [attestation] collateral in the policy");
            }
            let ev = verify_source(&a.source, &collateral, a.at)?;
            let decision = policy.release(&ev);
            if a.json {
                let v = match &decision {
                    Ok(g) => serde_json::json!({
                        "granted": true, "entry": g.entry, "first_secret": g.first_secret_name,
                        "keys": g.key_names(), "evidence": ev.summary(),
                    }),
                    Err(r) => {
                        serde_json::json!({"granted": false, "reasons": r.reasons, "evidence": ev.summary()})
                    }
                };
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_evidence(&ev);
                match &decision {
                    Ok(g) => println!(
                        "GRANTED by entry {:?}: first secret {:?}, keys {}",
                        g.entry,
                        g.first_secret_name,
                        g.key_names().join(", ")
                    ),
                    Err(r) => {
                        println!("REFUSED: no key would be released");
                        for reason in &r.reasons {
                            println!("  - {reason}");
                        }
                    }
                }
            }
            Ok(decision.is_ok())
        }
    }
}

/// Logs to stderr (`RUST_LOG` filters, default `info`), with colour only on a terminal.
fn init_logging() {
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Runs `pfs keyserver ...` (`init-tls`, or the server until it fails). `Ok(true)` on success.
pub fn run_keyserver(args: KeyserverArgs) -> Result<bool> {
    if let Some(KeyserverCmd::InitTls { dir }) = args.cmd {
        let f = attest::tls::init_tls(&dir)?;
        println!(
            "CA certificate:      {}  (SECRET_PROVISION_CA_CHAIN_PATH in the manifest)",
            f.ca_cert.display()
        );
        println!("CA private key:      {}  (mode 0600)", f.ca_key.display());
        println!(
            "server certificate:  {}  (--cert; valid for localhost, 127.0.0.1, ::1)",
            f.server_cert.display()
        );
        println!("server private key:  {}  (--key, mode 0600)", f.server_key.display());
        return Ok(true);
    }
    let (Some(policy_path), Some(cert), Some(key)) = (args.policy, args.cert, args.key) else {
        bail!("--policy, --cert and --key are required");
    };
    init_logging();
    let policy = Policy::load(&policy_path)?;
    for w in policy.warnings() {
        tracing::warn!("{w}");
    }
    let mut exposed = policy.exposed_key_files();
    if let Err(e) = attest::tls::check_key_file_mode(&key) {
        exposed.push(e.to_string());
    }
    if !exposed.is_empty() {
        if !args.allow_insecure_key_permissions {
            bail!("{}\n(or pass --allow-insecure-key-permissions to start anyway)", exposed.join("\n"));
        }
        for e in &exposed {
            tracing::warn!("{e} (started anyway: --allow-insecure-key-permissions)");
        }
    }
    let (verifier, refresher) = attest::server::verifier_and_refresher(&policy, attest::clock::system())?;
    if policy.collateral_files().is_empty() && policy.pccs().is_none() {
        tracing::warn!(
            "policy {}: [attestation] names no collateral: SGX evidence cannot verify and will be refused",
            policy.source().display()
        );
    }
    let limits = Limits {
        handshake_timeout: Duration::from_secs(args.timeout_secs),
        read_timeout: Duration::from_secs(args.timeout_secs),
        max_connections: args.max_connections,
        max_handshakes: args.max_handshakes,
        max_handshakes_per_source: args.max_handshakes_per_source,
        listen_backlog: args.listen_backlog,
        ..Limits::default()
    };
    let certs = attest::tls::load_certs(&cert)?;
    let private_key = attest::tls::load_private_key(&key)?;
    attest::tls::check_key_matches(&certs, &private_key, &cert, &key)?;
    let server = KeyServer::new(certs, private_key, verifier, Arc::new(policy.clone()), limits)?;
    let listen = {
        use std::net::ToSocketAddrs;
        args.listen
            .to_socket_addrs()
            .with_context(|| format!("--listen {}: expected HOST:PORT, e.g. 0.0.0.0:4433", args.listen))?
            .next()
            .with_context(|| format!("--listen {}: the name resolves to no address", args.listen))?
    };
    let (soft, _hard) = attest::server::raise_fd_limit();
    let needed = (args.max_handshakes + args.max_connections) as u64 + 64;
    if soft < needed {
        tracing::warn!(
            fd_limit = soft,
            needed,
            "the open-file limit is below --max-handshakes + --max-connections; under load accept() will fail and the oldest handshakes will be shed (raise `ulimit -n`)"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let (listener, backlog) = attest::server::bind(listen, args.listen_backlog)
            .with_context(|| format!("listening on {listen}"))?;
        let l = server.limits();
        tracing::info!(
            %listen,
            enclaves = policy.enclaves().len(),
            keys = ?policy.key_names(),
            collateral = policy.collateral_files().len(),
            max_handshakes = l.max_handshakes,
            max_handshakes_per_source = l.max_handshakes_per_source,
            max_connections = l.max_connections,
            handshake_deadline_secs = l.handshake_timeout.as_secs(),
            backlog,
            fd_limit = soft,
            "key server ready"
        );
        if let Some(r) = refresher {
            tracing::info!(?r, "collateral refresher started");
            tokio::spawn(r.run());
        }
        server.serve(listener).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(true)
}
