//! `pfs demo`: the paper's workflow (Figure 3) in one command.
//!
//! The data owner's side (wrap key, TLS files, key-release policy, key server) lives in
//! `DIR/owner/`; the untrusted cloud's side (the script, the manifest, the encrypted model,
//! input and result) in `DIR/cloud/`, which is the program's working directory and `fs.root`.
//! `pfs run` is started as a child process: it must create its mount namespace while
//! single-threaded, and this process runs the key server's threads.

use crate::splitmix::SplitMix64;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use pfs_core::crypto::RandomSource;

/// Long help of `pfs demo`.
pub const DEMO_ABOUT: &str = "\
The paper's whole workflow in one command, on built-in defaults:

  1. the data owner generates a wrap key;
  2. trains a tiny softmax classifier in memory and encrypts it and an input file straight
     into Gramine protected files (no plaintext ever touches the disk);
  3. renders the program's manifest (trusted script and CA certificate) and prints its
     simulated measurement;
  4. starts a key server on loopback whose policy releases the key only to that measurement;
  5. runs the unmodified Python program examples/demo/infer.py under `pfs run`, which
     attests, receives the key, reads the encrypted model and input through encrypted mounts
     and writes result.txt into an encrypted mount;
  6. decrypts and prints the result and shows that every file on disk is ciphertext.

DIR keeps the key, the TLS files and the policy (DIR/owner), and the script, manifest and
encrypted model, input and result (DIR/cloud). A DIR left by an earlier `pfs demo` is
replaced; any other non-empty DIR is refused.

SIMULATED TEE: there is no SGX here and nothing is protected against the host; the demo
shows the workflow and the file format, not hardware protection. Needs a build with the
`insecure-sim` feature: cargo run --release --features insecure-sim -- demo";

/// The program the demo runs (unmodified Python, standard library only).
const INFER_PY: &str = include_str!("../examples/demo/infer.py");
/// Its manifest template.
const INFER_TEMPLATE: &str = include_str!("../examples/demo/infer.manifest.template");
/// Marks a directory as made by `pfs demo` (so that a rerun may replace it).
const MARKER: &str = ".pfs-demo";
/// The first bytes of every protected file (Gramine's `PF_FILE_ID`, little endian).
const PF_MAGIC: &[u8; 8] = b"GRAFS_PF";

/// `pfs demo [--workdir DIR]`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to put the owner's and the cloud's files.
    #[arg(long, value_name = "DIR", default_value = "pfs-demo")]
    pub workdir: PathBuf,
}

/// Prints one numbered step: what happens and what it proves.
fn step(n: u32, what: &str, proves: &str) {
    println!("\n[{n}/6] {what}\n      proves: {proves}");
    let _ = std::io::stdout().flush();
}

/// Prints a detail line of the current step.
fn detail(text: impl std::fmt::Display) {
    println!("      {text}");
    let _ = std::io::stdout().flush();
}

