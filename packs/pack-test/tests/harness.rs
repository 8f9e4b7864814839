//! The harness itself must catch broken packs and fixtures.

use std::path::PathBuf;

use serde_json::json;
use taskless_pack_kit::{Input, Output};
use taskless_pack_test::{HarnessError, PackUnderTest, check_fixture};

fn pre(input: &Input) -> Output {
    let mut out = Output::new();
    out.capture("method", input.request.method.as_str());
    out.set_context(json!({"seen": input.request.path}));
    out
}

/// Counts the body pieces it gets: differs with the piece size, which the harness must notice.
fn counting_chunk(input: &Input) -> Output {
    let mut out = Output::new();
    let n = input
        .context
        .get("pieces")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if input.chunk.is_some() {
        let mut ctx = input.context.clone();
        ctx.insert("pieces".into(), json!(n + 1));
        out.set_context(serde_json::Value::Object(ctx));
    } else {
        out.capture("pieces", n);
    }
    out
}

fn post(input: &Input) -> Output {
    let mut out = Output::new();
    out.capture_opt("status", input.status());
    // Context from pre reaches post.
    out.capture_opt(
        "seen",
        input
            .context
            .get("seen")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
    );
    out
}

fn temp_file(name: &str, content: &serde_json::Value) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pack-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, content.to_string()).expect("write");
    path
}

fn manifest(methods: &[&str]) -> PathBuf {
    temp_file(
        &format!("manifest-{}.json", methods.join("-")),
        &json!({"schema": "pre2", "name": "demo/x", "version": "1.0.0", "description": "d",
                "methods": methods, "permissions": {"body": true}}),
    )
}

fn fixture(name: &str, test: &str) -> PathBuf {
    temp_file(
        name,
        &json!({"request": {"method": "get", "url": "https://a.example/p?q=1", "headers": []},
                "response": {"status": 201, "headers": [], "body": "0123456789"},
                "tests": [{"name": "t", "test": test}]}),
    )
}

#[test]
fn a_matching_test_passes_and_context_flows_from_pre_to_post() {
    let pack = PackUnderTest::load(manifest(&["pre", "post"]), Some(pre), None, Some(post))
        .expect("loads");
    let line = check_fixture(
        &pack,
        &fixture(
            "ok.json",
            "$[*].dimensions[?(@.name == 'demo/x/seen' && @.value == '/p')]",
        ),
    )
    .expect("passes");
    assert_eq!(
        line["dimensions"][0],
        json!({"name": "demo/x/method", "value": "GET"})
    );
    assert_eq!(
        line["dimensions"][2],
        json!({"name": "demo/x/status", "value": "201"})
    );
}

#[test]
fn a_test_that_selects_nothing_fails() {
    let pack = PackUnderTest::load(manifest(&["pre", "post"]), Some(pre), None, Some(post))
        .expect("loads");
    let err = check_fixture(
        &pack,
        &fixture(
            "bad.json",
            "$[*].dimensions[?(@.name == 'demo/x/status' && @.value == '200')]",
        ),
    )
    .expect_err("must fail");
    assert!(matches!(err, HarnessError::Failed { .. }), "{err}");
}

#[test]
fn a_pack_whose_output_depends_on_piece_size_fails() {
    let pack =
        PackUnderTest::load(manifest(&["chunk"]), None, Some(counting_chunk), None).expect("loads");
    let err = check_fixture(
        &pack,
        &fixture(
            "pieces.json",
            "$[*].dimensions[?(@.name == 'demo/x/pieces')]",
        ),
    )
    .expect_err("piece counts differ between slicings");
    assert!(err.to_string().contains("pieces of"), "{err}");
}

#[test]
fn a_listed_method_without_a_hook_is_refused() {
    let err = PackUnderTest::load(manifest(&["pre", "chunk"]), Some(pre), None, None)
        .expect_err("refused");
    assert!(matches!(err, HarnessError::Manifest(_)), "{err}");
}

/// Captures which bodies each hook was given.
fn bodies_pre(input: &Input) -> Output {
    let mut out = Output::new();
    out.capture("preRequestBody", u8::from(input.request.body.is_some()));
    out
}

fn bodies_post(input: &Input) -> Output {
    let mut out = Output::new();
    out.capture("postRequestBody", u8::from(input.request.body.is_some()));
    out.capture(
        "postResponseBody",
        u8::from(input.response.as_ref().is_some_and(|r| r.body.is_some())),
    );
    out
}

#[test]
fn bodies_follow_the_manifest_bodies_setting_as_the_agent_gives_them() {
    let manifest = |bodies: serde_json::Value| {
        temp_file(
            &format!("manifest-bodies-{}.json", bodies.to_string().len()),
            &json!({"schema": "pre2", "name": "b", "version": "1.0.0", "description": "d",
                    "methods": ["pre", "post"], "permissions": {"body": true}, "bodies": bodies}),
        )
    };
    let exchange = |status: u16| {
        serde_json::from_value::<taskless_pack_test::Exchange>(json!({
            "request": {"method": "POST", "url": "https://a.example/p", "headers": [], "body": {"a": 1}},
            "response": {"status": status, "headers": [], "body": {"error": "e"}}
        }))
        .expect("exchange")
    };
    let given = |bodies: serde_json::Value, status: u16| {
        let pack = PackUnderTest::load(manifest(bodies), Some(bodies_pre), None, Some(bodies_post))
            .expect("loads");
        let dims = pack.run(&exchange(status)).expect("runs");
        [
            "b/preRequestBody",
            "b/postRequestBody",
            "b/postResponseBody",
        ]
        .map(|name| taskless_pack_test::as_map(&dims)[name] == "1")
    };
    // Absent: every body the permission allows.
    assert_eq!(given(json!(null), 200), [true, true, true]);
    let errors_only = json!({"request": "errors", "response": "errors"});
    assert_eq!(given(errors_only.clone(), 200), [false, false, false]);
    assert_eq!(given(errors_only, 500), [false, true, true]);
    let never = json!({"request": "never", "response": "always"});
    assert_eq!(given(never, 500), [false, false, true]);
}
