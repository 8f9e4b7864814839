//! Test packs built by the test suite: WAT modules importing the Extism kernel (and WASI when a
//! behaviour needs it), written to pack folders with a manifest and a config.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use taskless_pack_runtime::{RequestView, ResponseView, Timing};

/// What one export of a test pack does.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Returns this text as output.
    Output(String),
    /// Returns `{"context": <its whole input>}`, so the test can read the input back.
    Echo,
    /// Loops forever.
    Loop,
    /// Executes `unreachable`.
    Trap,
    /// Grows memory until refused.
    MemoryBomb,
    /// Returns this many zero bytes.
    HugeOutput(u64),
    /// Reports an error through `error_set` and returns 1.
    Error(String),
    /// Makes an Extism HTTP request to this URL, then outputs `{}`.
    Http(String),
    /// Calls WASI functions (clock, random, file open, stdout write, poll) and captures errnos.
    WasiProbe,
    /// Busy-waits on the WASI monotonic clock for this many milliseconds, then outputs the text.
    SpinMs(u64, String),
    /// Runs the first behaviour when the input contains the text, else the second.
    IfInput(String, Box<Behavior>, Box<Behavior>),
}

impl Behavior {
    fn wasi(&self) -> bool {
        match self {
            Behavior::WasiProbe | Behavior::SpinMs(..) => true,
            Behavior::IfInput(_, a, b) => a.wasi() || b.wasi(),
            _ => false,
        }
    }
}

/// Output helper: `{"capture": {...}}`.
pub fn captures(v: Value) -> Behavior {
    Behavior::Output(json!({ "capture": v }).to_string())
}

struct Gen {
    data: Vec<u8>,
}

const DATA_BASE: usize = 4096;

impl Gen {
    /// Puts bytes in the data segment and returns their address.
    fn bytes(&mut self, b: &[u8]) -> (usize, usize) {
        let at = DATA_BASE + self.data.len();
        self.data.extend_from_slice(b);
        (at, b.len())
    }

    fn code(&mut self, b: &Behavior) -> String {
        match b {
            Behavior::Output(text) => {
                let (p, l) = self.bytes(text.as_bytes());
                format!("(call $output_const (i32.const {p}) (i32.const {l})) (i32.const 0)")
            }
            Behavior::Echo => "(call $echo) (i32.const 0)".into(),
            Behavior::Loop => "(loop $l (br $l)) (i32.const 0)".into(),
            Behavior::Trap => "unreachable".into(),
            Behavior::MemoryBomb => "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (i32.const 0)".into(),
            Behavior::HugeOutput(n) => {
                format!("(call $output_set (call $alloc (i64.const {n})) (i64.const {n})) (i32.const 0)")
            }
            Behavior::Error(msg) => {
                let (p, l) = self.bytes(msg.as_bytes());
                format!("(call $error_set (call $to_kernel (i32.const {p}) (i32.const {l}))) (i32.const 1)")
            }
            Behavior::Http(url) => {
                let req = json!({"url": url, "method": "GET"}).to_string();
                let (p, l) = self.bytes(req.as_bytes());
                let (op, ol) = self.bytes(b"{}");
                format!(
                    "(drop (call $http_request (call $to_kernel (i32.const {p}) (i32.const {l})) (i64.const 0))) \
                     (call $output_const (i32.const {op}) (i32.const {ol})) (i32.const 0)"
                )
            }
            Behavior::WasiProbe => {
                let template = r#"{"capture":{"clock":"XX","random":"XX","open":"XX","write":"XX","poll":"XX","timeok":"XX"}}"#;
                let (t, tl) = self.bytes(template.as_bytes());
                let slot = |key: &str| {
                    let needle = format!("\"{key}\":\"");
                    t + template.find(&needle).expect("key in template") + needle.len()
                };
                let (path, path_len) = self.bytes(b"etc/passwd");
                let (hello, hello_len) = self.bytes(b"hello\n");
                format!(
                    "(call $put2 (i32.const {clock}) (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 0)))
                     (call $put2 (i32.const {timeok}) (i64.gt_u (i64.load (i32.const 0)) (i64.const 1600000000000000000)))
                     (call $put2 (i32.const {random}) (call $random_get (i32.const 16) (i32.const 8)))
                     (call $put2 (i32.const {open}) (call $path_open (i32.const 3) (i32.const 0) (i32.const {path}) (i32.const {path_len})
                        (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 32)))
                     (i32.store (i32.const 48) (i32.const {hello}))
                     (i32.store (i32.const 52) (i32.const {hello_len}))
                     (call $put2 (i32.const {write}) (call $fd_write (i32.const 1) (i32.const 48) (i32.const 1) (i32.const 40)))
                     (i64.store (i32.const 256) (i64.const 0))
                     (i32.store8 (i32.const 264) (i32.const 0))
                     (i32.store (i32.const 272) (i32.const 1))
                     (i64.store (i32.const 280) (i64.const 5000000000))
                     (i64.store (i32.const 288) (i64.const 0))
                     (i32.store16 (i32.const 296) (i32.const 0))
                     (call $put2 (i32.const {poll}) (call $poll_oneoff (i32.const 256) (i32.const 512) (i32.const 1) (i32.const 600)))
                     (call $output_const (i32.const {t}) (i32.const {tl})) (i32.const 0)",
                    clock = slot("clock"),
                    timeok = slot("timeok"),
                    random = slot("random"),
                    open = slot("open"),
                    write = slot("write"),
                    poll = slot("poll"),
                )
            }
            Behavior::SpinMs(ms, text) => {
                let (p, l) = self.bytes(text.as_bytes());
                let ns = ms * 1_000_000;
                format!(
                    "(drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 0)))
                     (local.set $t0 (i64.load (i32.const 0)))
                     (loop $spin
                       (drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 0)))
                       (br_if $spin (i64.lt_u (i64.sub (i64.load (i32.const 0)) (local.get $t0)) (i64.const {ns}))))
                     (call $output_const (i32.const {p}) (i32.const {l})) (i32.const 0)"
                )
            }
            Behavior::IfInput(needle, yes, no) => {
                let (p, l) = self.bytes(needle.as_bytes());
                let yes = self.code(yes);
                let no = self.code(no);
                format!(
                    "(if (result i32) (call $input_contains (i32.const {p}) (i32.const {l}))
                       (then {yes}) (else {no}))"
                )
            }
        }
    }
}

