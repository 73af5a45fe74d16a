//! A real HTTPS server on loopback speaking Intel's PCS API v4, serving the
//! collateral of one DCAP vector set (`tests/vectors/dcap/SET`) byte for byte.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The real collateral.
    Serve,
    /// 503 for everything (the endpoint is down).
    Down,
    /// The TCB info with one signed byte changed.
    TamperTcbInfo,
    /// The PCK CRL with one byte of its signature changed.
    TamperPckCrl,
}

pub struct PcsServer {
    pub url: String,
    pub ca: std::path::PathBuf,
    pub mode: Arc<Mutex<Mode>>,
    pub hits: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PcsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PcsServer {
    pub fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// What the server serves (bodies byte for byte, chains as PEM).
pub struct Files {
    pub fmspc: String,
    pub ca: String,
    pub pck_crl: Vec<u8>,
    pub pck_crl_chain: String,
    pub tcb_info: Vec<u8>,
    pub tcb_chain: String,
    pub qe_identity: Vec<u8>,
    pub qe_chain: String,
    pub root_crl: Vec<u8>,
}

fn respond(files: &Files, mode: Mode, path: &str, query: &str) -> Response<Full<Bytes>> {
    let ok = |body: Vec<u8>, header: Option<(&str, &str)>| {
        let mut r = Response::builder().status(StatusCode::OK);
        if let Some((name, chain)) = header {
            r = r.header(name, utf8_percent_encode(chain, NON_ALPHANUMERIC).to_string());
        }
        r.body(Full::new(Bytes::from(body))).unwrap()
    };
    let status = |s: StatusCode| Response::builder().status(s).body(Full::new(Bytes::new())).unwrap();
    if mode == Mode::Down {
        return status(StatusCode::SERVICE_UNAVAILABLE);
    }
    match path {
        "/sgx/certification/v4/pckcrl" => {
            if query != format!("ca={}&encoding=der", files.ca) {
                return status(StatusCode::NOT_FOUND);
            }
            let mut crl = files.pck_crl.clone();
            if mode == Mode::TamperPckCrl {
                let n = crl.len();
                crl[n - 5] ^= 0x01;
            }
            ok(crl, Some(("SGX-PCK-CRL-Issuer-Chain", &files.pck_crl_chain)))
        }
        "/sgx/certification/v4/tcb" => {
            if !query.eq_ignore_ascii_case(&format!("fmspc={}", files.fmspc)) {
                return status(StatusCode::NOT_FOUND);
            }
            let mut body = files.tcb_info.clone();
            if mode == Mode::TamperTcbInfo {
                // "tcbStatus":"OutOfDate" -> "UpToDate"-like change of one signed byte.
                let at = body.windows(9).position(|w| w == b"tcbStatus").expect("tcbStatus in TCB info");
                body[at + 12] ^= 0x01;
            }
            ok(body, Some(("TCB-Info-Issuer-Chain", &files.tcb_chain)))
        }
        "/sgx/certification/v4/qe/identity" => {
            ok(files.qe_identity.clone(), Some(("SGX-Enclave-Identity-Issuer-Chain", &files.qe_chain)))
        }
        "/sgx/certification/v4/rootcacrl" => ok(files.root_crl.clone(), None),
        _ => status(StatusCode::NOT_FOUND),
    }
}

/// Serves vector set `set` for `fmspc` and `ca` ("processor" or "platform") on 127.0.0.1.
pub async fn start(set: &str, fmspc: &str, ca: &str) -> PcsServer {
    let v = super::vectors().join(set);
    let r = |f: &str| std::fs::read(v.join(f)).unwrap();
    let s = |f: &str| String::from_utf8(r(f)).unwrap();
    start_with(Files {
        fmspc: fmspc.to_string(),
        ca: ca.to_string(),
        pck_crl: r("pck_crl.der"),
        pck_crl_chain: s("pck_crl_issuer_chain.pem"),
        tcb_info: r("tcb_info.json"),
        tcb_chain: s("tcb_info_issuer_chain.pem"),
        qe_identity: r("qe_identity.json"),
        qe_chain: s("qe_identity_issuer_chain.pem"),
        root_crl: r("root_ca_crl.der"),
    })
    .await
}

/// Serves `files` on 127.0.0.1.
pub async fn start_with(files: Files) -> PcsServer {
    let files = Arc::new(files);
    let dir = tempfile::tempdir().unwrap();
    let tls = attest::tls::init_tls(&dir.path().join("tls")).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            attest::tls::load_certs(&tls.server_cert).unwrap(),
            attest::tls::load_private_key(&tls.server_key).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mode = Arc::new(Mutex::new(Mode::Serve));
    let hits = Arc::new(AtomicU64::new(0));
    let (m, h) = (mode.clone(), hits.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (acceptor, files, m, h) = (acceptor.clone(), files.clone(), m.clone(), h.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (files, m, h) = (files.clone(), m.clone(), h.clone());
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        let mode = *m.lock().unwrap();
                        let uri = req.uri();
                        Ok::<_, Infallible>(respond(&files, mode, uri.path(), uri.query().unwrap_or("")))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    PcsServer { url: format!("https://localhost:{port}"), ca: tls.ca_cert, mode, hits, _dir: dir, task }
}
