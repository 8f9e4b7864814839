use super::*;
use serde_json::{Value, json};

fn input(value: Value) -> Input {
    Input::from_json(value.to_string().as_bytes()).expect("valid input")
}

fn flags(out: &Output) -> Vec<&str> {
    out.captures().keys().map(String::as_str).collect()
}

fn request(headers: Value, body: Value) -> Value {
    json!({"domain": "api.example.com", "path": "/v1/users", "url": "https://api.example.com/v1/users",
           "method": "POST", "headers": headers, "body": body})
}

#[test]
fn manifest_defaults_match_the_built_in_patterns() {
    let manifest: Value =
        serde_json::from_str(include_str!("../manifest.json")).expect("manifest is JSON");
    let fields = manifest["fields"].as_array().expect("fields");
    let default_of = |name: &str| {
        fields
            .iter()
            .find(|f| f["name"] == name)
            .map(|f| f["default"].clone())
            .unwrap_or(Value::Null)
    };
    for c in CATEGORIES {
        assert_eq!(
            default_of(&format!("{}Fields", c.field)),
            json!(c.names),
            "{}Fields",
            c.field
        );
        assert_eq!(
            default_of(&format!("{}Values", c.field)),
            json!(c.values),
            "{}Values",
            c.field
        );
    }
}

#[test]
fn every_default_pattern_compiles() {
    for c in CATEGORIES {
        for p in c.names.iter().chain(c.values) {
            assert!(crate::matcher::check_pattern(p).is_ok(), "{}: {p}", c.key);
        }
        assert_eq!(
            c.values.len(),
            c.windows.len(),
            "{}: one window per value pattern",
            c.key
        );
    }
}

#[test]
fn a_json_request_is_flagged_by_field_and_value_without_the_data() {
    let body = json!({"user": {"email": "ada@example.com", "firstName": "Ada", "phone": "+442071838750",
        "address": {"line1": "12 Downing Street", "city": "London", "postal_code": "SW1A 2AA"},
        "ssn": "078-05-1120", "dob": "1815-12-10", "card_number": "4242 4242 4242 4242"},
        "note": "call me on (415) 555-0132", "client_ip": "203.0.113.7"});
    let out = pre(&input(
        json!({"request": request(json!([["content-type", "application/json"]]), body)}),
    ));
    assert_eq!(
        flags(&out),
        [
            "address.send.body.field",
            "address.send.body.value",
            "birthdate.send.body.field",
            "creditcard.send.body.field",
            "creditcard.send.body.value",
            "email.send.body.field",
            "email.send.body.value",
            "identification.send.body.field",
            "identification.send.body.value",
            "ip.send.body.field",
            "ip.send.body.value",
            "name.send.body.field",
            "phone.send.body.field",
            "phone.send.body.value",
        ]
    );
    assert!(out.captures().values().all(|v| *v == json!(1)));
    let text = out.to_json().expect("json");
    for secret in ["ada@example.com", "078-05-1120", "4242", "203.0.113.7"] {
        assert!(!text.contains(secret), "{secret} must never be captured");
    }
}

#[test]
fn empty_or_null_fields_are_not_flagged() {
    let body = json!({"email": null, "phone": "", "first_name": [], "items": [{"name": "widget"}]});
    let out = pre(&input(json!({"request": request(json!([]), body)})));
    assert!(out.is_empty(), "{:?}", flags(&out));
}

#[test]
fn headers_are_checked_by_name_and_value() {
    let headers = json!([
        ["x-forwarded-for", "198.51.100.4"],
        ["from", "ops@example.org"],
        ["accept", "*/*"]
    ]);
    let out = pre(&input(json!({"request": request(headers, Value::Null)})));
    assert_eq!(
        flags(&out),
        [
            "email.send.header.value",
            "ip.send.header.field",
            "ip.send.header.value"
        ]
    );
}

#[test]
fn responses_are_flagged_as_receive() {
    let out = post(&input(json!({"request": request(json!([]), Value::Null),
        "response": {"status": 200, "headers": [["content-type", "application/json"]],
                     "body": {"data": [{"customer_email": "bob@example.net"}]}}})));
    assert_eq!(
        flags(&out),
        ["email.receive.body.field", "email.receive.body.value"]
    );
}

#[test]
fn form_bodies_are_checked_by_name_and_value_and_text_by_value() {
    let form = request(
        json!([["content-type", "application/x-www-form-urlencoded"]]),
        json!("To=%2B14155552346&Body=Your+code+is+1234&email=x%40y.io"),
    );
    assert_eq!(
        flags(&pre(&input(json!({"request": form})))),
        [
            "email.send.body.field",
            "email.send.body.value",
            "phone.send.body.value"
        ]
    );
    let text = request(
        json!([["content-type", "text/plain"]]),
        json!("contact: 4111-1111-1111-1111 please"),
    );
    assert_eq!(
        flags(&pre(&input(json!({"request": text})))),
        ["creditcard.send.body.value"]
    );
}

