//! Policy loading and evaluation against real evidence.

mod common;

use std::path::Path;
use std::sync::Arc;

use attest::dcap::unix_time;
use attest::{DcapVerifier, KeyReleasePolicy, Policy, PolicyError, RaTlsVerifier, VerifiedEvidence};
use common::{collateral, expected, read};

const MRE: &str = "0866e7ca11b9f4efe4bf39b2607f4e1299f111920d96d95719080f01b62b7585";
const MRS: &str = "adc53501f21ced9b998e37a7a18e061c63e00315045fa57a49c18ef0a30d02ca";

fn dir_with_keys() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("model.key"), [1u8; 16]).unwrap();
    std::fs::write(d.path().join("inputs.key"), [2u8; 16]).unwrap();
    std::fs::write(d.path().join("short.key"), [3u8; 15]).unwrap();
    d
}

const KEYS: &str = "[keys.model]\nfile = \"model.key\"\n[keys.inputs]\nfile = \"inputs.key\"\n";

fn load(d: &Path, body: &str) -> Result<Policy, PolicyError> {
    Policy::from_toml(&format!("{KEYS}{body}"), &d.join("policy.toml"), d)
}

fn gramine_evidence() -> VerifiedEvidence {
    let t = unix_time(expected("gramine-ratls")["verification_time_unix"].as_u64().unwrap());
    let v = RaTlsVerifier::new(Arc::new(DcapVerifier::new(vec![collateral("gramine-ratls")])));
    v.verify_certificate(&read("gramine-ratls/ratls-cert.der"), t).unwrap().0
}

#[test]
fn gramine_cert_refused_by_default_policy() {
    let d = dir_with_keys();
    let p = load(
        d.path(),
        &format!("[[enclave]]\nname = \"e\"\nmrenclave = \"{MRE}\"\nfirst_secret = \"model\"\n"),
    )
    .unwrap();
    let r = p.release(&gramine_evidence()).unwrap_err();
    let msg = r.to_string();
    assert!(msg.contains("DEBUG"), "{msg}");
    assert!(msg.contains("OutOfDate"), "{msg}");
}

#[test]
fn gramine_cert_accepted_with_debug_and_outofdate() {
    let d = dir_with_keys();
    let p = load(
        d.path(),
        &format!(
            "[[enclave]]\nname = \"e\"\nmrenclave = \"{MRE}\"\nallow_debug = true\naccepted_tcb_statuses = [\"UpToDate\", \"OutOfDate\"]\nfirst_secret = \"model\"\nkeys = [\"inputs\"]\n"
        ),
    )
    .unwrap();
    let g = p.release(&gramine_evidence()).expect("accepted");
    assert_eq!(g.entry, "e");
    assert_eq!(g.first_secret.expose(), &[1u8; 16]);
    assert_eq!(g.key_names(), vec!["inputs", "model"]);
    // Debug allowed but OutOfDate not: refused.
    let p = load(
        d.path(),
        &format!(
            "[[enclave]]\nname = \"e\"\nmrenclave = \"{MRE}\"\nallow_debug = true\nfirst_secret = \"model\"\n"
        ),
    )
    .unwrap();
    assert!(p.release(&gramine_evidence()).is_err());
}

#[test]
fn signer_rule_and_advisories() {
    let d = dir_with_keys();
    let base = format!(
        "[[enclave]]\nname = \"s\"\nmrsigner = \"{MRS}\"\nisv_prod_id = 0\nallow_debug = true\naccepted_tcb_statuses = [\"OutOfDate\"]\nfirst_secret = \"model\"\n"
    );
    assert!(load(d.path(), &base).unwrap().release(&gramine_evidence()).is_ok());
    let svn = base.replace("isv_prod_id = 0", "isv_prod_id = 0\nmin_isv_svn = 1");
    let msg = load(d.path(), &svn).unwrap().release(&gramine_evidence()).unwrap_err().to_string();
    assert!(msg.contains("ISV SVN 0 below minimum 1"), "{msg}");
    let prod = base.replace("isv_prod_id = 0", "isv_prod_id = 9");
    assert!(load(d.path(), &prod).unwrap().release(&gramine_evidence()).is_err());
    let adv = format!("{base}accepted_advisories = [\"INTEL-SA-00586\"]\n");
    let msg = load(d.path(), &adv).unwrap().release(&gramine_evidence()).unwrap_err().to_string();
    assert!(msg.contains("INTEL-SA-00960"), "{msg}");
}

#[test]
fn wrong_mrenclave_refused() {
    let d = dir_with_keys();
    let p = load(
        d.path(),
        &format!(
            "[[enclave]]\nname = \"e\"\nmrenclave = \"{}\"\nallow_debug = true\naccepted_tcb_statuses = [\"OutOfDate\"]\nfirst_secret = \"model\"\n",
            "00".repeat(32)
        ),
    )
    .unwrap();
    let msg = p.release(&gramine_evidence()).unwrap_err().to_string();
    assert!(msg.contains("MRENCLAVE mismatch"), "{msg}");
}

#[test]
fn phala_accepted_only_with_config_and_sw_hardening() {
    let d = dir_with_keys();
    let t = unix_time(1750400000);
    let ev = DcapVerifier::new(vec![collateral("phala-sgx-v3")])
        .verify(&read("phala-sgx-v3/quote.bin"), t)
        .unwrap();
    let mre = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb";
    let entry = |st: &str| {
        format!(
            "[[enclave]]\nname = \"p\"\nmrenclave = \"{mre}\"\naccepted_tcb_statuses = [{st}]\nfirst_secret = \"model\"\n"
        )
    };
    assert!(load(d.path(), &entry("\"UpToDate\"")).unwrap().release(&ev).is_err());
    assert!(load(d.path(), &entry("\"ConfigurationAndSWHardeningNeeded\"")).unwrap().release(&ev).is_ok());
}

