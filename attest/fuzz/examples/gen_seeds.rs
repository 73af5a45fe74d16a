//! Writes the synthetic seed inputs of the attest fuzz targets into `corpus/`: simulated
//! RA-TLS certificates and reports, hostile CBOR, policies and wire sessions. The
//! public DCAP vectors are copied as described in docs/RELIABILITY.md.

use std::path::Path;

use attest::ratls::{Curve, build_certificate, build_claims, build_tagged_evidence};
use attest::sim::{SimAttester, encode_report};
use attest::{EnclaveIdentity, wire};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let identity = EnclaveIdentity {
        mrenclave: [0x11; 32],
        mrsigner: [0x33; 32],
        isv_prod_id: 1,
        isv_svn: 2,
        attributes: [0x05, 0, 0, 0, 0, 0, 0, 0, 0xe7, 0, 0, 0, 0, 0, 0, 0],
        debug: false,
    };

    // ratls_cert: simulated certificates on both curves.
    for (name, curve) in [("sim_p256.der", Curve::P256), ("sim_p384.der", Curve::P384)] {
        let cert = build_certificate(&SimAttester::dangerous_new(identity.clone()), curve).unwrap();
        write(&root.join("ratls_cert"), name, cert.cert.as_ref());
    }

    // evidence_cbor: selector byte, then the bytes.
    let dir = root.join("evidence_cbor");
    let claims = build_claims(b"an SPKI").unwrap();
    let report = encode_report(&identity, &[7; 64]);
    let sim_evidence = build_tagged_evidence(attest::ratls::SIM_EVIDENCE_TAG, &report, &claims).unwrap();
    let quote_evidence =
        build_tagged_evidence(attest::ratls::CBOR_TAG_INTEL_QUOTE, &[0u8; 600], &claims).unwrap();
    let with = |sel: u8, bytes: &[u8]| [&[sel][..], bytes].concat();
    write(&dir, "tagged_sim", &with(0, &sim_evidence));
    write(&dir, "tagged_quote", &with(0, &quote_evidence));
    write(&dir, "claims", &with(1, &claims));
    write(&dir, "sim_report", &with(2, &report));
    // Deep nesting (arrays of arrays) and a byte string claiming 2^63 bytes.
    write(&dir, "deep_arrays", &with(1, &[0x81; 4096]));
    write(&dir, "huge_bstr", &with(0, &[0x5b, 0x80, 0, 0, 0, 0, 0, 0, 0]));
    write(&dir, "huge_map", &with(2, &[0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));

    // policy_toml.
    let dir = root.join("policy_toml");
    let full = format!(
        "[attestation]\ninsecure_allow_simulated = true\n\n[keys.model]\nfile = \"model.key\"\n\
         [keys.inputs]\nfile = \"inputs.key\"\n\n[[enclave]]\nname = \"inference\"\ntee = \"simulated\"\n\
         mrenclave = \"{}\"\nfirst_secret = \"model\"\nkeys = [\"inputs\"]\n\n[[enclave]]\nname = \"signed\"\n\
         tee = \"sgx\"\nmrsigner = \"{}\"\nisv_prod_id = 3\nmin_isv_svn = 4\nallow_debug = false\n\
         accepted_tcb_statuses = [\"UpToDate\", \"SWHardeningNeeded\"]\naccepted_advisories = [\"INTEL-SA-00615\"]\n\
         first_secret = \"inputs\"\n",
        "11".repeat(32),
        "33".repeat(32)
    );
    write(&dir, "full.toml", full.as_bytes());
    write(&dir, "bad_key_len.toml", b"[keys.k]\nfile = \"short.key\"\n");
    write(&dir, "unknown_field.toml", b"[attestation]\nbogus = 1\n");
    write(
        &dir,
        "dup_entry.toml",
        b"[keys.k]\nfile = \"model.key\"\n[[enclave]]\nname = \"a\"\nmrenclave = \"00\"\nfirst_secret = \"k\"\n",
    );
    write(&dir, "empty.toml", b"");

    // keyserver_wire: what a client sends after the handshake.
    let dir = root.join("keyserver_wire");
    let req = &wire::REQUEST[..];
    write(&dir, "gramine_request", req);
    write(&dir, "request_and_granted_key", &[req, &wire::encode_key_request("inputs")].concat());
    write(&dir, "request_and_refused_key", &[req, &wire::encode_key_request("outputs")].concat());
    let mut many = req.to_vec();
    for name in ["inputs", "model", "outputs", "nope", "inputs", "x", "inputs", "y", "z"] {
        many.extend_from_slice(&wire::encode_key_request(name));
    }
    write(&dir, "many_requests", &many);
    let mut bad_len = req.to_vec();
    bad_len.extend_from_slice(wire::KEY_REQUEST);
    bad_len.extend_from_slice(&u32::MAX.to_be_bytes());
    write(&dir, "bad_name_length", &bad_len);
    write(&dir, "partial_request", &req[..20]);
    write(&dir, "wrong_request", b"GET / HTTP/1.1\r\n\r\n");
}
