//! Load benchmark (not a test): N concurrent clients doing full attested
//! provisioning (TLS 1.3 handshake with a simulated RA-TLS client certificate,
//! evidence verification, policy decision, first secret + one named key) over
//! loopback against an in-process key server.
//!
//! ```text
//! cargo run --release -p attest --features insecure-sim --example provisioning_load -- [CLIENTS] [TOTAL] [--fresh-cert]
//! ```
//! Defaults: 50 clients, 10000 provisionings, P-384 client keys (`--p256` for P-256). `--rate R` switches from
//! closed loop (each client starts its next provisioning as soon as the last
//! one ends: maximum throughput) to open loop: the clients together start R
//! provisionings per second on a fixed schedule, and latency is measured from
//! the *scheduled* start (no coordinated omission). With `--fresh-cert` every
//! provisioning also generates a new P-384 key and RA-TLS certificate on the
//! client side (as a freshly started Gramine enclave does); without it each
//! client reuses one certificate (one enclave provisioning repeatedly).
//! Reports provisionings/s, latency percentiles and the process RSS at
//! checkpoints (server and clients share the process).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use attest::client::ProvisioningClient;
use attest::ratls::{Curve, build_certificate};
use attest::server::{KeyServer, Limits, spawn, verifier_for_policy};
use attest::sim::SimAttester;
use attest::tls::{init_tls, load_certs, load_private_key};
use attest::{EnclaveIdentity, Policy};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn identity() -> EnclaveIdentity {
    EnclaveIdentity {
        mrenclave: [0x11; 32],
        mrsigner: [0x22; 32],
        isv_prod_id: 1,
        isv_svn: 1,
        attributes: [0x05, 0, 0, 0, 0, 0, 0, 0, 0xE7, 0, 0, 0, 0, 0, 0, 0],
        debug: false,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fresh = args.iter().any(|a| a == "--fresh-cert");
    // Gramine uses P-384 client keys; --p256 shows what the P-384 arithmetic costs.
    let curve = if args.iter().any(|a| a == "--p256") { Curve::P256 } else { Curve::P384 };
    let rate: Option<f64> =
        args.iter().position(|a| a == "--rate").and_then(|i| args.get(i + 1)).and_then(|r| r.parse().ok());
    let nums: Vec<usize> = args
        .iter()
        .enumerate()
        .filter(|(i, _)| !(*i > 0 && args[i - 1] == "--rate"))
        .filter_map(|(_, a)| a.parse().ok())
        .collect();
    let clients = nums.first().copied().unwrap_or(50);
    let total = nums.get(1).copied().unwrap_or(10_000);

    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("model.key"), [0xA1; 16]).unwrap();
    std::fs::write(d.join("inputs.key"), [0xB2; 16]).unwrap();
    std::fs::write(
        d.join("policy.toml"),
        format!(
            "[attestation]\ninsecure_allow_simulated = true\n[keys.model]\nfile = \"model.key\"\n[keys.inputs]\nfile = \"inputs.key\"\n\
             [[enclave]]\nname = \"bench\"\ntee = \"simulated\"\nmrenclave = \"{}\"\nfirst_secret = \"model\"\nkeys = [\"inputs\"]\n",
            hex::encode([0x11u8; 32])
        ),
    )
    .unwrap();
    let files = init_tls(&d.join("tls")).unwrap();
    let policy = Policy::load(&d.join("policy.toml")).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let server = KeyServer::new(
            load_certs(&files.server_cert).unwrap(),
            load_private_key(&files.server_key).unwrap(),
            verifier_for_policy(&policy).unwrap(),
            Arc::new(policy),
            Limits { max_connections: 1024, ..Limits::default() },
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, _h) = spawn(server, listener).unwrap();
        let servers = vec![format!("localhost:{}", addr.port())];
        let ca = load_certs(&files.ca_cert).unwrap();
        let att = SimAttester::dangerous_new(identity());

        // Warm-up.
        let cert = build_certificate(&att, curve).unwrap();
        let c = ProvisioningClient::new(servers.clone(), ca.clone(), Some(&cert)).unwrap();
        for _ in 0..50 {
            c.provision(&["inputs"]).await.expect("warm-up provisioning");
        }
        let rss_start = rss_kib();

        let next = Arc::new(AtomicUsize::new(0));
        let rss_marks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for ci in 0..clients {
            let next = next.clone();
            let servers = servers.clone();
            let ca = ca.clone();
            let att = att.clone();
            let marks = rss_marks.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let cert = build_certificate(&att, curve).unwrap();
                let mut client = ProvisioningClient::new(servers.clone(), ca.clone(), Some(&cert)).unwrap();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let s = match rate {
                        Some(r) => {
                            // Client ci owns slots ci, ci + clients, ...; slot i starts at i / r seconds.
                            let _ = ci;
                            let at = t0 + Duration::from_secs_f64(i as f64 / r);
                            tokio::time::sleep_until(at.into()).await;
                            at
                        }
                        None => Instant::now(),
                    };
                    if fresh {
                        let cert = build_certificate(&att, curve).unwrap();
                        client = ProvisioningClient::new(servers.clone(), ca.clone(), Some(&cert)).unwrap();
                    }
                    let p = client.provision(&["inputs"]).await.expect("provisioning");
                    assert_eq!(p.first_secret.as_slice(), &[0xA1; 16]);
                    assert_eq!(p.keys["inputs"].as_slice(), &[0xB2; 16]);
                    lat.push(s.elapsed());
                    if (i + 1).is_multiple_of(2500) {
                        marks.lock().unwrap().push((i + 1, rss_kib()));
                    }
                }
                lat
            }));
        }
        let mut lat: Vec<Duration> = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        let elapsed = t0.elapsed();
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).saturating_sub(1).min(lat.len() - 1)];
        println!(
            "clients={clients} total={} curve={curve:?} fresh_cert={fresh} offered_rate={rate:?} elapsed={:.2}s rate={:.1}/s",
            lat.len(),
            elapsed.as_secs_f64(),
            lat.len() as f64 / elapsed.as_secs_f64()
        );
        println!(
            "latency p50={:.1}ms p90={:.1}ms p99={:.1}ms max={:.1}ms",
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.90).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            lat.last().unwrap().as_secs_f64() * 1e3
        );
        let mut marks = rss_marks.lock().unwrap().clone();
        marks.sort();
        println!(
            "rss_kib after_warmup={rss_start} {} end={}",
            marks.iter().map(|(n, r)| format!("after_{n}={r}")).collect::<Vec<_>>().join(" "),
            rss_kib()
        );
    });
}