fn invalid_line(e: PolicyError) -> (usize, String) {
    match e {
        PolicyError::Invalid { line, field, .. } => (line, field),
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn load_errors_name_line_and_field() {
    let d = dir_with_keys();
    // KEYS is 4 lines; the entry starts on line 5.
    let e = load(d.path(), "[[enclave]]\nname = \"any\"\nallow_debug = true\nfirst_secret = \"model\"\n")
        .unwrap_err();
    assert!(e.to_string().contains("any MRENCLAVE and any MRSIGNER"), "{e}");
    assert_eq!(invalid_line(e), (5, "enclave[0].mrenclave".into()));

    let e = load(d.path(), "[[enclave]]\nname = \"x\"\nmrenclave = \"abc\"\nfirst_secret = \"model\"\n")
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("line 7") && msg.contains("64 hex"), "{msg}");

    let e = load(d.path(), "[[enclave]]\nname = \"x\"\nmrenclav = \"abc\"\nfirst_secret = \"model\"\n")
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("line 7") && msg.contains("mrenclav"), "{msg}");

    let e = load(
        d.path(),
        &format!("[[enclave]]\nname = \"x\"\nmrenclave = \"{MRE}\"\nfirst_secret = \"nope\"\n"),
    )
    .unwrap_err();
    assert_eq!(invalid_line(e), (5, "enclave[0].first_secret".into()));

    let e = load(
        d.path(),
        &format!("[[enclave]]\nname = \"x\"\nmrsigner = \"{MRS}\"\nfirst_secret = \"model\"\n"),
    )
    .unwrap_err();
    assert_eq!(invalid_line(e), (5, "enclave[0].isv_prod_id".into()));

    let e = load(
        d.path(),
        &format!("[[enclave]]\nname = \"x\"\nmrenclave = \"{MRE}\"\naccepted_tcb_statuses = [\"Fine\"]\nfirst_secret = \"model\"\n"),
    )
    .unwrap_err();
    assert_eq!(invalid_line(e).1, "enclave[0].accepted_tcb_statuses");

    let e = Policy::from_toml(
        &format!("[keys.k]\nfile = \"short.key\"\n[[enclave]]\nname = \"x\"\nmrenclave = \"{MRE}\"\nfirst_secret = \"k\"\n"),
        &d.path().join("p.toml"),
        d.path(),
    )
    .unwrap_err();
    assert!(matches!(e, PolicyError::KeyFile { line: 1, .. }), "{e}");
    assert!(e.to_string().contains("15 bytes"), "{e}");
}

#[cfg(not(feature = "insecure-sim"))]
#[test]
fn simulated_entries_need_the_feature() {
    let d = dir_with_keys();
    let e = load(
        d.path(),
        &format!(
            "[attestation]\ninsecure_allow_simulated = true\n[[enclave]]\nname = \"x\"\ntee = \"simulated\"\nmrenclave = \"{MRE}\"\nfirst_secret = \"model\"\n"
        ),
    );
    // [attestation] after [keys.*] is fine in TOML.
    let e = e.unwrap_err();
    assert!(e.to_string().contains("insecure-sim"), "{e}");
}

#[cfg(feature = "insecure-sim")]
#[test]
fn policy_refuses_simulated_without_flag_even_for_simulated_entries() {
    use attest::ratls::{Curve, build_certificate};
    use attest::sim::{SimAttester, SimVerifier};
    let mut mre = [0u8; 32];
    hex::decode_to_slice(MRE, &mut mre).unwrap();
    let id = attest::EnclaveIdentity {
        mrenclave: mre,
        mrsigner: [0; 32],
        isv_prod_id: 0,
        isv_svn: 0,
        attributes: [5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        debug: false,
    };
    let cert = build_certificate(&SimAttester::dangerous_new(id), Curve::P256).unwrap();
    let v = RaTlsVerifier::new(Arc::new(DcapVerifier::new(vec![])))
        .dangerous_with_simulated(Arc::new(SimVerifier::dangerous_new()));
    let (ev, _) = v.verify_certificate(cert.cert.as_ref(), unix_time(1)).unwrap();
    let d = dir_with_keys();
    let entry = format!(
        "[[enclave]]\nname = \"s\"\ntee = \"simulated\"\nmrenclave = \"{MRE}\"\nfirst_secret = \"model\"\n"
    );
    let off = load(d.path(), &entry).unwrap();
    let msg = off.release(&ev).unwrap_err().to_string();
    assert!(msg.contains("insecure_allow_simulated"), "{msg}");
    let on = Policy::from_toml(
        &format!("[attestation]\ninsecure_allow_simulated = true\n{KEYS}{entry}"),
        &d.path().join("p.toml"),
        d.path(),
    )
    .unwrap();
    assert!(on.release(&ev).is_ok());
    // An SGX entry with the same MRENCLAVE never matches simulated evidence.
    let sgx = Policy::from_toml(
        &format!(
            "[attestation]\ninsecure_allow_simulated = true\n{KEYS}{}",
            entry.replace("tee = \"simulated\"\n", "")
        ),
        &d.path().join("p.toml"),
        d.path(),
    )
    .unwrap();
    assert!(sgx.release(&ev).unwrap_err().to_string().contains("evidence is simulated"));
}
