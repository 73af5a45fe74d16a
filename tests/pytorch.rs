//! examples/pytorch end to end with real torch and torchvision from PyPI in a stock venv
//! (`examples/pytorch/setup-venv.sh`, called by `.ci/setup`; cached outside the checkout):
//!
//! * inference, as Gramine's PyTorch PPML tutorial does it: a torchvision AlexNet saved with
//!   `torch.save`, an image and a class list, each a single-file encrypted mount; the key from
//!   `pfs keyserver` over simulated attestation; the decrypted `result.txt` equals a native run's;
//! * training on private data: 10,000 small images in an encrypted directory mount, encrypted
//!   checkpoints every epoch, a run SIGKILLed after its second epoch resumed from its last
//!   checkpoint, and the metrics equal an uninterrupted native run's;
//! * the key server logged each key release; no plaintext of model, image, classes, data set
//!   or results anywhere under the cloud directory;
//! * a trusted `.py` changed after `pfs manifest` stops the run with a message naming it.
#![cfg(feature = "insecure-sim")]

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pytorch")
}

/// The venv with torch and torchvision: made (or found) by the repository's script.
fn venv() -> PathBuf {
    let out = Command::new(example().join("setup-venv.sh")).output().expect("running setup-venv.sh");
    assert!(out.status.success(), "examples/pytorch/setup-venv.sh failed: {}", show(&out));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", show(&out));
    out
}

/// Every file below `dir` is scanned for every needle (memchr's memmem: the cloud directory
/// holds hundreds of MiB of ciphertext).
fn assert_absent(dir: &Path, needles: &[(&str, &[u8])]) {
    let scanned = for_each_file(dir, |path, bytes| {
        for (what, n) in needles {
            assert!(
                memchr::memmem::find(bytes, n).is_none(),
                "plaintext of {what} found in {}",
                path.display()
            );
        }
    });
    assert!(scanned > 200 << 20, "the scan saw the encrypted model ({scanned} bytes)");
}

/// 48-byte samples spread over `data` (and all of it when short): a hit of any proves a leak.
fn samples(data: &[u8]) -> Vec<&[u8]> {
    if data.len() <= 48 {
        return vec![data];
    }
    (1..=8).map(|i| &data[(data.len() - 48) * i / 9..][..48]).collect()
}

