//! An HTTP exchange as a fixture describes it.

use serde::Deserialize;
use serde_json::Value;

/// One side of an exchange, as written in a fixture.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpMessage {
    /// Request method (requests only).
    pub method: String,
    /// Full URL (requests only).
    pub url: String,
    /// Status code (responses only).
    pub status: u16,
    /// Reason phrase (responses only; not given to packs).
    pub status_text: Option<String>,
    /// Header pairs.
    pub headers: Vec<(String, String)>,
    /// Body: JSON, or a string holding any text (JSON text in a string is parsed as the agent
    /// would parse it).
    pub body: Option<Value>,
}

/// A request and its response.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Exchange {
    /// The request.
    pub request: HttpMessage,
    /// The response.
    pub response: HttpMessage,
}

impl HttpMessage {
    /// The body as the agent delivers it to packs: parsed JSON when the text is JSON, else text.
    pub fn delivered_body(&self) -> Option<Value> {
        match &self.body {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => {
                Some(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())))
            }
            Some(other) => Some(other.clone()),
        }
    }

    /// The body's bytes on the wire.
    pub fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(text)) => text.clone().into_bytes(),
            Some(other) => other.to_string().into_bytes(),
        }
    }

    /// Header pairs with lower-case names, optionally without the headers the agent removes
    /// from decoded responses.
    pub fn delivered_headers(&self, response: bool) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .filter(|(n, _)| !response || (n != "content-encoding" && n != "content-length"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_delivered_like_the_agent_does() {
        let m = HttpMessage {
            body: Some(Value::String("{\"a\":1}".into())),
            ..HttpMessage::default()
        };
        assert_eq!(m.delivered_body(), Some(serde_json::json!({"a": 1})));
        let m = HttpMessage {
            body: Some(Value::String("data: x\n\n".into())),
            ..HttpMessage::default()
        };
        assert_eq!(
            m.delivered_body(),
            Some(Value::String("data: x\n\n".into()))
        );
        assert_eq!(m.body_bytes(), b"data: x\n\n");
    }
}
