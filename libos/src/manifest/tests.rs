//! Parser tests: one per supported key, the removed syntax, unknown keys and line numbers.

use super::*;

fn ok(text: &str) -> Manifest {
    match Manifest::parse(text, Mode::Build) {
        Ok((m, _)) => m,
        Err(e) => panic!("unexpected error: {e}\n--- manifest ---\n{text}"),
    }
}

fn with_entry(extra: &str) -> String {
    format!("libos.entrypoint = \"/usr/bin/python3\"\n{extra}")
}

fn warnings(text: &str, mode: Mode) -> Vec<Diagnostic> {
    Manifest::parse(text, mode).map(|(_, w)| w).unwrap_or_else(|e| panic!("unexpected error: {e}"))
}

/// Parses in build mode and returns the single error.
fn err(text: &str) -> Diagnostic {
    let e = Manifest::parse(text, Mode::Build).expect_err("manifest should be refused");
    assert_eq!(e.errors.len(), 1, "expected one error, got: {e}");
    e.errors[0].clone()
}

#[test]
fn minimal_manifest_gets_gramine_defaults() {
    let m = ok("libos.entrypoint = \"/app/run\"\n");
    assert_eq!(m.entrypoint, "/app/run");
    assert_eq!(m.argv, ArgvSource::Entrypoint);
    assert_eq!(m.env, EnvConfig::default());
    assert_eq!(m.log_level, LogLevel::Error);
    assert_eq!(m.root, ".");
    assert_eq!(m.start_dir, "/");
    assert!(m.mounts.is_empty());
    assert_eq!(m.file_check_policy, FileCheckPolicy::Strict);
    assert_eq!(
        m.identity,
        Identity {
            debug: false,
            isvprodid: 0,
            isvsvn: 0,
            enclave_size: 256 << 20,
            max_threads: 4,
            edmm_enable: false,
            remote_attestation: RemoteAttestation::None,
        }
    );
    assert_eq!(m.text(), "libos.entrypoint = \"/app/run\"\n");
}

#[test]
fn entrypoint_is_required_and_not_a_uri() {
    let d = err("loader.argv = [\"x\"]\n");
    assert_eq!(d.key, "libos.entrypoint");
    assert!(d.message.contains("required"));
    let d = err("libos.entrypoint = \"file:/bin/sh\"\n");
    assert_eq!((d.key.as_str(), d.line), ("libos.entrypoint", 1));
    assert!(d.message.contains("drop the `file:` prefix"), "{d}");
}

#[test]
fn argv_forms() {
    let m = ok(&with_entry("loader.argv = [\"python3\", \"infer.py\"]\n"));
    assert_eq!(m.argv, ArgvSource::Explicit(vec!["python3".into(), "infer.py".into()]));
    let m = ok(&with_entry("loader.argv_src_file = \"file:./args//bin\"\n"));
    assert_eq!(m.argv, ArgvSource::SrcFile("args/bin".into()));
    let m = ok(&with_entry("loader.insecure__use_cmdline_argv = true\n"));
    assert_eq!(m.argv, ArgvSource::CommandLine);
    let m = ok(&with_entry("loader.insecure__use_cmdline_argv = false\n"));
    assert_eq!(m.argv, ArgvSource::Entrypoint);
    let d = err(&with_entry("loader.argv = []\n"));
    assert_eq!((d.key.as_str(), d.line), ("loader.argv", 2));
    let d = err(&with_entry("loader.argv = [\"a\", 1]\n"));
    assert_eq!(d.key, "loader.argv[1]");
}

#[test]
fn argv_options_are_mutually_exclusive() {
    let d = err(&with_entry("loader.argv = [\"a\"]\n\nloader.insecure__use_cmdline_argv = true\n"));
    assert_eq!((d.key.as_str(), d.line), ("loader.insecure__use_cmdline_argv", 4));
    assert!(d.message.contains("mutually exclusive") && d.message.contains("loader.argv"), "{d}");
}

