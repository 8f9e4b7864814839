//! Finding and loading packs; broken packs are refused with a reason and the others load.

mod support;

use serde_json::json;
use sha2::{Digest, Sha256};
use support::{Behavior, captures, config, manifest, module, write_pack};
use taskless_pack_runtime::{LoadFailure, Method, PackSet, RuntimeConfig, RuntimeError};

fn good_module() -> Vec<u8> {
    module(&[
        ("pre", captures(json!({"a": 1}))),
        ("post", Behavior::Output(String::new())),
    ])
}

#[test]
fn broken_packs_are_refused_with_their_reason_and_the_rest_load() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let wasm = good_module();
    let sha = hex::encode(Sha256::digest(&wasm));

    // Loads: plain, scoped, and with a matching signature (upper-case hex is fine).
    write_pack(
        r,
        ".taskless/core@1.0.0",
        &manifest("core", None),
        &config(),
        &wasm,
    );
    let mut signed = config();
    signed["url"]["signature"] = json!(sha.to_uppercase());
    write_pack(
        r,
        ".taskless/@acme/signed@1.0.0",
        &manifest("@acme/signed", None),
        &signed,
        &wasm,
    );

    // Refused, one reason each.
    let mut wrong = config();
    wrong["url"]["signature"] = json!("00".repeat(32));
    write_pack(
        r,
        ".taskless/tampered@1.0.0",
        &manifest("tampered", None),
        &wrong,
        &wasm,
    );
    write_pack(
        r,
        ".taskless/badwasm@1.0.0",
        &manifest("badwasm", None),
        &config(),
        b"\0asm\x01\0\0\0garbage",
    );
    write_pack(
        r,
        ".taskless/nochunk@1.0.0",
        &manifest("nochunk", Some(&["chunk"])),
        &config(),
        &wasm,
    );
    write_pack(
        r,
        ".taskless/dup@1.0.0",
        &manifest("core", None),
        &config(),
        &wasm,
    );
    let mut old = manifest("old", None);
    old["schema"] = json!("pre1");
    write_pack(r, ".taskless/old@1.0.0", &old, &config(), &wasm);
    let noconfig = write_pack(
        r,
        ".taskless/noconfig@1.0.0",
        &manifest("noconfig", None),
        &config(),
        &wasm,
    );
    std::fs::remove_file(noconfig.join("config.json")).expect("rm");
    let nowasm = write_pack(
        r,
        ".taskless/nowasm@1.0.0",
        &manifest("nowasm", None),
        &config(),
        &wasm,
    );
    std::fs::remove_file(nowasm.join("pack.wasm")).expect("rm");
    let badjson = write_pack(
        r,
        ".taskless/badjson@1.0.0",
        &manifest("badjson", None),
        &config(),
        &wasm,
    );
    std::fs::write(badjson.join("manifest.json"), "{ not json").expect("write");
    let unknown_import = wat::parse_str(
        r#"(module (import "extism:host/env" "no_such_function" (func (param i64)))
                   (func (export "pre") (result i32) (i32.const 0)))"#,
    )
    .expect("wat");
    write_pack(
        r,
        ".taskless/linkfail@1.0.0",
        &manifest("linkfail", None),
        &config(),
        &unknown_import,
    );

    let (set, refused) = PackSet::load_dir(r, &RuntimeConfig::default()).expect("dir usable");
    let ids: Vec<_> = set.packs().iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, vec!["@acme/signed@1.0.0", "core@1.0.0"]);
    assert_eq!(set.packs()[1].sha256, sha);
    assert_eq!(set.packs()[1].methods, vec![Method::Pre, Method::Post]);

    let reason = |folder: &str| {
        refused
            .iter()
            .find(|e| e.dir.ends_with(folder))
            .unwrap_or_else(|| panic!("{folder} not refused: {refused:?}"))
            .reason
            .clone()
    };
    assert_eq!(refused.len(), 9, "{refused:#?}");
    assert!(
        matches!(reason("tampered@1.0.0"), LoadFailure::Signature { actual, .. } if actual == sha)
    );
    assert!(matches!(reason("badwasm@1.0.0"), LoadFailure::Module(_)));
    assert_eq!(reason("nochunk@1.0.0"), LoadFailure::MissingExport("chunk"));
    assert_eq!(
        reason("dup@1.0.0"),
        LoadFailure::Duplicate("core@1.0.0".into())
    );
    assert_eq!(reason("old@1.0.0"), LoadFailure::Schema("pre1".into()));
    assert!(matches!(
        reason("noconfig@1.0.0"),
        LoadFailure::Read {
            file: "config.json",
            ..
        }
    ));
    assert!(matches!(
        reason("nowasm@1.0.0"),
        LoadFailure::Read {
            file: "pack.wasm",
            ..
        }
    ));
    assert!(matches!(
        reason("badjson@1.0.0"),
        LoadFailure::Json {
            file: "manifest.json",
            ..
        }
    ));
    assert!(
        matches!(reason("linkfail@1.0.0"), LoadFailure::Module(m) if m.contains("no_such_function"))
    );
}