/// Runs the demo.
pub fn run_demo(args: &DemoArgs) -> Result<()> {
    if !cfg!(feature = "insecure-sim") {
        bail!(
            "this build of pfs has no simulated attester, which the demo's key provisioning needs: \
             run `cargo run --release --features insecure-sim -- demo`"
        );
    }
    let started = Instant::now();
    let dir = prepare_workdir(&args.workdir)?;
    let owner = dir.join("owner");
    let cloud = dir.join("cloud");
    println!(
        "pfs demo in {}: privacy-preserving inference in a SIMULATED TEE (no protection against the host)",
        dir.display()
    );

    // 1. The wrap key.
    step(1, "data owner: generate a 16-byte wrap key", "keys are made and kept by the owner, mode 0600");
    let key_path = owner.join("wrap-key");
    let key = new_key(&key_path)?;
    detail(format!("{} (16 bytes, mode 0600)", key_path.display()));

    // 2. Model and input, encrypted from memory.
    step(
        2,
        "data owner: train a tiny softmax classifier in memory, encrypt it and an input into protected files",
        "no plaintext model or input is ever written to disk; each file is bound to its path",
    );
    let (model_json, accuracy) = train_model();
    let input_csv = make_input();
    let enc_in = cloud.join("enc/input");
    let enc_out = cloud.join("enc/output");
    std::fs::create_dir_all(&enc_in)
        .and_then(|()| std::fs::create_dir_all(&enc_out))
        .with_context(|| format!("creating {} and {}", enc_in.display(), enc_out.display()))?;
    for (name, text) in [("model.json", &model_json), ("input.csv", &input_csv)] {
        let embedded = format!("enc/input/{name}");
        encrypt_to(&cloud.join(&embedded), &key, &embedded, text.as_bytes())?;
        detail(format!("cloud/{embedded}: {} plaintext bytes, embedded path {embedded:?}", text.len()));
    }
    detail(format!("model: 3 classes, 2 features, training accuracy {:.1}%", accuracy * 100.0));

    // 3. TLS files and the manifest.
    step(
        3,
        "render the program's manifest: trusted script and CA certificate, encrypted /data and /output",
        "the simulated measurement covers the script, the CA and every mount",
    );
    let tls = attest::tls::init_tls(&owner.join("tls")).context("creating the key server's TLS files")?;
    std::fs::copy(&tls.ca_cert, cloud.join("ca.crt"))
        .with_context(|| format!("copying {} to the cloud directory", tls.ca_cert.display()))?;
    detail(format!("dev CA and server certificate for localhost in {}", owner.join("tls").display()));
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding a loopback port for the key server")?;
    let port = listener.local_addr()?.port();
    std::fs::write(cloud.join("infer.py"), INFER_PY).context("writing infer.py")?;
    std::fs::write(cloud.join("infer.manifest.template"), INFER_TEMPLATE).context("writing the template")?;
    let measurement = render_manifest(&cloud, port)?;
    detail(format!("{} with trusted files infer.py and ca.crt", cloud.join("infer.manifest").display()));
    detail(format!("simulated measurement (NOT an SGX MRENCLAVE): {measurement}"));

    // 4. The key server.
    step(
        4,
        "data owner: start the key server on loopback with a policy for exactly that measurement",
        "the key is released only after attestation to the expected program",
    );
    let policy_path = owner.join("policy.toml");
    std::fs::write(&policy_path, policy_toml(&measurement.hex()))
        .with_context(|| format!("writing {}", policy_path.display()))?;
    let server = start_key_server(&policy_path, &tls, listener)?;
    detail(format!(
        "listening on 127.0.0.1:{port} (dialled as localhost:{port}); policy {}",
        policy_path.display()
    ));

    // 5. The program.
    step(
        5,
        "cloud: run the unmodified infer.py under `pfs run` (child process)",
        "the program reads plaintext through encrypted mounts after the runtime attests and gets the key",
    );
    let exe = std::env::current_exe().context("locating the pfs binary")?;
    let run_started = Instant::now();
    let status = Command::new(&exe)
        .args(["run", "infer.manifest"])
        .current_dir(&cloud)
        .status()
        .with_context(|| format!("starting {} run", exe.display()))?;
    let run_time = run_started.elapsed();
    server.shutdown_timeout(Duration::from_secs(2));
    if !status.success() {
        bail!("`pfs run infer.manifest` in {} failed ({status}); its messages are above", cloud.display());
    }
    detail(format!("pfs run finished in {:.2} s; key server stopped", run_time.as_secs_f64()));

    // 6. The result, and the ciphertext on disk.
    step(
        6,
        "data owner: decrypt the result; show that every file the program touched is ciphertext on disk",
        "outputs are protected files bound to their path; no plaintext anywhere under DIR",
    );
    let result = decrypt(&cloud.join("enc/output/result.txt"), &key, "enc/output/result.txt")?;
    let result = String::from_utf8(result).context("result.txt is not UTF-8")?;
    for line in result.lines() {
        detail(format!("| {line}"));
    }
    for rel in ["enc/input/model.json", "enc/input/input.csv", "enc/output/result.txt"] {
        let bytes = std::fs::read(cloud.join(rel)).with_context(|| format!("reading cloud/{rel}"))?;
        let head: String = bytes.iter().take(16).fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x} ");
            s
        });
        let magic =
            if bytes.starts_with(PF_MAGIC) { "GRAFS_PF protected file" } else { "NOT a protected file" };
        detail(format!("cloud/{rel}: {} bytes on disk, {magic}: {head}...", bytes.len()));
        if !bytes.starts_with(PF_MAGIC) {
            bail!("cloud/{rel} is not a protected file");
        }
    }
    let secrets = [model_json.as_str(), input_csv.as_str(), result.as_str()];
    let scanned = scan_for_plaintext(&dir, &secrets)?;
    detail(format!(
        "scanned {scanned} files under {}: no plaintext of the model, the input or the result",
        dir.display()
    ));
    println!(
        "\ndone in {:.2} s. Kept: {} (key, TLS, policy), {} (script, manifest, encrypted files).",
        started.elapsed().as_secs_f64(),
        owner.display(),
        cloud.display()
    );
    println!(
        "Reminder: a SIMULATED TEE; the host can read the program's memory and plaintext view (docs/DEMO.md)."
    );
    Ok(())
}

