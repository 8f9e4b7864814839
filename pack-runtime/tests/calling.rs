//! Hook inputs, outputs, order, contexts and domain selection.

mod support;

use serde_json::{Value, json};
use support::{Behavior, Exchange, captures, config, manifest, module, write_pack};
use taskless_pack_runtime::{Method, PackSet, RuntimeConfig, Session};

fn load(root: &std::path::Path) -> PackSet {
    let (set, refused) = PackSet::load_dir(root, &RuntimeConfig::default()).expect("dir usable");
    assert!(refused.is_empty(), "unexpected refusals: {refused:?}");
    set
}

fn echo_module() -> Vec<u8> {
    module(&[
        ("pre", Behavior::Echo),
        ("chunk", Behavior::Echo),
        ("post", Behavior::Echo),
    ])
}

#[test]
fn pre_input_is_the_documented_document_without_body_for_packs_without_permission() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut cfg = config();
    cfg["configuration"] = json!({"enableX": true});
    let mut m = manifest("echo", None);
    m["fields"] = json!([
        {"name": "enableX", "type": "boolean", "description": "", "default": false},
        {"name": "label", "type": "string", "description": "", "default": "dflt"}
    ]);
    write_pack(root.path(), "echo@1.0.0", &m, &cfg, &echo_module());
    let set = load(root.path());
    let mut worker = set.worker().expect("worker");
    let ex = Exchange::new("api.stripe.com", "/v1/charges");
    let session = Session::start_with_request_id(
        &mut worker,
        &ex.request_before_response(),
        "0190aabbccdd7eeff00112233445566a".into(),
    );

    let input = session.context(0).expect("echo stored its input").clone();
    assert_eq!(
        input,
        json!({
            "requestId": "0190aabbccdd7eeff00112233445566a",
            "request": {
                "domain": "api.stripe.com",
                "path": "/v1/charges",
                "url": "https://api.stripe.com/v1/charges?q=1",
                "method": "POST",
                "headers": [["content-type", "application/json"], ["idempotency-key", "abc"]]
            },
            "context": {},
            "configuration": {"enableX": true, "label": "dflt"},
            "timing": {"requestStartMs": 1_700_000_000_000.0, "requestEndMs": 1_700_000_000_001.5}
        })
    );
    assert_eq!(set.stats()[0].calls, 1);
}

#[test]
fn post_gets_bodies_with_permission_filtered_response_headers_and_its_previous_context() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut m = manifest("echo", None);
    m["permissions"] =
        json!({"body": true, "environment": ["TASKLESS_TEST_ENV_SET", "TASKLESS_TEST_ENV_UNSET"]});
    // SAFETY: set before any other thread of this test binary reads this variable.
    unsafe { std::env::set_var("TASKLESS_TEST_ENV_SET", "visible") };
    write_pack(root.path(), "echo@1.0.0", &m, &config(), &echo_module());
    let set = load(root.path());
    assert_eq!(set.packs()[0].methods, vec![Method::Pre, Method::Post]);
    let mut worker = set.worker().expect("worker");
    let mut ex = Exchange::new("api.stripe.com", "/v1/charges");
    ex.req_body = Some(b"not json at all".to_vec());
    let mut session = Session::start(&mut worker, &ex.request_before_response());
    let pre_input = session.context(0).expect("pre echoed").clone();
    assert_eq!(pre_input["request"]["body"], json!("not json at all"));
    assert_eq!(
        pre_input["environment"],
        json!({"TASKLESS_TEST_ENV_SET": "visible"})
    );

    session.chunk(&mut worker, &ex.request(), &ex.response(), b"ignored");
    session.post(&mut worker, &ex.request(), &ex.response());
    let post_input = session.context(0).expect("post echoed").clone();
    // The context post received is exactly what pre returned (its own input).
    assert_eq!(post_input["context"], pre_input);
    assert_eq!(
        post_input["response"],
        json!({
            "status": 402,
            "headers": [["content-type", "application/json"], ["x-request-id", "req_1"]],
            "body": {"error": {"type": "card_error"}}
        })
    );
    assert_eq!(
        post_input["timing"],
        json!({"requestStartMs": 1_700_000_000_000.0, "requestEndMs": 1_700_000_000_001.5,
               "responseStartMs": 1_700_000_000_250.0, "responseEndMs": 1_700_000_000_300.001})
    );
    assert!(post_input.get("chunk").is_none());
    // chunk is not in the manifest's (default) methods, so it was never called.
    assert_eq!(set.stats()[0].calls, 2);
}

