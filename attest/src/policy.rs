//! The data owner's key-release policy (TOML).
//!
//! ```toml
//! [attestation]
//! collateral = ["collateral.json"]   # dcap-qvl QuoteCollateralV3 JSON, relative to this file
//! insecure_allow_simulated = false   # default
//! # root_ca = "test-root.pem"        # TEST OR PRIVATE PKI ONLY; default: the Intel SGX Root CA
//!
//! [keys.model]
//! file = "keys/model.key"            # exactly 16 raw bytes
//!
//! [[enclave]]
//! name = "inference"
//! mrenclave = "0866e7ca…"            # and/or mrsigner + isv_prod_id (+ min_isv_svn)
//! allow_debug = false                # default
//! accepted_tcb_statuses = ["UpToDate"]   # default
//! accepted_advisories = ["INTEL-SA-00615"]  # optional; absent = any
//! first_secret = "model"             # what a stock Gramine client receives
//! keys = ["model"]                   # further keys our client may request
//! ```
//!
//! Loading is strict: unknown fields are errors, errors name the line and the
//! field, an entry that would accept any MRENCLAVE and any MRSIGNER is refused,
//! and key files must hold exactly 16 bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;
use zeroize::Zeroizing;

use crate::evidence::{TcbStatus, TeeType, VerifiedEvidence};
use crate::quote::{ATTR_DEBUG, ATTR_EINITTOKEN_KEY, ATTR_INIT, ATTR_MODE64BIT, ATTR_PROVISIONKEY};

/// Length of a key in bytes (Gramine encrypted-files keys are 16 raw bytes).
pub const KEY_LEN: usize = 16;

