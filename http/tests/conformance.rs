//! Conformance against third-party corpora kept in `tests/data` (see the README and licence files
//! there): llhttp's HTTP/1 message samples and the hpack-test-case HPACK stories.

mod common;

use std::path::PathBuf;

use common::{inp, out, run_all};
use serde_json::Value;
use taskless_http::{Config, Event, Headers, Version};

fn data(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Decodes the escapes llhttp's test files use (`\r`, `\n`, `\t`, `\xHH`).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'x' if i + 3 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 2..i + 4]).expect("ascii");
                    out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                    i += 4;
                    continue;
                }
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// One llhttp sample: the raw message and what llhttp's log says it contains.
#[derive(Debug, Default)]
struct Sample {
    title: String,
    kind: String,
    raw: Vec<u8>,
    method: Option<String>,
    url: Option<String>,
    version: Option<String>,
    reason: Option<String>,
    status: Option<u16>,
    fields: Vec<String>,
    values: Vec<String>,
    body: Vec<u8>,
    complete: bool,
}

fn block<'a>(lines: &[&'a str], fence: &str) -> Vec<&'a str> {
    let start = lines
        .iter()
        .position(|l| *l == fence)
        .expect("fenced block");
    let len = lines[start + 1..]
        .iter()
        .position(|l| *l == "```")
        .expect("block end");
    lines[start + 1..start + 1 + len].to_vec()
}

fn span_value(v: &str) -> Vec<u8> {
    match v {
        "lf" => b"\n".to_vec(),
        "cr" => b"\r".to_vec(),
        quoted => unescape(&quoted[1..quoted.len() - 1]),
    }
}

fn parse_samples(md: &str) -> Vec<Sample> {
    md.split("\n## ")
        .skip(1)
        .map(|section| {
            let lines: Vec<&str> = section.lines().collect();
            let meta = lines
                .iter()
                .find_map(|l| {
                    l.strip_prefix("<!-- meta=")
                        .and_then(|m| m.strip_suffix(" -->"))
                })
                .expect("meta");
            let meta: Value = serde_json::from_str(meta).expect("meta json");
            let http = block(&lines, "```http");
            let mut raw = Vec::new();
            for (i, line) in http.iter().enumerate() {
                if let Some(joined) = line.strip_suffix('\\') {
                    raw.extend(unescape(joined));
                } else {
                    raw.extend(unescape(line));
                    if i + 1 < http.len() {
                        raw.extend(b"\r\n");
                    }
                }
            }
            let mut s = Sample {
                title: lines[0].to_owned(),
                kind: meta["type"].as_str().expect("type").to_owned(),
                raw,
                ..Sample::default()
            };
            for line in block(&lines, "```log") {
                if line.ends_with("message complete") {
                    s.complete = true;
                }
                if let Some(status) = line.split(" status=").nth(1) {
                    s.status = status.split(' ').next().and_then(|n| n.parse().ok());
                }
                let Some((_, span)) = line.split_once(" span[") else {
                    continue;
                };
                let (kind, value) = span.split_once("]=").expect("span");
                let value = span_value(value);
                let text = String::from_utf8_lossy(&value).into_owned();
                match kind {
                    "method" => s.method = Some(text),
                    "url" => s.url = Some(text),
                    "version" => s.version = Some(text),
                    "status" => s.reason = Some(text),
                    "header_field" => s.fields.push(text),
                    "header_value" => s.values.push(text),
                    "body" => s.body.extend(value),
                    _ => {}
                }
            }
            s
        })
        .collect()
}

fn version(v: Option<&str>) -> Version {
    match v {
        Some("1.0") => Version::Http10,
        _ => Version::Http11,
    }
}

fn expected_headers(s: &Sample) -> Vec<(String, String)> {
    s.fields
        .iter()
        .zip(&s.values)
        .map(|(f, v)| (f.to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

fn actual_headers(headers: &Headers) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.to_owned(), value.trim().to_owned()))
        .collect()
}

