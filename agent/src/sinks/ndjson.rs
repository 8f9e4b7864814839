//! Taskless NDJSON: one line per exchange, `requestId` and `dimensions` as the pack format
//! defines them, and `source`, the connection's identity (with the request's host as
//! `serverName` when the client sent no TLS server name), `skipped` (the packs shed for the
//! exchange, when any were), `"complete": false` on an exchange whose response did not arrive
//! whole, and `"partial": true` on one whose heads had fields the parser could not know (an
//! HTTP/2 connection joined mid-way).

use std::io::{BufWriter, Write};

use serde::Serialize;
use taskless_pack_runtime::Dimension;

use super::{RotatingFile, Sink};
use crate::{flows::Identity, packs::FinishedExchange};

/// The line's `source`: the identity, its server name falling back to the request's host.
#[derive(Serialize)]
struct Source<'a> {
    #[serde(flatten)]
    identity: &'a Identity,
    #[serde(rename = "serverName", skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    request_id: &'a str,
    dimensions: &'a [Dimension],
    /// Packs skipped for this exchange (shed by a worker that was behind); only when any were.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    skipped: &'a [String],
    source: Source<'a>,
    /// Only on exchanges whose response did not arrive whole.
    #[serde(skip_serializing_if = "is_true")]
    complete: bool,
    /// Only on exchanges with a head whose fields were partly unknown.
    #[serde(skip_serializing_if = "is_false")]
    partial: bool,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if takes a reference
fn is_false(b: &bool) -> bool {
    !*b
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if takes a reference
fn is_true(b: &bool) -> bool {
    *b
}

/// One exchange as an NDJSON line, without the trailing newline.
#[must_use]
pub fn to_line(exchange: &FinishedExchange) -> String {
    let identity = &*exchange.identity;
    let line = Line {
        request_id: &exchange.request_id,
        dimensions: &exchange.dimensions,
        skipped: &exchange.skipped,
        source: Source {
            identity,
            host: identity
                .server_name
                .is_none()
                .then(|| exchange.server_name())
                .flatten(),
        },
        complete: exchange.complete,
        partial: exchange.partial,
    };
    // Strings, numbers and plain structs always serialize.
    serde_json::to_string(&line).unwrap_or_default()
}

/// Where NDJSON lines go: a buffered writer (stdout), or a file rotated between lines.
pub trait LineOut: Send {
    /// Writes `line` and a newline.
    ///
    /// # Errors
    /// When the destination fails.
    fn line(&mut self, line: &str) -> std::io::Result<()>;
    /// Makes what was written visible.
    ///
    /// # Errors
    /// When the destination fails.
    fn flush(&mut self) -> std::io::Result<()>;
}

impl<W: Write + Send> LineOut for BufWriter<W> {
    fn line(&mut self, line: &str) -> std::io::Result<()> {
        self.write_all(line.as_bytes())?;
        self.write_all(b"\n")
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Write::flush(self)
    }
}

impl LineOut for RotatingFile {
    fn line(&mut self, line: &str) -> std::io::Result<()> {
        self.write_line(line)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        RotatingFile::flush(self)
    }
}

/// NDJSON lines to stdout or a rotating file.
pub struct NdjsonSink {
    out: Box<dyn LineOut>,
    name: &'static str,
}

impl NdjsonSink {
    /// Lines to `out` (stdout).
    pub fn new<W: Write + Send + 'static>(out: W) -> Self {
        Self {
            out: Box::new(BufWriter::new(out)),
            name: "ndjson",
        }
    }

    /// Lines to a file rotated by size.
    #[must_use]
    pub fn to_file(file: RotatingFile) -> Self {
        Self {
            out: Box::new(file),
            name: "ndjson_file",
        }
    }
}

impl Sink for NdjsonSink {
    fn name(&self) -> &'static str {
        self.name
    }

    fn write(&mut self, exchange: &FinishedExchange) -> std::io::Result<()> {
        self.out.line(&to_line(exchange))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use taskless_pack_runtime::Timing;

    use super::*;

    fn exchange(identity: Identity, domain: &str) -> FinishedExchange {
        FinishedExchange {
            request_id: "0123456789abcdef0123456789abcdef".into(),
            dimensions: vec![Dimension {
                name: "core/status".into(),
                value: "200".into(),
            }],
            skipped: Vec::new(),
            identity: Arc::new(identity),
            method: "GET".into(),
            url: format!("https://{domain}/"),
            domain: domain.into(),
            status: Some(200),
            timing: Timing::default(),
            complete: true,
            partial: false,
        }
    }

    #[test]
    fn the_line_has_the_pack_fields_first_and_a_full_source() {
        let identity = Identity {
            pid: 42,
            process: "curl".into(),
            serial: 7,
            fd: Some(5),
            local_address: Some("127.0.0.1:40000".parse().unwrap()),
            remote_address: Some("[::1]:8443".parse().unwrap()),
            server_name: Some("api.example.com".into()),
            cgroup: Some("/user.slice".into()),
            container_id: None,
            role: None,
            k8s: None,
        };
        let json = to_line(&exchange(identity, "ignored.example"));
        assert!(json.starts_with(r#"{"requestId":"#), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "requestId": "0123456789abcdef0123456789abcdef",
                "dimensions": [{"name": "core/status", "value": "200"}],
                "source": {
                    "pid": 42, "process": "curl", "connection": 7, "fd": 5,
                    "localAddress": "127.0.0.1:40000", "remoteAddress": "[::1]:8443",
                    "serverName": "api.example.com", "cgroup": "/user.slice"
                }
            })
        );
    }

    #[test]
    fn unknown_fields_are_left_out_and_the_server_name_falls_back_to_the_host() {
        let identity = Identity {
            pid: 9,
            serial: 1,
            ..Identity::default()
        };
        let v: serde_json::Value =
            serde_json::from_str(&to_line(&exchange(identity.clone(), "localhost"))).unwrap();
        assert_eq!(
            v["source"],
            serde_json::json!({"pid": 9, "connection": 1, "serverName": "localhost"})
        );
        let v: serde_json::Value = serde_json::from_str(&to_line(&exchange(identity, ""))).unwrap();
        assert_eq!(v["source"], serde_json::json!({"pid": 9, "connection": 1}));
    }

    #[test]
    fn packs_shed_for_the_exchange_are_listed_beside_the_dimensions() {
        let mut ex = exchange(Identity::default(), "localhost");
        ex.skipped = vec!["pii".into()];
        let json = to_line(&ex);
        assert!(
            json.contains(r#""value":"200"}],"skipped":["pii"],"source""#),
            "{json}"
        );
    }
}
