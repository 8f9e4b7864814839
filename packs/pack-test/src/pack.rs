//! A pack's manifest plus its native hook functions, run like the agent runs the Wasm exports.

use std::path::Path;

use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value, json};
use taskless_pack_kit::{Input, Output};

use crate::HarnessError;
use crate::exchange::Exchange;

/// A hook function, as a pack implements it.
pub type Hook = fn(&Input) -> Output;

/// One output dimension: `<pack>/<key>` and the value as a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dimension {
    /// `<pack name>/<capture key with "/" removed>`.
    pub name: String,
    /// The captured value as a string.
    pub value: String,
}

/// A pack under test.
#[derive(Debug, Clone)]
pub struct PackUnderTest {
    manifest: Value,
    pre: Option<Hook>,
    chunk: Option<Hook>,
    post: Option<Hook>,
}

/// Fixed timing given to every hook (Unix epoch ms): 1234.5 ms from first request byte to last
/// response byte, so packs that report latency have something real to compute with.
pub const TIMING: (f64, f64, f64, f64) = (
    1_700_000_000_000.0,
    1_700_000_000_010.0,
    1_700_000_001_200.0,
    1_700_000_001_234.5,
);

impl PackUnderTest {
    /// Reads `manifest.json` and pairs it with the pack's hook functions.
    pub fn load(
        manifest: impl AsRef<Path>,
        pre: Option<Hook>,
        chunk: Option<Hook>,
        post: Option<Hook>,
    ) -> Result<Self, HarnessError> {
        let path = manifest.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| HarnessError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let manifest: Value = serde_json::from_str(&text).map_err(|source| HarnessError::Json {
            path: path.display().to_string(),
            source,
        })?;
        let pack = Self {
            manifest,
            pre,
            chunk,
            post,
        };
        pack.validate()?;
        Ok(pack)
    }

    fn validate(&self) -> Result<(), HarnessError> {
        let m = &self.manifest;
        let bad = |why: &str| Err(HarnessError::Manifest(why.to_owned()));
        if m["schema"] != "pre2" {
            return bad("schema must be \"pre2\"");
        }
        for key in ["name", "version", "description"] {
            if !m[key].is_string() {
                return bad(&format!("{key} must be a string"));
            }
        }
        for method in self.methods() {
            let present = match method.as_str() {
                "pre" => self.pre.is_some(),
                "post" => self.post.is_some(),
                "chunk" => self.chunk.is_some(),
                other => return bad(&format!("unknown method {other:?}")),
            };
            if !present {
                return bad(&format!("method {method:?} is listed but has no hook"));
            }
        }
        if let Some(fields) = m.get("fields") {
            let Some(fields) = fields.as_array() else {
                return bad("fields must be an array");
            };
            for f in fields {
                let ty = f["type"].as_str().unwrap_or_default();
                let ok_type = ["string", "string[]", "number", "number[]", "boolean"].contains(&ty);
                if !f["name"].is_string() || !ok_type || !f["description"].is_string() {
                    return bad(&format!(
                        "field {f} needs name, description and a pre2 type"
                    ));
                }
                let default = &f["default"];
                let ok_default = match ty {
                    "string" => default.is_string(),
                    "number" => default.is_number(),
                    "boolean" => default.is_boolean(),
                    "string[]" => default
                        .as_array()
                        .is_some_and(|a| a.iter().all(Value::is_string)),
                    _ => default
                        .as_array()
                        .is_some_and(|a| a.iter().all(Value::is_number)),
                };
                if !ok_default {
                    return bad(&format!(
                        "field {} has a default that is not a {ty}",
                        f["name"]
                    ));
                }
            }
        }
        Ok(())
    }

    /// The manifest as read.
    pub fn manifest(&self) -> &Value {
        &self.manifest
    }

    /// The pack's name.
    pub fn name(&self) -> &str {
        self.manifest["name"].as_str().unwrap_or_default()
    }

    /// The hooks to call: the manifest's `methods`, or pre and post when absent.
    pub fn methods(&self) -> Vec<String> {
        match self.manifest.get("methods").and_then(Value::as_array) {
            Some(list) => list
                .iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect(),
            None => vec!["pre".to_owned(), "post".to_owned()],
        }
    }

    fn wants(&self, method: &str) -> bool {
        self.methods().iter().any(|m| m == method)
    }

    fn body_permitted(&self) -> bool {
        self.manifest["permissions"]["body"]
            .as_bool()
            .unwrap_or(false)
    }

    /// Whether `side`'s body (`request` or `response`) goes into a call of an exchange whose
    /// response has `status` (`None` in `pre`): with the body permission, as the manifest's
    /// `bodies` says (`always` when absent, `errors` for status >= 400 only, `pre` in `pre`
    /// only, `never`), as the agent gives it.
    fn body_given(&self, side: &str, status: Option<u16>) -> bool {
        self.body_permitted()
            && match self.manifest["bodies"][side].as_str() {
                Some("never") => false,
                Some("errors") => status.is_some_and(|s| s >= 400),
                Some("pre") => status.is_none(),
                _ => true,
            }
    }