#[test]
fn the_manifest_bodies_key_keeps_bodies_out_of_calls_that_do_not_read_them() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut m = manifest("errs", Some(&["pre", "chunk", "post"]));
    m["permissions"] = json!({"body": true});
    m["bodies"] = json!({"request": "never", "response": "errors"});
    write_pack(root.path(), "errs", &m, &config(), &echo_module());
    let set = load(root.path());
    assert_eq!(
        set.packs()[0].bodies.response,
        taskless_pack_runtime::BodyWhen::Errors
    );
    let mut worker = set.worker().expect("worker");
    // One exchange per status: a success gets no body anywhere, a failure its response body
    // (and pieces) only; the request body never.
    for (status, response_body) in [(200, false), (402, true)] {
        let mut ex = Exchange::new("api.example.com", "/v1/x");
        ex.status = status;
        let mut session = Session::start(&mut worker, &ex.request_before_response());
        let pre = session.context(0).expect("pre echoed").clone();
        assert!(pre["request"].get("body").is_none(), "{pre}");
        session.chunk(&mut worker, &ex.request(), &ex.response(), b"piece");
        let chunk = session.context(0).expect("chunk echoed").clone();
        assert_eq!(chunk.get("chunk").is_some(), response_body, "{chunk}");
        session.post(&mut worker, &ex.request(), &ex.response());
        let post = session.context(0).expect("post echoed").clone();
        assert!(post["request"].get("body").is_none(), "{post}");
        assert_eq!(
            post["response"].get("body").is_some(),
            response_body,
            "status {status}: {post}"
        );
    }
}

#[test]
fn a_request_body_given_in_pre_only_stays_out_of_post() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut m = manifest("sent", Some(&["pre", "post"]));
    m["permissions"] = json!({"body": true});
    m["bodies"] = json!({"request": "pre"});
    write_pack(root.path(), "sent", &m, &config(), &echo_module());
    let set = load(root.path());
    let mut worker = set.worker().expect("worker");
    for status in [200, 500] {
        let mut ex = Exchange::new("api.example.com", "/v1/x");
        ex.status = status;
        let mut session = Session::start(&mut worker, &ex.request_before_response());
        let pre = session.context(0).expect("pre echoed").clone();
        assert_eq!(pre["request"]["body"], json!({"amount": 100}), "{pre}");
        session.post(&mut worker, &ex.request(), &ex.response());
        let post = session.context(0).expect("post echoed").clone();
        assert!(post["request"].get("body").is_none(), "{post}");
        assert_eq!(
            post["response"]["body"],
            json!({"error": {"type": "card_error"}}),
            "status {status}: the response body still comes (always): {post}"
        );
    }

    // The response body never goes into pre: asking for it there is refused, and says why.
    let bad = tempfile::tempdir().expect("tempdir");
    m["bodies"] = json!({"response": "pre"});
    write_pack(bad.path(), "sent", &m, &config(), &echo_module());
    let (set, refused) = PackSet::load_dir(bad.path(), &RuntimeConfig::default()).expect("dir");
    assert!(set.packs().is_empty());
    let why = format!("{refused:?}");
    assert!(
        why.contains("bodies.response cannot be \\\"pre\\\""),
        "{why}"
    );
}

