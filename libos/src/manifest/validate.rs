//! [`RawManifest`] → [`Manifest`]: the schema of spec §3–§10.
//!
//! Each section has one function that knows its keys. Keys that Gramine removed are
//! refused with their replacement ([`REMOVED`]); keys we accept without effect are listed
//! in [`ACCEPTED`]; anything else is unknown (an error in [`Mode::Build`], a warning in
//! [`Mode::Run`]).

use std::collections::BTreeMap;
use std::ops::Range;

use super::raw::{Entry, Node, RawManifest, Value};
use super::{
    ArgvSource, Diagnostic, EnvConfig, EnvValue, FileCheckPolicy, Identity, InsecureKey, LoaderEntrypoint,
    LogLevel, Manifest, ManifestError, Mode, Mount, MountKind, RemoteAttestation, TrustedFile, normalize_str,
};

/// Keys Gramine removed, with the text that names their replacement (spec §10).
const REMOVED: &[(&str, &str)] = &[
    (
        "sgx.protected_files",
        "use an `fs.mounts` entry with `type = \"encrypted\"` (key from `fs.insecure__keys` or provisioning)",
    ),
    (
        "sgx.protected_mrenclave_files",
        "use an `fs.mounts` entry with `type = \"encrypted\"` and `key_name = \"_sgx_mrenclave\"`",
    ),
    (
        "sgx.protected_mrsigner_files",
        "use an `fs.mounts` entry with `type = \"encrypted\"` and `key_name = \"_sgx_mrsigner\"`",
    ),
    ("fs.insecure__protected_files_key", "use `fs.insecure__keys.default`"),
    ("sgx.insecure__protected_files_key", "use `fs.insecure__keys.default`"),
    ("fs.mount", "use the `fs.mounts` array: `fs.mounts = [ { path = \"/lib\", uri = \"file:/lib\" } ]`"),
    ("sgx.thread_num", "use `sgx.max_threads`"),
    ("sgx.ra_client_spid", "EPID is gone; use `sgx.remote_attestation = \"dcap\"`"),
    ("sgx.ra_client_linkable", "EPID is gone; use `sgx.remote_attestation = \"dcap\"`"),
    ("loader.exec", "use `libos.entrypoint`"),
    ("loader.preload", "use `libos.entrypoint` (and `loader.entrypoint.uri` for the LibOS itself)"),
    ("sgx.nonpie_binary", "Gramine handles PIE and non-PIE programs without it: delete the line"),
    ("loader.pal_internal_mem_size", "Gramine sizes its internal memory itself: delete the line"),
    ("sgx.static_address", "delete the line (the enclave address is chosen automatically)"),
    ("sgx.rpc_thread_num", "use `sgx.insecure__rpc_thread_num`"),
    ("sgx.require_avx", "use `sgx.cpu_features.avx = \"required\"`"),
    ("sgx.require_avx512", "use `sgx.cpu_features.avx512 = \"required\"`"),
    ("sgx.require_mpx", "use `sgx.cpu_features.mpx = \"required\"`"),
    ("sgx.require_pkru", "use `sgx.cpu_features.pkru = \"required\"`"),
    ("sgx.require_amx", "use `sgx.cpu_features.amx = \"required\"`"),
    ("sgx.require_exinfo", "use `sgx.use_exinfo = true`"),
    ("loader.argv0_override", "use `loader.argv` (it includes argv[0])"),
    (
        "sgx.trusted_checksum",
        "use the list form `sgx.trusted_files = [ { uri = \"file:...\", sha256 = \"...\" } ]`",
    ),
];

/// Keys accepted for compatibility without runtime effect (spec levels ACCEPT). A trailing
/// `.*` accepts the whole subtree.
const ACCEPTED: &[&str] = &[
    "libos.check_invalid_pointers",
    "loader.insecure__disable_aslr",
    "sgx.use_exinfo",
    "sgx.cpu_features.*",
    "sgx.seal_key.*",
    "sgx.preheat_enclave",
    "sgx.enable_stats",
    "sgx.profile.*",
    "sgx.vtune_profile",
    "sgx.insecure__rpc_thread_num",
    "sgx.insecure__allow_memfaults_without_exinfo",
    "sys.stack.size",
    "sys.brk.max_size",
    "sys.fds.limit",
    "sys.disallow_subprocesses",
    "sys.insecure__allow_eventfd",
    "sys.enable_sigterm_injection",
    "sys.experimental__enable_flock",
    "sys.allowed_ioctls",
    "sys.ioctl_structs.*",
    "sys.debug__mock_syscalls",
    "fs.experimental__enable_sysfs_topology",
];

