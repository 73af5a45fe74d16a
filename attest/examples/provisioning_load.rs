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
//! Reports provisionings/s, latency percentiles, the process RSS at
//! checkpoints (server and clients share the process) and the **server's CPU
//! time per provisioning**: the server runs on its own tokio runtime whose
//! threads are named `keyserver`, and their user+system time is read from
//! `/proc/self/task/*/stat` before and after the run.
//!
//! `--sweep [TOTAL]` runs 1, 10, 50, 200 and 1000 clients in turn (TOTAL provisionings
//! each, default 2000, at least 5 per client) and prints one table row per count.

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

/// CPU time (user + system) of this process's threads named `keyserver*`, in seconds.
fn server_cpu_secs() -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    for t in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else { continue };
        // pid (comm) state ... field 14 utime, 15 stime (1-based), counted after ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        if !head.contains("(keyserver") {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        total += n(11) + n(12);
    }
    total as f64 / tick
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
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

struct Run {
    clients: usize,
    done: usize,
    elapsed: Duration,
    lat: Vec<Duration>,
    server_cpu: f64,
    rss_marks: Vec<(usize, u64)>,
    rss_start: u64,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    servers: &[String],
    ca: &[rustls_pki_types::CertificateDer<'static>],
    att: &SimAttester,
    curve: Curve,
    clients: usize,
    total: usize,
    rate: Option<f64>,
    fresh: bool,
) -> Run {
    // Certificates first (client-side key generation is not part of the measurement).
    let certs: Vec<_> = (0..clients).map(|_| build_certificate(att, curve).unwrap()).collect();
    let rss_start = rss_kib();
    let next = Arc::new(AtomicUsize::new(0));
    let rss_marks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let cpu0 = server_cpu_secs();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for cert in certs {
        let (next, servers, ca, att, marks) =
            (next.clone(), servers.to_vec(), ca.to_vec(), att.clone(), rss_marks.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut client = ProvisioningClient::new(servers.clone(), ca.clone(), Some(&cert))
                .unwrap()
                .timeout(Duration::from_secs(60));
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let s = match rate {
                    Some(r) => {
                        // Slot i starts at i / r seconds.
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
    let server_cpu = server_cpu_secs() - cpu0;
    lat.sort();
    let mut marks = rss_marks.lock().unwrap().clone();
    marks.sort();
    Run { clients, done: lat.len(), elapsed, lat, server_cpu, rss_marks: marks, rss_start }
}

impl Run {
    fn pct(&self, p: f64) -> f64 {
        let l = &self.lat;
        l[((l.len() as f64 * p).ceil() as usize).saturating_sub(1).min(l.len() - 1)].as_secs_f64() * 1e3
    }
    fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }
    fn cpu_ms(&self) -> f64 {
        self.server_cpu * 1e3 / self.done as f64
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fresh = args.iter().any(|a| a == "--fresh-cert");
    let sweep = args.iter().any(|a| a == "--sweep");
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
    // `--sweep [TOTAL]`, or `[CLIENTS] [TOTAL]`.
    let (clients, total) = if sweep {
        (0, nums.first().copied().unwrap_or(2_000))
    } else {
        (nums.first().copied().unwrap_or(50), nums.get(1).copied().unwrap_or(10_000))
    };
    attest::server::raise_fd_limit();

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

    // The server on its own runtime (threads named "keyserver", for the CPU accounting).
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("keyserver")
        .enable_all()
        .build()
        .unwrap();
    let server = KeyServer::new(
        load_certs(&files.server_cert).unwrap(),
        load_private_key(&files.server_key).unwrap(),
        verifier_for_policy(&policy).unwrap(),
        Arc::new(policy),
        Limits::default(),
    )
    .unwrap();
    let addr = server_rt.block_on(async {
        let (listener, _) = attest::server::bind("127.0.0.1:0".parse().unwrap(), 4096).unwrap();
        let (addr, _h) = spawn(server, listener).unwrap();
        addr
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let servers = vec![format!("localhost:{}", addr.port())];
        let ca = load_certs(&files.ca_cert).unwrap();
        let att = SimAttester::dangerous_new(identity());
        // Warm-up.
        let cert = build_certificate(&att, curve).unwrap();
        let c = ProvisioningClient::new(servers.clone(), ca.clone(), Some(&cert)).unwrap();
        for _ in 0..50 {
            c.provision(&["inputs"]).await.expect("warm-up provisioning");
        }
        let counts: Vec<usize> = if sweep { vec![1, 10, 50, 200, 1000] } else { vec![clients] };
        println!("curve={curve:?} fresh_cert={fresh} offered_rate={rate:?}");
        println!("| clients | provisionings | provisionings/s | p50 ms | p99 ms | max ms | server CPU ms/provisioning | load average |");
        println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
        for n in counts {
            let total = if sweep { total.max(5 * n) } else { total };
            let la = loadavg();
            let r = run(&servers, &ca, &att, curve, n, total, rate, fresh).await;
            println!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.3} | {la} → {} |",
                r.clients,
                r.done,
                r.rate(),
                r.pct(0.50),
                r.pct(0.99),
                r.lat.last().unwrap().as_secs_f64() * 1e3,
                r.cpu_ms(),
                loadavg()
            );
            if !sweep {
                println!(
                    "rss_kib before={} {} end={}",
                    r.rss_start,
                    r.rss_marks.iter().map(|(n, r)| format!("after_{n}={r}")).collect::<Vec<_>>().join(" "),
                    rss_kib()
                );
            }
        }
    });
}