fn body_of(events: &[Event]) -> Vec<u8> {
    events
        .iter()
        .flat_map(|e| match e {
            Event::RequestBody { data, .. } | Event::ResponseBody { data, .. } => data.to_vec(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn llhttp_samples_parse_as_llhttp_does() {
    let samples = parse_samples(&data("llhttp/sample.md"));
    assert!(samples.len() >= 15, "only {} samples", samples.len());
    for s in &samples {
        match s.kind.as_str() {
            "request" => {
                let (events, _) = run_all(&Config::default(), &[out(&s.raw)]);
                let head = events
                    .iter()
                    .find_map(|e| match e {
                        Event::RequestHead { head, .. } => Some(head),
                        _ => None,
                    })
                    .unwrap_or_else(|| panic!("{}: no request head in {events:?}", s.title));
                assert_eq!(Some(&*head.method), s.method.as_deref(), "{}", s.title);
                assert_eq!(Some(&*head.target), s.url.as_deref(), "{}", s.title);
                assert_eq!(head.version, version(s.version.as_deref()), "{}", s.title);
                assert_eq!(
                    actual_headers(&head.headers),
                    expected_headers(s),
                    "{}",
                    s.title
                );
                assert_eq!(body_of(&events), s.body, "{}", s.title);
                let ended = events.iter().any(|e| matches!(e, Event::RequestEnd { .. }));
                assert_eq!(ended, s.complete, "{}", s.title);
            }
            "response" => {
                let (events, _) = run_all(
                    &Config::default(),
                    &[out("GET / HTTP/1.1\r\n\r\n"), inp(&s.raw)],
                );
                let head = events
                    .iter()
                    .find_map(|e| match e {
                        Event::ResponseHead { head, .. } => Some(head),
                        _ => None,
                    })
                    .unwrap_or_else(|| panic!("{}: no response head in {events:?}", s.title));
                assert_eq!(Some(head.status), s.status, "{}", s.title);
                assert_eq!(
                    head.reason,
                    s.reason.clone().unwrap_or_default(),
                    "{}",
                    s.title
                );
                assert_eq!(head.version, version(s.version.as_deref()), "{}", s.title);
                assert_eq!(
                    actual_headers(&head.headers),
                    expected_headers(s),
                    "{}",
                    s.title
                );
                assert_eq!(body_of(&events), s.body, "{}", s.title);
                let ended = events
                    .iter()
                    .any(|e| matches!(e, Event::ResponseEnd { .. }));
                assert_eq!(ended, s.complete, "{}", s.title);
            }
            other => panic!("unknown sample type {other}"),
        }
    }
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small");
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// Each case's header block is sent as a response HEADERS frame on its own stream (after a
/// request using only static-table fields), in story order, through one connection.
fn check_response_story(file: &str) {
    let story: Value = serde_json::from_str(&data(file)).expect("story json");
    let cases = story["cases"].as_array().expect("cases");
    let mut steps = vec![out(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")];
    let mut expected = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let stream = 2 * u32::try_from(i).expect("few cases") + 1;
        // `:method GET`, `:path /`, `:scheme https` from the static table.
        steps.push(out(h2_frame(1, 0x5, stream, &[0x82, 0x84, 0x87])));
        let wire = hex::decode(case["wire"].as_str().expect("wire")).expect("hex");
        steps.push(inp(h2_frame(1, 0x5, stream, &wire)));
        let fields: Vec<(String, String)> = case["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .flat_map(|h| h.as_object().expect("object").clone())
            .map(|(k, v)| (k, v.as_str().expect("string").to_owned()))
            .collect();
        expected.push(fields);
    }
    let (events, stats) = run_all(&Config::default(), &steps);
    assert_eq!(stats.hpack_errors.total(), 0, "{file}");
    let heads: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::ResponseHead { head, .. } => Some(head),
            _ => None,
        })
        .collect();
    assert_eq!(heads.len(), expected.len(), "{file}");
    for (head, fields) in heads.iter().zip(&expected) {
        let status = fields
            .iter()
            .find(|(k, _)| k == ":status")
            .expect(":status");
        assert_eq!(head.status.to_string(), status.1, "{file}");
        // The body is decoded for packs, so a known content-encoding and the content-length
        // are removed from the head.
        let decoded = fields.iter().any(|(k, v)| {
            k == "content-encoding" && ["gzip", "br", "deflate", "zstd"].contains(&v.as_str())
        });
        let want: Vec<(String, String)> = fields
            .iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .filter(|(k, _)| !(decoded && (k == "content-encoding" || k == "content-length")))
            .cloned()
            .collect();
        let got: Vec<(String, String)> = head
            .headers
            .iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        assert_eq!(got, want, "{file}");
    }
}

#[test]
fn hpack_test_case_stories_decode_exactly() {
    check_response_story("hpack-test-case/nghttp2-change-table-size_story_21.json");
    check_response_story("hpack-test-case/go-hpack_story_29.json");
}