const DEFAULT_ENCLAVE_SIZE: u64 = 256 << 20;
const DEFAULT_EDMM_ENCLAVE_SIZE: u64 = 1024 << 30;

struct Ctx<'a> {
    raw: &'a RawManifest,
    mode: Mode,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn diag(&self, key: &str, span: &Range<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic { key: key.to_owned(), line: self.raw.line(span.start), message: message.into() }
    }

    fn error(&mut self, key: &str, span: &Range<usize>, message: impl Into<String>) {
        let d = self.diag(key, span, message);
        self.errors.push(d);
    }

    fn warn(&mut self, key: &str, span: &Range<usize>, message: impl Into<String>) {
        let d = self.diag(key, span, message);
        self.warnings.push(d);
    }

    fn unknown(&mut self, key: &str, span: &Range<usize>) {
        match self.mode {
            Mode::Build => {
                self.error(key, span, "unknown key (not in the supported manifest subset, see docs/LIBOS.md)")
            }
            Mode::Run => self.warn(key, span, "unknown key, ignored"),
        }
    }

    /// Handles a key that no section function claimed: removed, accepted, or unknown.
    fn other(&mut self, key: &str, entry: &Entry) {
        if let Some((_, hint)) = REMOVED.iter().find(|(k, _)| *k == key) {
            self.error(key, &entry.key_span, format!("removed from Gramine; {hint}"));
            return;
        }
        if ACCEPTED.iter().any(|pattern| match pattern.strip_suffix(".*") {
            Some(prefix) => key == prefix || key.starts_with(&format!("{prefix}.")),
            None => *pattern == key,
        }) {
            return;
        }
        let deeper = format!("{key}.");
        let has_known_children =
            ACCEPTED.iter().chain(REMOVED.iter().map(|(k, _)| k)).any(|k| k.starts_with(&deeper));
        if let (true, Value::Table(entries)) = (has_known_children, &entry.node.value) {
            for child in entries {
                self.other(&format!("{key}.{}", child.key), child);
            }
            return;
        }
        self.unknown(key, &entry.key_span);
    }

    fn table<'n>(&mut self, key: &str, node: &'n Node) -> Option<&'n [Entry]> {
        match &node.value {
            Value::Table(entries) => Some(entries),
            other => {
                self.error(key, &node.span, format!("expected a table, found a {}", other.type_name()));
                None
            }
        }
    }

    fn string(&mut self, key: &str, node: &Node) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            other => {
                self.error(key, &node.span, format!("expected a string, found a {}", other.type_name()));
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, node: &Node) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            other => {
                self.error(key, &node.span, format!("expected true or false, found a {}", other.type_name()));
                None
            }
        }
    }

    fn integer(&mut self, key: &str, node: &Node, max: u64) -> Option<u64> {
        match &node.value {
            Value::Int(i) if (0..=i128::from(max)).contains(i) => u64::try_from(*i).ok(),
            Value::Int(i) => {
                self.error(key, &node.span, format!("{i} is out of range (0..={max})"));
                None
            }
            other => {
                self.error(key, &node.span, format!("expected an integer, found a {}", other.type_name()));
                None
            }
        }
    }

    /// A size: integer or string with optional K/M/G suffix (decimal or 0x hex number).
    fn size(&mut self, key: &str, node: &Node) -> Option<u64> {
        match &node.value {
            Value::Int(i) if *i >= 0 => u64::try_from(*i).ok(),
            Value::Str(s) => match parse_size(s) {
                Some(v) => Some(v),
                None => {
                    self.error(
                        key,
                        &node.span,
                        format!("invalid size {s:?} (write e.g. \"256M\", \"4G\", 1048576)"),
                    );
                    None
                }
            },
            other => {
                self.error(key, &node.span, format!("expected a size, found a {}", other.type_name()));
                None
            }
        }
    }

    /// A `file:` URI; returns the normalised host path.
    fn file_uri(&mut self, key: &str, node: &Node) -> Option<String> {
        let s = self.string(key, node)?;
        match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => Some(normalize_keep_slash(p)),
            _ => {
                self.error(key, &node.span, format!("expected a `file:` URI, found {s:?}"));
                None
            }
        }
    }

    /// An absolute in-view path, normalised.
    fn view_path(&mut self, key: &str, node: &Node) -> Option<String> {
        let s = self.string(key, node)?;
        if !s.starts_with('/') {
            self.error(key, &node.span, format!("{s:?} must be an absolute path inside the app's view"));
            return None;
        }
        Some(normalize_str(&s))
    }
}

