//! What a JSON body cut short still says: the top-level members that were complete.
//!
//! A body kept only up to `--max-body` (or sent incomplete) is not valid JSON, yet its start
//! often holds what packs want: `model` in front of a 1.6 MB `messages` array. [`complete_members`]
//! scans the top-level object (or array) and keeps each member whose value ended before the
//! cut; each kept value is parsed in full by `serde_json`, so a member is either exactly what was
//! sent or left out, never a guess.

use serde_json::{Map, Value};

/// Deepest nesting of a member kept (as `serde_json`'s own limit): a deeper member is left out.
pub const MAX_DEPTH: usize = 128;

/// The complete top-level members of a JSON object (or elements of an array) that `bytes` is a
/// cut-short prefix of. `None` when `bytes` does not start like a JSON object or array, or is
/// not JSON as far as it goes.
///
/// Members whose value is cut, or nested deeper than [`MAX_DEPTH`], are left out; so is a
/// member whose key is cut. Memory and time are linear in `bytes`, whatever the nesting. A duplicate key keeps its last value, as `serde_json` does.
#[must_use]
pub fn complete_members(bytes: &[u8]) -> Option<Value> {
    let mut s = Scanner { b: bytes, pos: 0 };
    s.skip_ws();
    match s.peek()? {
        b'{' => s.object(),
        b'[' => s.array(),
        _ => None,
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
}

/// How far a value reaches.
enum End {
    /// It ends before this offset.
    At(usize),
    /// The bytes end first.
    Cut,
    /// Not JSON.
    Invalid,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn object(&mut self) -> Option<Value> {
        self.pos += 1;
        let mut out = Map::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Some(Value::Object(out)),
                Some(b'}') => return Some(Value::Object(out)),
                Some(b'"') => {}
                Some(_) => return None,
            }
            let key_start = self.pos;
            let key_end = match string_end(self.b, key_start) {
                End::At(end) => end,
                End::Cut => return Some(Value::Object(out)),
                End::Invalid => return None,
            };
            let key: String = serde_json::from_slice(&self.b[key_start..key_end]).ok()?;
            self.pos = key_end;
            self.skip_ws();
            match self.peek() {
                None => return Some(Value::Object(out)),
                Some(b':') => self.pos += 1,
                Some(_) => return None,
            }
            match self.member()? {
                Member::Complete(value) => {
                    out.insert(key, value);
                }
                Member::TooDeep => {}
                Member::Cut => return Some(Value::Object(out)),
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                None | Some(b'}') => return Some(Value::Object(out)),
                Some(_) => return None,
            }
        }
    }

    fn array(&mut self) -> Option<Value> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None | Some(b']') => return Some(Value::Array(out)),
                Some(_) => {}
            }
            match self.member()? {
                Member::Complete(value) => out.push(value),
                Member::TooDeep => {}
                Member::Cut => return Some(Value::Array(out)),
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                None | Some(b']') => return Some(Value::Array(out)),
                Some(_) => return None,
            }
        }
    }

    /// The value at `pos` (and `pos` moved after it), `None` when it is not JSON.
    fn member(&mut self) -> Option<Member> {
        self.skip_ws();
        let start = self.pos;
        let end = match value_end(self.b, start) {
            (End::At(end), depth) if depth > MAX_DEPTH => {
                self.pos = end;
                return Some(Member::TooDeep);
            }
            (End::At(end), _) => end,
            (End::Cut, _) => return Some(Member::Cut),
            (End::Invalid, _) => return None,
        };
        let value = serde_json::from_slice(&self.b[start..end]).ok()?;
        self.pos = end;
        Some(Member::Complete(value))
    }
}

/// A member's value as far as the bytes go.
enum Member {
    Complete(Value),
    /// Complete, but nested deeper than [`MAX_DEPTH`]: left out.
    TooDeep,
    /// The bytes end inside it.
    Cut,
}

/// Where the string starting at `start` (a `"`) ends (after its closing quote).
fn string_end(b: &[u8], start: usize) -> End {
    let mut i = start + 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => return End::At(i + 1),
            b'\\' => i += 2,
            0..=0x1f => return End::Invalid,
            _ => i += 1,
        }
    }
    End::Cut
}

