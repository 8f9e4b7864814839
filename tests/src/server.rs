//! A local HTTPS API that answers like a small payments API (Stripe-style) and a chat-completions
//! API (OpenAI-style), for the demo and the end-to-end tests.
//!
//! Certificates are made at start with rcgen; the CA certificate is written to a file so real
//! clients (curl, Python, Node) can verify the server. It speaks HTTP/1.1 and HTTP/2 (ALPN).

use std::{
    convert::Infallible,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::{Frame, Incoming},
    header::{CONTENT_TYPE, HeaderValue},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;

type Body = BoxBody<Bytes, Infallible>;

/// One request the server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// Method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Status sent.
    pub status: u16,
    /// Request body length.
    pub body_len: usize,
}

/// Shared server state.
#[derive(Debug)]
pub struct State {
    gate: watch::Sender<bool>,
    served: Mutex<Vec<Served>>,
    waiting: watch::Sender<usize>,
}

/// A running server: its address, CA file and controls.
#[derive(Clone, Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The PEM file of the CA that signed its certificate (for `localhost` and 127.0.0.1).
    pub ca_file: PathBuf,
    /// Its certificate chain (PEM), beside `ca_file`: other local TLS servers a test starts can
    /// serve it too, so clients trust them through the same CA.
    pub cert_file: PathBuf,
    /// The certificate's private key (PKCS #8 PEM), beside `ca_file`.
    pub key_file: PathBuf,
    state: Arc<State>,
}

impl Server {
    /// The base URL, `https://localhost:PORT`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Lets requests waiting at `/v1/gate` through (and every later one).
    pub fn open_gate(&self) {
        let _ = self.state.gate.send(true);
    }

    /// Waits until `n` requests are waiting at the gate.
    pub async fn wait_gate_waiters(&self, n: usize) {
        let mut rx = self.state.waiting.subscribe();
        let _ = rx.wait_for(|w| *w >= n).await;
    }