#[test]
fn configuration_once_goes_into_the_first_call_of_each_instance_only() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut m = manifest("once", Some(&["pre"]));
    m["configurationOnce"] = json!(true);
    m["fields"] = json!([{"name": "level", "type": "number", "default": 3}]);
    let module = module(&[(
        "pre",
        Behavior::IfInput(
            "/bad".into(),
            Box::new(Behavior::Trap),
            Box::new(Behavior::Echo),
        ),
    )]);
    write_pack(root.path(), "once", &m, &config(), &module);
    let set = load(root.path());
    assert!(set.packs()[0].configuration_once);
    let mut worker = set.worker().expect("worker");
    let input_of = |worker: &mut taskless_pack_runtime::Worker, path: &str| {
        let ex = Exchange::new("api.example.com", path);
        let session = Session::start(worker, &ex.request_before_response());
        session.context(0).cloned()
    };
    let first = input_of(&mut worker, "/one").expect("echoed");
    assert_eq!(first["configuration"], json!({"level": 3}), "{first}");
    let second = input_of(&mut worker, "/two").expect("echoed");
    assert!(second.get("configuration").is_none(), "{second}");
    // A failed call drops the instance; the new one is given the configuration again.
    assert!(input_of(&mut worker, "/bad").is_none());
    let after = input_of(&mut worker, "/three").expect("echoed");
    assert_eq!(after["configuration"], json!({"level": 3}), "{after}");
    let then = input_of(&mut worker, "/four").expect("echoed");
    assert!(then.get("configuration").is_none(), "{then}");
    // Another worker has instances of its own.
    let mut other = set.worker().expect("worker");
    let fresh = input_of(&mut other, "/five").expect("echoed");
    assert_eq!(fresh["configuration"], json!({"level": 3}), "{fresh}");
}

#[test]
fn chunks_carry_base64_pieces_then_a_closing_call_before_post() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut m = manifest("sse", Some(&["chunk", "post"]));
    m["permissions"] = json!({"body": true});
    write_pack(root.path(), "sse", &m, &config(), &echo_module());
    let set = load(root.path());
    let mut worker = set.worker().expect("worker");
    let ex = Exchange::new("api.openai.com", "/v1/chat");
    let mut session = Session::start(&mut worker, &ex.request_before_response());
    assert!(
        session.context(0).is_none(),
        "pre is not listed, so not called"
    );
    session.chunk(&mut worker, &ex.request(), &ex.response(), b"data: 1\n\n");
    let first = session.context(0).expect("chunk echoed").clone();
    assert_eq!(first["chunk"], json!("ZGF0YTogMQoK"));
    assert_eq!(first["response"]["status"], json!(402));
    assert!(first["response"].get("body").is_none());
    // post without an explicit closing chunk: the runtime makes it first.
    session.post(&mut worker, &ex.request(), &ex.response());
    let post = session.context(0).expect("post echoed").clone();
    let closing = &post["context"];
    assert!(
        closing.get("chunk").is_none(),
        "closing chunk call has no piece"
    );
    assert_eq!(closing["context"], first);
    // pre skipped, chunk x2, post x1.
    assert_eq!(set.stats()[0].calls, 3);
}

#[test]
fn chunk_pieces_go_only_to_packs_allowed_to_see_bodies() {
    let root = tempfile::tempdir().expect("tempdir");
    write_pack(
        root.path(),
        "nobody",
        &manifest("nobody", Some(&["chunk"])),
        &config(),
        &echo_module(),
    );
    let set = load(root.path());
    let mut worker = set.worker().expect("worker");
    let ex = Exchange::new("h.example", "/");
    // pre is not listed, so starting calls nothing.
    let mut session = Session::start(&mut worker, &ex.request_before_response());
    session.chunk(&mut worker, &ex.request(), &ex.response(), b"secret");
    assert!(session.context(0).is_none());
    session.end_of_body(&mut worker, &ex.request(), &ex.response());
    let closing = session.context(0).expect("closing call made").clone();
    assert!(closing.get("chunk").is_none());
    assert!(!closing.to_string().contains("secret"));
    // A second closing call, a piece after it, or post do not call chunk again.
    session.end_of_body(&mut worker, &ex.request(), &ex.response());
    session.chunk(&mut worker, &ex.request(), &ex.response(), b"late");
    session.post(&mut worker, &ex.request(), &ex.response());
    session.post(&mut worker, &ex.request(), &ex.response());
    assert_eq!(set.stats()[0].calls, 1);
}

