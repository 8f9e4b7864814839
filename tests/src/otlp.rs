//! An OTLP receiver for the tests, built from the official protocol definitions
//! (`opentelemetry-proto`): the logs and metrics services over gRPC (tonic's server) and over
//! HTTP/protobuf (`POST /v1/logs`, `/v1/metrics`). It keeps every request it receives, and can
//! be stopped and started again on the same ports (to test an outage).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{
            ExportLogsServiceRequest, ExportLogsServiceResponse,
            logs_service_server::{LogsService, LogsServiceServer},
        },
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    logs::v1::LogRecord,
    metrics::v1::{Metric, metric::Data},
};
use prost::Message as _;
use tokio::task::JoinSet;

/// What the receiver got.
#[derive(Default)]
struct Store {
    logs: Mutex<Vec<ExportLogsServiceRequest>>,
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
}

#[derive(Clone)]
struct Services(Arc<Store>);

#[tonic::async_trait]
impl LogsService for Services {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        if let Ok(mut v) = self.0.logs.lock() {
            v.push(request.into_inner());
        }
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Services {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        if let Ok(mut v) = self.0.metrics.lock() {
            v.push(request.into_inner());
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// One log record with its resource's attributes, attributes as text.
#[derive(Debug, Clone)]
pub struct ReceivedLog {
    /// The resource's attributes.
    pub resource: BTreeMap<String, String>,
    /// The record's attributes.
    pub attributes: BTreeMap<String, AttrValue>,
    /// The body as text.
    pub body: String,
    /// The event name.
    pub event_name: String,
    /// The severity text.
    pub severity: String,
}

/// An attribute value, typed as it came.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Double(f64),
    /// A boolean.
    Bool(bool),
    /// Anything else, debug-printed.
    Other(String),
}

impl AttrValue {
    fn of(v: Option<&AnyValue>) -> Self {
        match v.and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => Self::Str(s.clone()),
            Some(Value::IntValue(i)) => Self::Int(*i),
            Some(Value::DoubleValue(d)) => Self::Double(*d),
            Some(Value::BoolValue(b)) => Self::Bool(*b),
            other => Self::Other(format!("{other:?}")),
        }
    }

    /// The value as text.
    #[must_use]
    pub fn text(&self) -> String {
        match self {
            Self::Str(s) | Self::Other(s) => s.clone(),
            Self::Int(i) => i.to_string(),
            Self::Double(d) => d.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, AttrValue> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), AttrValue::of(kv.value.as_ref())))
        .collect()
}

/// One metric data point: the metric's name, the point's attributes, and its value (a sum's
/// value, or a histogram's count and sum).
#[derive(Debug, Clone)]
pub struct Point {
    /// The metric's name.
    pub metric: String,
    /// The point's attributes.
    pub attributes: BTreeMap<String, AttrValue>,
    /// A sum's or gauge's value.
    pub value: Option<f64>,
    /// A histogram's count.
    pub count: Option<u64>,
    /// A histogram's sum.
    pub sum: Option<f64>,
}

fn points_of(metric: &Metric, out: &mut Vec<Point>) {
    let base = |attrs: &[KeyValue]| Point {
        metric: metric.name.clone(),
        attributes: attributes(attrs),
        value: None,
        count: None,
        sum: None,
    };
    #[allow(clippy::cast_precision_loss)]
    let number = |p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint| match p.value {
        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(d)) => d,
        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(i)) => {
            i as f64
        }
        None => f64::NAN,
    };
    match &metric.data {
        Some(Data::Sum(s)) => out.extend(s.data_points.iter().map(|p| Point {
            value: Some(number(p)),
            ..base(&p.attributes)
        })),
        Some(Data::Gauge(g)) => out.extend(g.data_points.iter().map(|p| Point {
            value: Some(number(p)),
            ..base(&p.attributes)
        })),
        Some(Data::Histogram(h)) => out.extend(h.data_points.iter().map(|p| Point {
            count: Some(p.count),
            sum: p.sum,
            ..base(&p.attributes)
        })),
        _ => {}
    }
}

/// A running (or stopped) receiver.
pub struct OtlpReceiver {
    runtime: tokio::runtime::Runtime,
    store: Arc<Store>,
    /// The gRPC address.
    pub grpc: SocketAddr,
    /// The HTTP address.
    pub http: SocketAddr,
    tasks: Option<JoinSet<()>>,
    grpc_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl OtlpReceiver {
    /// Starts both servers on free loopback ports.
    ///
    /// # Errors
    /// When a port cannot be bound.
    pub fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let mut me = Self {
            runtime,
            store: Arc::new(Store::default()),
            grpc: "127.0.0.1:0".parse()?,
            http: "127.0.0.1:0".parse()?,
            tasks: None,
            grpc_stop: None,
        };
        me.resume()?;
        Ok(me)
    }