/// Creates `dir` (or replaces an earlier demo's) with `owner/` and `cloud/`.
fn prepare_workdir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        let empty =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.next().is_none();
        if dir.join(MARKER).exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("removing the earlier demo in {}", dir.display()))?;
        } else if !empty {
            bail!(
                "{} exists and was not made by `pfs demo`: choose another --workdir or remove it",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir.join("owner"))
        .and_then(|()| std::fs::create_dir_all(dir.join("cloud")))
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "made by `pfs demo`; a rerun replaces this directory\n")
        .with_context(|| format!("writing {}", dir.join(MARKER).display()))?;
    std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))
}

/// Draws a key from the OS and writes it to `path` (new file, mode 0600).
fn new_key(path: &Path) -> Result<pfs_core::Key> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 16]);
    pfs_core::crypto::OsRandom::default().fill(&mut bytes[..]).context("reading the OS random generator")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&bytes[..])
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(pfs_core::Key::from_bytes(*bytes))
}

/// Encrypts `data` into a new protected file at `host` bound to `embedded`.
pub fn encrypt_to(host: &Path, key: &pfs_core::Key, embedded: &str, data: &[u8]) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(host)
        .with_context(|| format!("creating {}", host.display()))?;
    let store = pfs_core::FileStore::new(file);
    let mut pf =
        pfs_core::ProtectedFile::create(store, key, embedded.as_bytes(), &pfs_core::OpenOptions::new())
            .with_context(|| format!("creating the protected file {}", host.display()))?;
    pf.write_at(0, data).with_context(|| format!("encrypting into {}", host.display()))?;
    pf.close().with_context(|| format!("closing {}", host.display()))?;
    Ok(())
}

/// Decrypts the protected file at `host`, which must be bound to `embedded`.
pub fn decrypt(host: &Path, key: &pfs_core::Key, embedded: &str) -> Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .open(host)
        .with_context(|| format!("opening {}", host.display()))?;
    let options = pfs_core::OpenOptions::new().read_only(true);
    let pf = pfs_core::ProtectedFile::open(
        pfs_core::FileStore::new(file),
        key,
        Some(embedded.as_bytes()),
        &options,
    )
    .with_context(|| format!("opening the protected file {} (expected path {embedded:?})", host.display()))?;
    let mut out = vec![0u8; usize::try_from(pf.len()).context("file too large")?];
    let mut done = 0;
    while done < out.len() {
        let n = pf
            .read_at(done as u64, &mut out[done..])
            .with_context(|| format!("decrypting {}", host.display()))?;
        if n == 0 {
            break;
        }
        done += n;
    }
    out.truncate(done);
    Ok(out)
}