    /// The configuration the agent delivers with no `config.json` settings: the fields' defaults.
    pub fn default_configuration(&self) -> Map<String, Value> {
        let mut config = Map::new();
        for f in self.manifest["fields"].as_array().into_iter().flatten() {
            if let Some(name) = f["name"].as_str() {
                config.insert(name.to_owned(), f["default"].clone());
            }
        }
        config
    }

    /// Runs the pack over `exchange` with the default configuration and the body fed to `chunk`
    /// whole. Returns the dimensions of the output line.
    pub fn run(&self, exchange: &Exchange) -> Result<Vec<Dimension>, HarnessError> {
        self.run_with(exchange, &Map::new(), None)
    }

    /// Runs the pack over `exchange` with `settings` over the default configuration, the body fed
    /// to `chunk` in pieces of `piece` bytes (whole when `None`).
    pub fn run_with(
        &self,
        exchange: &Exchange,
        settings: &Map<String, Value>,
        piece: Option<usize>,
    ) -> Result<Vec<Dimension>, HarnessError> {
        let mut configuration = self.default_configuration();
        configuration.extend(settings.clone());
        let url = taskless_url::RequestUrl::parse(&exchange.request.url);
        let request = json!({
            "domain": url.domain,
            "path": url.path,
            "url": url.url,
            "method": exchange.request.method.to_ascii_uppercase(),
            "headers": exchange.request.delivered_headers(false),
        });
        let mut response = json!({
            "status": exchange.response.status,
            "headers": exchange.response.delivered_headers(true),
        });
        let status = Some(exchange.response.status);
        if self.body_given("response", status)
            && let Some(body) = exchange.response.delivered_body()
        {
            response["body"] = body;
        }
        let request_body = exchange.request.delivered_body();
        let (t0, t1, t2, t3) = TIMING;
        let mut base = json!({
            "requestId": "0190f1e2d3c4b5a69788796a5b4c3d2e",
            "request": request,
            "configuration": configuration,
        });
        // `pre` and the calls after it differ in whether the request body goes in.
        let mut after = base.clone();
        if let Some(body) = request_body {
            if self.body_given("request", None) {
                base["request"]["body"] = body.clone();
            }
            if self.body_given("request", status) {
                after["request"]["body"] = body;
            }
        }
        let mut context = Value::Object(Map::new());
        let mut dimensions = Vec::new();

        let mut call =
            |hook_name: &'static str, hook: Hook, mut input: Value, context: &mut Value| {
                input["context"] = context.clone();
                let input = Input::from_json(input.to_string().as_bytes()).map_err(|e| {
                    HarnessError::Hook {
                        hook: hook_name,
                        reason: e.to_string(),
                    }
                })?;
                let output = taskless_pack_kit::call_hook(hook, &input);
                // Round-trip through the wire form, as the host would read it.
                let json = output.to_json().map_err(|e| HarnessError::Hook {
                    hook: hook_name,
                    reason: e.to_string(),
                })?;
                let wire: Value = serde_json::from_str(&json).map_err(|e| HarnessError::Hook {
                    hook: hook_name,
                    reason: e.to_string(),
                })?;
                if let Some(new_context) = wire.get("context") {
                    *context = new_context.clone();
                }
                for (key, value) in wire
                    .get("capture")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let value = match value {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        other => {
                            return Err(HarnessError::Hook {
                                hook: hook_name,
                                reason: format!(
                                    "capture {key:?} is neither string nor number: {other}"
                                ),
                            });
                        }
                    };
                    dimensions.push(Dimension {
                        name: format!("{}/{}", self.name(), key.replace('/', "")),
                        value,
                    });
                }
                Ok(())
            };

        if let (true, Some(pre)) = (self.wants("pre"), self.pre) {
            let mut input = base.clone();
            input["timing"] = json!({"requestStartMs": t0, "requestEndMs": t1});
            call("pre", pre, input, &mut context)?;
        }
        // The contract gives `response` to `post` only: `chunk` gets the request, the timing and
        // the piece, so packs must not depend on the response head there.
        after["timing"] = json!({"requestStartMs": t0, "requestEndMs": t1, "responseStartMs": t2, "responseEndMs": t3});
        if let (true, Some(chunk)) = (self.wants("chunk"), self.chunk) {
            let body = exchange.response.body_bytes();
            let size = piece.unwrap_or(body.len()).max(1);
            for part in body.chunks(size) {
                let mut input = after.clone();
                input["chunk"] =
                    Value::String(base64::engine::general_purpose::STANDARD.encode(part));
                call("chunk", chunk, input, &mut context)?;
            }
            call("chunk", chunk, after.clone(), &mut context)?;
        }
        after["response"] = response;
        if let (true, Some(post)) = (self.wants("post"), self.post) {
            call("post", post, after, &mut context)?;
        }
        Ok(dimensions)
    }
}

/// The dimensions as a map from name to value, for easy assertions. Fails the test when a name
/// repeats (a pack must not capture the same key twice for one exchange).
pub fn as_map(dimensions: &[Dimension]) -> std::collections::BTreeMap<String, String> {
    let mut map = std::collections::BTreeMap::new();
    for d in dimensions {
        let previous = map.insert(d.name.clone(), d.value.clone());
        assert!(previous.is_none(), "dimension {} captured twice", d.name);
    }
    map
}
