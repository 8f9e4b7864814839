//! Looking for personal data in headers and bodies.

use std::collections::BTreeSet;

use serde_json::Value;
use taskless_pack_kit::Headers;

use crate::rules::Compiled;

/// Deepest JSON nesting walked.
const MAX_DEPTH: usize = 64;
/// Most JSON nodes looked at in one body.
const MAX_NODES: usize = 100_000;

/// Where a match was found: `send` (request) or `receive` (response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The request.
    Send,
    /// The response.
    Receive,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Send => "send",
            Direction::Receive => "receive",
        }
    }
}

/// The flags found: capture keys such as `email.send.body.field`.
#[derive(Debug, Default)]
pub struct Flags(pub BTreeSet<String>);

/// A scan of one message part (`header` or `body`) in one direction.
struct Scan<'a> {
    rules: &'a [Compiled],
    prefix: String,
    flags: &'a mut Flags,
}

impl Scan<'_> {
    fn flag(&self, key: &str, kind: &str) -> String {
        format!("{key}.{}.{kind}", self.prefix)
    }

    /// Checks a field name (only when it carries a value).
    fn name(&mut self, name: &str) {
        for rule in self.rules {
            let flag = self.flag(rule.key, "field");
            if !self.flags.0.contains(&flag) && rule.names.iter().any(|re| re.is_match(name)) {
                self.flags.0.insert(flag);
            }
        }
    }

    /// Checks a value.
    fn value(&mut self, value: &str) {
        if value.is_empty() {
            return;
        }
        for rule in self.rules {
            let flag = self.flag(rule.key, "value");
            if !self.flags.0.contains(&flag) && rule.values.iter().any(|re| re.is_match(value)) {
                self.flags.0.insert(flag);
            }
        }
    }
}

fn scan<'a>(
    rules: &'a [Compiled],
    direction: Direction,
    part: &str,
    flags: &'a mut Flags,
) -> Scan<'a> {
    Scan {
        rules,
        prefix: format!("{}.{part}", direction.as_str()),
        flags,
    }
}

/// Checks header names against field patterns and header values against value patterns.
pub fn headers(rules: &[Compiled], direction: Direction, headers: &Headers, flags: &mut Flags) {
    let mut s = scan(rules, direction, "header", flags);
    for (name, value) in headers.iter() {
        if !value.is_empty() {
            s.name(name);
        }
        s.value(value);
    }
}

/// Checks a body: JSON keys against field patterns and JSON strings and numbers against value
/// patterns; a form-encoded body (`content_type`) by its names and values; any other text as a
/// whole against value patterns.
pub fn body(
    rules: &[Compiled],
    direction: Direction,
    body: &Value,
    content_type: Option<&str>,
    flags: &mut Flags,
) {
    let mut s = scan(rules, direction, "body", flags);
    match body {
        Value::String(text) if content_type == Some("application/x-www-form-urlencoded") => {
            for (name, value) in form_pairs(text) {
                if !value.is_empty() {
                    s.name(&name);
                }
                s.value(&value);
            }
        }
        Value::String(text) => s.value(text),
        other => walk(&mut s, other),
    }
}

/// Walks a JSON document without recursion, within [`MAX_DEPTH`] and [`MAX_NODES`].
fn walk(s: &mut Scan<'_>, root: &Value) {
    let mut stack = vec![(root, 0usize)];
    let mut seen = 0usize;
    while let Some((node, depth)) = stack.pop() {
        seen += 1;
        if seen > MAX_NODES {
            taskless_pack_kit::warn("pii: body has too many JSON nodes; the rest is not checked");
            return;
        }
        match node {
            Value::String(text) => s.value(text),
            Value::Number(n) => s.value(&n.to_string()),
            Value::Object(map) if depth < MAX_DEPTH => {
                for (key, value) in map {
                    if carries_data(value) {
                        s.name(key);
                    }
                    stack.push((value, depth + 1));
                }
            }
            Value::Array(items) if depth < MAX_DEPTH => {
                stack.extend(items.iter().map(|v| (v, depth + 1)))
            }
            _ => {}
        }
    }
}

/// A field named like personal data only counts when it holds something.
fn carries_data(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// The `name=value` pairs of a form-encoded body, percent-decoded (`+` is a space).
fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_are_decoded() {
        assert_eq!(
            form_pairs("To=%2B14155552346&Body=Hi+there&empty=&flag"),
            vec![
                ("To".into(), "+14155552346".into()),
                ("Body".into(), "Hi there".into()),
                ("empty".into(), String::new()),
                ("flag".into(), String::new())
            ]
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%41"), "A");
    }
}