#[test]
fn env_forms() {
    let m = ok(&with_entry(
        "[loader.env]\nA = \"1\"\nB = { value = \"2\" }\nC = { passthrough = true }\n\
         [loader]\nenv_src_file = \"file:env\"\ninsecure__use_host_env = true\n",
    ));
    assert_eq!(
        m.env.vars,
        vec![
            ("A".into(), EnvValue::Value("1".into())),
            ("B".into(), EnvValue::Value("2".into())),
            ("C".into(), EnvValue::Passthrough),
        ]
    );
    assert_eq!(m.env.src_file.as_deref(), Some("env"));
    assert!(m.env.use_host_env);
    assert_eq!(m.env.value("B"), Some("2"));
}

#[test]
fn env_errors() {
    let d = err(&with_entry("loader.env.A = { value = \"1\", passthrough = true }\n"));
    assert_eq!((d.key.as_str(), d.line), ("loader.env.A", 2));
    assert!(d.message.contains("cannot both"));
    let d = err(&with_entry("loader.env.A = { passthrough = false }\n"));
    assert_eq!(d.key, "loader.env.A.passthrough");
    let d = err(&with_entry("loader.env.A = 3\n"));
    assert_eq!(d.key, "loader.env.A");
    let d = err(&with_entry("loader.env.SECRET_PROVISION_SET_PF_KEY = \"1\"\n"));
    assert!(d.message.contains("SECRET_PROVISION_SET_KEY = \"default\""), "{d}");
}

#[test]
fn loader_misc_keys() {
    let m = ok(&with_entry(
        "loader.log_level = \"debug\"\nloader.log_file = \"/tmp/log\"\nloader.uid = 1000\nloader.gid = 1000\n\
         loader.insecure__disable_aslr = true\nloader.entrypoint.uri = \"file:/opt/pfs\"\n\
         loader.entrypoint.sha256 = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n",
    ));
    assert_eq!(m.log_level, LogLevel::Debug);
    assert_eq!(m.log_file.as_deref(), Some("/tmp/log"));
    assert_eq!(m.uid_gid, (1000, 1000));
    assert_eq!(m.loader_entrypoint.uri.as_deref(), Some("/opt/pfs"));
    assert_eq!(m.loader_entrypoint.sha256.unwrap()[1], 0x11);
    let d = err(&with_entry("loader.log_level = \"loud\"\n"));
    assert_eq!(d.key, "loader.log_level");
    let d = err(&with_entry("loader.entrypoint.sha256 = \"abc\"\n"));
    assert_eq!(d.key, "loader.entrypoint.sha256");
}

#[test]
fn fs_root_start_dir_and_mounts() {
    let m = ok(&with_entry(
        r#"fs.root.uri = "file:/srv/app/"
fs.start_dir = "/app/./x/.."
fs.mounts = [
  { path = "/lib", uri = "file:/lib/x86_64-linux-gnu" },
  { type = "chroot", path = "/usr/", uri = "file:/usr" },
  { type = "tmpfs", path = "/tmp" },
  { type = "encrypted", path = "/data/", uri = "file:./enc//" },
  { type = "encrypted", path = "/out", uri = "file:out", key_name = "k2", enable_recovery = false },
]
"#,
    ));
    assert_eq!(m.root, "/srv/app");
    assert_eq!(m.start_dir, "/app");
    let kinds: Vec<(&str, &MountKind)> = m.mounts.iter().map(|m| (m.path.as_str(), &m.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            ("/lib", &MountKind::Chroot { uri: "/lib/x86_64-linux-gnu".into() }),
            ("/usr", &MountKind::Chroot { uri: "/usr".into() }),
            ("/tmp", &MountKind::Tmpfs),
            (
                "/data",
                &MountKind::Encrypted {
                    uri: "enc/".into(),
                    key_name: "default".into(),
                    enable_recovery: false
                }
            ),
            (
                "/out",
                &MountKind::Encrypted { uri: "out".into(), key_name: "k2".into(), enable_recovery: false }
            ),
        ]
    );
}

#[test]
fn array_of_tables_mounts_are_equivalent() {
    let m = ok(&with_entry(
        "[[fs.mounts]]\npath = \"/usr\"\nuri = \"file:/usr\"\n[[fs.mounts]]\ntype = \"tmpfs\"\npath = \"/tmp\"\n",
    ));
    assert_eq!(m.mounts.len(), 2);
    assert_eq!(m.mounts[1].kind, MountKind::Tmpfs);
}