#[test]
fn configured_patterns_replace_the_defaults_and_bad_ones_are_skipped() {
    let config = json!({"additionalFields": ["(?i)^employee_?id$", "([unclosed"], "additionalValues": ["\\bEMP-\\d{6}\\b"],
                        "emailValues": []});
    let body = json!({"employeeId": "EMP-123456", "contact": "ada@example.com"});
    let out = pre(&input(
        json!({"request": request(json!([]), body), "configuration": config}),
    ));
    assert_eq!(
        flags(&out),
        ["additional.send.body.field", "additional.send.body.value"]
    );
}

#[test]
fn switches_and_domains_apply() {
    let headers = json!([["x-real-ip", "203.0.113.9"]]);
    let body = json!({"email": "a@b.co"});
    let out = pre(&input(
        json!({"request": request(headers.clone(), body.clone()),
        "configuration": {"checkHeaders": false}}),
    ));
    assert_eq!(
        flags(&out),
        ["email.send.body.field", "email.send.body.value"]
    );
    let out = pre(&input(
        json!({"request": request(headers.clone(), body.clone()),
        "configuration": {"checkBody": false}}),
    ));
    assert_eq!(
        flags(&out),
        ["ip.send.header.field", "ip.send.header.value"]
    );
    let out = pre(&input(
        json!({"request": request(headers, body), "configuration": {"domains": ["*.stripe.com"]}}),
    ));
    assert!(out.is_empty());
}

#[test]
fn ordinary_traffic_is_not_flagged() {
    let headers = json!([
        ["content-type", "application/json"],
        ["user-agent", "acme-sdk/1.2.3 node/20.11.1"],
        ["date", "Tue, 24 Nov 2026 11:32:43 GMT"],
        ["x-request-id", "req_8Kd72hYq0sLmQe"]
    ]);
    let body = json!({"id": "ch_3MtwBwLkdIwHu7ix28a3tqPa", "amount": 2000, "currency": "usd", "created": 1700000000,
                      "name": "Premium plan", "version": "10.4.2", "items": [{"sku": "A-100", "qty": 3}]});
    let out = post(&input(json!({"request": request(json!([]), Value::Null),
        "response": {"status": 200, "headers": headers, "body": body}})));
    assert!(out.is_empty(), "{:?}", flags(&out));
}

#[test]
fn large_bodies_are_checked_up_to_the_budget_and_say_so() {
    let body = json!({"a": "x".repeat(100), "b": "ada@example.com"});
    let out = pre(&input(
        json!({"request": request(json!([]), body.clone()), "configuration": {"maxScanBytes": 50}}),
    ));
    assert_eq!(flags(&out), ["send.truncated"]);
    let out = pre(&input(json!({"request": request(json!([]), body)})));
    assert_eq!(flags(&out), ["email.send.body.value"]);
}

#[test]
fn prefilters_only_apply_to_the_default_patterns() {
    // A configured value pattern that needs no digit still runs on digit-free values.
    let config = json!({"additionalValues": ["(?i)confidential"]});
    let out = pre(&input(
        json!({"request": request(json!([]), json!({"memo": "CONFIDENTIAL plan"})), "configuration": config}),
    ));
    assert_eq!(flags(&out), ["additional.send.body.value"]);
}