#[test]
fn pytorch_example_inference_and_training() {
    let venv = venv();
    let py = venv.join("bin/python3");
    assert!(
        fs::symlink_metadata(&py).unwrap().file_type().is_symlink(),
        "a stock venv (bin/python3 a symlink)"
    );
    let interp = {
        let out = run_ok(Command::new("readelf").arg("-l").arg(fs::canonicalize(&py).unwrap()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split("interpreter: ").nth(1).and_then(|s| s.split(']').next()).expect("PT_INTERP").to_owned()
    };

    let tmp = workdir();
    let owner = tmp.path().join("owner");
    let plain = owner.join("plain");
    let cloud = tmp.path().join("cloud");
    fs::create_dir_all(&plain).unwrap();
    fs::create_dir_all(cloud.join("checkpoints")).unwrap();

    // 1. The owner's model, image, class list and data set.
    run_ok(Command::new(&py).arg(example().join("make_model.py")).arg(&plain));
    run_ok(Command::new(&py).arg(example().join("make_dataset.py")).arg(plain.join("dataset")).arg("10000"));

    // 2. Wrap key; every file encrypted from the cloud directory, bound to its name there.
    let out = pfs(&owner, &["keygen", "-q", "-o", "wrap-key"]);
    assert!(out.status.success(), "{}", show(&out));
    let key: [u8; 16] = fs::read(owner.join("wrap-key")).unwrap().try_into().unwrap();
    let wrap = owner.join("wrap-key");
    for f in ["alexnet-pretrained.pt", "input.jpg", "classes.txt", "dataset"] {
        run_ok(
            Command::new(pfs_bin())
                .args(["encrypt", "-q", "-w"])
                .arg(&wrap)
                .arg("-i")
                .arg(plain.join(f))
                .args(["-o", f])
                .current_dir(&cloud),
        );
    }

    // 3. TLS files; 4. the manifests.
    let out = pfs(&owner, &["keyserver", "init-tls", "tls"]);
    assert!(out.status.success(), "{}", show(&out));
    fs::copy(owner.join("tls/ca.pem"), cloud.join("ca.crt")).unwrap();
    for f in ["pytorchexample.py", "pytorch.manifest.template", "train.py", "train.manifest.template"] {
        fs::copy(example().join(f), cloud.join(f)).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let render = |template: &str, manifest: &str| -> String {
        let out = run_ok(
            Command::new(pfs_bin())
                .args(["manifest", template, manifest])
                .arg(format!("-Dentrypoint={}", py.display()))
                .arg(format!("-Dvenv_dir={}", venv.display()))
                .arg("-Darch_libdir=/lib/x86_64-linux-gnu")
                .arg(format!("-Dinterp={interp}"))
                .arg(format!("-Dservers=localhost:{port}"))
                .env("PFS_PYTHON", &py)
                .current_dir(&cloud),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("simulated measurement (NOT an SGX MRENCLAVE): "))
            .unwrap_or_else(|| panic!("no measurement printed: {stdout}"))
            .to_owned()
    };
    let mr_infer = render("pytorch.manifest.template", "pytorch.manifest");
    let mr_train = render("train.manifest.template", "train.manifest");

    // 5. The policy and the key server, its log kept to count key releases.
    let mut policy =
        "[attestation]\ninsecure_allow_simulated = true\n[keys.default]\nfile = \"wrap-key\"\n".to_owned();
    for (name, mr) in [("pytorch-infer", &mr_infer), ("pytorch-train", &mr_train)] {
        policy += &format!(
            "[[enclave]]\nname = \"{name}\"\ntee = \"simulated\"\nmrenclave = \"{mr}\"\nfirst_secret = \"default\"\n"
        );
    }
    fs::write(owner.join("policy.toml"), policy).unwrap();
    let log_path = owner.join("keyserver.log");
    let server = start_keyserver(&owner, port, Stdio::from(fs::File::create(&log_path).unwrap()));
    let releases = || fs::read_to_string(&log_path).unwrap().matches("sent first secret").count();
    let run = |args: &[&str]| -> Output {
        Command::new(pfs_bin()).arg("run").args(args).current_dir(&cloud).output().unwrap()
    };

    // 6. Inference under `pfs run`; 7. the decrypted result equals the native run's.
    let out = run(&["pytorch.manifest", "pytorchexample.py"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(releases(), 1, "the key server released the key for the inference run");
    run_ok(Command::new(&py).arg(example().join("pytorchexample.py")).current_dir(&plain));
    let expected = fs::read(plain.join("result.txt")).unwrap();
    let result = decrypt(&cloud, "result.txt", &key, "result.txt").expect("result.txt decrypts");
    assert_eq!(String::from_utf8_lossy(&result), String::from_utf8_lossy(&expected));
    assert_no_mounts(tmp.path());

    // 8. Training: SIGKILL after the second epoch's checkpoint, then resume.
    let mut child = Command::new(pfs_bin())
        .args(["run", "train.manifest", "train.py", "--epochs", "4"])
        .current_dir(&cloud)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.starts_with("train.py: epoch 2 ");
        seen.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap();
    let killed = child.wait_with_output().unwrap();
    assert!(
        seen.last().is_some_and(|l| l.contains("checkpoint saved")),
        "the training run did not reach epoch 2: {seen:?}\n{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let out = run(&["train.manifest", "train.py", "--epochs", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let resumed_after: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("train.py: resuming after epoch "))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the second run did not resume: {}", show(&out)));
    assert!((2..4).contains(&resumed_after), "resumed after epoch {resumed_after}");
    assert_eq!(releases(), 3, "one key release per run");
    let native = owner.join("native-checkpoints");
    fs::create_dir(&native).unwrap();
    run_ok(
        Command::new(&py)
            .arg(example().join("train.py"))
            .arg("--data")
            .arg(plain.join("dataset"))
            .arg("--checkpoints")
            .arg(&native)
            .args(["--epochs", "4"]),
    );
    let metrics = decrypt(&cloud, "checkpoints/metrics.txt", &key, "checkpoints/metrics.txt").unwrap();
    assert_eq!(String::from_utf8_lossy(&metrics), fs::read_to_string(native.join("metrics.txt")).unwrap());
    let ckpt = decrypt(&cloud, "checkpoints/checkpoint.pt", &key, "checkpoints/checkpoint.pt").unwrap();
    assert!(ckpt.len() > 1000, "the checkpoint decrypts");
    assert_no_mounts(tmp.path());

    // 9. No plaintext anywhere under the cloud directory.
    let model = fs::read(plain.join("alexnet-pretrained.pt")).unwrap();
    let image = fs::read(plain.join("input.jpg")).unwrap();
    let classes = fs::read(plain.join("classes.txt")).unwrap();
    let sample_png = fs::read(plain.join("dataset/img/01234.png")).unwrap();
    let labels = fs::read(plain.join("dataset/labels.txt")).unwrap();
    let native_ckpt = fs::read(native.join("checkpoint.pt")).unwrap();
    let mut needles: Vec<(&str, &[u8])> = Vec::new();
    for (what, data) in [
        ("the model", &model),
        ("the image", &image),
        ("the classes", &classes),
        ("the result", &result),
        ("a training image", &sample_png),
        ("the labels", &labels),
        ("the metrics", &metrics),
    ] {
        needles.extend(samples(data).into_iter().map(|s| (what, s)));
    }
    // The checkpoint's tensors: the serialised weights (identical to the native run's).
    needles.extend(samples(&native_ckpt[native_ckpt.len() / 2..]).into_iter().map(|s| ("a checkpoint", s)));
    assert_absent(&cloud, &needles);

    // 10. A trusted .py changed after the manifest was made: the run stops, naming it.
    let script = cloud.join("pytorchexample.py");
    let mut text = fs::read_to_string(&script).unwrap();
    text.push_str("print('changed after pfs manifest')\n");
    fs::write(&script, text).unwrap();
    let out = run(&["pytorch.manifest", "pytorchexample.py"]);
    assert_ne!(out.status.code(), Some(0), "a changed trusted script ran: {}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pytorchexample.py"), "the error names the file: {}", show(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("changed after"), "{}", show(&out));
    drop(server);
    assert_no_mounts(tmp.path());
}