/// Why a policy file could not be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy {path}: {cause}")]
    Io {
        /// The policy file.
        path: PathBuf,
        /// The I/O error (in the message, so it is printed once).
        cause: std::io::Error,
    },
    /// TOML syntax error, unknown field, or wrong type; the message has line and column.
    #[error("policy {path}: {message}")]
    Toml {
        /// The policy file.
        path: PathBuf,
        /// toml's message, with line, column and the offending text.
        message: String,
    },
    /// A semantically invalid entry.
    #[error("policy {path}, line {line}, field `{field}`: {reason}")]
    Invalid {
        /// The policy file.
        path: PathBuf,
        /// 1-based line of the entry.
        line: usize,
        /// Dotted field name.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A key file is unreadable or not 16 bytes.
    #[error("policy {path}, line {line}, field `keys.{name}.file`: key file {file}: {reason}")]
    KeyFile {
        /// The policy file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Key name.
        name: String,
        /// Key file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A 16-byte secret key; zeroized on drop, never printed.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; KEY_LEN]>);

impl SecretKey {
    /// Wraps raw key bytes.
    pub fn new(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }
    /// The key bytes. Do not log them.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Which TEE a policy entry matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EntryTee {
    /// Real SGX DCAP evidence (default).
    #[default]
    Sgx,
    /// Simulated evidence (needs feature `insecure-sim` and `insecure_allow_simulated = true`).
    Simulated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hex32([u8; 32]);

impl<'de> Deserialize<'de> for Hex32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return Err(serde::de::Error::custom(format!(
                "expected 64 hex characters, got {} characters",
                s.len()
            )));
        }
        hex::decode_to_slice(&s, &mut out)
            .map_err(|e| serde::de::Error::custom(format!("invalid hex: {e}")))?;
        Ok(Hex32(out))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    attestation: RawAttestation,
    #[serde(default)]
    keys: BTreeMap<String, Spanned<RawKey>>,
    #[serde(default)]
    enclave: Vec<Spanned<RawEnclave>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAttestation {
    #[serde(default)]
    insecure_allow_simulated: bool,
    #[serde(default)]
    collateral: Vec<Spanned<PathBuf>>,
    pccs_url: Option<Spanned<String>>,
    pccs_ca: Option<PathBuf>,
    root_ca: Option<Spanned<PathBuf>>,
    #[serde(default)]
    platforms: Vec<Spanned<RawPlatform>>,
    collateral_cache: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlatform {
    fmspc: String,
    ca: crate::pcs::PckCa,
}

/// Where and for which platforms collateral is fetched (`[attestation] pccs_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PccsConfig {
    /// The PCS/PCCS base URL.
    pub url: String,
    /// An extra CA certificate file to trust for the endpoint.
    pub ca: Option<PathBuf>,
    /// The platforms to keep collateral for.
    pub platforms: Vec<crate::pcs::Platform>,
    /// The cache directory.
    pub cache_dir: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    file: PathBuf,
}

fn default_statuses() -> Vec<String> {
    vec!["UpToDate".into()]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnclave {
    name: String,
    #[serde(default)]
    tee: EntryTee,
    mrenclave: Option<Hex32>,
    mrsigner: Option<Hex32>,
    isv_prod_id: Option<u16>,
    min_isv_svn: Option<u16>,
    #[serde(default)]
    allow_debug: bool,
    #[serde(default = "default_statuses")]
    accepted_tcb_statuses: Vec<String>,
    accepted_advisories: Option<Vec<String>>,
    first_secret: String,
    #[serde(default)]
    keys: Vec<String>,
}

/// MRSIGNER-based identity: signer, product id and minimum SVN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerRule {
    /// MRSIGNER.
    pub mrsigner: [u8; 32],
    /// ISV product id (exact).
    pub isv_prod_id: u16,
    /// Minimum ISV SVN.
    pub min_isv_svn: u16,
}

/// One `[[enclave]]` entry, validated.
#[derive(Debug, Clone)]
pub struct EnclaveRule {
    /// Entry name (for logs).
    pub name: String,
    /// 1-based line of the entry in the policy file.
    pub line: usize,
    /// TEE the entry matches.
    pub tee: EntryTee,
    /// Exact MRENCLAVE, if set.
    pub mrenclave: Option<[u8; 32]>,
    /// Signer rule, if set.
    pub signer: Option<SignerRule>,
    /// Whether debug enclaves are accepted.
    pub allow_debug: bool,
    /// Accepted TCB statuses.
    pub accepted_tcb_statuses: Vec<TcbStatus>,
    /// Accepted advisories; `None` = any.
    pub accepted_advisories: Option<BTreeSet<String>>,
    /// The key a stock Gramine client receives.
    pub first_secret: String,
    /// All keys this enclave may receive (includes `first_secret`).
    pub keys: BTreeSet<String>,
}

/// `[attestation] root_ca`: a trust anchor other than Intel's SGX Root CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootCaFile {
    /// The certificate file (PEM or DER), resolved against the policy's directory.
    pub path: PathBuf,
    /// 1-based line of `root_ca` in the policy file.
    pub line: usize,
}

/// A loaded, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    root_ca: Option<RootCaFile>,
    pccs: Option<PccsConfig>,
    source: PathBuf,
    insecure_allow_simulated: bool,
    collateral: Vec<CollateralFile>,
    keys: BTreeMap<String, SecretKey>,
    key_files: Vec<KeyFile>,
    enclaves: Vec<EnclaveRule>,
    warnings: Vec<String>,
}

/// A collateral file named by the policy, with where it is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollateralFile {
    /// The file (resolved against the policy's directory).
    pub path: PathBuf,
    /// 1-based line of the policy that names it.
    pub line: usize,
    /// Dotted field, e.g. `attestation.collateral[0]`.
    pub field: String,
}

/// A key file named by the policy, with its permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// Key name (`[keys.NAME]`).
    pub name: String,
    /// 1-based line of its `[keys.NAME]` table.
    pub line: usize,
    /// The file (resolved).
    pub path: PathBuf,
    /// Its permission bits (e.g. `0o600`).
    pub mode: u32,
}

impl KeyFile {
    /// Whether group or others may read or write it (mode & 0o077), as ssh refuses for private keys.
    pub fn is_exposed(&self) -> bool {
        self.mode & 0o077 != 0
    }
}