/// Normalises a host path but keeps a trailing `/` (it marks a directory URI).
fn normalize_keep_slash(path: &str) -> String {
    let n = normalize_str(path);
    if path.ends_with('/') && n != "/" { format!("{n}/") } else { n }
}

/// Parses Gramine's size strings: a decimal or `0x` hex number with optional K/M/G suffix.
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let value = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse::<u64>().ok()?,
    };
    value.checked_mul(1u64 << shift)
}

/// Validates the tree against the schema.
pub(super) fn validate(raw: &RawManifest, mode: Mode) -> Result<(Manifest, Vec<Diagnostic>), ManifestError> {
    let mut cx = Ctx { raw, mode, errors: Vec::new(), warnings: Vec::new() };
    let mut b = Builder::default();
    for entry in raw.root() {
        let key = entry.key.as_str();
        match key {
            "libos" | "loader" | "fs" | "sgx" | "sys" => {
                let Some(entries) = cx.table(key, &entry.node) else { continue };
                for child in entries {
                    let path = format!("{key}.{}", child.key);
                    match key {
                        "libos" => b.libos(&mut cx, &path, child),
                        "loader" => b.loader(&mut cx, &path, child),
                        "fs" => b.fs(&mut cx, &path, child),
                        "sgx" => b.sgx(&mut cx, &path, child),
                        _ => b.sys(&mut cx, &path, child),
                    }
                }
            }
            _ => cx.unknown(key, &entry.key_span),
        }
    }
    let manifest = b.finish(&mut cx);
    cx.errors.sort_by_key(|d| d.line);
    match manifest {
        Some(m) if cx.errors.is_empty() => Ok((m, cx.warnings)),
        _ => Err(ManifestError::new(cx.errors)),
    }
}

#[derive(Default)]
struct Builder {
    entrypoint: Option<String>,
    entrypoint_seen: bool,
    loader_entrypoint: LoaderEntrypoint,
    argv: Option<(String, Range<usize>, ArgvSource)>,
    argv_conflict: Vec<(String, Range<usize>)>,
    env: EnvConfig,
    log_level: Option<LogLevel>,
    log_file: Option<String>,
    uid: u32,
    gid: u32,
    root: Option<String>,
    start_dir: Option<String>,
    mounts: Vec<Mount>,
    insecure_keys: BTreeMap<String, InsecureKey>,
    trusted_files: Vec<TrustedFile>,
    allowed_files: Vec<String>,
    file_check_policy: Option<FileCheckPolicy>,
    debug: bool,
    isvprodid: u16,
    isvsvn: u16,
    enclave_size: Option<u64>,
    max_threads: Option<u32>,
    edmm_enable: bool,
    remote_attestation: Option<RemoteAttestation>,
    extra_domain_names_conf: bool,
}

impl Builder {
    fn libos(&mut self, cx: &mut Ctx<'_>, key: &str, e: &Entry) {
        match key {
            "libos.entrypoint" => {
                self.entrypoint_seen = true;
                let Some(s) = cx.string(key, &e.node) else { return };
                if s.starts_with("file:") {
                    cx.error(
                        key,
                        &e.node.span,
                        "is a path inside the app's view, not a URI: drop the `file:` prefix",
                    );
                } else if s.is_empty() {
                    cx.error(key, &e.node.span, "must not be empty");
                } else {
                    self.entrypoint = Some(s);
                }
            }
            "libos.check_invalid_pointers" => {
                cx.boolean(key, &e.node);
            }
            _ => cx.other(key, e),
        }
    }