const KERNEL: &str = r#"
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "error_set" (func $error_set (param i64)))
  (import "extism:host/env" "http_request" (func $http_request (param i64 i64) (result i64)))
"#;

const WASI: &str = r#"
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
"#;

const HELPERS: &str = r#"
  (func $copy (param $dst i64) (param $src i32) (param $len i32)
    (local $i i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (call $store_u8 (i64.add (local.get $dst) (i64.extend_i32_u (local.get $i)))
                      (i32.load8_u (i32.add (local.get $src) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next))))
  (func $to_kernel (param $src i32) (param $len i32) (result i64)
    (local $off i64)
    (local.set $off (call $alloc (i64.extend_i32_u (local.get $len))))
    (call $copy (local.get $off) (local.get $src) (local.get $len))
    (local.get $off))
  (func $output_const (param $src i32) (param $len i32)
    (call $output_set (call $to_kernel (local.get $src) (local.get $len)) (i64.extend_i32_u (local.get $len))))
  (func $echo
    (local $n i64) (local $off i64) (local $i i64)
    (local.set $n (call $input_length))
    (local.set $off (call $alloc (i64.add (local.get $n) (i64.const 12))))
    (call $copy (local.get $off) (i32.const 64) (i32.const 11))
    (block $done (loop $next
      (br_if $done (i64.ge_u (local.get $i) (local.get $n)))
      (call $store_u8 (i64.add (local.get $off) (i64.add (i64.const 11) (local.get $i)))
                      (call $input_load_u8 (local.get $i)))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $next)))
    (call $store_u8 (i64.add (local.get $off) (i64.add (i64.const 11) (local.get $n))) (i32.const 125))
    (call $output_set (local.get $off) (i64.add (local.get $n) (i64.const 12))))
  (func $input_contains (param $p i32) (param $l i32) (result i32)
    (local $n i64) (local $i i64) (local $j i32)
    (local.set $n (call $input_length))
    (block $no (loop $outer
      (br_if $no (i64.gt_u (i64.add (local.get $i) (i64.extend_i32_u (local.get $l))) (local.get $n)))
      (local.set $j (i32.const 0))
      (block $mismatch (loop $inner
        (if (i32.ge_u (local.get $j) (local.get $l)) (then (return (i32.const 1))))
        (br_if $mismatch (i32.ne
          (call $input_load_u8 (i64.add (local.get $i) (i64.extend_i32_u (local.get $j))))
          (i32.load8_u (i32.add (local.get $p) (local.get $j)))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $inner)))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $outer)))
    (i32.const 0))
  (func $put2 (param $at i32) (param $v i32)
    (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $v) (i32.const 10)) (i32.const 10))))
    (i32.store8 (i32.add (local.get $at) (i32.const 1)) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10)))))