/// Where the value starting at `start` ends, and how deep it nests. Only delimits: the value's
/// content is checked when it is parsed.
fn value_end(b: &[u8], start: usize) -> (End, usize) {
    match b.get(start) {
        None => (End::Cut, 0),
        Some(b'"') => (string_end(b, start), 0),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut deepest = 0usize;
            let mut i = start;
            while let Some(&c) = b.get(i) {
                match c {
                    b'{' | b'[' => {
                        depth += 1;
                        deepest = deepest.max(depth);
                        i += 1;
                    }
                    b'}' | b']' => {
                        depth -= 1;
                        i += 1;
                        if depth == 0 {
                            return (End::At(i), deepest);
                        }
                    }
                    b'"' => match string_end(b, i) {
                        End::At(end) => i = end,
                        other => return (other, deepest),
                    },
                    _ => i += 1,
                }
            }
            (End::Cut, deepest)
        }
        Some(_) => {
            // A number, `true`, `false` or `null`: it ends at a delimiter. One that reaches the
            // end of the bytes may be cut (`12` of `123`), so it is not kept.
            let len = b[start..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'));
            match len {
                Some(0) => (End::Invalid, 0),
                Some(n) => (End::At(start + n), 0),
                None => (End::Cut, 0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn members(s: &str) -> Option<Value> {
        complete_members(s.as_bytes())
    }

    #[test]
    fn complete_members_before_the_cut_are_kept() {
        let body =
            r#"{"model":"gpt-4o","stream":true,"n":2,"messages":[{"role":"user","content":"hel"#;
        assert_eq!(
            members(body),
            Some(json!({"model": "gpt-4o", "stream": true, "n": 2}))
        );
    }

    #[test]
    fn every_cut_of_a_document_gives_a_prefix_of_its_members() {
        let doc = json!({
            "model": "m", "a": [1, {"b": "x\"}]"}], "t": true, "f": null, "num": -12.5e3,
            "esc": "q\\\"\u{e9}", "nested": {"deep": [[[]]]}, "last": "z"
        });
        let text = serde_json::to_string(&doc).expect("serializes");
        let whole = doc.as_object().expect("object");
        for cut in 0..=text.len() {
            let Some(Value::Object(got)) = complete_members(&text.as_bytes()[..cut]) else {
                assert!(cut == 0, "cut {cut}: not an object");
                continue;
            };
            // Exactly the first members, with their exact values.
            let expected: Vec<_> = whole.iter().take(got.len()).collect();
            assert_eq!(got.iter().collect::<Vec<_>>(), expected, "cut {cut}");
        }
        assert_eq!(complete_members(text.as_bytes()), Some(doc));
    }

    #[test]
    fn a_number_at_the_cut_is_left_out() {
        assert_eq!(members(r#"{"a":1,"b":12"#), Some(json!({"a": 1})));
        assert_eq!(members(r#"{"a":1,"b":tr"#), Some(json!({"a": 1})));
        assert_eq!(members(r#"{"a":1,"b":12}"#), Some(json!({"a": 1, "b": 12})));
    }

    #[test]
    fn a_cut_key_or_string_is_left_out() {
        assert_eq!(members(r#"{"a":"x","mod"#), Some(json!({"a": "x"})));
        assert_eq!(
            members(r#"{"a":"x","b":"unfinished \"quote"#),
            Some(json!({"a": "x"}))
        );
        assert_eq!(members(r#"{"a":"x","b""#), Some(json!({"a": "x"})));
    }

    #[test]
    fn arrays_keep_their_complete_elements() {
        assert_eq!(
            members(r#"[{"id":1},{"id":2},{"id""#),
            Some(json!([{"id": 1}, {"id": 2}]))
        );
    }

    #[test]
    fn what_is_not_json_is_none() {
        assert_eq!(members("a=1&b=2"), None);
        assert_eq!(members(r#"{"a":1 "b":2"#), None);
        assert_eq!(members(r#"{"a":[1,}],"b":2"#), None);
        assert_eq!(members(r#"{a:1}"#), None);
        assert_eq!(members("\"just a string"), None);
        assert_eq!(members(""), None);
    }

    #[test]
    fn deep_members_are_left_out_without_recursion() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let body = format!(r#"{{"model":"m","deep":{deep},"after":1}}"#);
        // The deep member is left out; the members after it are kept.
        assert_eq!(members(&body), Some(json!({"model": "m", "after": 1})));
        let cut = format!(r#"{{"model":"m","deep":{}"#, "[{\"a\":".repeat(200_000));
        assert_eq!(members(&cut), Some(json!({"model": "m"})));
    }

    #[test]
    fn invalid_utf8_in_a_string_makes_it_not_json() {
        let mut body = br#"{"a":"ok","b":""#.to_vec();
        body.extend_from_slice(b"\xff\xfe\"}");
        assert_eq!(complete_members(&body), None);
    }
}
