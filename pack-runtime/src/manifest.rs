//! The pre2 pack description: `manifest.json` merged over `config.json`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::DomainFilter;
use crate::error::LoadFailure;

/// A hook a pack can export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Called when the request is complete.
    Pre,
    /// Called when the response is complete.
    Post,
    /// Called for each piece of response body, and once more at its end.
    Chunk,
}

impl Method {
    /// The export name.
    #[must_use]
    pub fn export(self) -> &'static str {
        match self {
            Method::Pre => "pre",
            Method::Post => "post",
            Method::Chunk => "chunk",
        }
    }
}

/// What a pack may see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    /// Host environment variables the pack may read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<String>,
    /// Whether request and response bodies are given to the pack.
    #[serde(default)]
    pub body: bool,
}

/// When a side's body goes to a pack that has the body permission: this agent's own manifest
/// key `bodies` (`{"request": "never", "response": "errors"}`), which the pre2 format does not
/// have. A pack without it gets every body its permission allows, as the format says; one that
/// reads a body only on failed calls says so and the host neither builds nor copies that body
/// into its other calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyWhen {
    /// In every hook that carries that side's body (the pre2 contract).
    #[default]
    Always,
    /// Only in the calls of an exchange whose response status is 400 or more (so `post`, and
    /// for the response side also `chunk` pieces), never in `pre`.
    Errors,
    /// Only in `pre` (request side only): a pack that checks what is sent when it is sent,
    /// and in `post` reads only the response.
    Pre,
    /// Never.
    Never,
}

/// [`BodyWhen`] for each side of the exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bodies {
    /// The request body.
    #[serde(default)]
    pub request: BodyWhen,
    /// The response body (in `post`) and its pieces (in `chunk`).
    #[serde(default)]
    pub response: BodyWhen,
}

impl BodyWhen {
    /// Whether the body goes into a call of an exchange whose response has `status` (`None`
    /// before the response head is known).
    #[must_use]
    pub fn given(self, status: Option<u16>) -> bool {
        match self {
            BodyWhen::Always => true,
            BodyWhen::Errors => status.is_some_and(|s| s >= 400),
            // `pre` is the one call made before the response head is known.
            BodyWhen::Pre => status.is_none(),
            BodyWhen::Never => false,
        }
    }
}

/// A user setting declared by the pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    /// Setting name, the key in `configuration`.
    pub name: String,
    /// `string`, `string[]`, `number`, `number[]` or `boolean`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Human description.
    #[serde(default)]
    pub description: String,
    /// Value used when `config.json` does not set one.
    #[serde(default)]
    pub default: Value,
}

/// `config.json`'s `url` object.
#[derive(Debug, Clone, Default, Deserialize)]
struct SourceUrl {
    #[serde(default)]
    signature: String,
}

/// The merged pack document (manifest keys over config keys).
#[derive(Debug, Clone, Deserialize)]
struct RawPack {
    #[serde(default)]
    schema: String,
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    methods: Option<Vec<Method>>,
    #[serde(default)]
    permissions: Permissions,
    #[serde(default)]
    bodies: Bodies,
    #[serde(default, rename = "configurationOnce")]
    configuration_once: bool,
    #[serde(default)]
    fields: Vec<Field>,
    #[serde(default)]
    charts: Option<Value>,
    #[serde(default)]
    url: SourceUrl,
    #[serde(default)]
    configuration: Map<String, Value>,
}

/// A parsed pack description, before its module is looked at.
#[derive(Debug, Clone)]
pub(crate) struct PackDescription {
    pub name: String,
    pub version: String,
    pub description: String,
    /// `None` when the manifest has no `methods` (pre and post, when exported).
    pub methods: Option<Vec<Method>>,
    pub permissions: Permissions,
    pub bodies: Bodies,
    pub configuration_once: bool,
    pub fields: Vec<Field>,
    pub charts: Option<Value>,
    /// sha-256 hex from `config.json`, empty when none.
    pub signature: String,
    /// `config.json`'s configuration over the fields' defaults.
    pub configuration: Map<String, Value>,
    pub domains: DomainFilter,
}