/// The keys released to one verified enclave.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The policy entry that matched.
    pub entry: String,
    /// Name of the first secret.
    pub first_secret_name: String,
    /// The first secret (what a stock Gramine client receives).
    pub first_secret: SecretKey,
    /// All keys this enclave may request by name (includes the first secret).
    pub keys: BTreeMap<String, SecretKey>,
}

impl Grant {
    /// The granted key names.
    pub fn key_names(&self) -> Vec<&str> {
        self.keys.keys().map(String::as_str).collect()
    }
}

/// Why no key is released; one reason per policy entry considered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("no policy entry accepts this evidence: {}", .reasons.join("; "))]
pub struct Refusal {
    /// Reasons, each naming the entry.
    pub reasons: Vec<String>,
}

/// Answers one question: which keys does this verified evidence receive?
pub trait KeyReleasePolicy: Send + Sync {
    /// Decides for `ev`. Called only after verification and binding succeeded.
    fn release(&self, ev: &VerifiedEvidence) -> Result<Grant, Refusal>;
}

/// Reads a 16-byte key file. Refuses anything but a regular file before opening it
/// (opening a FIFO blocks until a writer appears, and `/dev/zero` or a growing file never
/// ends) and reads at most `KEY_LEN + 1` bytes, so a policy naming the wrong file fails at
/// once with a message instead of hanging the key server's start-up.
fn read_key_file(file: &Path) -> Result<(SecretKey, u32), String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    let not_regular = |kind: std::fs::FileType| {
        use std::os::unix::fs::FileTypeExt;
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        format!("is {what}; a key file must be a regular file of exactly {KEY_LEN} raw bytes")
    };
    let meta = std::fs::metadata(file).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let f = std::fs::File::open(file).map_err(|e| e.to_string())?;
    // Checked again on the open handle, in case the path changed in between.
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_LEN + 1));
    f.take(KEY_LEN as u64 + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    let arr: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
        let size =
            if bytes.len() > KEY_LEN { meta.len().max(bytes.len() as u64) } else { bytes.len() as u64 };
        format!("has {size} bytes, a key must be exactly {KEY_LEN} raw bytes")
    })?;
    Ok((SecretKey::new(arr), meta.permissions().mode() & 0o7777))
}

fn line_of(src: &str, offset: usize) -> usize {
    src.get(..offset).map_or(0, |s| s.matches('\n').count()) + 1
}

