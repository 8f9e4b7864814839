//! The agent's small HTTP server, on the export runtime: `/metrics` (Prometheus, with
//! `--metrics-addr`), `/healthz` and `/readyz` (on both `--metrics-addr` and `--health-addr`).
//! Addresses are bound before the agent loads anything, so a taken port fails at start.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;

use super::{ExportRuntime, Health, Telemetry};

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// One listening address and what it serves.
pub struct Server {
    addr: SocketAddr,
}

impl Server {
    /// The address actually bound (port 0 resolved).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Binds `addr` and serves `/healthz`, `/readyz` and, with `telemetry`, `/metrics`.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn start(
        runtime: &ExportRuntime,
        addr: SocketAddr,
        health: Arc<Health>,
        telemetry: Option<Arc<Telemetry>>,
    ) -> Result<Self, ServeError> {
        let bind = |source| ServeError::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let bound = listener.local_addr().map_err(bind)?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(bind)?
        };
        tracing::info!(addr = %bound, metrics = telemetry.is_some(), "serving health endpoints");
        runtime.handle().spawn(accept(listener, health, telemetry));
        Ok(Self { addr: bound })
    }
}

async fn accept(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    telemetry: Option<Arc<Telemetry>>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let health = Arc::clone(&health);
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = respond(&req, &health, telemetry.as_deref());
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn check(result: Result<(), String>, ok: &str) -> Response<Full<Bytes>> {
    match result {
        Ok(()) => text(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            format!("{ok}\n"),
        ),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            format!("{why}\n"),
        ),
    }
}

fn respond(
    req: &Request<Incoming>,
    health: &Health,
    telemetry: Option<&Telemetry>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "GET only\n".into(),
        );
    }
    match (req.uri().path(), telemetry) {
        ("/healthz", _) => check(health.live(), "ok"),
        ("/readyz", _) => check(health.ready(), "ready"),
        ("/metrics", Some(t)) => match t.encode() {
            Ok(body) => text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            ),
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "encoding failed\n".into(),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: /healthz, /readyz (and /metrics with --metrics-addr)\n".into(),
        ),
    }
}