/// Parses both documents and merges them as the Taskless loader did: `config.json` first,
/// `manifest.json` over it (manifest wins, key by key at the top level).
pub(crate) fn describe(manifest: &[u8], config: &[u8]) -> Result<PackDescription, LoadFailure> {
    let manifest: Map<String, Value> =
        serde_json::from_slice(manifest).map_err(|e| LoadFailure::Json {
            file: "manifest.json",
            message: e.to_string(),
        })?;
    let mut merged: Map<String, Value> =
        serde_json::from_slice(config).map_err(|e| LoadFailure::Json {
            file: "config.json",
            message: e.to_string(),
        })?;
    merged.extend(manifest);
    let raw: RawPack =
        serde_json::from_value(Value::Object(merged)).map_err(|e| LoadFailure::Json {
            file: "manifest.json",
            message: e.to_string(),
        })?;
    if raw.schema != "pre2" {
        return Err(LoadFailure::Schema(raw.schema));
    }
    if raw.bodies.response == BodyWhen::Pre {
        return Err(LoadFailure::Json {
            file: "manifest.json",
            message: "bodies.response cannot be \"pre\": no response body goes into pre".into(),
        });
    }
    let configuration = configuration(&raw.fields, raw.configuration);
    let domains = DomainFilter::from_configuration(&configuration);
    Ok(PackDescription {
        name: raw.name,
        version: raw.version,
        description: raw.description,
        methods: raw.methods,
        permissions: raw.permissions,
        bodies: raw.bodies,
        configuration_once: raw.configuration_once,
        fields: raw.fields,
        charts: raw.charts,
        signature: raw.url.signature.trim().to_ascii_lowercase(),
        configuration,
        domains,
    })
}

/// The fields' defaults, then every value set in `config.json` over them.
fn configuration(fields: &[Field], set: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for f in fields {
        if !f.default.is_null() {
            out.insert(f.name.clone(), f.default.clone());
        }
    }
    out.extend(set);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).expect("serializable")
    }

    #[test]
    fn manifest_wins_over_config_and_configuration_overrides_defaults() {
        let manifest = json!({
            "schema": "pre2", "name": "stripe", "version": "1.2.3", "description": "d",
            "methods": ["pre", "chunk"],
            "permissions": {"environment": ["HOME"], "body": true},
            "fields": [
                {"name": "domains", "type": "string[]", "description": "", "default": ["api.stripe.com"]},
                {"name": "enableSuccess", "type": "boolean", "description": "", "default": false},
                {"name": "noDefault", "type": "string", "description": ""}
            ]
        });
        let config = json!({
            "name": "ignored",
            "url": {"source": "https://example.invalid/p", "signature": "ABCD"},
            "configuration": {"enableSuccess": true, "extra": 3}
        });
        let d = describe(&bytes(&manifest), &bytes(&config)).expect("valid");
        assert_eq!(d.name, "stripe");
        assert_eq!(d.version, "1.2.3");
        assert_eq!(d.methods, Some(vec![Method::Pre, Method::Chunk]));
        assert!(d.permissions.body);
        assert_eq!(d.permissions.environment, vec!["HOME".to_string()]);
        assert_eq!(d.signature, "abcd");
        assert_eq!(
            Value::Object(d.configuration.clone()),
            json!({"domains": ["api.stripe.com"], "enableSuccess": true, "extra": 3})
        );
        assert!(d.domains.matches("api.stripe.com"));
        assert!(!d.domains.matches("api.openai.com"));
    }

    #[test]
    fn wrong_schema_and_bad_json_are_refused() {
        let manifest = json!({"schema": "pre1", "name": "a", "version": "1"});
        assert_eq!(
            describe(&bytes(&manifest), b"{}").err(),
            Some(LoadFailure::Schema("pre1".into()))
        );
        assert!(matches!(
            describe(b"{", b"{}"),
            Err(LoadFailure::Json {
                file: "manifest.json",
                ..
            })
        ));
        let ok = json!({"schema": "pre2", "name": "a", "version": "1"});
        assert!(matches!(
            describe(&bytes(&ok), b"[1]"),
            Err(LoadFailure::Json {
                file: "config.json",
                ..
            })
        ));
        let no_name = json!({"schema": "pre2", "version": "1"});
        assert!(matches!(
            describe(&bytes(&no_name), b"{}"),
            Err(LoadFailure::Json { .. })
        ));
    }
}
