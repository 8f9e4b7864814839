//! Walking a JSON body straight from its text: every object key (field) and every string or
//! number (value) in document order, without building the document. Strings without escapes are
//! looked at where they lie in the text.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::scan::Scan;

/// Deepest JSON nesting walked: deeper objects and arrays are not looked into.
const MAX_DEPTH: usize = 64;
/// Most JSON nodes looked at in one body.
const MAX_NODES: usize = 100_000;

/// Walks the JSON text `raw` (a body as the host delivered it) into `scan`. Text that turns out
/// not to be JSON is checked up to where it breaks, and the check is marked partial.
pub fn walk<'de>(scan: &mut Scan<'_, '_, 'de>, raw: &'de str) {
    let mut walker = Walker {
        scan,
        nodes: 0,
        stopped: false,
    };
    // From the text, not its bytes: it is UTF-8 already, and strings need not be checked again.
    let mut de = serde_json::Deserializer::from_str(raw);
    let root = Node {
        walker: &mut walker,
        key: None,
        parent: None,
        depth: 0,
    };
    let walked = root.deserialize(&mut de).and_then(|()| de.end());
    // The walk stopping at `MAX_NODES` or once the budget is spent is an error too, on purpose.
    if walked.is_err() && !walker.stopped {
        taskless_pack_kit::warn("pii: body is not valid JSON; checked up to where it breaks");
        walker.scan.truncate();
    }
}

struct Walker<'s, 'r, 'f, 'de> {
    scan: &'s mut Scan<'r, 'f, 'de>,
    nodes: usize,
    /// The walk was stopped on purpose (budget spent, too many nodes).
    stopped: bool,
}

/// One JSON value: the member of an object (`key`) or an element of an array.
struct Node<'w, 's, 'r, 'f, 'de> {
    walker: &'w mut Walker<'s, 'r, 'f, 'de>,
    /// The key this value is under, checked as a field name when the value carries data.
    key: Option<Cow<'de, str>>,
    /// The key of the enclosing object or array, still to be checked: it is known to carry
    /// data once its first member is seen, which is this node.
    parent: Option<Cow<'de, str>>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_, '_, '_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if let Some(parent) = self.parent.clone() {
            self.walker.scan.name(parent, 0);
        }
        if self.walker.scan.is_spent() {
            self.walker.stopped = true;
            return Err(de::Error::custom("budget spent"));
        }
        self.walker.nodes += 1;
        if self.walker.nodes > MAX_NODES {
            taskless_pack_kit::warn("pii: body has too many JSON nodes; the rest is not checked");
            self.walker.scan.truncate();
            self.walker.stopped = true;
            return Err(de::Error::custom("too many nodes"));
        }
        d.deserialize_any(self)
    }
}

impl<'de> Node<'_, '_, '_, '_, 'de> {
    /// The field name of a value that carries data.
    fn name(&mut self) {
        if let Some(key) = self.key.take() {
            self.walker.scan.name(key, 0);
        }
    }

    fn number(mut self, text: &str) {
        self.name();
        self.walker.scan.value(text, 0);
    }
}

impl<'de> Visitor<'de> for Node<'_, '_, '_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<(), E> {
        if !v.is_empty() {
            self.name();
        }
        self.walker.scan.value(v, 0);
        Ok(())
    }

    fn visit_bool<E: de::Error>(mut self, _: bool) -> Result<(), E> {
        self.name();
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        let mut buf = [0u8; 21];
        self.number(decimal(false, v, &mut buf));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        let mut buf = [0u8; 21];
        self.number(decimal(v < 0, v.unsigned_abs(), &mut buf));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // The same text a parsed `serde_json::Value` gives, written on the stack.
        let mut text = FloatText::default();
        if let Some(n) = serde_json::Number::from_f64(v) {
            let _ = fmt::Write::write_fmt(&mut text, format_args!("{n}"));
        }
        self.number(text.as_str());
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            if map.next_key::<IgnoredAny>()?.is_some() {
                let mut node = self;
                node.name();
                map.next_value::<IgnoredAny>()?;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            }
            return Ok(());
        }
        let mut parent = self.key;
        while let Some(key) = map.next_key_seed(Key)? {
            map.next_value_seed(Node {
                walker: &mut *self.walker,
                key: Some(key),
                parent: parent.take(),
                depth: self.depth + 1,
            })?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            if seq.next_element::<IgnoredAny>()?.is_some() {
                let mut node = self;
                node.name();
                while seq.next_element::<IgnoredAny>()?.is_some() {}
            }
            return Ok(());
        }
        let mut parent = self.key;
        loop {
            let node = Node {
                walker: &mut *self.walker,
                key: None,
                parent: parent.take(),
                depth: self.depth + 1,
            };
            if seq.next_element_seed(node)?.is_none() {
                return Ok(());
            }
        }
    }
}

/// An object key, borrowed from the text when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// `v` in decimal, with a minus sign when `negative`, written at the end of `buf`.
/// A float's text, as `serde_json` writes it: at most 24 bytes (`-1.2345678901234567e-308`),
/// so 32 always hold it. A piece that would not fit is refused and left out (never happens:
/// `serde_json` writes a finite float's text in one piece, and a non-finite one is no number).
#[derive(Default)]
struct FloatText {
    buf: [u8; 32],
    len: usize,
}

impl FloatText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl fmt::Write for FloatText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let Some(to) = self.buf.get_mut(self.len..end) else {
            return Err(fmt::Error);
        };
        to.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn decimal(negative: bool, mut v: u64, buf: &mut [u8; 21]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        // `v % 10` is a single digit.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (v % 10) as u8;
        buf[at] = b'0' + digit;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if negative {
        at -= 1;
        buf[at] = b'-';
    }
    std::str::from_utf8(&buf[at..]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules;
    use crate::scan::{Flags, Part};

    fn walked(raw: &str) -> Flags {
        let rules = rules::compile(&taskless_pack_kit::Config::new(&serde_json::Map::new()));
        let mut flags = Flags::with_budget(1 << 20, raw.len());
        let mut scan = Scan::new(&rules, Part::Body, &mut flags);
        walk(&mut scan, raw);
        flags
    }

    #[test]
    fn broken_json_is_checked_up_to_the_break_and_marked_partial() {
        let flags = walked(r#"{"email": "a@b.co", "x": [1, tru"#);
        assert!(flags.truncated);
        assert_ne!(
            flags.fields[Part::Body as usize],
            0,
            "the email field before the break"
        );
        assert!(!walked(r#"{"email": "a@b.co"}"#).truncated);
        assert!(walked(r#"{"a": 1} x"#).truncated, "trailing text");
    }

    #[test]
    fn floats_are_written_as_a_parsed_value_writes_them() {
        for v in [
            0.0,
            -0.0,
            0.5,
            0.53,
            1e15,
            1e16,
            -1.234_567_890_123_456_7e-308,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
        ] {
            let mut text = FloatText::default();
            let n = serde_json::Number::from_f64(v).expect("finite");
            fmt::Write::write_fmt(&mut text, format_args!("{n}")).expect("fits");
            assert_eq!(text.as_str(), n.to_string());
        }
    }

    #[test]
    fn decimals_match_rust_formatting() {
        for v in [0u64, 7, 10, 1_680_893_993, u64::MAX] {
            let mut buf = [0u8; 21];
            assert_eq!(decimal(false, v, &mut buf), v.to_string());
        }
        for v in [-1i64, -10, -1_680_893_993, i64::MIN] {
            let mut buf = [0u8; 21];
            assert_eq!(decimal(true, v.unsigned_abs(), &mut buf), v.to_string());
        }
    }
}
