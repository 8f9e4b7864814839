//! Looking for personal data in headers, query strings and bodies.

use std::borrow::Cow;

use taskless_pack_kit::{FastSet, Headers, percent_decode};

use crate::matcher::{Facts, count_digits};
use crate::rules::{CREDENTIAL, Rules};

/// Most distinct field names remembered as already checked in one message part.
const MAX_NAMES_SEEN: usize = 4_096;

/// Short field names checked last in one message part, remembered to skip them when they come
/// again.
const RECENT_NAMES: usize = 8;

/// A field name of at most 16 bytes as two words and its length: equal keys, equal names.
type NameKey = (u64, u64, usize);

fn name_key(name: &str) -> Option<NameKey> {
    let bytes = name.as_bytes();
    let mut words = [0u8; 16];
    words.get_mut(..bytes.len())?.copy_from_slice(bytes);
    let (low, high) = words.split_at(8);
    let word = |w: &[u8]| w.try_into().map_or(0, u64::from_le_bytes);
    Some((word(low), word(high), bytes.len()))
}

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

/// The part of a message a flag is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Header names and values.
    Header,
    /// The query string's parameter names and values.
    Query,
    /// Body field names and values.
    Body,
}

impl Part {
    /// Every part, in capture order.
    pub const ALL: [Part; 3] = [Part::Header, Part::Query, Part::Body];

    fn index(self) -> usize {
        self as usize
    }

    /// `header`, `query` or `body`.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Header => "header",
            Part::Query => "query",
            Part::Body => "body",
        }
    }
}

/// The flags found, per part, as category bit sets (bit `i` for the `i`-th category), and the
/// scan budget: the bytes of names and values that may still be run through patterns.
#[derive(Debug, Default)]
pub struct Flags {
    /// Categories whose field patterns matched a name, per part.
    pub fields: [u16; 3],
    /// Categories whose value patterns matched a value, per part.
    pub values: [u16; 3],
    /// Bytes of names and values that may still be checked.
    budget: usize,
    /// True once a name or value was cut short or skipped for lack of budget.
    pub truncated: bool,
    /// False when the message is too small for the budget to run out: then nothing needs to
    /// remember which names were paid for.
    may_run_out: bool,
}

/// How much longer than its JSON text the names and values read from a message can be: keys
/// and strings only get shorter when unescaped, a number's text grows at most 4.5 times (`1e15`
/// is read back as `1000000000000000.0`).
const MAX_GROWTH: usize = 8;

impl Flags {
    /// No flags yet; at most `budget` bytes of names and values will be checked, of a message
    /// whose headers, URL and body take `size` bytes of JSON text.
    pub fn with_budget(budget: usize, size: usize) -> Self {
        Self {
            budget,
            may_run_out: size.saturating_mul(MAX_GROWTH) > budget,
            ..Self::default()
        }
    }

    /// The part of `value` the budget still covers (cut at a character boundary).
    pub fn take<'v>(&mut self, value: &'v str) -> &'v str {
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

/// A scan of one message part in one direction.
pub struct Scan<'r, 'f, 'n> {
    rules: &'r Rules,
    part: Part,
    flags: &'f mut Flags,
    /// Categories with value patterns, not yet found in this part.
    values_pending: u16,
    /// Categories with field patterns, not yet found in this part.
    fields_pending: u16,
    /// Names already checked in this part, when the budget could run out: a name repeated
    /// (arrays of objects repeat the same keys thousands of times) is paid for once.
    names_seen: Option<FastSet<Cow<'n, str>>>,
    /// The last [`RECENT_NAMES`] short names checked in this part (the first `recent_len`),
    /// replaced in turn: the objects of an array repeat the same few keys, and comparing a
    /// few words is cheaper than hashing each name to look it up.
    recent: [NameKey; RECENT_NAMES],
    recent_len: usize,
    facts: Facts,
}

impl<'r, 'f, 'n> Scan<'r, 'f, 'n> {
    /// Starts a scan of `part`.
    pub fn new(rules: &'r Rules, part: Part, flags: &'f mut Flags) -> Self {
        let mut values_pending = 0;
        let mut fields_pending = 0;
        for (i, c) in rules.categories.iter().enumerate() {
            if !c.values.is_empty() {
                values_pending |= 1 << i;
            }
            if c.names.is_some() {
                fields_pending |= 1 << i;
            }
        }
        let found = (flags.fields[part.index()], flags.values[part.index()]);
        let names_seen = flags.may_run_out.then(FastSet::default);
        Self {
            rules,
            part,
            values_pending: values_pending & !found.1,
            fields_pending: fields_pending & !found.0,
            flags,
            names_seen,
            recent: [(0, 0, 0); RECENT_NAMES],
            recent_len: 0,
            facts: Facts::default(),
        }
    }

    /// Checks a field name (only call it when the field carries a value), within the budget; a
    /// name already checked in this part costs nothing. Categories in `skip` are not flagged.
    pub fn name(&mut self, name: Cow<'n, str>, skip: u16) {
        // A name checked in this part already: checking it again would flag nothing new (and
        // `skip` depends on the name alone).
        if let Some(key) = (self.part == Part::Body).then(|| name_key(&name)).flatten() {
            if self.recent[..self.recent_len.min(RECENT_NAMES)].contains(&key) {
                return;
            }
            self.recent[self.recent_len % RECENT_NAMES] = key;
            self.recent_len += 1;
        }
        if let Some(seen) = self.names_seen.as_mut() {
            if seen.contains(name.as_ref()) {
                return;
            }
            if seen.len() < MAX_NAMES_SEEN {
                seen.insert(name.clone());
            }
        }
        let name = self.flags.take(&name);
        if name.is_empty() || self.fields_pending & !skip == 0 {
            return;
        }
        let found = self.rules.name_categories(name) & self.fields_pending & !skip;
        self.fields_pending &= !found;
        self.flags.fields[self.part.index()] |= found;
    }

