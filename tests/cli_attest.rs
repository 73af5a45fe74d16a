//! `pfs attest` / `pfs keyserver init-tls` run as a user would.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository's DCAP vectors (`tests/vectors/dcap`); fails loudly when missing.
fn vectors() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/dcap");
    assert!(dir.join("README.md").is_file(), "DCAP vectors missing at {}", dir.display());
    dir
}

fn pfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pfs")).args(args).output().expect("pfs runs")
}

fn v(rel: &str) -> String {
    vectors().join(rel).display().to_string()
}

#[test]
fn verify_json_phala() {
    let o = pfs(&[
        "attest",
        "verify",
        "--quote",
        &v("phala-sgx-v3/quote.bin"),
        "--collateral",
        &v("phala-sgx-v3/collateral.json"),
        "--at",
        "1750400000",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["tee"], "sgx-dcap");
    assert_eq!(j["tcb_status"], "ConfigurationAndSWHardeningNeeded");
    assert_eq!(j["advisory_ids"], serde_json::json!(["INTEL-SA-00289", "INTEL-SA-00615"]));
    assert_eq!(j["mrenclave"], "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb");
    assert_eq!(j["mrsigner"], "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6");
    assert_eq!(j["isv_prod_id"], 0);
    assert_eq!(j["isv_svn"], 0);
    assert_eq!(j["debug"], false);
    assert!(j["report_data"].as_str().unwrap().starts_with("48656c6c6f2c20776f726c6421"));
}

#[test]
fn verify_gramine_cert_pem_reports_debug() {
    let o = pfs(&[
        "attest",
        "verify",
        "--cert",
        &v("gramine-ratls/ratls-cert.pem"),
        "--collateral",
        &v("gramine-ratls/collateral.json"),
        "--at",
        "1755300000",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["debug"], true);
    assert_eq!(j["tcb_status"], "OutOfDate");
}

#[test]
fn verify_failures_exit_nonzero_without_panic() {
    let cases: Vec<Vec<String>> = vec![
        vec![
            "--quote".into(),
            v("tdx-v4/quote.bin"),
            "--collateral".into(),
            v("tdx-v4/collateral.json"),
            "--at".into(),
            "1750400000".into(),
        ],
        vec![
            "--quote".into(),
            v("phala-sgx-v3/quote.bin"),
            "--collateral".into(),
            v("phala-sgx-v3/collateral.json"),
            "--at".into(),
            "1900000000".into(),
        ],
        vec![
            "--cert".into(),
            v("phala-sgx-v3/quote.bin"),
            "--collateral".into(),
            v("phala-sgx-v3/collateral.json"),
        ],
        vec!["--quote".into(), v("README.md"), "--collateral".into(), v("phala-sgx-v3/collateral.json")],
        vec![
            "--quote".into(),
            v("phala-sgx-v3/quote.bin"),
            "--collateral".into(),
            v("phala-sgx-v3/quote.bin"),
        ],
        vec![
            "--quote".into(),
            "/nonexistent".into(),
            "--collateral".into(),
            v("phala-sgx-v3/collateral.json"),
        ],
    ];
    for c in cases {
        let mut args = vec!["attest", "verify"];
        args.extend(c.iter().map(String::as_str));
        let o = pfs(&args);
        let code = o.status.code();
        assert!(matches!(code, Some(1) | Some(2)), "{c:?}: {code:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("error:") && !err.contains("panicked"), "{err}");
    }
    let o = pfs(&[
        "attest",
        "verify",
        "--quote",
        &v("tdx-v4/quote.bin"),
        "--collateral",
        &v("tdx-v4/collateral.json"),
        "--at",
        "1750400000",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("TDX"));
}

#[test]
fn policy_check_and_init_tls() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("k.key"), [9u8; 16]).unwrap();
    let entry = |extra: &str| {
        format!(
            "[keys.k]\nfile = \"k.key\"\n[[enclave]]\nname = \"g\"\nmrenclave = \"0866e7ca11b9f4efe4bf39b2607f4e1299f111920d96d95719080f01b62b7585\"\nfirst_secret = \"k\"\n{extra}"
        )
    };
    let p = d.path().join("p.toml");
    let run = || {
        pfs(&[
            "attest",
            "policy-check",
            p.to_str().unwrap(),
            "--cert",
            &v("gramine-ratls/ratls-cert.der"),
            "--collateral",
            &v("gramine-ratls/collateral.json"),
            "--at",
            "1755300000",
        ])
    };
    std::fs::write(&p, entry("")).unwrap();
    let o = run();
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("REFUSED") && out.contains("DEBUG") && out.contains("OutOfDate"), "{out}");
    std::fs::write(&p, entry("allow_debug = true\naccepted_tcb_statuses = [\"OutOfDate\"]\n")).unwrap();
    let o = run();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("GRANTED"));

    let tls = d.path().join("tls");
    let o = pfs(&["keyserver", "init-tls", tls.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    use std::os::unix::fs::PermissionsExt;
    for (f, mode) in
        [("ca.pem", 0o644), ("ca-key.pem", 0o600), ("server.pem", 0o644), ("server-key.pem", 0o600)]
    {
        let m = std::fs::metadata(tls.join(f)).unwrap().permissions().mode() & 0o777;
        if mode == 0o600 {
            assert_eq!(m, 0o600, "{f}");
        }
    }
    // Never overwrites.
    let o = pfs(&["keyserver", "init-tls", tls.to_str().unwrap()]);
    assert!(matches!(o.status.code(), Some(1) | Some(2)));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to overwrite"));
}