#[test]
fn captures_become_namespaced_dimensions_in_one_line() {
    let root = tempfile::tempdir().expect("tempdir");
    let core = module(&[
        ("pre", captures(json!({"domain": "d", "path/x": "/p"}))),
        ("post", captures(json!({"status": 402, "durationMs": 12.5}))),
    ]);
    let stripe = module(&[("pre", captures(json!({"idempotencyKey": "abc"})))]);
    write_pack(
        root.path(),
        "core",
        &manifest("core", None),
        &config(),
        &core,
    );
    write_pack(
        root.path(),
        "stripe",
        &manifest("stripe", Some(&["pre"])),
        &config(),
        &stripe,
    );
    let set = load(root.path());
    let mut worker = set.worker().expect("worker");
    let ex = Exchange::new("api.stripe.com", "/v1/charges");
    let mut session = Session::start(&mut worker, &ex.request_before_response());
    let id = session.request_id().to_string();
    session.post(&mut worker, &ex.request(), &ex.response());
    let line = session.into_line();
    let v: Value = serde_json::from_str(&line.to_json()).expect("json line");
    assert_eq!(
        v,
        json!({"requestId": id, "dimensions": [
            {"name": "core/domain", "value": "d"},
            {"name": "core/pathx", "value": "/p"},
            {"name": "stripe/idempotencyKey", "value": "abc"},
            {"name": "core/durationMs", "value": "12.5"},
            {"name": "core/status", "value": "402"}
        ]})
    );
}

#[test]
fn packs_outside_their_domains_are_not_called_and_counted_as_skipped() {
    let root = tempfile::tempdir().expect("tempdir");
    let m = manifest("stripe", None);
    let mut m_fields = m.clone();
    m_fields["fields"] = json!([{"name": "domains", "type": "string[]", "description": "", "default": ["api.stripe.com"]}]);
    let pack = module(&[
        ("pre", captures(json!({"hit": 1}))),
        ("post", captures(json!({"hit": 2}))),
    ]);
    write_pack(root.path(), "a-default", &m_fields, &config(), &pack);
    // The configuration overrides the field default with a wildcard.
    let mut cfg = config();
    cfg["configuration"] = json!({"domains": ["*.openai.com"]});
    let mut m2 = m_fields.clone();
    m2["name"] = json!("openai");
    write_pack(root.path(), "b-configured", &m2, &cfg, &pack);
    let set = load(root.path());
    assert_eq!(
        set.packs()[1].domains,
        Some(vec!["*.openai.com".to_string()])
    );
    let mut worker = set.worker().expect("worker");

    for (host, expect) in [
        ("api.stripe.com", vec!["stripe/hit"]),
        ("api.openai.com", vec!["openai/hit"]),
        ("example.com", vec![]),
    ] {
        let ex = Exchange::new(host, "/");
        let mut session = Session::start(&mut worker, &ex.request_before_response());
        session.post(&mut worker, &ex.request(), &ex.response());
        let names: Vec<_> = session
            .dimensions()
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(names, expect, "host {host}");
    }
    let stats = set.stats();
    assert_eq!((stats[0].calls, stats[0].skipped_domain), (2, 4));
    assert_eq!((stats[1].calls, stats[1].skipped_domain), (2, 4));
}