    fn loader(&mut self, cx: &mut Ctx<'_>, key: &str, e: &Entry) {
        let node = &e.node;
        match key {
            "loader.entrypoint" => match &node.value {
                Value::Str(_) => cx.error(
                    key,
                    &node.span,
                    "a string `loader.entrypoint` was removed from Gramine; write \
                     `loader.entrypoint.uri = \"file:...\"` (the program itself is `libos.entrypoint`)",
                ),
                _ => {
                    let Some(entries) = cx.table(key, node) else { return };
                    for c in entries {
                        let k = format!("{key}.{}", c.key);
                        match c.key.as_str() {
                            "uri" => self.loader_entrypoint.uri = cx.file_uri(&k, &c.node),
                            "sha256" => self.loader_entrypoint.sha256 = sha256_hex(cx, &k, &c.node),
                            _ => cx.unknown(&k, &c.key_span),
                        }
                    }
                }
            },
            "loader.argv" => {
                let Value::Array(items) = &node.value else {
                    cx.error(
                        key,
                        &node.span,
                        format!("expected an array of strings, found a {}", node.value.type_name()),
                    );
                    return;
                };
                if items.is_empty() {
                    cx.error(key, &node.span, "must not be empty (it includes argv[0])");
                    return;
                }
                let argv: Vec<String> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| cx.string(&format!("{key}[{i}]"), n))
                    .collect();
                self.set_argv(key, &e.key_span, ArgvSource::Explicit(argv));
            }
            "loader.argv_src_file" => {
                if let Some(p) = cx.file_uri(key, node) {
                    self.set_argv(key, &e.key_span, ArgvSource::SrcFile(p));
                }
            }
            "loader.insecure__use_cmdline_argv" => {
                if cx.boolean(key, node) == Some(true) {
                    cx.warn(
                        key,
                        &e.key_span,
                        "insecure: the untrusted command line becomes the program's argv",
                    );
                    self.set_argv(key, &e.key_span, ArgvSource::CommandLine);
                }
            }
            "loader.env" => {
                let Some(entries) = cx.table(key, node) else { return };
                for c in entries {
                    self.env_var(cx, &format!("{key}.{}", c.key), c);
                }
            }
            "loader.env_src_file" => self.env.src_file = cx.file_uri(key, node),
            "loader.insecure__use_host_env" => {
                if cx.boolean(key, node) == Some(true) {
                    cx.warn(
                        key,
                        &e.key_span,
                        "insecure: the whole host environment is passed to the program",
                    );
                    self.env.use_host_env = true;
                }
            }
            "loader.uid" => self.uid = cx.integer(key, node, u32::MAX.into()).unwrap_or(0) as u32,
            "loader.gid" => self.gid = cx.integer(key, node, u32::MAX.into()).unwrap_or(0) as u32,
            "loader.log_level" => {
                let Some(s) = cx.string(key, node) else { return };
                self.log_level = Some(match s.as_str() {
                    "none" => LogLevel::None,
                    "error" => LogLevel::Error,
                    "warning" => LogLevel::Warning,
                    "debug" => LogLevel::Debug,
                    "trace" => LogLevel::Trace,
                    "all" => LogLevel::All,
                    _ => {
                        cx.error(
                            key,
                            &node.span,
                            format!("{s:?} is not one of none, error, warning, debug, trace, all"),
                        );
                        return;
                    }
                });
                if self.log_level > Some(LogLevel::Error) {
                    cx.warn(key, &node.span, "log levels above `error` may print metadata of secrets");
                }
            }
            "loader.log_file" => self.log_file = cx.string(key, node),
            "loader.insecure__disable_aslr" => {
                cx.boolean(key, node);
            }
            _ => cx.other(key, e),
        }
    }

    fn set_argv(&mut self, key: &str, span: &Range<usize>, source: ArgvSource) {
        if self.argv.is_some() {
            self.argv_conflict.push((key.to_owned(), span.clone()));
        } else {
            self.argv = Some((key.to_owned(), span.clone(), source));
        }
    }

    fn env_var(&mut self, cx: &mut Ctx<'_>, key: &str, e: &Entry) {
        let name = e.key.as_str();
        if name == "SECRET_PROVISION_SET_PF_KEY" {
            cx.error(
                key,
                &e.key_span,
                "removed (Graphene era); use `loader.env.SECRET_PROVISION_SET_KEY = \"default\"`",
            );
            return;
        }
        if name.is_empty() || name.contains('=') {
            cx.error(key, &e.key_span, "is not a valid environment variable name");
            return;
        }
        let value = match &e.node.value {
            Value::Str(s) => EnvValue::Value(s.clone()),
            Value::Table(entries) => {
                let mut value = None;
                let mut passthrough = None;
                for c in entries {
                    let k = format!("{key}.{}", c.key);
                    match c.key.as_str() {
                        "value" => value = cx.string(&k, &c.node).map(|v| (v, c.key_span.clone())),
                        "passthrough" => {
                            passthrough = cx.boolean(&k, &c.node).map(|p| (p, c.key_span.clone(), k.clone()))
                        }
                        _ => cx.unknown(&k, &c.key_span),
                    }
                }
                match (value, passthrough) {
                    (Some(_), Some((_, span, _))) => {
                        cx.error(key, &span, "`value` and `passthrough` cannot both be given");
                        return;
                    }
                    (Some((v, _)), None) => EnvValue::Value(v),
                    (None, Some((true, _, _))) => EnvValue::Passthrough,
                    (None, Some((false, span, k))) => {
                        cx.error(&k, &span, "`passthrough = false` is not allowed; remove the entry instead");
                        return;
                    }
                    (None, None) => {
                        cx.error(
                            key,
                            &e.node.span,
                            "expected `{ value = \"...\" }` or `{ passthrough = true }`",
                        );
                        return;
                    }
                }
            }
            other => {
                cx.error(
                    key,
                    &e.node.span,
                    format!(
                        "expected a string, `{{ value = \"...\" }}` or `{{ passthrough = true }}`, found a {}",
                        other.type_name()
                    ),
                );
                return;
            }
        };
        self.env.vars.push((name.to_owned(), value));
    }

    fn fs(&mut self, cx: &mut Ctx<'_>, key: &str, e: &Entry) {
        let node = &e.node;
        match key {
            "fs.root" => {
                let Some(entries) = cx.table(key, node) else { return };
                for c in entries {
                    let k = format!("{key}.{}", c.key);
                    match c.key.as_str() {
                        "type" => {
                            if let Some(t) = cx.string(&k, &c.node)
                                && t != "chroot"
                            {
                                cx.error(
                                    &k,
                                    &c.node.span,
                                    format!("the root must be of type \"chroot\", not {t:?}"),
                                );
                            }
                        }
                        "uri" => {
                            self.root = cx.file_uri(&k, &c.node).map(|p| p.trim_end_matches('/').to_owned());
                            if self.root.as_deref() == Some("") {
                                self.root = Some("/".into());
                            }
                        }
                        "path" => {
                            if let Some(p) = cx.view_path(&k, &c.node)
                                && p != "/"
                            {
                                cx.error(&k, &c.node.span, "the root is always mounted at \"/\"");
                            }
                        }
                        _ => cx.unknown(&k, &c.key_span),
                    }
                }
            }
            "fs.start_dir" => self.start_dir = cx.view_path(key, node),
            "fs.mounts" => {
                let Value::Array(items) = &node.value else {
                    cx.error(
                        key,
                        &node.span,
                        format!(
                            "expected an array of mount tables (`fs.mounts = [ {{ path = ..., uri = ... }} ]` \
                             or `[[fs.mounts]]`), found a {}",
                            node.value.type_name()
                        ),
                    );
                    return;
                };
                for (i, item) in items.iter().enumerate() {
                    if let Some(m) = mount(cx, &format!("{key}[{i}]"), item) {
                        self.mounts.push(m);
                    }
                }
            }
            "fs.insecure__keys" => {
                let Some(entries) = cx.table(key, node) else { return };
                for c in entries {
                    let k = format!("{key}.{}", c.key);
                    let Some(s) = cx.string(&k, &c.node) else { continue };
                    let mut bytes = [0u8; 16];
                    if s.len() != 32 || hex::decode_to_slice(&s, &mut bytes).is_err() {
                        cx.error(&k, &c.node.span, "must be exactly 32 hex characters (a 16-byte key)");
                        continue;
                    }
                    cx.warn(&k, &c.key_span, "insecure configuration: a hard-coded key is visible to anyone who reads the manifest");
                    self.insecure_keys.insert(c.key.clone(), InsecureKey(bytes));
                }
            }
            _ => cx.other(key, e),
        }
    }

    fn sgx(&mut self, cx: &mut Ctx<'_>, key: &str, e: &Entry) {
        let node = &e.node;
        match key {
            "sgx.debug" => self.debug = cx.boolean(key, node).unwrap_or(false),
            "sgx.isvprodid" => self.isvprodid = cx.integer(key, node, u16::MAX.into()).unwrap_or(0) as u16,
            "sgx.isvsvn" => self.isvsvn = cx.integer(key, node, u16::MAX.into()).unwrap_or(0) as u16,
            "sgx.enclave_size" => self.enclave_size = cx.size(key, node),
            "sgx.max_threads" => {
                self.max_threads = cx.integer(key, node, u32::MAX.into()).map(|v| v as u32);
                if self.max_threads == Some(0) {
                    cx.error(key, &node.span, "must be at least 1");
                }
            }
            "sgx.edmm_enable" => self.edmm_enable = cx.boolean(key, node).unwrap_or(false),
            "sgx.remote_attestation" => match &node.value {
                Value::Bool(_) => cx.error(
                    key,
                    &node.span,
                    "a boolean `sgx.remote_attestation` was removed from Gramine; use \"dcap\" or \"none\"",
                ),
                _ => {
                    let Some(s) = cx.string(key, node) else { return };
                    match s.as_str() {
                        "none" => self.remote_attestation = Some(RemoteAttestation::None),
                        "dcap" => self.remote_attestation = Some(RemoteAttestation::Dcap),
                        "epid" => cx.error(key, &node.span, "EPID attestation was removed; use \"dcap\""),
                        _ => cx.error(key, &node.span, format!("{s:?} is not \"none\" or \"dcap\"")),
                    }
                }
            },
            "sgx.trusted_files" => match &node.value {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(t) = trusted_file(cx, &format!("{key}[{i}]"), item) {
                            self.trusted_files.push(t);
                        }
                    }
                }
                Value::Table(_) => cx.error(
                    key,
                    &node.span,
                    "the `sgx.trusted_files.NAME = \"file:...\"` form was removed from Gramine; use the list \
                     form `sgx.trusted_files = [ \"file:...\" ]`",
                ),
                other => {
                    cx.error(key, &node.span, format!("expected an array, found a {}", other.type_name()))
                }
            },
            "sgx.allowed_files" => match &node.value {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let k = format!("{key}[{i}]");
                        let Some(s) = cx.string(&k, item) else { continue };
                        let normalized = if let Some(p) = s.strip_prefix("file:") {
                            format!("file:{}", normalize_keep_slash(p))
                        } else if let Some(p) = s.strip_prefix("dev:") {
                            format!("dev:{}", normalize_keep_slash(p))
                        } else {
                            cx.error(
                                &k,
                                &item.span,
                                format!("expected a `file:` or `dev:` URI, found {s:?}"),
                            );
                            continue;
                        };
                        cx.warn(
                            &k,
                            &item.span,
                            "insecure: allowed files are used without any integrity check",
                        );
                        self.allowed_files.push(normalized);
                    }
                }
                Value::Table(_) => cx.error(
                    key,
                    &node.span,
                    "the `sgx.allowed_files.NAME = \"file:...\"` form was removed from Gramine; use the list \
                     form `sgx.allowed_files = [ \"file:...\" ]`",
                ),
                other => {
                    cx.error(key, &node.span, format!("expected an array, found a {}", other.type_name()))
                }
            },
            "sgx.file_check_policy" => {
                let Some(s) = cx.string(key, node) else { return };
                match s.as_str() {
                    "strict" => self.file_check_policy = Some(FileCheckPolicy::Strict),
                    "allow_all_but_log" => self.file_check_policy = Some(FileCheckPolicy::AllowAllButLog),
                    _ => {
                        cx.error(key, &node.span, format!("{s:?} is not \"strict\" or \"allow_all_but_log\""))
                    }
                }
            }
            _ => cx.other(key, e),
        }
    }

    fn sys(&mut self, cx: &mut Ctx<'_>, key: &str, e: &Entry) {
        match key {
            "sys.enable_extra_runtime_domain_names_conf" => {
                self.extra_domain_names_conf = cx.boolean(key, &e.node).unwrap_or(false)
            }
            _ => cx.other(key, e),
        }
    }

    fn finish(self, cx: &mut Ctx<'_>) -> Option<Manifest> {
        for (key, span) in &self.argv_conflict {
            let first = self.argv.as_ref().map(|(k, _, _)| k.as_str()).unwrap_or("");
            cx.error(
                key,
                span,
                format!(
                    "conflicts with `{first}`: loader.argv, loader.argv_src_file and \
                     loader.insecure__use_cmdline_argv are mutually exclusive"
                ),
            );
        }
        let Some(entrypoint) = self.entrypoint else {
            if self.entrypoint_seen {
                return None;
            }
            cx.errors.push(Diagnostic {
                key: "libos.entrypoint".into(),
                line: 0,
                message: "is required (the program to run, as a path inside the app's view)".into(),
            });
            return None;
        };
        let edmm = self.edmm_enable;
        Some(Manifest {
            text: cx.raw.text().to_owned(),
            entrypoint,
            loader_entrypoint: self.loader_entrypoint,
            argv: self.argv.map(|(_, _, a)| a).unwrap_or(ArgvSource::Entrypoint),
            env: self.env,
            log_level: self.log_level.unwrap_or(LogLevel::Error),
            log_file: self.log_file,
            uid_gid: (self.uid, self.gid),
            root: self.root.unwrap_or_else(|| ".".into()),
            start_dir: self.start_dir.unwrap_or_else(|| "/".into()),
            mounts: self.mounts,
            insecure_keys: self.insecure_keys,
            trusted_files: self.trusted_files,
            allowed_files: self.allowed_files,
            file_check_policy: self.file_check_policy.unwrap_or(FileCheckPolicy::Strict),
            identity: Identity {
                debug: self.debug,
                isvprodid: self.isvprodid,
                isvsvn: self.isvsvn,
                enclave_size: self.enclave_size.unwrap_or(if edmm {
                    DEFAULT_EDMM_ENCLAVE_SIZE
                } else {
                    DEFAULT_ENCLAVE_SIZE
                }),
                max_threads: self.max_threads.unwrap_or(4),
                edmm_enable: edmm,
                remote_attestation: self.remote_attestation.unwrap_or(RemoteAttestation::None),
            },
            extra_domain_names_conf: self.extra_domain_names_conf,
        })
    }
}

