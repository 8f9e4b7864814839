//! The assembler's three moments, body limits and timestamps; HAR import.

use taskless_http::har::{HarError, exchanges_from_har_str};
use taskless_http::{AbortReason, Assembled, Assembler, Config, Connection, Flow};

fn assemble(
    max_body: usize,
    script: &[(Flow, &[u8], u64)],
    close_at: Option<u64>,
) -> Vec<Assembled> {
    let mut conn = Connection::new(Config::default());
    let mut asm = Assembler::new(max_body);
    let mut events = Vec::new();
    let mut out = Vec::new();
    for (flow, data, ts) in script {
        conn.feed(*flow, data, *ts, &mut events);
    }
    if let Some(ts) = close_at {
        conn.close(ts, &mut events);
    }
    for e in events {
        asm.push(e, &mut out);
    }
    out
}

#[test]
fn request_then_chunks_then_complete_with_timestamps() {
    let out = assemble(
        1 << 20,
        &[
            (
                Flow::Egress,
                b"POST /v1/chat HTTP/1.1\r\nContent-Length: 4\r\n\r\n",
                10,
            ),
            (Flow::Egress, b"{\"a\"", 11),
            (
                Flow::Ingress,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
                20,
            ),
            (Flow::Ingress, b"2\r\nde\r\n0\r\n\r\n", 25),
        ],
        None,
    );
    assert_eq!(out.len(), 4, "{out:?}");
    let Assembled::Request { id: 0, request } = &out[0] else {
        panic!("first must be the request: {out:?}");
    };
    assert_eq!(request.body.data, &b"{\"a\""[..]);
    assert_eq!((request.start_ns, request.end_ns), (10, 11));
    assert!(
        matches!(&out[1], Assembled::ResponseBody { data, ts_ns: 20, .. } if data == &b"abc"[..])
    );
    assert!(
        matches!(&out[2], Assembled::ResponseBody { data, ts_ns: 25, .. } if data == &b"de"[..])
    );
    let Assembled::Complete { exchange, .. } = &out[3] else {
        panic!("last must be complete: {out:?}");
    };
    assert_eq!(exchange.response.body.data, &b"abcde"[..]);
    assert_eq!(exchange.response.body.total_len, 5);
    assert!(!exchange.response.body.truncated);
    assert_eq!(
        (exchange.response.start_ns, exchange.response.end_ns),
        (20, 25)
    );
    assert!(std::sync::Arc::ptr_eq(request, &exchange.request));
}

#[test]
fn bodies_past_the_limit_are_truncated_with_true_length() {
    let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
    response.extend([b'x'; 100]);
    let out = assemble(
        10,
        &[
            (Flow::Egress, b"GET / HTTP/1.1\r\n\r\n", 1),
            (Flow::Ingress, &response, 2),
        ],
        None,
    );
    let Some(Assembled::Complete { exchange, .. }) = out.last() else {
        panic!("{out:?}");
    };
    assert_eq!(exchange.response.body.data.len(), 10);
    assert_eq!(exchange.response.body.total_len, 100);
    assert!(exchange.response.body.truncated);
}

#[test]
fn pieces_are_joined_up_to_the_limit() {
    let out = assemble(
        5,
        &[
            (Flow::Egress, b"GET / HTTP/1.1\r\n\r\n", 1),
            (
                Flow::Ingress,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
                2,
            ),
            (Flow::Ingress, b"3\r\ndef\r\n", 3),
            (Flow::Ingress, b"2\r\ngh\r\n0\r\n\r\n", 4),
        ],
        None,
    );
    let Some(Assembled::Complete { exchange, .. }) = out.last() else {
        panic!("{out:?}");
    };
    assert_eq!(exchange.response.body.data, &b"abcde"[..]);
    assert_eq!(exchange.response.body.total_len, 8);
    assert!(exchange.response.body.truncated);
}

#[test]
fn trailers_are_kept_on_the_request_and_the_response() {
    let out = assemble(
        1 << 20,
        &[
            (
                Flow::Egress,
                b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nDigest: x\r\n\r\n",
                1,
            ),
            (
                Flow::Ingress,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\nGrpc-Status: 0\r\n\r\n",
                2,
            ),
        ],
        None,
    );
    let Some(Assembled::Complete { exchange, .. }) = out.last() else {
        panic!("{out:?}");
    };
    assert_eq!(exchange.request.trailers.get("digest"), Some("x"));
    assert_eq!(exchange.request.head.header("digest"), None);
    assert_eq!(exchange.response.trailers.get("grpc-status"), Some("0"));
    assert_eq!(exchange.response.trailers.len(), 1);
    assert_eq!(exchange.response.body.data, &b"b"[..]);
}

