//! The fixture checker (`pack check`) and the listing (`pack list`).

mod support;

use serde_json::json;
use support::{Behavior, captures, config, manifest, module, write_pack};
use taskless_pack_runtime::{CheckError, RuntimeConfig, check_fixture, list_packs};

fn stripe_like() -> Vec<u8> {
    module(&[
        (
            "pre",
            Behavior::IfInput(
                "\"idempotency-key\",\"abc\"".into(),
                Box::new(captures(json!({"idempotencyKey": "abc"}))),
                Box::new(Behavior::Output(String::new())),
            ),
        ),
        (
            "post",
            Behavior::IfInput(
                "card_error".into(),
                Box::new(captures(json!({"errorType": "card_error", "status": 402}))),
                Box::new(Behavior::Output(String::new())),
            ),
        ),
    ])
}

#[test]
fn fixture_tests_pass_and_fail_per_test_over_the_ndjson_lines() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut m = manifest("stripe", None);
    m["permissions"] = json!({"body": true});
    let dir = write_pack(root.path(), "stripe", &m, &config(), &stripe_like());
    let fixture = root.path().join("fixture.json");
    std::fs::write(
        &fixture,
        json!({
            "request": {"method": "POST", "url": "https://api.stripe.com/v1/charges",
                        "headers": [["Idempotency-Key", "abc"]], "body": {"amount": 1}},
            "response": {"status": 402, "statusText": "Payment Required",
                         "headers": [["Content-Type", "application/json"]],
                         "body": {"error": {"type": "card_error"}}},
            "tests": [
                {"name": "key", "test": "$[*].dimensions[?(@.name == 'stripe/idempotencyKey' && @.value == 'abc')]"},
                {"name": "error", "test": "$[*].dimensions[?(@.name == 'stripe/errorType' && @.value == 'card_error')]"},
                {"name": "status", "test": "$[*].dimensions[?(@.name == 'stripe/status' && @.value == '402')]"},
                {"name": "wrong", "test": "$[*].dimensions[?(@.name == 'stripe/status' && @.value == '200')]"},
                {"name": "broken", "test": "$[?("}
            ]
        })
        .to_string(),
    )
    .expect("write fixture");
    let report = check_fixture(
        &fixture,
        &dir.join("manifest.json"),
        &dir.join("pack.wasm"),
        &RuntimeConfig::default(),
    )
    .expect("check runs");
    assert_eq!(report.pack, "stripe@1.0.0");
    let outcome: Vec<_> = report
        .results
        .iter()
        .map(|r| (r.name.as_str(), r.passed))
        .collect();
    assert_eq!(
        outcome,
        vec![
            ("key", true),
            ("error", true),
            ("status", true),
            ("wrong", false),
            ("broken", false)
        ]
    );
    assert!(report.results[4].error.is_some());
    assert!(!report.passed());
    assert_eq!(report.lines.len(), 1);
    assert_eq!(report.stats.failures_total(), 0);
    assert_eq!(report.lines[0].request_id.len(), 32);
}

#[test]
fn a_missing_fixture_or_broken_pack_is_an_error() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = write_pack(
        root.path(),
        "p",
        &manifest("p", None),
        &config(),
        b"not wasm",
    );
    let fixture = root.path().join("fixture.json");
    let err = check_fixture(
        &fixture,
        &dir.join("manifest.json"),
        &dir.join("pack.wasm"),
        &RuntimeConfig::default(),
    );
    assert!(matches!(err, Err(CheckError::Fixture { .. })));
    std::fs::write(
        &fixture,
        json!({"request": {"method": "GET", "url": "https://h/"}, "response": {"status": 200}, "tests": []}).to_string(),
    )
    .expect("write");
    let err = check_fixture(
        &fixture,
        &dir.join("manifest.json"),
        &dir.join("pack.wasm"),
        &RuntimeConfig::default(),
    );
    assert!(matches!(err, Err(CheckError::Pack(_))), "{err:?}");
}

#[test]
fn list_shows_loaded_and_refused_packs() {
    let root = tempfile::tempdir().expect("tempdir");
    write_pack(
        root.path(),
        "a",
        &manifest("a", None),
        &config(),
        &stripe_like(),
    );
    write_pack(root.path(), "b", &manifest("b", None), &config(), b"junk");
    let listing = list_packs(root.path(), &RuntimeConfig::default()).expect("list");
    assert_eq!(listing.packs.len(), 1);
    assert_eq!(listing.packs[0].id, "a@1.0.0");
    assert_eq!(listing.refused.len(), 1);
    let v = serde_json::to_value(&listing).expect("serializable");
    assert_eq!(v["packs"][0]["methods"], json!(["pre", "post"]));
    assert_eq!(v["refused"][0]["pack"], json!("b@1.0.0"));
}