#[test]
fn methods_absent_means_pre_and_post_when_exported() {
    let root = tempfile::tempdir().expect("tempdir");
    let only_post = module(&[("post", Behavior::Output(String::new()))]);
    write_pack(
        root.path(),
        "p",
        &manifest("p", None),
        &config(),
        &only_post,
    );
    let (set, refused) = PackSet::load_dir(root.path(), &RuntimeConfig::default()).expect("dir");
    assert!(refused.is_empty());
    assert_eq!(set.packs()[0].methods, vec![Method::Post]);
}

#[test]
fn an_unusable_directory_is_an_error_and_an_empty_one_is_not() {
    let root = tempfile::tempdir().expect("tempdir");
    let missing = root.path().join("missing");
    assert!(matches!(
        PackSet::load_dir(&missing, &RuntimeConfig::default()),
        Err(RuntimeError::PackDir { .. })
    ));
    let file = root.path().join("file");
    std::fs::write(&file, "x").expect("write");
    assert!(matches!(
        PackSet::load_dir(&file, &RuntimeConfig::default()),
        Err(RuntimeError::NotADirectory(_))
    ));
    let (set, refused) = PackSet::load_dir(root.path(), &RuntimeConfig::default()).expect("empty");
    assert!(set.packs().is_empty() && refused.is_empty());
}

fn list(p: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            out.push(e.path().display().to_string());
            out.extend(list(&e.path()));
        }
    }
    out
}

#[test]
fn the_compile_cache_is_written_once_and_reused_by_later_workers_and_loads() {
    let root = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("state dir");
    write_pack(
        root.path(),
        "p",
        &manifest("p", None),
        &config(),
        &good_module(),
    );
    let rc = RuntimeConfig {
        cache_dir: Some(state.path().join("cache")),
        ..RuntimeConfig::default()
    };
    let (set, _) = PackSet::load_dir(root.path(), &rc).expect("dir");
    // Compiled modules are the files without a dot in their name (wasmtime keeps usage
    // statistics in `.stats` files beside them). A cache miss writes the module again through
    // a rename, which gives it a new inode; a hit leaves the file alone.
    let modules = || {
        use std::os::unix::fs::MetadataExt as _;
        let mut found: Vec<(String, u64)> = list(&state.path().join("cache").join("wasmtime"))
            .into_iter()
            .filter(|p| {
                let path = std::path::Path::new(p);
                path.is_file()
                    && !path
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().contains('.'))
            })
            .map(|p| {
                let ino = std::fs::metadata(&p).expect("stat").ino();
                (p, ino)
            })
            .collect();
        found.sort();
        found
    };
    let after_load = modules();
    // The pack and Extism's kernel module.
    assert_eq!(after_load.len(), 2, "compiled code was cached");
    let _w1 = set.worker().expect("first worker");
    let _w2 = set.worker().expect("second worker");
    let (_again, _) = PackSet::load_dir(root.path(), &rc).expect("restart");
    assert_eq!(modules(), after_load, "later compiles read the cache back");
}