    /// Checks a value, within the budget. Categories in `skip` are not flagged.
    pub fn value(&mut self, value: &str, skip: u16) {
        let value = self.flags.take(value);
        // Only the categories with a pattern whose matches fit in the value.
        let pending = self.values_pending & !skip & self.rules.fitting(value.len());
        if value.is_empty() || pending == 0 {
            return;
        }
        // Most values hold too few digits for the categories that look only at digits (phone
        // numbers, ids, cards, IPv4 addresses): a cheap count rules those out, and often the
        // value with them, before the full pass.
        let pending = if pending & self.rules.digits_only() == 0 {
            pending
        } else {
            pending & !self.rules.wanting_more_digits(count_digits(value))
        };
        if pending == 0 {
            return;
        }
        self.facts.learn(value);
        let mut found = 0u16;
        for (i, category) in self.rules.categories.iter().enumerate() {
            if pending & (1 << i) != 0
                && category
                    .values
                    .iter()
                    .any(|group| group.is_match(value, &self.facts))
            {
                found |= 1 << i;
            }
        }
        self.values_pending &= !found;
        self.flags.values[self.part.index()] |= found;
    }

    /// Marks the scan as cut short.
    pub fn truncate(&mut self) {
        self.flags.truncated = true;
    }

    /// True once the budget is spent and something was left unchecked: nothing after this
    /// can change the flags.
    pub fn is_spent(&self) -> bool {
        self.flags.budget == 0 && self.flags.truncated
    }
}

/// Checks header names against field patterns and header values against value patterns.
/// Headers meant for credentials (`credentialHeaders`) are not checked for credentials.
pub fn headers(rules: &Rules, headers: &Headers, flags: &mut Flags) {
    let mut s = Scan::new(rules, Part::Header, flags);
    for (name, value) in headers.iter() {
        let skip = if rules.is_credential_header(name) {
            1 << CREDENTIAL
        } else {
            0
        };
        if !value.is_empty() {
            s.name(Cow::Borrowed(name), skip);
        }
        s.value(value, skip);
    }
}

/// Checks the query string of `url` by its decoded parameter names and values.
pub fn query(rules: &Rules, url: &str, flags: &mut Flags) {
    let Some((_, query)) = url.split_once('?') else {
        return;
    };
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    let mut s = Scan::new(rules, Part::Query, flags);
    pairs(&mut s, query);
}

/// Checks `name=value` pairs joined by `&` (a query string or a form body), percent-decoded.
pub fn pairs<'n>(s: &mut Scan<'_, '_, 'n>, text: &'n str) {
    for pair in text.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        if !value.is_empty() {
            s.name(percent_decode(name), 0);
        }
        s.value(&value, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_have_keys_that_are_equal_only_for_equal_names() {
        let names = [
            "",
            "a",
            "a\0",
            "email",
            "emails",
            "customer_email_x",
            "customer_email_y",
        ];
        for a in names {
            for b in names {
                assert_eq!(name_key(a) == name_key(b), a == b, "{a:?} {b:?}");
            }
        }
        assert_eq!(name_key("customer_email_xy"), None, "17 bytes");
    }

    #[test]
    fn a_body_name_comes_again_after_eight_others_and_is_still_checked() {
        let rules = crate::rules::compile(&taskless_pack_kit::Config::new(&serde_json::Map::new()));
        let email = crate::rules::CATEGORIES
            .iter()
            .position(|c| c.key == "email")
            .expect("email");
        let mut flags = Flags::with_budget(1 << 20, 100);
        let mut s = Scan::new(&rules, Part::Body, &mut flags);
        for name in ["a", "b", "c", "d", "e", "f", "g", "h", "a", "i"] {
            s.name(Cow::Borrowed(name), 0);
        }
        assert_eq!(s.flags.fields[Part::Body as usize], 0);
        // Longer than a key holds: checked the usual way.
        s.name(Cow::Borrowed("the_customers_email_address"), 0);
        assert_eq!(s.flags.fields[Part::Body as usize], 1 << email);
        let mut flags = Flags::with_budget(1 << 20, 100);
        let mut s = Scan::new(&rules, Part::Body, &mut flags);
        for name in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "email"] {
            s.name(Cow::Borrowed(name), 0);
        }
        assert_eq!(s.flags.fields[Part::Body as usize], 1 << email);
    }

    #[test]
    fn the_budget_cuts_values_at_a_character_boundary() {
        let mut flags = Flags::with_budget(5, 100);
        assert_eq!(flags.take("abc"), "abc");
        assert!(!flags.truncated);
        assert_eq!(flags.take("é€x"), "é");
        assert!(flags.truncated);
        assert_eq!(flags.take("z"), "");
        let mut flags = Flags::with_budget(4, 100);
        assert_eq!(flags.take("aé€"), "aé");
    }
}