#[test]
fn mount_errors_name_the_entry_and_line() {
    let text = with_entry(
        "fs.mounts = [\n  { path = \"/a\", uri = \"file:/a\" },\n  { path = \"rel\", uri = \"file:/b\" },\n]\n",
    );
    let d = err(&text);
    assert_eq!((d.key.as_str(), d.line), ("fs.mounts[1].path", 4));
    assert!(d.message.contains("absolute"), "{d}");
    let d = err(&with_entry("fs.mounts = [ { path = \"/a\" } ]\n"));
    assert!(d.message.contains("`uri` is required"), "{d}");
    let d = err(&with_entry("fs.mounts = [ { type = \"nfs\", path = \"/a\", uri = \"file:/a\" } ]\n"));
    assert_eq!(d.key, "fs.mounts[0].type");
    let d = err(&with_entry("fs.mounts = [ { path = \"/a\", uri = \"file:/a\", key_name = \"x\" } ]\n"));
    assert_eq!(d.key, "fs.mounts[0].key_name");
    let d = err(&with_entry("fs.mounts = [ { path = \"/a\", uri = \"/a\" } ]\n"));
    assert!(d.message.contains("`file:` URI"), "{d}");
    let d = err(&with_entry("fs.mounts = [ { path = \"/a\", uri = \"file:/a\", bogus = 1 } ]\n"));
    assert_eq!(d.key, "fs.mounts[0].bogus");
    let d = err(&with_entry("fs.mounts = [ { path = \"/\", uri = \"file:/a\" } ]\n"));
    assert!(d.message.contains("fs.root"), "{d}");
}

#[test]
fn enable_recovery_is_honoured_without_a_warning() {
    let text = with_entry(
        "fs.mounts = [ { type = \"encrypted\", path = \"/d\", uri = \"file:d/\", enable_recovery = true } ]\n",
    );
    let w = warnings(&text, Mode::Build);
    assert!(!w.iter().any(|d| d.key == "fs.mounts[0].enable_recovery"), "{w:?}");
    let m = ok(&text);
    assert!(
        m.mounts.iter().any(|mt| matches!(mt.kind, MountKind::Encrypted { enable_recovery: true, .. })),
        "{:?}",
        m.mounts
    );
}

#[test]
fn insecure_keys() {
    let text = with_entry("fs.insecure__keys.default = \"000102030405060708090a0b0c0d0e0f\"\n");
    let m = ok(&text);
    assert_eq!(m.insecure_keys["default"].0[15], 15);
    let w = warnings(&text, Mode::Run);
    assert!(w.iter().any(|d| d.key == "fs.insecure__keys.default" && d.message.contains("insecure")));
    for bad in ["\"0001\"", "\"zz0102030405060708090a0b0c0d0e0f\"", "16"] {
        let d = err(&with_entry(&format!("fs.insecure__keys.k = {bad}\n")));
        assert_eq!((d.key.as_str(), d.line), ("fs.insecure__keys.k", 2), "{bad}");
    }
}

#[test]
fn trusted_and_allowed_files() {
    let m = ok(&with_entry(
        r#"sgx.trusted_files = [
  "file:infer.py",
  "file:/usr/lib/python3.11/",
  { uri = "file:./ssl//ca.crt", sha256 = "0000000000000000000000000000000000000000000000000000000000000001" },
]
sgx.allowed_files = [ "file:result.txt", "dev:/dev/tty", "file:logs/" ]
sgx.file_check_policy = "allow_all_but_log"
"#,
    ));
    assert_eq!(m.trusted_files[0], TrustedFile { uri: "infer.py".into(), sha256: None });
    assert!(m.trusted_files[1].is_dir());
    assert_eq!(m.trusted_files[1].uri, "/usr/lib/python3.11/");
    assert_eq!(m.trusted_files[2].uri, "ssl/ca.crt");
    assert_eq!(m.trusted_files[2].sha256.unwrap()[31], 1);
    assert_eq!(m.allowed_files, vec!["file:result.txt", "dev:/dev/tty", "file:logs/"]);
    assert_eq!(m.file_check_policy, FileCheckPolicy::AllowAllButLog);

    let d = err(&with_entry(
        "sgx.trusted_files = [ { uri = \"file:d/\", sha256 = \"00000000000000000000000000000000000000000000000000000000000000aa\" } ]\n",
    ));
    assert!(d.message.contains("directory"), "{d}");
    let d = err(&with_entry("sgx.trusted_files = [ \"/etc/passwd\" ]\n"));
    assert_eq!(d.key, "sgx.trusted_files[0]");
    let d = err(&with_entry("sgx.allowed_files = [ \"http://x\" ]\n"));
    assert_eq!(d.key, "sgx.allowed_files[0]");
    let d = err(&with_entry("sgx.file_check_policy = \"lax\"\n"));
    assert_eq!(d.key, "sgx.file_check_policy");
}

