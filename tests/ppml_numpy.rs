//! examples/ppml-numpy end to end, step by step as its README walks through it: numpy model,
//! encrypted inputs, `pfs manifest`, `pfs keyserver init-tls` / `pfs keyserver`, `pfs run` of
//! the unmodified numpy script (np.load of an .npz, np.load(mmap_mode="r") of an .npy),
//! encrypted outputs checked against a native run. Needs numpy: `.ci/setup` installs it.
#![cfg(feature = "insecure-sim")]

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// `python3 -c CODE` (the interpreter `.ci/setup` installed numpy for); stdout trimmed.
fn py(code: &str) -> String {
    let out = Command::new("python3").args(["-c", code]).output().expect("python3 is required");
    assert!(
        out.status.success(),
        "python3 -c {code:?} failed: {}\nnumpy is required by this test: run .ci/setup (it installs it with pip)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn ppml_numpy_example_runs_as_the_readme_says() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ppml-numpy");
    let interp = py("import numpy, sys; print(sys.executable)");
    let prefix = py("import sys; print(sys.prefix)");
    let numpy_dir = py("import numpy, os; print(os.path.dirname(numpy.__file__))");

    // The data owner's machine (plaintext lives only here) and the work directory.
    let owner_machine = workdir();
    let plain = owner_machine.path();
    let tmp = workdir();
    let owner = tmp.path().join("owner");
    let cloud = tmp.path().join("cloud");
    fs::create_dir_all(&owner).unwrap();
    fs::create_dir_all(cloud.join("output")).unwrap();

    // Step 1: the model and the input (owner side).
    let out = Command::new(&interp).arg(example.join("make_model.py")).arg(plain).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let weights = fs::read(plain.join("weights.npz")).unwrap();
    let batch = fs::read(plain.join("input.npy")).unwrap();
    assert!(batch.len() > 8192, "the memory-mapped input spans several nodes");

    // Step 2: wrap key and encryption (`pfs keygen`, `pfs encrypt` in the README).
    let key: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
    fs::write(owner.join("wrap-key"), key).unwrap();
    // 0600, as `pfs keygen` writes it: the key server refuses key files others can read.
    fs::set_permissions(owner.join("wrap-key"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    encrypt(&cloud, "enc/weights.npz", &key, &weights);
    encrypt(&cloud, "enc/input.npy", &key, &batch);

    // Step 3: the key server's TLS files; the CA certificate goes to the cloud side.
    let out = pfs(&owner, &["keyserver", "init-tls", "tls"]);
    assert!(out.status.success(), "{}", show(&out));
    fs::copy(owner.join("tls/ca.pem"), cloud.join("ca.crt")).unwrap();

    // Step 4: the manifest.
    for f in ["infer.py", "infer.manifest.template"] {
        fs::copy(example.join(f), cloud.join(f)).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Command::new(pfs_bin())
        .args(["manifest", "infer.manifest.template", "infer.manifest"])
        .arg(format!("-Dentrypoint={interp}"))
        .arg(format!("-Dprefix={prefix}"))
        .arg(format!("-Dnumpy={numpy_dir}"))
        .arg(format!("-Dservers=localhost:{port}"))
        .env("PFS_PYTHON", &interp)
        .current_dir(&cloud)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let measurement = stdout
        .lines()
        .find_map(|l| l.strip_prefix("simulated measurement (NOT an SGX MRENCLAVE): "))
        .unwrap_or_else(|| panic!("no measurement printed: {stdout}"))
        .to_owned();

    // Step 5: the policy and the key server.
    fs::write(
        owner.join("policy.toml"),
        format!(
            "[attestation]\ninsecure_allow_simulated = true\n[keys.default]\nfile = \"wrap-key\"\n\
             [[enclave]]\nname = \"ppml-numpy\"\ntee = \"simulated\"\nmrenclave = \"{measurement}\"\n\
             first_secret = \"default\"\n"
        ),
    )
    .unwrap();
    let server = start_keyserver(&owner, port, Stdio::null());

    // Step 6: the run.
    let out = pfs_run(&cloud, "infer.manifest");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("classified 512 inputs"), "{}", show(&out));
    drop(server);

    // Step 7: decrypt the outputs; they match a native run on the plaintext.
    let native = plain.join("native");
    fs::create_dir(&native).unwrap();
    let script = fs::read_to_string(example.join("infer.py"))
        .unwrap()
        .replace("/data/", &format!("{}/", plain.display()))
        .replace("/output/", &format!("{}/", native.display()));
    let out = Command::new(&interp).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let expected = fs::read(native.join("result.txt")).unwrap();
    let result = decrypt(&cloud, "output/result.txt", &key, "output/result.txt").expect("result decrypts");
    assert_eq!(String::from_utf8_lossy(&result), String::from_utf8_lossy(&expected));
    assert_eq!(result.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(), 512);
    let probs = decrypt(&cloud, "output/probabilities.npy", &key, "output/probabilities.npy").unwrap();
    assert_eq!(probs, fs::read(native.join("probabilities.npy")).unwrap());
    assert!(decrypt(&cloud, "output/result.txt", &key, "/output/result.txt").is_err(), "bound to uri/REL");

    // `pfs decrypt --expect-path`, when this build has it (the cli branch).
    if pfs(&cloud, &["decrypt", "--help"]).status.success() {
        let dest = plain.join("cli-result.txt");
        let wrap = owner.join("wrap-key");
        let out = Command::new(pfs_bin())
            .args(["decrypt", "-w"])
            .arg(&wrap)
            .args(["-i", "output/result.txt", "-o"])
            .arg(&dest)
            .args(["--expect-path", "output/result.txt"])
            .current_dir(&cloud)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(fs::read(&dest).unwrap(), expected);
    }

    // No plaintext of the model, the input or the outputs anywhere in the work directory.
    assert_no_mounts(tmp.path());
    assert_no_plaintext(tmp.path(), &[&weights, &batch, &expected, &probs]);
}