impl Policy {
    /// Loads and validates a policy file. Relative paths are resolved against its directory.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let src = std::fs::read_to_string(path)
            .map_err(|cause| PolicyError::Io { path: path.to_path_buf(), cause })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&src, path, base)
    }

    /// Parses policy text. `path` is used in messages; `base` resolves relative paths.
    pub fn from_toml(src: &str, path: &Path, base: &Path) -> Result<Self, PolicyError> {
        let raw: RawPolicy = toml::from_str(src).map_err(|e| PolicyError::Toml {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |line: usize, field: String, reason: String| PolicyError::Invalid {
            path: path.to_path_buf(),
            line,
            field,
            reason,
        };
        let mut keys = BTreeMap::new();
        let mut key_files = Vec::new();
        let mut warnings = Vec::new();
        for (name, k) in &raw.keys {
            let line = line_of(src, k.span().start);
            let file = base.join(&k.get_ref().file);
            let key_err = |reason: String| PolicyError::KeyFile {
                path: path.to_path_buf(),
                line,
                name: name.clone(),
                file: file.clone(),
                reason,
            };
            let (key, mode) = read_key_file(&file).map_err(key_err)?;
            keys.insert(name.clone(), key);
            key_files.push(KeyFile { name: name.clone(), line, path: file.clone(), mode });
        }
        let mut enclaves = Vec::new();
        let mut names = BTreeSet::new();
        for (i, e) in raw.enclave.iter().enumerate() {
            let line = line_of(src, e.span().start);
            let e = e.get_ref();
            let field = |f: &str| format!("enclave[{i}].{f}");
            if !names.insert(e.name.clone()) {
                return Err(invalid(line, field("name"), format!("duplicate entry name {:?}", e.name)));
            }
            #[cfg(not(feature = "insecure-sim"))]
            if e.tee == EntryTee::Simulated {
                return Err(invalid(
                    line,
                    field("tee"),
                    "\"simulated\" needs a build with the insecure-sim feature".into(),
                ));
            }
            let signer = match (e.mrsigner, e.isv_prod_id) {
                (Some(s), Some(p)) => Some(SignerRule {
                    mrsigner: s.0,
                    isv_prod_id: p,
                    min_isv_svn: e.min_isv_svn.unwrap_or(0),
                }),
                (Some(_), None) => {
                    return Err(invalid(line, field("isv_prod_id"), "mrsigner requires isv_prod_id".into()));
                }
                (None, Some(_)) => {
                    return Err(invalid(line, field("mrsigner"), "isv_prod_id requires mrsigner".into()));
                }
                (None, None) => {
                    if e.min_isv_svn.is_some() {
                        return Err(invalid(
                            line,
                            field("min_isv_svn"),
                            "min_isv_svn requires mrsigner".into(),
                        ));
                    }
                    None
                }
            };
            if e.mrenclave.is_none() && signer.is_none() {
                return Err(invalid(
                    line,
                    field("mrenclave"),
                    "entry would accept any MRENCLAVE and any MRSIGNER; set mrenclave, or mrsigner + isv_prod_id".into(),
                ));
            }
            let mut statuses = Vec::new();
            for s in &e.accepted_tcb_statuses {
                let st: TcbStatus = s
                    .parse()
                    .map_err(|err| invalid(line, field("accepted_tcb_statuses"), format!("{err}")))?;
                if st == TcbStatus::Revoked {
                    return Err(invalid(
                        line,
                        field("accepted_tcb_statuses"),
                        "Revoked can never be accepted".into(),
                    ));
                }
                statuses.push(st);
            }
            let mut granted: BTreeSet<String> = e.keys.iter().cloned().collect();
            granted.insert(e.first_secret.clone());
            for k in &granted {
                if !keys.contains_key(k) {
                    return Err(invalid(
                        line,
                        if *k == e.first_secret { field("first_secret") } else { field("keys") },
                        format!("unknown key {k:?}; define it under [keys.{k}]"),
                    ));
                }
            }
            if e.tee == EntryTee::Simulated && !raw.attestation.insecure_allow_simulated {
                warnings.push(format!(
                    "policy {}, line {line}, field `{}`: entry {:?} has tee = \"simulated\" but [attestation] insecure_allow_simulated is false, so it can never match; remove the entry, or set insecure_allow_simulated = true (INSECURE: for machines without SGX)",
                    path.display(),
                    field("tee"),
                    e.name
                ));
            }
            enclaves.push(EnclaveRule {
                name: e.name.clone(),
                line,
                tee: e.tee,
                mrenclave: e.mrenclave.map(|h| h.0),
                signer,
                allow_debug: e.allow_debug,
                accepted_tcb_statuses: statuses,
                accepted_advisories: e.accepted_advisories.as_ref().map(|v| v.iter().cloned().collect()),
                first_secret: e.first_secret.clone(),
                keys: granted,
            });
        }
        if enclaves.is_empty() {
            return Err(invalid(
                1,
                "enclave".into(),
                "no [[enclave]] entries; nothing could ever be released".into(),
            ));
        }
        let a = &raw.attestation;
        let pccs = match &a.pccs_url {
            None => {
                if !a.platforms.is_empty() || a.pccs_ca.is_some() || a.collateral_cache.is_some() {
                    return Err(invalid(
                        1,
                        "attestation.pccs_url".into(),
                        "platforms, pccs_ca and collateral_cache need pccs_url (the PCS or PCCS to fetch from)".into(),
                    ));
                }
                None
            }
            Some(url) => {
                let line = line_of(src, url.span().start);
                if !url.get_ref().starts_with("https://") {
                    return Err(invalid(
                        line,
                        "attestation.pccs_url".into(),
                        "must be an https:// URL".into(),
                    ));
                }
                if a.platforms.is_empty() {
                    return Err(invalid(
                        line,
                        "attestation.platforms".into(),
                        "pccs_url needs platforms = [{ fmspc = \"00606A000000\", ca = \"platform\" }, ...]: the FMSPC and PCK CA (processor or platform) of each SGX platform to keep collateral for".into(),
                    ));
                }
                let mut platforms = Vec::new();
                for (i, p) in a.platforms.iter().enumerate() {
                    let pl = crate::pcs::Platform::new(&p.get_ref().fmspc, p.get_ref().ca).map_err(|e| {
                        invalid(line_of(src, p.span().start), format!("attestation.platforms[{i}].fmspc"), e)
                    })?;
                    platforms.push(pl);
                }
                Some(PccsConfig {
                    url: url.get_ref().clone(),
                    ca: a.pccs_ca.as_ref().map(|p| base.join(p)),
                    platforms,
                    cache_dir: base
                        .join(a.collateral_cache.clone().unwrap_or_else(|| "collateral-cache".into())),
                })
            }
        };
        let collateral = raw
            .attestation
            .collateral
            .iter()
            .enumerate()
            .map(|(i, p)| CollateralFile {
                path: base.join(p.get_ref()),
                line: line_of(src, p.span().start),
                field: format!("attestation.collateral[{i}]"),
            })
            .collect();
        let root_ca = a
            .root_ca
            .as_ref()
            .map(|r| RootCaFile { path: base.join(r.get_ref()), line: line_of(src, r.span().start) });
        Ok(Self {
            root_ca,
            pccs,
            source: path.to_path_buf(),
            insecure_allow_simulated: raw.attestation.insecure_allow_simulated,
            collateral,
            keys,
            key_files,
            enclaves,
            warnings,
        })
    }

    /// Whether simulated evidence may be considered at all.
    pub fn insecure_allow_simulated(&self) -> bool {
        self.insecure_allow_simulated
    }
    /// Collateral files (resolved paths).
    pub fn collateral(&self) -> Vec<PathBuf> {
        self.collateral.iter().map(|c| c.path.clone()).collect()
    }
    /// Collateral files with the policy lines that name them.
    pub fn collateral_files(&self) -> &[CollateralFile] {
        &self.collateral
    }
    /// `[attestation] root_ca`, when the policy trusts a root other than Intel's
    /// (a test or private PKI; `None` = the Intel SGX Root CA).
    pub fn root_ca(&self) -> Option<&RootCaFile> {
        self.root_ca.as_ref()
    }

    /// `[attestation] pccs_url` and its settings.
    pub fn pccs(&self) -> Option<&PccsConfig> {
        self.pccs.as_ref()
    }
    /// The policy file this was loaded from (for messages).
    pub fn source(&self) -> &Path {
        &self.source
    }
    /// Key files with their permission bits.
    pub fn key_files(&self) -> &[KeyFile] {
        &self.key_files
    }
    /// Key files that group or others can access, each as a message naming the
    /// policy line, the file, its mode and the fix.
    pub fn exposed_key_files(&self) -> Vec<String> {
        self.key_files
            .iter()
            .filter(|k| k.is_exposed())
            .map(|k| {
                format!(
                    "policy {}, line {}, field `keys.{}.file`: key file {} has mode {:04o}, readable or writable by group or others; run `chmod 600 {}`",
                    self.source.display(),
                    k.line,
                    k.name,
                    k.path.display(),
                    k.mode,
                    k.path.display()
                )
            })
            .collect()
    }
    /// Problems that do not stop the policy from loading but make part of it
    /// useless (each names the file, line and fix), e.g. a simulated entry
    /// that can never match.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
    /// The enclave entries.
    pub fn enclaves(&self) -> &[EnclaveRule] {
        &self.enclaves
    }
    /// The configured key names.
    pub fn key_names(&self) -> Vec<&str> {
        self.keys.keys().map(String::as_str).collect()
    }

    fn check_entry(&self, r: &EnclaveRule, ev: &VerifiedEvidence) -> Result<(), String> {
        let id = ev.identity();
        let is_sim = is_simulated(ev);
        match (r.tee, is_sim) {
            (EntryTee::Sgx, true) => return Err("entry is for SGX, evidence is simulated".into()),
            (EntryTee::Simulated, false) => {
                return Err("entry is for simulated evidence, evidence is SGX".into());
            }
            _ => {}
        }
        if let Some(m) = r.mrenclave
            && m != id.mrenclave
        {
            return Err(format!(
                "MRENCLAVE mismatch: expected {}, got {}",
                hex::encode(m),
                hex::encode(id.mrenclave)
            ));
        }
        if let Some(s) = &r.signer {
            if s.mrsigner != id.mrsigner {
                return Err(format!(
                    "MRSIGNER mismatch: expected {}, got {}",
                    hex::encode(s.mrsigner),
                    hex::encode(id.mrsigner)
                ));
            }
            if s.isv_prod_id != id.isv_prod_id {
                return Err(format!(
                    "ISV product id mismatch: expected {}, got {}",
                    s.isv_prod_id, id.isv_prod_id
                ));
            }
            if id.isv_svn < s.min_isv_svn {
                return Err(format!("ISV SVN {} below minimum {}", id.isv_svn, s.min_isv_svn));
            }
        }
        if is_sim {
            // Simulated evidence has no TCB and no meaningful attributes.
            return Ok(());
        }
        let flags = id.attribute_flags();
        if flags & ATTR_INIT == 0 {
            return Err("enclave INIT attribute not set".into());
        }
        if flags & ATTR_MODE64BIT == 0 {
            return Err("enclave MODE64BIT attribute not set".into());
        }
        if flags & (ATTR_PROVISIONKEY | ATTR_EINITTOKEN_KEY) != 0 {
            return Err("enclave has PROVISIONKEY or EINITTOKEN_KEY attribute".into());
        }
        let mut reasons = Vec::new();
        if flags & ATTR_DEBUG != 0 && !r.allow_debug {
            reasons.push("enclave DEBUG attribute set (allow_debug = false)".to_string());
        }
        let st = ev.tcb_status();
        if st == TcbStatus::Revoked || !r.accepted_tcb_statuses.contains(&st) {
            reasons.push(format!(
                "TCB status {st} not accepted (accepted: {})",
                r.accepted_tcb_statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        if let Some(acc) = &r.accepted_advisories {
            let bad: Vec<&str> =
                ev.advisory_ids().iter().filter(|a| !acc.contains(*a)).map(String::as_str).collect();
            if !bad.is_empty() {
                reasons.push(format!("advisories not accepted: {}", bad.join(", ")));
            }
        }
        if reasons.is_empty() { Ok(()) } else { Err(reasons.join(", ")) }
    }
}

#[cfg(feature = "insecure-sim")]
fn is_simulated(ev: &VerifiedEvidence) -> bool {
    ev.tee() == TeeType::Simulated
}

#[cfg(not(feature = "insecure-sim"))]
fn is_simulated(ev: &VerifiedEvidence) -> bool {
    ev.tee() != TeeType::SgxDcap
}

impl KeyReleasePolicy for Policy {
    fn release(&self, ev: &VerifiedEvidence) -> Result<Grant, Refusal> {
        if is_simulated(ev) && !self.insecure_allow_simulated {
            return Err(Refusal {
                reasons: vec!["evidence is SIMULATED-INSECURE and the policy does not set insecure_allow_simulated = true".into()],
            });
        }
        let mut reasons = Vec::new();
        for r in &self.enclaves {
            match self.check_entry(r, ev) {
                Ok(()) => {
                    let keys: BTreeMap<String, SecretKey> = r
                        .keys
                        .iter()
                        .filter_map(|k| self.keys.get(k).map(|v| (k.clone(), v.clone())))
                        .collect();
                    let Some(first) = keys.get(&r.first_secret).cloned() else {
                        reasons.push(format!("entry {:?}: first secret missing", r.name));
                        continue;
                    };
                    return Ok(Grant {
                        entry: r.name.clone(),
                        first_secret_name: r.first_secret.clone(),
                        first_secret: first,
                        keys,
                    });
                }
                Err(why) => reasons.push(format!("entry {:?} (line {}): {why}", r.name, r.line)),
            }
        }
        Err(Refusal { reasons })
    }
}