/// Renders the demo template in `cloud` (as `pfs manifest` would there), writes
/// `infer.manifest` and returns its simulated measurement.
fn render_manifest(cloud: &Path, port: u16) -> Result<libos::SimMeasurement> {
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("python3 is needed in /usr/bin or /usr/local/bin (e.g. apt-get install python3)")?;
    let exe = std::env::current_exe().context("locating the pfs binary")?;
    let define = |name: &str, value: String| (name.to_owned(), libos::template::DefineValue::Str(value));
    let options = libos::build::BuildOptions {
        render: libos::template::RenderOptions {
            defines: vec![
                define("entrypoint", python.to_owned()),
                define("servers", format!("localhost:{port}")),
            ],
            libos: exe,
            ..Default::default()
        },
        pin_launcher: None,
    };
    let built = libos::build::build("infer.manifest.template", INFER_TEMPLATE, cloud, &options)
        .context("rendering the demo manifest")?;
    for w in &built.warnings {
        eprintln!("pfs demo: manifest warning: {w}");
    }
    let path = cloud.join("infer.manifest");
    std::fs::write(&path, built.manifest.text()).with_context(|| format!("writing {}", path.display()))?;
    Ok(built.measurement)
}

/// The key-release policy: the wrap key, for the simulated measurement only.
fn policy_toml(measurement_hex: &str) -> String {
    format!(
        "# Written by `pfs demo`: release the wrap key only to the demo program's simulated measurement.\n\
         [attestation]\n\
         # There is no SGX here: accept SIMULATED-INSECURE evidence for entries marked tee = \"simulated\".\n\
         insecure_allow_simulated = true\n\n\
         [keys.default]\n\
         file = \"wrap-key\"\n\n\
         [[enclave]]\n\
         name = \"pfs-demo\"\n\
         tee = \"simulated\"\n\
         mrenclave = \"{measurement_hex}\"\n\
         first_secret = \"default\"\n"
    )
}

/// Starts the key server in this process on `listener`; returns its runtime (drop or
/// `shutdown_timeout` stops it).
fn start_key_server(
    policy_path: &Path,
    tls: &attest::tls::InitTlsFiles,
    listener: std::net::TcpListener,
) -> Result<tokio::runtime::Runtime> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("attest=info")),
        )
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
    let policy = attest::Policy::load(policy_path)?;
    let verifier = attest::server::verifier_for_policy(&policy)?;
    let server = attest::server::KeyServer::new(
        attest::tls::load_certs(&tls.server_cert)?,
        attest::tls::load_private_key(&tls.server_key)?,
        verifier,
        Arc::new(policy),
        attest::server::Limits::default(),
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the key server's runtime")?;
    listener.set_nonblocking(true).context("configuring the key server's socket")?;
    let listener = {
        let _guard = rt.enter();
        tokio::net::TcpListener::from_std(listener).context("registering the key server's socket")?
    };
    rt.spawn(async move {
        if let Err(e) = server.serve(listener).await {
            eprintln!("pfs demo: key server stopped: {e}");
        }
    });
    Ok(rt)
}

/// Class names and cluster centres of the synthetic 2-D, 3-class data set.
const CLASSES: [(&str, [f64; 2]); 3] = [("red", [-2.0, -1.0]), ("green", [2.0, -1.0]), ("blue", [0.0, 2.0])];