#[test]
fn identity_fields() {
    let m = ok(&with_entry(
        "sgx.debug = true\nsgx.isvprodid = 7\nsgx.isvsvn = 3\nsgx.enclave_size = \"4G\"\nsgx.max_threads = 32\n\
         sgx.edmm_enable = false\nsgx.remote_attestation = \"dcap\"\n",
    ));
    assert_eq!(
        m.identity,
        Identity {
            debug: true,
            isvprodid: 7,
            isvsvn: 3,
            enclave_size: 4 << 30,
            max_threads: 32,
            edmm_enable: false,
            remote_attestation: RemoteAttestation::Dcap,
        }
    );
    assert_eq!(ok(&with_entry("sgx.edmm_enable = true\n")).identity.enclave_size, 1024 << 30);
    assert_eq!(ok(&with_entry("sgx.enclave_size = \"0x1000\"\n")).identity.enclave_size, 0x1000);
    assert_eq!(ok(&with_entry("sgx.enclave_size = 65536\n")).identity.enclave_size, 65536);
    assert_eq!(err(&with_entry("sgx.enclave_size = \"lots\"\n")).key, "sgx.enclave_size");
    assert_eq!(err(&with_entry("sgx.isvprodid = 70000\n")).key, "sgx.isvprodid");
    assert_eq!(err(&with_entry("sgx.max_threads = 0\n")).key, "sgx.max_threads");
    let d = err(&with_entry("sgx.remote_attestation = true\n"));
    assert!(d.message.contains("\"dcap\""), "{d}");
    let d = err(&with_entry("sgx.remote_attestation = \"epid\"\n"));
    assert!(d.message.contains("\"dcap\""), "{d}");
}

#[test]
fn accepted_keys_parse_without_effect() {
    ok(&with_entry(
        r#"libos.check_invalid_pointers = false
sgx.use_exinfo = true
sgx.cpu_features.avx = "unspecified"
sgx.seal_key.flags_mask = "0xffffffffffffffff"
sgx.preheat_enclave = false
sgx.enable_stats = false
sgx.profile.enable = "none"
sgx.vtune_profile = false
sgx.insecure__rpc_thread_num = 0
sgx.insecure__allow_memfaults_without_exinfo = false
sys.stack.size = "2M"
sys.brk.max_size = "256M"
sys.fds.limit = 1024
sys.disallow_subprocesses = true
sys.insecure__allow_eventfd = true
sys.enable_sigterm_injection = true
sys.experimental__enable_flock = true
sys.allowed_ioctls = []
sys.debug__mock_syscalls = []
sys.enable_extra_runtime_domain_names_conf = true
"#,
    ));
}