"#;

/// A module with one export per `(name, behaviour)`.
pub fn module(exports: &[(&str, Behavior)]) -> Vec<u8> {
    let wasi = exports.iter().any(|(_, b)| b.wasi());
    let mut g = Gen { data: Vec::new() };
    let mut funcs = String::new();
    for (name, b) in exports {
        let body = g.code(b);
        let _ = writeln!(
            funcs,
            "  (func (export \"{name}\") (result i32) (local $t0 i64)\n    {body})"
        );
    }
    let mut data = String::new();
    for byte in &g.data {
        let _ = write!(data, "\\{byte:02x}");
    }
    let wat = format!(
        "(module\n{KERNEL}{wasi}  (memory (export \"memory\") 2)\n  (data (i32.const 64) \"{{\\22context\\22:\")\n  (data (i32.const {DATA_BASE}) \"{data}\")\n{HELPERS}{funcs})",
        wasi = if wasi { WASI } else { "" },
    );
    wat::parse_str(&wat).unwrap_or_else(|e| panic!("test module does not assemble: {e}\n{wat}"))
}

/// A minimal pre2 manifest.
pub fn manifest(name: &str, methods: Option<&[&str]>) -> Value {
    let mut m = json!({
        "schema": "pre2", "name": name, "version": "1.0.0",
        "description": format!("test pack {name}"),
        "permissions": {}
    });
    if let Some(methods) = methods {
        m["methods"] = json!(methods);
    }
    m
}

/// Writes a pack folder `root/folder` with the three files.
pub fn write_pack(
    root: &Path,
    folder: &str,
    manifest: &Value,
    config: &Value,
    wasm: &[u8],
) -> PathBuf {
    let dir = root.join(folder);
    std::fs::create_dir_all(&dir).expect("create pack dir");
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).expect("write manifest");
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write config");
    std::fs::write(dir.join("pack.wasm"), wasm).expect("write wasm");
    dir
}

/// An empty config.json.
pub fn config() -> Value {
    json!({"url": {"source": "local", "signature": ""}, "configuration": {}})
}

/// An exchange owned by the test, lent out as views.
pub struct Exchange {
    pub method: String,
    pub url: String,
    pub domain: String,
    pub path: String,
    pub req_headers: Vec<(String, String)>,
    pub req_body: Option<Vec<u8>>,
    pub status: u16,
    pub resp_headers: Vec<(String, String)>,
    pub resp_body: Option<Vec<u8>>,
    pub timing: Timing,
}

impl Exchange {
    pub fn new(domain: &str, path: &str) -> Self {
        Self {
            method: "POST".into(),
            url: format!("https://{domain}{path}?q=1"),
            domain: domain.into(),
            path: path.into(),
            req_headers: vec![
                ("content-type".into(), "application/json".into()),
                ("idempotency-key".into(), "abc".into()),
            ],
            req_body: Some(br#"{"amount":100}"#.to_vec()),
            status: 402,
            resp_headers: vec![
                ("content-type".into(), "application/json".into()),
                ("content-encoding".into(), "gzip".into()),
                ("content-length".into(), "42".into()),
                ("x-request-id".into(), "req_1".into()),
            ],
            resp_body: Some(br#"{"error":{"type":"card_error"}}"#.to_vec()),
            timing: Timing {
                request_start_unix_ns: 1_700_000_000_000_000_000,
                request_end_unix_ns: 1_700_000_000_001_500_000,
                response_start_unix_ns: Some(1_700_000_000_250_000_000),
                response_end_unix_ns: Some(1_700_000_000_300_001_000),
            },
        }
    }

    pub fn request(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            url: &self.url,
            domain: &self.domain,
            path: &self.path,
            headers: &self.req_headers,
            body: self.req_body.as_deref(),
            timing: self.timing,
            role: None,
        }
    }

    /// The request view as known before the response (no response timestamps).
    pub fn request_before_response(&self) -> RequestView<'_> {
        let mut r = self.request();
        r.timing.response_start_unix_ns = None;
        r.timing.response_end_unix_ns = None;
        r
    }

    pub fn response(&self) -> ResponseView<'_> {
        ResponseView {
            status: self.status,
            headers: &self.resp_headers,
            body: self.resp_body.as_deref(),
            complete: true,
        }
    }
}