    /// Starts the servers again (on the same ports after [`OtlpReceiver::stop`]).
    ///
    /// # Errors
    /// When a port cannot be bound.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        let store = Arc::clone(&self.store);
        let (grpc, http, tasks, stop) = self.runtime.block_on(async {
            let grpc_listener = bind(self.grpc).await?;
            let http_listener = bind(self.http).await?;
            let grpc = grpc_listener.local_addr()?;
            let http = http_listener.local_addr()?;
            let mut tasks = JoinSet::new();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let services = Services(Arc::clone(&store));
            let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener);
            tasks.spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(LogsServiceServer::new(services.clone()))
                    .add_service(MetricsServiceServer::new(services))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
            let http_store = Arc::clone(&store);
            tasks.spawn(async move {
                let mut conns = JoinSet::new();
                loop {
                    let Ok((stream, _)) = http_listener.accept().await else {
                        continue;
                    };
                    let store = Arc::clone(&http_store);
                    conns.spawn(async move {
                        let service = service_fn(move |req| {
                            let store = Arc::clone(&store);
                            async move {
                                Ok::<_, std::convert::Infallible>(http_export(req, &store).await)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            anyhow::Ok((grpc, http, tasks, stop_tx))
        })?;
        self.grpc = grpc;
        self.http = http;
        self.tasks = Some(tasks);
        self.grpc_stop = Some(stop);
        Ok(())
    }

    /// Stops both servers and closes every connection: the agent sees a collector that is
    /// gone.
    pub fn stop(&mut self) {
        if let Some(stop) = self.grpc_stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut tasks) = self.tasks.take() {
            self.runtime.block_on(async {
                // gRPC's graceful stop, then everything (the HTTP connections) by force.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while tasks.len() > 1 {
                        tasks.join_next().await;
                    }
                })
                .await;
                tasks.shutdown().await;
            });
        }
    }

    /// Every log record received so far.
    #[must_use]
    pub fn logs(&self) -> Vec<ReceivedLog> {
        let requests = self
            .store
            .logs
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        let mut out = Vec::new();
        for req in &requests {
            for rl in &req.resource_logs {
                let resource: BTreeMap<String, String> = rl
                    .resource
                    .as_ref()
                    .map(|r| {
                        attributes(&r.attributes)
                            .into_iter()
                            .map(|(k, v)| (k, v.text()))
                            .collect()
                    })
                    .unwrap_or_default();
                for sl in &rl.scope_logs {
                    for r in &sl.log_records {
                        out.push(received(r, &resource));
                    }
                }
            }
        }
        out
    }

    /// Every data point of the latest metrics export (metrics are cumulative), and the number
    /// of exports received.
    #[must_use]
    pub fn latest_metrics(&self) -> (Vec<Point>, usize) {
        let requests = self
            .store
            .metrics
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        let mut out = Vec::new();
        if let Some(last) = requests.last() {
            for rm in &last.resource_metrics {
                for sm in &rm.scope_metrics {
                    for m in &sm.metrics {
                        points_of(m, &mut out);
                    }
                }
            }
        }
        (out, requests.len())
    }

    /// Every request received, encoded again, as one blob (to search for leaked secrets).
    #[must_use]
    pub fn raw(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Ok(v) = self.store.logs.lock() {
            for r in v.iter() {
                out.extend(r.encode_to_vec());
            }
        }
        if let Ok(v) = self.store.metrics.lock() {
            for r in v.iter() {
                out.extend(r.encode_to_vec());
            }
        }
        out
    }

    /// Waits until `pred` holds over the received logs.
    ///
    /// # Errors
    /// On timeout, with what was received.
    pub fn wait_logs(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[ReceivedLog]) -> bool,
    ) -> anyhow::Result<Vec<ReceivedLog>> {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if pred(&logs) {
                return Ok(logs);
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: not within {timeout:?}; {} records received",
                    logs.len()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    // The port of a stopped receiver may linger briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("binding {addr}")),
        }
    }
}

fn received(r: &LogRecord, resource: &BTreeMap<String, String>) -> ReceivedLog {
    ReceivedLog {
        resource: resource.clone(),
        attributes: attributes(&r.attributes),
        body: AttrValue::of(r.body.as_ref()).text(),
        event_name: r.event_name.clone(),
        severity: r.severity_text.clone(),
    }
}

async fn http_export(req: Request<Incoming>, store: &Store) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST, Bytes::new());
    };
    match path.as_str() {
        "/v1/logs" => match ExportLogsServiceRequest::decode(body) {
            Ok(r) => {
                if let Ok(mut v) = store.logs.lock() {
                    v.push(r);
                }
                status(
                    StatusCode::OK,
                    ExportLogsServiceResponse::default().encode_to_vec().into(),
                )
            }
            Err(_) => status(StatusCode::BAD_REQUEST, Bytes::new()),
        },
        "/v1/metrics" => match ExportMetricsServiceRequest::decode(body) {
            Ok(r) => {
                if let Ok(mut v) = store.metrics.lock() {
                    v.push(r);
                }
                status(
                    StatusCode::OK,
                    ExportMetricsServiceResponse::default()
                        .encode_to_vec()
                        .into(),
                )
            }
            Err(_) => status(StatusCode::BAD_REQUEST, Bytes::new()),
        },
        _ => status(StatusCode::NOT_FOUND, Bytes::new()),
    }
}

fn status(code: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    r
}