#[test]
fn removed_syntax_names_its_replacement() {
    let cases: &[(&str, &str, &str)] = &[
        ("sgx.protected_files = [\"file:x\"]", "sgx.protected_files", "type = \"encrypted\""),
        ("sgx.protected_mrenclave_files = [\"file:x\"]", "sgx.protected_mrenclave_files", "_sgx_mrenclave"),
        ("sgx.protected_mrsigner_files = [\"file:x\"]", "sgx.protected_mrsigner_files", "_sgx_mrsigner"),
        (
            "fs.insecure__protected_files_key = \"00\"",
            "fs.insecure__protected_files_key",
            "fs.insecure__keys.default",
        ),
        (
            "sgx.insecure__protected_files_key = \"00\"",
            "sgx.insecure__protected_files_key",
            "fs.insecure__keys.default",
        ),
        ("fs.mount.lib.type = \"chroot\"", "fs.mount", "fs.mounts"),
        ("sgx.thread_num = 4", "sgx.thread_num", "sgx.max_threads"),
        ("sgx.ra_client_spid = \"x\"", "sgx.ra_client_spid", "\"dcap\""),
        ("sgx.ra_client_linkable = true", "sgx.ra_client_linkable", "\"dcap\""),
        ("loader.exec = \"file:x\"", "loader.exec", "libos.entrypoint"),
        ("loader.preload = \"file:x\"", "loader.preload", "libos.entrypoint"),
        ("loader.entrypoint = \"file:libsysdb.so\"", "loader.entrypoint", "libos.entrypoint"),
        ("sgx.trusted_files.python = \"file:/usr/bin/python3\"", "sgx.trusted_files", "list form"),
        ("sgx.allowed_files.out = \"file:out\"", "sgx.allowed_files", "list form"),
        ("sgx.trusted_checksum.python = \"00\"", "sgx.trusted_checksum", "list form"),
        ("sgx.nonpie_binary = true", "sgx.nonpie_binary", "delete the line"),
        ("loader.pal_internal_mem_size = \"128M\"", "loader.pal_internal_mem_size", "delete the line"),
        ("sgx.require_avx = true", "sgx.require_avx", "sgx.cpu_features.avx"),
        ("sgx.rpc_thread_num = 2", "sgx.rpc_thread_num", "sgx.insecure__rpc_thread_num"),
    ];
    for (line, key, hint) in cases {
        // Both modes refuse removed syntax: it would silently change what is protected.
        for mode in [Mode::Build, Mode::Run] {
            let e = Manifest::parse(&with_entry(&format!("{line}\n")), mode).expect_err(line);
            let d = &e.errors[0];
            assert_eq!((d.key.as_str(), d.line), (*key, 2), "{line}: {d}");
            assert!(d.message.contains(hint), "{line}: {d}");
        }
    }
}

#[test]
fn unknown_keys_fail_the_build_and_warn_at_run_time() {
    let text = with_entry(
        "\n[sgx]\ndebug = false\nfrobnicate = 1\n[fs]\nmounts = []\nweird.deep = 2\ntoplevel_x = 1\n",
    );
    let e = Manifest::parse(&text, Mode::Build).unwrap_err();
    let found: Vec<(String, usize)> = e.errors.iter().map(|d| (d.key.clone(), d.line)).collect();
    assert_eq!(
        found,
        vec![("sgx.frobnicate".into(), 5), ("fs.weird".into(), 8), ("fs.toplevel_x".into(), 9)]
    );
    assert!(e.to_string().contains("line 5: `sgx.frobnicate`: unknown key"), "{e}");

    let w = warnings(&text, Mode::Run);
    assert!(
        w.iter().any(|d| d.key == "sgx.frobnicate" && d.line == 5 && d.message.contains("ignored")),
        "{w:?}"
    );
    let w = warnings("libos.entrypoint = \"/x\"\nnew_section.a = 1\n", Mode::Run);
    assert_eq!(w[0].key, "new_section");
    // Below a partly known table, the unknown part is named.
    let d = err("libos.entrypoint = \"/x\"\nsys.stack.size = \"1M\"\nsys.stack.colour = 1\n");
    assert_eq!((d.key.as_str(), d.line), ("sys.stack.colour", 3));
}

#[test]
fn type_errors_name_key_and_line() {
    let d = err(&with_entry("\n\nsgx.debug = \"yes\"\n"));
    assert_eq!((d.key.as_str(), d.line), ("sgx.debug", 4));
    assert!(d.message.contains("expected true or false, found a string"), "{d}");
    assert_eq!(d.to_string(), "line 4: `sgx.debug`: expected true or false, found a string");
    let d = err(&with_entry("fs.mounts = { path = \"/a\" }\n"));
    assert!(d.message.contains("[[fs.mounts]]"), "{d}");
}

