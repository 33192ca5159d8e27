//! A fault-injecting proxy between Augur and the real test API server.
//!
//! Why a proxy: a real kube-apiserver cannot be told to answer 503 to the next Lease renewal,
//! to carry out a write and lose its answer, to cut a body short or to stall, on demand. The
//! proxy listens on loopback and terminates TLS (with the API server's own self-signed serving
//! certificate), so that it can answer HTTP statuses of its own; every request it does not
//! fault is forwarded unchanged, and every outcome a test checks is read from the real API
//! server (replicas, Events, the Lease), never from the proxy.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// What the proxy does to a request that a rule matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answers this status itself (a Kubernetes Status body, with `Retry-After` when given);
    /// the request never reaches the API server.
    Status { code: u16, retry_after: Option<u32> },
    /// Closes the connection before forwarding: the request never reaches the API server.
    ResetBefore,
    /// Forwards, then closes the connection without the answer: the request was carried out.
    ResetAfter,
    /// Forwards, then sends half of the answer's body and closes the connection.
    Truncate,
    /// Never answers, never forwards.
    Stall,
    /// Forwards after this delay.
    Delay(Duration),
}

/// Which requests a fault applies to, and how many times (`None`: until cleared).
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Option<&'static str>,
    /// A substring of the path.
    pub path: String,
    pub fault: Fault,
    pub times: Option<usize>,
}

impl Rule {
    pub fn new(method: &'static str, path: impl Into<String>, fault: Fault) -> Self {
        Self { method: Some(method), path: path.into(), fault, times: None }
    }

    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When it arrived.
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub fault: Option<Fault>,
    /// When the proxy sent it on to the API server.
    pub forwarded_at: Option<Instant>,
    /// When the API server answered the proxy, and its status (a request sent on may still
    /// fail to reach it on a loaded machine, and a write it answers may have met a conflict).
    pub answered: Option<(Instant, u16)>,
}

impl Seen {
    /// The API server carried it out (answered 2xx), whatever the client was told.
    pub fn carried_out(&self) -> bool {
        self.answered.is_some_and(|(_, status)| (200..300).contains(&status))
    }
}

#[derive(Default)]
struct State {
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy {
    pub url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// A proxy in front of the test control plane.
    pub async fn start() -> Self {
        let plane = super::k8s::control_plane();
        let certs = plane.dir.join("certs");
        Self::start_for(&plane.server, &certs.join("apiserver.crt"), &certs.join("apiserver.key")).await
    }

    async fn start_for(upstream: &str, cert: &Path, key: &Path) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        augur::tls::install_provider();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let tls = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(chain, key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let state = Arc::new(State::default());
        let upstream = Upstream { base: upstream.trim_end_matches('/').to_string(), http: reqwest::Client::builder().danger_accept_invalid_certs(true).no_proxy().build().unwrap() };
        let (served, upstream) = (state.clone(), Arc::new(upstream));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, state, upstream) = (acceptor.clone(), served.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |request| handle(state.clone(), upstream.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { url, state, task }
    }

    pub fn add(&self, rule: Rule) {
        self.state.rules.lock().unwrap().push(rule);
    }

    pub fn clear(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// A kubeconfig of the admin that talks to the API server through this proxy.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("proxy-{}.kubeconfig", self.url.rsplit(':').next().unwrap_or("0")));
        super::k8s::write_kubeconfig(&path, &self.url, "admin-token");
        path
    }
}

struct Upstream {
    base: String,
    http: reqwest::Client,
}

/// Why the proxy closed a connection on purpose (hyper closes it on a service error).
#[derive(Debug)]
struct Injected(&'static str);

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Injected {}

async fn handle(state: Arc<State>, upstream: Arc<Upstream>, request: Request<Incoming>) -> Result<Response<Answer>, Injected> {
    let method = request.method().to_string();
    let path = request.uri().path_and_query().map_or_else(|| "/".to_string(), ToString::to_string);
    let fault = {
        let mut rules = state.rules.lock().unwrap();
        let found = rules.iter_mut().find(|r| r.method.is_none_or(|m| m == method) && path.contains(&r.path) && r.times != Some(0));
        found.map(|rule| {
            if let Some(n) = rule.times.as_mut() {
                *n -= 1;
            }
            rule.fault.clone()
        })
    };
    let index = {
        let mut seen = state.seen.lock().unwrap();
        seen.push(Seen { at: Instant::now(), method: method.clone(), path: path.clone(), fault: fault.clone(), forwarded_at: None, answered: None });
        seen.len() - 1
    };
    match &fault {
        Some(Fault::Status { code, retry_after }) => return Ok(status(*code, *retry_after)),
        Some(Fault::ResetBefore) => return Err(Injected("reset before forwarding")),
        Some(Fault::Stall) => std::future::pending::<()>().await,
        Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
        _ => {}
    }
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(|_| Injected("the request body was cut"))?.to_bytes();
    let mut forward = upstream.http.request(parts.method, format!("{}{path}", upstream.base)).body(body);
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST {
            forward = forward.header(name, value);
        }
    }
    state.seen.lock().unwrap()[index].forwarded_at = Some(Instant::now());
    let answer = forward.send().await.map_err(|_| Injected("the API server did not answer the proxy"))?;
    state.seen.lock().unwrap()[index].answered = Some((Instant::now(), answer.status().as_u16()));
    let code = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.map_err(|_| Injected("the API server's answer was cut"))?;
    if fault == Some(Fault::ResetAfter) {
        return Err(Injected("reset after forwarding"));
    }
    let truncate = fault == Some(Fault::Truncate);
    let mut response = Response::builder().status(code.as_u16());
    for (name, value) in &headers {
        if name != hyper::header::TRANSFER_ENCODING && name != hyper::header::CONNECTION {
            response = response.header(name, value);
        }
    }
    let length = bytes.len();
    let data = if truncate { bytes.slice(..length / 2) } else { bytes };
    Ok(response.header(hyper::header::CONTENT_LENGTH, length).body(Answer { data: Some(data), fail: truncate }).unwrap())
}

/// A Kubernetes Status answer of the proxy's own.
fn status(code: u16, retry_after: Option<u32>) -> Response<Answer> {
    let mut body = serde_json::json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("injected {code} by the test proxy"), "reason": "Injected", "code": code });
    let mut response = Response::builder().status(code).header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(seconds) = retry_after {
        body["details"] = serde_json::json!({ "retryAfterSeconds": seconds });
        response = response.header(hyper::header::RETRY_AFTER, seconds.to_string());
    }
    response.body(Answer { data: Some(Bytes::from(body.to_string())), fail: false }).unwrap()
}

/// An answer's body: its data, then (to cut it short) an error that makes hyper close the
/// connection before the promised length.
struct Answer {
    data: Option<Bytes>,
    fail: bool,
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = Injected;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Injected>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if std::mem::take(&mut self.fail) {
            return Poll::Ready(Some(Err(Injected("body cut short"))));
        }
        Poll::Ready(None)
    }
}