#[test]
fn the_manifest_budget_default_is_the_built_in_one() {
    let manifest: Value =
        serde_json::from_str(include_str!("../manifest.json")).expect("manifest is JSON");
    let field = manifest["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == "maxScanBytes"))
        .cloned();
    assert_eq!(
        field.map(|f| f["default"].clone()),
        Some(json!(super::DEFAULT_MAX_SCAN_BYTES))
    );
}

#[test]
fn names_count_against_the_budget_once_each() {
    // Two long distinct names exhaust a small budget before `email` is reached...
    let long = |c: char| c.to_string().repeat(30);
    let body = json!([{"x": 1, "y": {long('a'): 1, long('b'): 2, "email": "q"}}]);
    let config = json!({"maxScanBytes": 40, "emailValues": []});
    let out = pre(&input(
        json!({"request": request(json!([]), body), "configuration": config}),
    ));
    assert_eq!(flags(&out), ["send.truncated"]);
    // ...but a name repeated across many objects is paid for only once.
    let items: Vec<Value> = (0..50).map(|_| json!({long('a'): true})).collect();
    let body = json!({"items": items, "email": "q"});
    let config = json!({"maxScanBytes": 45, "emailValues": []});
    let out = pre(&input(
        json!({"request": request(json!([]), body), "configuration": config}),
    ));
    assert_eq!(flags(&out), ["email.send.body.field"]);
}

fn credential_flags(out: &Output) -> Vec<&str> {
    flags(out)
        .into_iter()
        .filter(|f| f.starts_with("credential."))
        .collect()
}

#[test]
fn every_recognised_credential_format_is_flagged_as_a_value() {
    let tokens = [
        "sk_live_51HxQpLkdIwHu7ixExAmPlEkEy00",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        "rk_live_51HxQpLkdIwHu7ixRestricted",
        "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ",
        "sk-ant-api03-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ",
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "AKIAIOSFODNN7EXAMPLE",
        "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy",
        "xoxp-17653672481-19874698323-19874698324-pdFZKVeTuE8sk7oO",
        "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "Bearer 9b2f1c7e4d8a6b3f0e5c9a7d1b4e8f2a",
    ];
    for token in tokens {
        for value in [token.to_owned(), format!("note: {token}, thanks")] {
            let out = pre(&input(
                json!({"request": request(json!([]), json!({"memo": value}))}),
            ));
            assert_eq!(
                credential_flags(&out),
                ["credential.send.body.value"],
                "{value}"
            );
        }
    }
}

#[test]
fn look_alikes_of_credentials_are_not_flagged() {
    let values = [
        "cus_NffrFeUfNV2Hib",
        "price_1MoBy5LkdIwHu7ixZhnattbh",
        "req_8Kd72hYq0sLmQe",
        "2f0e3c1a-6b1e-4c4b-9d55-0f1e8e7d2a11",
        "task-abcdefghijklmnopqrstuvwxyz",
        "sk-short",
        "sk_live_short",
        "AKIAIOSFODNN7EXAMPLEX",
        "ghp_tooShort",
        "eyJhbGciOiJIUzI1NiJ9",
        "bearer of good news",
        "https://example.com/static/app.3f9c2b7e1d4a6f8e0b5c.bundle.min.js",
    ];
    for value in values {
        let out = pre(&input(
            json!({"request": request(json!([]), json!({"memo": value}))}),
        ));
        assert!(
            credential_flags(&out).is_empty(),
            "{value}: {:?}",
            flags(&out)
        );
    }
}

#[test]
fn credentials_are_flagged_where_they_do_not_belong_and_not_in_auth_headers() {
    let key = "sk_live_51HxQpLkdIwHu7ixExAmPlEkEy00";
    let auth_headers = json!([
        ["authorization", format!("Bearer {key}")],
        ["x-api-key", "sk-ant-api03-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ"],
        [
            "cookie",
            "session=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N"
        ]
    ]);
    let out = pre(&input(
        json!({"request": request(auth_headers.clone(), Value::Null)}),
    ));
    assert!(flags(&out).is_empty(), "{:?}", flags(&out));

    // The same key in a header that is not meant for it.
    let out = pre(&input(
        json!({"request": request(json!([["x-debug", format!("key={key}")]]), Value::Null)}),
    ));
    assert_eq!(flags(&out), ["credential.send.header.value"]);

    // In the query string, by name and by value.
    let mut req = request(auth_headers, Value::Null);
    req["url"] = json!(format!(
        "https://api.example.com/v1/users?limit=1&api_key={key}"
    ));
    assert_eq!(
        flags(&pre(&input(json!({"request": req})))),
        ["credential.send.query.field", "credential.send.query.value"]
    );

    // In a response body: a token endpoint's answer.
    let out = post(&input(json!({"request": request(json!([]), Value::Null),
        "response": {"status": 200, "headers": [["content-type", "application/json"]],
            "body": {"access_token": "ya29.a0AfH6SMBx3Zk9Qp2LmN4rT6vW8yZ1bC3dE5fG7hJ9", "token_type": "Bearer",
                     "expires_in": 3599}}})));
    assert_eq!(credential_flags(&out), ["credential.receive.body.field"]);
}

#[test]
fn credential_headers_and_categories_are_configurable() {
    let headers = json!([[
        "x-service-token",
        "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"
    ]]);
    let out = pre(&input(
        json!({"request": request(headers.clone(), Value::Null)}),
    ));
    assert_eq!(flags(&out), ["credential.send.header.value"]);
    let out = pre(&input(
        json!({"request": request(headers.clone(), Value::Null),
        "configuration": {"credentialHeaders": ["X-Service-Token"]}}),
    ));
    assert!(flags(&out).is_empty());
    let out = pre(&input(json!({"request": request(headers, Value::Null),
        "configuration": {"credentialValues": []}})));
    assert!(flags(&out).is_empty());
}

#[test]
fn query_parameters_are_checked_like_fields_and_values() {
    let mut req = request(json!([]), Value::Null);
    req["url"] = json!(
        "https://api.stripe.com/v1/customers/search?query=email%3A%27jenny%40example.com%27&phone=%2B14155550123#x"
    );
    assert_eq!(
        flags(&pre(&input(json!({"request": req.clone()})))),
        [
            "email.send.query.value",
            "phone.send.query.field",
            "phone.send.query.value"
        ]
    );
    let out = pre(&input(
        json!({"request": req, "configuration": {"checkQuery": false}}),
    ));
    assert!(out.is_empty());
}