#[test]
fn toml_syntax_errors_have_line_numbers() {
    let e = Manifest::parse("libos.entrypoint = \"/x\"\nsgx.debug = \n", Mode::Run).unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
    let e = Manifest::parse("libos.entrypoint = \"/x\"\nsgx.debug = true\nsgx.debug = false\n", Mode::Run)
        .unwrap_err();
    assert!(e.to_string().contains("line 3"), "{e}");
}

#[test]
fn all_errors_are_reported_in_line_order() {
    let e = Manifest::parse("sgx.debug = 1\nsgx.isvsvn = \"x\"\nlibos.entrypoint = \"/x\"\n", Mode::Build)
        .unwrap_err();
    let lines: Vec<usize> = e.errors.iter().map(|d| d.line).collect();
    assert_eq!(lines, vec![1, 2]);
}

#[test]
fn view_to_host_follows_the_mount_table() {
    let m = ok(&with_entry(
        r#"fs.root.uri = "file:/srv"
fs.start_dir = "/app"
fs.mounts = [
  { path = "/ssl/ca.crt", uri = "file:ssl/ca.crt" },
  { path = "/usr", uri = "file:/usr" },
  { path = "/usr/local", uri = "file:/opt/local" },
  { type = "tmpfs", path = "/tmp" },
]
"#,
    ));
    assert_eq!(m.view_to_host("/ssl/ca.crt").as_deref(), Some("ssl/ca.crt"));
    assert_eq!(m.view_to_host("/usr/local/bin/x").as_deref(), Some("/opt/local/bin/x"));
    assert_eq!(m.view_to_host("/usr/bin/x").as_deref(), Some("/usr/bin/x"));
    assert_eq!(m.view_to_host("/tmp/x"), None);
    assert_eq!(m.view_to_host("infer.py").as_deref(), Some("/srv/app/infer.py"));
    assert_eq!(m.view_to_host("/").as_deref(), Some("/srv"));
}

/// spec/manifest.md §11, the worked example, rendered with `-Dentrypoint=/opt/app/.venv/bin/python3
/// -Dvenv=/opt/app/.venv` and `gramine.runtimedir()` = `/lib/x86_64-linux-gnu`.
#[test]
fn the_worked_example_of_the_spec_is_accepted() {
    let text = r#"
libos.entrypoint = "/opt/app/.venv/bin/python3"
loader.log_level = "error"
loader.argv = ["python3", "infer.py"]
loader.env.PYTHONDONTWRITEBYTECODE = "1"
loader.env.OMP_NUM_THREADS = "1"
loader.env.LD_PRELOAD = "libsecret_prov_attest.so"
loader.env.SECRET_PROVISION_CONSTRUCTOR = "1"
loader.env.SECRET_PROVISION_SET_KEY = "default"
loader.env.SECRET_PROVISION_CA_CHAIN_PATH = "/ssl/ca.crt"
loader.env.SECRET_PROVISION_SERVERS = "localhost:4433"

fs.mounts = [
  { path = "/lib", uri = "file:/lib/x86_64-linux-gnu" },
  { path = "/usr", uri = "file:/usr" },
  { path = "/opt/app/.venv", uri = "file:/opt/app/.venv" },
  { type = "tmpfs", path = "/tmp" },
  { path = "/ssl/ca.crt", uri = "file:ssl/ca.crt" },
  { type = "encrypted", path = "/data/", uri = "file:enc/" },
]

sgx.remote_attestation = "dcap"
sgx.debug = false
sgx.trusted_files = [
  "file:infer.py",
  "file:ssl/ca.crt",
  "file:/opt/app/.venv/",
  "file:/usr/lib/python3.11/",
]
"#;
    let (m, warnings) = Manifest::parse(text, Mode::Build).unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(m.mounts.len(), 6);
    assert_eq!(
        m.mounts[5].kind,
        MountKind::Encrypted { uri: "enc/".into(), key_name: "default".into(), enable_recovery: false }
    );
    assert_eq!(m.view_to_host("/ssl/ca.crt").as_deref(), Some("ssl/ca.crt"));
    assert_eq!(m.identity.remote_attestation, RemoteAttestation::Dcap);
    assert_eq!(m.env.value("SECRET_PROVISION_SET_KEY"), Some("default"));
}