    /// Every request answered so far.
    #[must_use]
    pub fn served(&self) -> Vec<Served> {
        self.state
            .served
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

/// The files of the server's certificate chain and key, beside the CA file.
fn cert_files(ca_file: &Path) -> (PathBuf, PathBuf) {
    (
        ca_file.with_file_name("server-chain.pem"),
        ca_file.with_file_name("server-key.pem"),
    )
}

/// Makes a CA and a server certificate for `localhost` / 127.0.0.1; writes the CA to `ca_file`,
/// and the certificate chain and key beside it.
fn make_tls(ca_file: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "taskless-testapi CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;

    let mut f = std::fs::File::create(ca_file)
        .with_context(|| format!("creating {}", ca_file.display()))?;
    f.write_all(ca_cert.pem().as_bytes())?;
    let (chain_file, key_file) = cert_files(ca_file);
    std::fs::write(&chain_file, format!("{}{}", cert.pem(), ca_cert.pem()))
        .with_context(|| format!("creating {}", chain_file.display()))?;
    std::fs::write(&key_file, key.serialize_pem())
        .with_context(|| format!("creating {}", key_file.display()))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Starts the server on `addr` (port 0 picks a free port), writing its CA to `ca_file`.
///
/// # Errors
/// When the certificates cannot be made or the port cannot be bound.
pub async fn start(addr: SocketAddr, ca_file: &Path) -> anyhow::Result<Server> {
    let tls = TlsAcceptor::from(Arc::new(make_tls(ca_file)?));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(State {
        gate: watch::channel(false).0,
        served: Mutex::new(Vec::new()),
        waiting: watch::channel(0).0,
    });
    let (cert_file, key_file) = cert_files(ca_file);
    let server = Server {
        addr,
        ca_file: ca_file.to_path_buf(),
        cert_file,
        key_file,
        state: Arc::clone(&state),
    };
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let tls = tls.clone();
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let Ok(stream) = tls.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req| handle(req, Arc::clone(&state)));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(server)
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn form_value<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    body.split('&')
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Result<Response<Body>, Infallible> {
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), ToString::to_string);
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let idempotency = req.headers().get("idempotency-key").cloned();
    let accept_gzip = req
        .headers()
        .get("accept-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body_text = String::from_utf8_lossy(&body).into_owned();

    let mut resp = route(&method, &path, &query, &body_text, &state).await;
    if let Some(key) = idempotency {
        resp.headers_mut().insert("idempotency-key", key);
    }
    if accept_gzip && path.starts_with("/v1/") && !is_stream(&resp) {
        resp = gzip(resp).await;
    }
    if let Ok(mut served) = state.served.lock() {
        served.push(Served {
            method,
            target,
            status: resp.status().as_u16(),
            body_len: body.len(),
        });
    }
    Ok(resp)
}

fn is_stream(resp: &Response<Body>) -> bool {
    resp.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

async fn gzip(resp: Response<Body>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = enc.write_all(&bytes);
    let out = enc.finish().unwrap_or_default();
    parts
        .headers
        .insert("content-encoding", HeaderValue::from_static("gzip"));
    parts.headers.remove("content-length");
    Response::from_parts(parts, full(out))
}

fn param(query: &str, key: &str) -> Option<u64> {
    form_value(query, key).and_then(|v| v.parse().ok())
}

async fn route(method: &str, path: &str, query: &str, body: &str, state: &State) -> Response<Body> {
    // An artificial latency, so tests can check that durationMs is the API's own.
    if let Some(ms) = param(query, "delay_ms") {
        tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
    }
    match (method, path) {
        // Any method: clients that send one method for every URL (wget --post-data) wait here too.
        (_, "/v1/gate") => {
            let mut rx = state.gate.subscribe();
            state.waiting.send_modify(|w| *w += 1);
            let _ = rx.wait_for(|open| *open).await;
            json(StatusCode::OK, &serde_json::json!({"gate": "open"}))
        }
        ("POST", "/v1/charges") => {
            // Stripe's test tokens for a declined card, in general or for insufficient funds.
            let decline = match form_value(body, "source") {
                Some("tok_chargeDeclined") => Some("generic_decline"),
                Some("tok_chargeDeclinedInsufficientFunds") => Some("insufficient_funds"),
                _ => None,
            };
            if let Some(decline_code) = decline {
                let mut resp = json(
                    StatusCode::PAYMENT_REQUIRED,
                    &serde_json::json!({"error": {
                        "type": "card_error",
                        "code": "card_declined",
                        "decline_code": decline_code,
                        "message": "Your card was declined.",
                        "param": "source",
                        "doc_url": "https://stripe.com/docs/error-codes/card-declined",
                        "request_log_url": "https://dashboard.stripe.com/test/logs/req_test402"
                    }}),
                );
                resp.headers_mut()
                    .insert("request-id", HeaderValue::from_static("req_test402"));
                resp
            } else {
                let amount = form_value(body, "amount")
                    .and_then(|a| a.parse::<u64>().ok())
                    .unwrap_or(0);
                let mut resp = json(
                    StatusCode::OK,
                    &serde_json::json!({"id": "ch_test", "object": "charge", "amount": amount, "currency": "usd", "status": "succeeded"}),
                );
                resp.headers_mut()
                    .insert("request-id", HeaderValue::from_static("req_test200"));
                resp
            }
        }
        ("GET", p) if p.starts_with("/v1/customers/") => json(
            StatusCode::OK,
            &serde_json::json!({"id": p.trim_start_matches("/v1/customers/"), "object": "customer", "email": "jenny@example.com"}),
        ),
        ("GET", "/v1/missing") | ("GET", "/v1/customers") => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": {"type": "invalid_request_error", "message": "No such resource"}}),
        ),
        ("GET", "/v1/bytes") => {
            // A large download of a known pattern: `n` bytes of `0123456789`.
            let n =
                usize::try_from(param(query, "n").unwrap_or(1024).min(64 << 20)).unwrap_or(1024);
            let data: Vec<u8> = (0..n).map(|i| b'0' + (i % 10) as u8).collect();
            let mut resp = Response::new(full(data));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            resp
        }
        ("POST", "/v1/upload") => {
            json(StatusCode::OK, &serde_json::json!({"received": body.len()}))
        }
        ("POST", "/v1/chat/completions") => chat(body, param(query, "hold_end_ms").unwrap_or(0)),
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": {"type": "invalid_request_error", "message": format!("Unrecognized request URL ({method}: {path})")}}),
        ),
    }
}

/// An OpenAI-style chat completion, streamed as server-sent events when the body asks for it.
/// An OpenAI-style chat completion; streamed (server-sent events) when the request asks. With
/// `hold_end_ms`, a streamed response ends that long after its last event (`data: [DONE]`), so a
/// client that stops reading there never reads the end of the body.
fn chat(body: &str, hold_end_ms: u64) -> Response<Body> {
    let req: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let model = req
        .get("model")
        .and_then(|m| m.as_str())
        .unwrap_or("gpt-4o-mini")
        .to_owned();
    if model == "bad-model" {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": {"message": "The model `bad-model` does not exist", "type": "invalid_request_error", "param": null, "code": "model_not_found"}}),
        );
    }
    let stream = req
        .get("stream")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    if !stream {
        let mut resp = json(
            StatusCode::OK,
            &serde_json::json!({
                "id": "chatcmpl-test", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 4}}
            }),
        );
        resp.headers_mut()
            .insert("x-request-id", HeaderValue::from_static("req_chat_test"));
        resp.headers_mut()
            .insert("openai-processing-ms", HeaderValue::from_static("42"));
        return resp;
    }
    let mut events: Vec<String> = ["Hel", "lo ", "there!"]
        .iter()
        .map(|piece| {
            serde_json::json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]})
            .to_string()
        })
        .collect();
    events.push(
        serde_json::json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "model": model, "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}})
        .to_string(),
    );
    events.push("[DONE]".to_owned());
    let frames = futures_util::stream::iter(events).then(|e| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, Infallible>(Frame::data(Bytes::from(format!("data: {e}\n\n"))))
    });
    let hold = Duration::from_millis(hold_end_ms.min(10_000));
    let end = futures_util::stream::once(tokio::time::sleep(hold))
        .filter_map(|()| async { None::<Result<Frame<Bytes>, Infallible>> });
    let frames = frames.chain(end);
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    resp.headers_mut()
        .insert("x-request-id", HeaderValue::from_static("req_chat_stream"));
    resp
}