#[test]
fn closed_connection_gives_incomplete_with_the_request() {
    let out = assemble(
        1 << 20,
        &[(Flow::Egress, b"GET /slow HTTP/1.1\r\n\r\n", 1)],
        Some(9),
    );
    assert!(matches!(out.first(), Some(Assembled::Request { .. })));
    let Some(Assembled::Incomplete {
        request, reason, ..
    }) = out.last()
    else {
        panic!("{out:?}");
    };
    assert_eq!(*reason, AbortReason::ConnectionClosed);
    assert_eq!(
        request.as_ref().map(|r| r.head.target.as_str()),
        Some("/slow")
    );
}

#[test]
fn interim_responses_keep_the_request_waiting() {
    let out = assemble(
        1 << 20,
        &[
            (Flow::Egress, b"GET / HTTP/1.1\r\n\r\n", 1),
            (Flow::Ingress, b"HTTP/1.1 103 Early Hints\r\n\r\n", 2),
            (
                Flow::Ingress,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                3,
            ),
        ],
        None,
    );
    let Some(Assembled::Complete { exchange, .. }) = out.last() else {
        panic!("{out:?}");
    };
    assert_eq!(exchange.response.head.status, 200);
    assert_eq!(exchange.response.start_ns, 3);
}

const HAR: &str = r#"{
  "log": {
    "version": "1.2",
    "creator": {"name": "test", "version": "1"},
    "entries": [
      {
        "startedDateTime": "2024-05-01T12:00:00.000Z",
        "time": 120.5,
        "request": {
          "method": "POST",
          "url": "https://api.openai.com/v1/chat/completions?x=1",
          "httpVersion": "HTTP/2.0",
          "headers": [
            {"name": ":authority", "value": "api.openai.com"},
            {"name": "Content-Type", "value": "application/json"}
          ],
          "postData": {"mimeType": "application/json", "text": "{\"model\":\"m\"}"}
        },
        "response": {
          "status": 200,
          "statusText": "OK",
          "httpVersion": "HTTP/2.0",
          "headers": [
            {"name": "Content-Encoding", "value": "br"},
            {"name": "Content-Type", "value": "application/json"}
          ],
          "content": {"size": 5, "mimeType": "application/json", "text": "aGVsbG8=", "encoding": "base64"}
        },
        "timings": {"blocked": 1, "dns": -1, "connect": -1, "send": 2, "wait": 100, "receive": 17.5}
      }
    ]
  }
}"#;

#[test]
fn har_entries_become_exchanges() {
    let exchanges = exchanges_from_har_str(HAR, 1 << 20).expect("valid HAR");
    assert_eq!(exchanges.len(), 1);
    let x = &exchanges[0];
    let req = &x.request;
    assert_eq!(req.head.method, "POST");
    assert_eq!(req.head.target, "/v1/chat/completions?x=1");
    assert_eq!(req.head.authority.as_deref(), Some("api.openai.com"));
    assert_eq!(req.head.scheme.as_deref(), Some("https"));
    assert_eq!(req.head.version, taskless_http::Version::Http2);
    assert_eq!(req.head.headers.len(), 1, "pseudo-headers dropped");
    assert_eq!(req.body.data, &b"{\"model\":\"m\"}"[..]);
    let t0 = 1_714_564_800_000_000_000;
    assert_eq!(req.start_ns, t0);
    assert_eq!(req.end_ns, t0 + 3_000_000);
    assert_eq!(x.response.start_ns, t0 + 103_000_000);
    assert_eq!(x.response.end_ns, t0 + 120_500_000);
    assert_eq!(x.response.body.data, &b"hello"[..]);
    assert_eq!(x.response.head.header("content-encoding"), None);
    assert_eq!(
        x.response.head.header("content-type"),
        Some("application/json")
    );
}

#[test]
fn har_errors_name_the_missing_field() {
    assert!(matches!(
        exchanges_from_har_str("{}", 10),
        Err(HarError::Field {
            field: "log.entries",
            ..
        })
    ));
    let broken = HAR.replace("\"status\": 200,", "");
    assert!(matches!(
        exchanges_from_har_str(&broken, 10),
        Err(HarError::Field {
            entry: 0,
            field: "response.status"
        })
    ));
    assert!(matches!(
        exchanges_from_har_str("not json", 10),
        Err(HarError::Json(_))
    ));
}

#[test]
fn start_timestamps_are_those_of_the_first_byte() {
    let out = assemble(
        1 << 20,
        &[
            (Flow::Egress, b"POST /x HTT", 5),
            (Flow::Egress, b"P/1.1\r\nContent-Length: 1\r\n\r\n", 6),
            (Flow::Egress, b"a", 7),
            (Flow::Ingress, b"HTTP/1.1 200 OK\r\nContent-", 20),
            (Flow::Ingress, b"Length: 2\r\n\r\nok", 21),
        ],
        None,
    );
    let Some(Assembled::Complete { exchange, .. }) = out.last() else {
        panic!("{out:?}");
    };
    assert_eq!((exchange.request.start_ns, exchange.request.end_ns), (5, 7));
    assert_eq!(
        (exchange.response.start_ns, exchange.response.end_ns),
        (20, 21)
    );
}
