//! TLS helpers: PEM loading, rustls configuration with the ring provider, and
//! `init-tls` (a development CA plus a localhost server certificate).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// TLS setup errors.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{what} {path}: {reason}")]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// An output file could not be written.
    #[error("writing {path}: {cause}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The private key does not belong to the certificate.
    #[error(
        "the private key in {key} does not belong to the certificate in {cert} (their public keys differ); pass the key that was created with this certificate"
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
    },
    /// The private key file can be read by group or others.
    #[error(
        "private key file {path} has mode {mode:04o}, readable or writable by group or others; run `chmod 600 {path}`"
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// rustls or rcgen refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The ring crypto provider used everywhere in this crate.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The algorithms the key server verifies a client's TLS signature
/// (CertificateVerify, the proof of key possession) with: aws-lc-rs's.
///
/// Why not ring's like everything else: Gramine's RA-TLS keys are P-384, ring
/// 0.17 has no assembly for P-384, and that one verification was most of the
/// server's CPU per provisioning (docs/ATTESTATION.md, load benchmark).
pub fn client_signature_algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms
}

/// Loads all certificates from a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Pem { what: "certificate file", path: path.to_path_buf(), reason };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// Loads a private key (PKCS#8, SEC1 or PKCS#1) from a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        what: "private key file",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Checks that `key` belongs to the first certificate of `chain`: the public key
/// derived from the private key must equal the certificate's. Errors name both files.
pub fn check_key_matches(
    chain: &[CertificateDer<'_>],
    key: &PrivateKeyDer<'_>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), TlsError> {
    let mismatch = || TlsError::KeyMismatch { cert: cert_path.to_path_buf(), key: key_path.to_path_buf() };
    let signing = provider().key_provider.load_private_key(key.clone_key()).map_err(|e| TlsError::Pem {
        what: "private key file",
        path: key_path.to_path_buf(),
        reason: format!("not a usable TLS key: {e}"),
    })?;
    let Some(public) = signing.public_key() else {
        return Ok(()); // the provider cannot tell; rustls checks again when configured
    };
    let leaf = chain.first().ok_or_else(mismatch)?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::Pem {
        what: "certificate file",
        path: cert_path.to_path_buf(),
        reason: format!("certificate does not parse: {e}"),
    })?;
    if cert.public_key().raw != public.as_ref() { Err(mismatch()) } else { Ok(()) }
}

/// The permission bits of a private key file; an error if group or others can access it.
pub fn check_key_file_mode(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| TlsError::Pem {
        what: "private key file",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 { Err(TlsError::KeyPermissions { path: path.to_path_buf(), mode }) } else { Ok(()) }
}

/// Files written by [`init_tls`].
#[derive(Debug, Clone)]
pub struct InitTlsFiles {
    /// The CA certificate (give it to enclaves: `SECRET_PROVISION_CA_CHAIN_PATH`).
    pub ca_cert: PathBuf,
    /// The CA private key (mode 0600).
    pub ca_key: PathBuf,
    /// The server certificate for `localhost` (`--cert`).
    pub server_cert: PathBuf,
    /// The server private key (mode 0600, `--key`).
    pub server_key: PathBuf,
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let werr = |cause| TlsError::Write { path: path.to_path_buf(), cause };
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(werr)?;
    f.write_all(data).map_err(werr)?;
    f.sync_all().map_err(werr)
}

/// Creates `dir` (if needed) with a development CA and a server certificate
/// for `localhost`, `127.0.0.1` and `::1`. Private keys get mode 0600.
/// Existing files are never overwritten.
pub fn init_tls(dir: &Path) -> Result<InitTlsFiles, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    let cfg = |e: rcgen::Error| TlsError::Config(e.to_string());
    std::fs::create_dir_all(dir).map_err(|cause| TlsError::Write { path: dir.to_path_buf(), cause })?;
    let files = InitTlsFiles {
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca-key.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
    };
    for p in [&files.ca_cert, &files.ca_key, &files.server_cert, &files.server_key] {
        if p.exists() {
            return Err(TlsError::Write {
                path: p.clone(),
                cause: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "refusing to overwrite"),
            });
        }
    }
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cfg)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "pfs keyserver development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(cfg)?;
    let srv_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cfg)?;
    let mut srv = CertificateParams::new(vec!["localhost".to_string()]).map_err(cfg)?;
    srv.distinguished_name.push(DnType::CommonName, "localhost");
    srv.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
    srv.subject_alt_names.push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    let issuer = Issuer::new(ca, ca_key);
    let srv_cert = srv.signed_by(&srv_key, &issuer).map_err(cfg)?;
    write_new(&files.ca_key, issuer.key().serialize_pem().as_bytes(), 0o600)?;
    write_new(&files.ca_cert, ca_cert.pem().as_bytes(), 0o644)?;
    write_new(&files.server_key, srv_key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&files.server_cert, srv_cert.pem().as_bytes(), 0o644)?;
    Ok(files)
}