fn sha256_hex(cx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<[u8; 32]> {
    let s = cx.string(key, node)?;
    let mut out = [0u8; 32];
    if s.len() != 64 || hex::decode_to_slice(&s, &mut out).is_err() {
        cx.error(key, &node.span, "must be a SHA-256 hash: exactly 64 hex characters");
        return None;
    }
    Some(out)
}

fn mount(cx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<Mount> {
    let entries = cx.table(key, node)?;
    let mut kind = None;
    let mut path = None;
    let mut path_seen = false;
    let mut uri = None;
    let mut key_name = None;
    let mut recovery = None;
    for c in entries {
        let k = format!("{key}.{}", c.key);
        match c.key.as_str() {
            "type" => kind = cx.string(&k, &c.node).map(|t| (t, c.node.span.clone(), k.clone())),
            "path" => {
                path_seen = true;
                path = cx.view_path(&k, &c.node);
            }
            "uri" => uri = cx.file_uri(&k, &c.node).map(|u| (u, c.node.span.clone(), k.clone())),
            "key_name" => key_name = cx.string(&k, &c.node).map(|n| (n, c.key_span.clone(), k.clone())),
            "enable_recovery" => {
                recovery = cx.boolean(&k, &c.node).map(|r| (r, c.key_span.clone(), k.clone()))
            }
            _ => cx.unknown(&k, &c.key_span),
        }
    }
    let (kind_name, kind_span) = match &kind {
        Some((t, span, _)) => (t.as_str(), span.clone()),
        None => ("chroot", node.span.clone()),
    };
    let Some(path) = path else {
        if !path_seen {
            cx.error(key, &node.span, "`path` is required (an absolute path inside the view)");
        }
        return None;
    };
    if path == "/" {
        cx.error(&format!("{key}.path"), &node.span, "cannot mount over \"/\"; set `fs.root` instead");
        return None;
    }
    fn not_encrypted<T>(cx: &mut Ctx<'_>, opt: &Option<(T, Range<usize>, String)>) {
        if let Some((_, span, k)) = opt {
            cx.error(k, span, "only valid for `type = \"encrypted\"` mounts");
        }
    }
    let uri_seen = entries.iter().any(|c| c.key == "uri");
    let need_uri = |cx: &mut Ctx<'_>, uri: Option<(String, Range<usize>, String)>| match uri {
        Some((u, _, _)) => Some(u),
        None if uri_seen => None,
        None => {
            cx.error(key, &node.span, format!("`uri` is required for a {kind_name} mount"));
            None
        }
    };
    let kind = match kind_name {
        "chroot" => {
            not_encrypted(cx, &key_name);
            not_encrypted(cx, &recovery);
            MountKind::Chroot { uri: need_uri(cx, uri)? }
        }
        "encrypted" => {
            let enable_recovery = recovery.as_ref().is_some_and(|(r, _, _)| *r);
            let key_name = key_name.map(|(n, _, _)| n).unwrap_or_else(|| "default".into());
            MountKind::Encrypted { uri: need_uri(cx, uri)?, key_name, enable_recovery }
        }
        "tmpfs" => {
            not_encrypted(cx, &key_name);
            not_encrypted(cx, &recovery);
            if let Some((_, span, k)) = &uri {
                cx.warn(k, span, "ignored for a tmpfs mount");
            }
            MountKind::Tmpfs
        }
        "untrusted_shm" => {
            cx.error(key, &kind_span, "`untrusted_shm` mounts are not supported by pfs");
            return None;
        }
        other => {
            let k = kind.as_ref().map(|(_, _, k)| k.as_str()).unwrap_or(key).to_owned();
            cx.error(
                &k,
                &kind_span,
                format!("unknown mount type {other:?} (expected chroot, encrypted or tmpfs)"),
            );
            return None;
        }
    };
    Some(Mount { path, kind })
}

fn trusted_file(cx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<TrustedFile> {
    match &node.value {
        Value::Str(_) => Some(TrustedFile { uri: cx.file_uri(key, node)?, sha256: None }),
        Value::Table(entries) => {
            let mut uri = None;
            let mut sha256 = None;
            for c in entries {
                let k = format!("{key}.{}", c.key);
                match c.key.as_str() {
                    "uri" => uri = cx.file_uri(&k, &c.node),
                    "sha256" => {
                        sha256 = sha256_hex(cx, &k, &c.node).map(|h| (h, c.key_span.clone(), k.clone()))
                    }
                    _ => cx.unknown(&k, &c.key_span),
                }
            }
            let Some(uri) = uri else {
                cx.error(key, &node.span, "`uri` is required");
                return None;
            };
            if let (true, Some((_, span, k))) = (uri.ends_with('/'), &sha256) {
                cx.error(k, span, "a directory (URI ending in `/`) cannot carry a hash");
                return None;
            }
            Some(TrustedFile { uri, sha256: sha256.map(|(h, _, _)| h) })
        }
        other => {
            cx.error(
                key,
                &node.span,
                format!("expected a `file:` URI or a table, found a {}", other.type_name()),
            );
            None
        }
    }
}
