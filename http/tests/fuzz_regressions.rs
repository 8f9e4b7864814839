//! Inputs the fuzz targets once crashed on (`http/fuzz/regressions/<target>/`), run through the
//! same code as the targets: each must now pass.

#[path = "../fuzz/fuzz_targets/script.rs"]
mod script;

#[path = "../fuzz/fuzz_targets/joined.rs"]
mod joined;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = format!("{}/fuzz/regressions/{target}", env!("CARGO_MANIFEST_DIR"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("readable"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn http1_regressions() {
    for (name, data) in inputs("http1") {
        eprintln!("http1/{name}");
        script::run(b"GET / HTTP/1.1\r\n\r\n", &data);
    }
}

#[test]
fn http2_regressions() {
    let inputs = inputs("http2");
    assert!(!inputs.is_empty());
    for (name, data) in inputs {
        eprintln!("http2/{name}");
        script::run(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &data);
    }
}

#[test]
fn h2_joined_regressions() {
    for (name, data) in inputs("h2_joined") {
        eprintln!("h2_joined/{name}");
        joined::run(&data);
    }
}

#[test]
fn har_regressions() {
    for (name, data) in inputs("har") {
        eprintln!("har/{name}");
        if let Ok(text) = std::str::from_utf8(&data) {
            let _ = taskless_http::har::exchanges_from_har_str(text, 1 << 16);
        }
    }
}
