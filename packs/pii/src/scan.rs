//! Looking for personal data in headers and bodies.

use serde_json::Value;
use taskless_pack_kit::Headers;

use crate::rules::Compiled;

/// Deepest JSON nesting walked.
const MAX_DEPTH: usize = 64;
/// Most JSON nodes looked at in one body.
const MAX_NODES: usize = 100_000;
/// Most distinct field names remembered as already checked in one message part.
const MAX_NAMES_SEEN: usize = 4_096;

/// Where a match was found: `send` (request) or `receive` (response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The request.
    Send,
    /// The response.
    Receive,
}

impl Direction {
    /// `send` or `receive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Send => "send",
            Direction::Receive => "receive",
        }
    }
}

/// The flags found (capture keys such as `email.send.body.field`) and the scan budget: the
/// bytes of names and values that may still be run through patterns.
#[derive(Debug, Default)]
pub struct Flags {
    /// The capture keys found, in the order found (at most one per category, part and kind).
    pub found: Vec<String>,
    /// Bytes of values that may still be run through value patterns.
    budget: usize,
    /// True once a value was cut short or skipped for lack of budget.
    pub truncated: bool,
}

impl Flags {
    /// No flags yet; at most `budget` bytes of values will be checked.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            found: Vec::new(),
            budget,
            truncated: false,
        }
    }

    /// The part of `value` the budget still covers (cut at a character boundary).
    fn take<'v>(&mut self, value: &'v str) -> &'v str {
        if value.len() <= self.budget {
            self.budget -= value.len();
            return value;
        }
        self.truncated = true;
        let mut cut = self.budget;
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        self.budget = 0;
        &value[..cut]
    }
}

/// A scan of one message part (`header` or `body`) in one direction.
struct Scan<'a> {
    rules: &'a [Compiled],
    prefix: String,
    flags: &'a mut Flags,
    /// Names already checked, sorted: arrays of objects repeat the same keys thousands of times.
    names_seen: Vec<String>,
}

impl Scan<'_> {
    fn flag(&self, key: &str, kind: &str) -> String {
        format!("{key}.{}.{kind}", self.prefix)
    }

    /// Checks a field name (only when it carries a value), within the budget; a name already
    /// checked in this part costs nothing.
    fn name(&mut self, name: &str) {
        match self
            .names_seen
            .binary_search_by(|seen| seen.as_str().cmp(name))
        {
            Ok(_) => return,
            Err(at) if self.names_seen.len() < MAX_NAMES_SEEN => {
                self.names_seen.insert(at, name.to_owned())
            }
            Err(_) => {}
        }
        let name = self.flags.take(name);
        if name.is_empty() {
            return;
        }
        for rule in self.rules {
            let flag = self.flag(rule.key, "field");
            if !self.flags.found.contains(&flag) && rule.names.iter().any(|re| re.is_match(name)) {
                self.flags.found.push(flag);
            }
        }
    }

    /// Checks a value, within the budget.
    fn value(&mut self, value: &str) {
        let value = self.flags.take(value);
        if value.is_empty() {
            return;
        }
        for rule in self.rules {
            let flag = self.flag(rule.key, "value");
            if self.flags.found.contains(&flag) {
                continue;
            }
            let matched = rule
                .values
                .iter()
                .any(|(re, needs)| needs.is_none_or(|n| n.admits(value)) && re.is_match(value));
            if matched {
                self.flags.found.push(flag);
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
        names_seen: Vec::new(),
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

/// Walks a JSON document in document order without recursion, within [`MAX_DEPTH`] and
/// [`MAX_NODES`].
fn walk(s: &mut Scan<'_>, root: &Value) {
    let mut stack: Vec<(Option<&str>, &Value, usize)> = vec![(None, root, 0)];
    let mut seen = 0usize;
    while let Some((key, node, depth)) = stack.pop() {
        seen += 1;
        if seen > MAX_NODES {
            taskless_pack_kit::warn("pii: body has too many JSON nodes; the rest is not checked");
            s.flags.truncated = true;
            return;
        }
        if let Some(key) = key
            && carries_data(node)
        {
            s.name(key);
        }
        match node {
            Value::String(text) => s.value(text),
            Value::Number(n) => s.value(&n.to_string()),
            Value::Object(map) if depth < MAX_DEPTH => {
                stack.extend(
                    map.iter()
                        .rev()
                        .map(|(k, v)| (Some(k.as_str()), v, depth + 1)),
                );
            }
            Value::Array(items) if depth < MAX_DEPTH => {
                stack.extend(items.iter().rev().map(|v| (None, v, depth + 1)));
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
    fn the_budget_cuts_values_at_a_character_boundary() {
        let mut flags = Flags::with_budget(5);
        assert_eq!(flags.take("abc"), "abc");
        assert!(!flags.truncated);
        assert_eq!(flags.take("é€x"), "é");
        assert!(flags.truncated);
        assert_eq!(flags.take("z"), "");
        let mut flags = Flags::with_budget(4);
        assert_eq!(flags.take("aé€"), "aé");
    }

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