/// Trains a softmax classifier by full-batch gradient descent on a deterministic synthetic
/// data set; returns the model as JSON and its training accuracy.
fn train_model() -> (String, f64) {
    let mut rng = SplitMix64(0x5EED_F00D);
    let mut data = Vec::new();
    for (k, (_, c)) in CLASSES.iter().enumerate() {
        for _ in 0..60 {
            data.push(([c[0] + 0.8 * rng.normal(), c[1] + 0.8 * rng.normal()], k));
        }
    }
    let mut w = [[0.0f64; 2]; 3];
    let mut b = [0.0f64; 3];
    let n = data.len() as f64;
    for _ in 0..400 {
        let mut gw = [[0.0f64; 2]; 3];
        let mut gb = [0.0f64; 3];
        for (x, y) in &data {
            let p = softmax(&logits(&w, &b, x));
            for k in 0..3 {
                let d = p[k] - if k == *y { 1.0 } else { 0.0 };
                gw[k][0] += d * x[0];
                gw[k][1] += d * x[1];
                gb[k] += d;
            }
        }
        for k in 0..3 {
            w[k][0] -= 0.5 * gw[k][0] / n;
            w[k][1] -= 0.5 * gw[k][1] / n;
            b[k] -= 0.5 * gb[k] / n;
        }
    }
    let correct = data.iter().filter(|(x, y)| argmax(&logits(&w, &b, x)) == *y).count();
    let round = |v: f64| (v * 1e6).round() / 1e6;
    let model = serde_json::json!({
        "format": "pfs-demo softmax classifier v1",
        "classes": CLASSES.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        "features": ["x1", "x2"],
        "weights": w.iter().map(|r| r.iter().map(|v| round(*v)).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "bias": b.iter().map(|v| round(*v)).collect::<Vec<_>>(),
        "training": { "samples": data.len(), "epochs": 400, "learning_rate": 0.5, "seed": "0x5EEDF00D" },
    });
    (serde_json::to_string_pretty(&model).expect("JSON") + "\n", correct as f64 / n)
}

fn logits(w: &[[f64; 2]; 3], b: &[f64; 3], x: &[f64; 2]) -> [f64; 3] {
    std::array::from_fn(|k| w[k][0] * x[0] + w[k][1] * x[1] + b[k])
}

fn softmax(z: &[f64; 3]) -> [f64; 3] {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: [f64; 3] = std::array::from_fn(|k| (z[k] - m).exp());
    let s: f64 = e.iter().sum();
    std::array::from_fn(|k| e[k] / s)
}

fn argmax(z: &[f64; 3]) -> usize {
    (0..3).fold(0, |best, k| if z[k] > z[best] { k } else { best })
}

/// The input file: a few points near and between the clusters.
fn make_input() -> String {
    let points = [[-2.1, -0.7], [1.8, -1.3], [0.2, 2.4], [-0.5, 0.4], [2.5, 1.0], [-1.0, 1.5]];
    let mut csv = String::from("x1,x2\n");
    for p in points {
        let _ = writeln!(csv, "{},{}", p[0], p[1]);
    }
    csv
}

/// Fails if any file below `dir` contains one of `secrets` or one of their lines of at
/// least 12 bytes; returns the number of files scanned.
pub fn scan_for_plaintext(dir: &Path, secrets: &[&str]) -> Result<usize> {
    let mut needles: Vec<&[u8]> = Vec::new();
    for s in secrets {
        needles.push(s.as_bytes());
        needles.extend(s.lines().map(str::trim).filter(|l| l.len() >= 12).map(str::as_bytes));
    }
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("scanning {}", d.display()))? {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() {
                count += 1;
                let bytes = std::fs::read(entry.path())
                    .with_context(|| format!("reading {}", entry.path().display()))?;
                if let Some(n) = needles.iter().find(|n| bytes.windows(n.len()).any(|w| w == **n)) {
                    bail!(
                        "plaintext found on disk in {}: {:?}",
                        entry.path().display(),
                        String::from_utf8_lossy(&n[..n.len().min(60)])
                    );
                }
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_deterministic_and_learns() {
        let (a, accuracy) = train_model();
        let (b, _) = train_model();
        assert_eq!(a, b, "the same model on every run");
        assert!(accuracy > 0.95, "{accuracy}");
        let model: serde_json::Value = serde_json::from_str(&a).unwrap();
        assert_eq!(model["classes"].as_array().unwrap().len(), 3);
        assert!(a.len() < 4096, "a few KB at most: {}", a.len());
        assert!(make_input().starts_with("x1,x2\n"));
    }

    #[test]
    fn the_plaintext_scan_finds_whole_files_and_lines() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/f"), b"noise noise\ninput 3 (-0.50, 0.40): blue\n").unwrap();
        let secret = "header\ninput 3 (-0.50, 0.40): blue\n";
        let err = scan_for_plaintext(d.path(), &[secret]).unwrap_err();
        assert!(err.to_string().contains("plaintext found on disk"), "{err}");
        assert_eq!(scan_for_plaintext(d.path(), &["something else entirely\n"]).unwrap(), 1);
    }
}
