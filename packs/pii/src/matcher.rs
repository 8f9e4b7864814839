//! Matching patterns against names and values: a lazy DFA per group of patterns, run only over
//! the parts of a value where a match can be ("windows"), found by cheap byte scans.
//!
//! A pattern is searched with `regex-automata`'s lazy DFA, which builds its states on first use
//! and then costs one table lookup per byte. Patterns use the `regex` crate's syntax with Unicode
//! off (ASCII classes, `\b` and case folding, matched byte by byte), as `regex-lite` did before.
//!
//! The default value patterns are never run over a whole value. Each is written for a
//! [`Window`]: a byte scan finds the candidates (an `@`, a cluster of digits, a long token), and
//! the DFA runs only over them, with the bytes beside a window still visible to `\b`. Configured
//! patterns that are not a default have no window and run over the whole value (within
//! `maxScanBytes`).

use std::cell::RefCell;

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::nfa::thompson;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};

/// Where in a value the matches of a pattern can lie. Each window's rule is argued from the
/// default pattern it is attached to; a pattern that is not a default uses [`Window::Whole`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Anywhere: the pattern runs over the whole value.
    Whole,
    /// The run of address bytes (`[A-Za-z0-9._%+-]`) around each `@`: an email address is made of
    /// those and holds an `@`.
    Email,
    /// Runs of digits and `alphabet`'s bytes holding at least `digits` digits and `separators`
    /// of the other bytes: every match of the pattern is made of those bytes only and holds that
    /// many of each (phone numbers, ids, card numbers, IPv4 addresses).
    Digits {
        /// The bytes besides digits a match can hold.
        alphabet: &'static str,
        /// The fewest digits a match holds.
        digits: u8,
        /// The fewest bytes of `alphabet` a match holds (the three dots of an IPv4 address).
        separators: u8,
    },
    /// Anchored at each house number: a run of 1 to 6 digits that starts a word and is followed
    /// by white space, which is how every match of the street-address pattern begins.
    HouseNumber,
    /// Runs of at least `len` token bytes (`[A-Za-z0-9_.+/=~-]`: base64, base64url, JWTs), with
    /// the word and white space before them (so `Bearer <token>` is seen whole): every credential
    /// pattern's key or token is such a run.
    Token {
        /// The fewest bytes of the token.
        len: u8,
    },
}

/// Byte classes used by the windows.
mod class {
    pub const DIGIT: u8 = 1;
    pub const WORD: u8 = 2;
    pub const SPACE: u8 = 4;
    pub const EMAIL: u8 = 8;
    pub const TOKEN: u8 = 16;
    pub const LETTER: u8 = 32;
}

/// The classes of every byte.
static CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        let mut bits = 0;
        if c.is_ascii_digit() {
            bits |= class::DIGIT;
        }
        if c.is_ascii_alphanumeric() || c == b'_' {
            bits |= class::WORD;
        }
        if c.is_ascii_alphabetic() {
            bits |= class::LETTER;
        }
        // `\s` in ASCII mode: space, \t, \n, \v, \f, \r.
        if matches!(c, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r') {
            bits |= class::SPACE;
        }
        if c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-' | b'@') {
            bits |= class::EMAIL;
        }
        if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'+' | b'/' | b'=' | b'~' | b'-')
        {
            bits |= class::TOKEN;
        }
        t[b] = bits;
        b += 1;
    }
    t
};

fn is(b: u8, class: u8) -> bool {
    CLASSES[usize::from(b)] & class != 0
}

/// Checks that `pattern` compiles, with the syntax every group uses.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    syntax::parse_with(pattern, &syntax_config())
        .map(drop)
        .map_err(|e| e.to_string())
}

fn syntax_config() -> syntax::Config {
    syntax::Config::new().unicode(false).utf8(false)
}

/// Patterns searched together by one lazy DFA, over one kind of window.
pub struct Group {
    dfa: DFA,
    cache: RefCell<Cache>,
    window: Window,
    /// For [`Window::Digits`]: the bytes a match may hold.
    alphabet: [bool; 256],
    /// The fewest bytes a match of any of the patterns holds: shorter text cannot match.
    min_len: usize,
}

impl Group {
    /// A group of patterns that each compile on their own (see [`check_pattern`]); `None` when
    /// there are none, or when together they do not build (reported as a warning).
    pub fn new(patterns: &[&str], window: Window) -> Option<Self> {
        if patterns.is_empty() {
            return None;
        }
        // A full cache is cleared and refilled (slower, still correct): 256 KiB per group keeps
        // every group's states well inside an instance's memory limit, and the default patterns
        // use a small part of it.
        let built = DFA::builder()
            .configure(
                DFA::config()
                    .cache_capacity(256 * 1024)
                    .skip_cache_capacity_check(true),
            )
            .syntax(syntax_config())
            .thompson(thompson::Config::new().utf8(false))
            .build_many(patterns);
        let dfa = match built {
            Ok(dfa) => dfa,
            Err(err) => {
                taskless_pack_kit::warn(&format!("pii: patterns {patterns:?} skipped: {err}"));
                return None;
            }
        };
        let mut alphabet = [false; 256];
        if let Window::Digits {
            alphabet: extra, ..
        } = window
        {
            for b in extra.bytes() {
                alphabet[usize::from(b)] = true;
            }
            for b in b'0'..=b'9' {
                alphabet[usize::from(b)] = true;
            }
        }
        let min_len = patterns
            .iter()
            .map(|p| {
                // A pattern that can match nothing never matches, however long the text; one
                // that does not parse (patterns are checked before) is assumed to need none.
                syntax::parse_with(p, &syntax_config())
                    .ok()
                    .map_or(0, |hir| {
                        hir.properties().minimum_len().unwrap_or(usize::MAX)
                    })
            })
            .min()
            .unwrap_or(0);
        Some(Self {
            cache: RefCell::new(dfa.create_cache()),
            dfa,
            window,
            alphabet,
            min_len,
        })
    }

    /// The fewest bytes of text a match of the group's patterns holds.
    pub fn min_len(&self) -> usize {
        self.min_len
    }

    /// For a group that looks only at clusters of digits ([`Window::Digits`]): the fewest
    /// digits a value it matches holds.
    pub fn min_digits(&self) -> Option<usize> {
        match self.window {
            Window::Digits { digits, .. } => Some(usize::from(digits)),
            _ => None,
        }
    }

    /// True when a pattern matches somewhere in `span` of `hay` (bytes beside the span count
    /// for look-around), anchored at the span's start when `anchored`.
    fn search(&self, hay: &[u8], span: std::ops::Range<usize>, anchored: bool) -> bool {
        let input = Input::new(hay)
            .range(span)
            .earliest(true)
            .anchored(if anchored {
                Anchored::Yes
            } else {
                Anchored::No
            });
        let mut cache = self.cache.borrow_mut();
        // The DFA has no quit bytes and never gives up, so an error cannot happen; were it to,
        // no match is the conservative answer for a flag.
        matches!(self.dfa.try_search_fwd(&mut cache, &input), Ok(Some(_)))
    }

    /// True when a pattern matches anywhere in `text`, ignoring the window (field names).
    pub fn is_match_whole(&self, text: &str) -> bool {
        self.search(text.as_bytes(), 0..text.len(), false)
    }

    /// True when a pattern matches in `value`, searching only the group's windows.
    pub fn is_match(&self, value: &str, facts: &Facts) -> bool {
        let hay = value.as_bytes();
        if hay.len() < self.min_len {
            return false;
        }
        match self.window {
            Window::Whole => self.search(hay, 0..hay.len(), false),
            Window::Email => facts.has_at && self.email(hay),
            Window::Digits {
                digits, separators, ..
            } => {
                usize::from(digits) <= facts.digits
                    && self.digit_clusters(hay, facts, digits, separators)
            }
            Window::HouseNumber => facts.runs.iter().any(|&(start, end)| {
                end - start <= 6
                    && (start == 0 || !is(hay[start - 1], class::WORD))
                    && hay.get(end).is_some_and(|b| is(*b, class::SPACE))
                    && self.search(hay, start..hay.len(), true)
            }),
            Window::Token { len } => {
                usize::from(len) <= facts.longest_token && self.tokens(hay, usize::from(len))
            }
        }
    }

    fn email(&self, hay: &[u8]) -> bool {
        let mut from = 0;
        while let Some(at) = hay[from..]
            .iter()
            .position(|b| *b == b'@')
            .map(|i| from + i)
        {
            let mut start = at;
            while start > 0 && is(hay[start - 1], class::EMAIL) && hay[start - 1] != b'@' {
                start -= 1;
            }
            let mut end = at + 1;
            while end < hay.len() && is(hay[end], class::EMAIL) && hay[end] != b'@' {
                end += 1;
            }
            if self.search(hay, start..end, false) {
                return true;
            }
            from = end;
        }
        false
    }

    /// Joins digit runs separated only by alphabet bytes into clusters, and searches each
    /// cluster (widened over alphabet bytes on both sides) that holds enough digits and enough
    /// other alphabet bytes. (The bytes between runs and those widened over are never digits:
    /// runs are whole, and a cluster stops where a byte outside the alphabet lies.)
    fn digit_clusters(
        &self,
        hay: &[u8],
        facts: &Facts,
        min_digits: u8,
        min_separators: u8,
    ) -> bool {
        let in_alphabet = |b: u8| self.alphabet[usize::from(b)];
        let runs = &facts.runs;
        let mut i = 0;
        while i < runs.len() {
            let (first_start, mut end) = runs[i];
            let mut digits = end - first_start;
            let mut separators = 0;
            let mut j = i + 1;
            while j < runs.len() && hay[end..runs[j].0].iter().all(|b| in_alphabet(*b)) {
                separators += runs[j].0 - end;
                digits += runs[j].1 - runs[j].0;
                end = runs[j].1;
                j += 1;
            }
            if digits >= usize::from(min_digits) {
                let mut start = first_start;
                while start > 0 && in_alphabet(hay[start - 1]) {
                    start -= 1;
                }
                while end < hay.len() && in_alphabet(hay[end]) {
                    end += 1;
                }
                separators += first_start - start + end - runs[j - 1].1;
                if separators >= usize::from(min_separators) && self.search(hay, start..end, false)
                {
                    return true;
                }
            }
            i = j;
        }
        false
    }

    fn tokens(&self, hay: &[u8], len: usize) -> bool {
        let mut i = 0;
        while i < hay.len() {
            if !is(hay[i], class::TOKEN) {
                i += 1;
                continue;
            }
            let start = i;
            while i < hay.len() && is(hay[i], class::TOKEN) {
                i += 1;
            }
            if i - start < len {
                continue;
            }
            // Widen over the white space and the word before, for `Bearer <token>`.
            let mut from = start;
            if from > 0 && is(hay[from - 1], class::SPACE) {
                while from > 0 && is(hay[from - 1], class::SPACE) {
                    from -= 1;
                }
                while from > 0 && is(hay[from - 1], class::LETTER) {
                    from -= 1;
                }
            }
            if self.search(hay, from..i, false) {
                return true;
            }
        }
        false
    }
}

/// The ASCII digits in `value`: a loop the compiler turns into 16-byte vector steps, far
/// cheaper than [`Facts::learn`], so it can rule a value out first.
pub fn count_digits(value: &str) -> usize {
    value.bytes().filter(u8::is_ascii_digit).count()
}

/// What one pass over a value learns, shared by every group that checks it.
#[derive(Debug, Default)]
pub struct Facts {
    /// The value holds an `@`.
    has_at: bool,
    /// Digits in the value.
    digits: usize,
    /// The runs of digits, as byte ranges, in order.
    runs: Vec<(usize, usize)>,
    /// The longest run of token bytes.
    longest_token: usize,
}

impl Facts {
    /// Learns about `value`, reusing this value's storage.
    pub fn learn(&mut self, value: &str) {
        self.has_at = false;
        self.digits = 0;
        self.runs.clear();
        self.longest_token = 0;
        let hay = value.as_bytes();
        let mut token = 0usize;
        let mut i = 0;
        while i < hay.len() {
            let b = hay[i];
            let c = CLASSES[usize::from(b)];
            if c & class::DIGIT != 0 {
                let start = i;
                while i < hay.len() && hay[i].is_ascii_digit() {
                    i += 1;
                }
                self.runs.push((start, i));
                self.digits += i - start;
                token += i - start;
                self.longest_token = self.longest_token.max(token);
                continue;
            }
            if c & class::TOKEN != 0 {
                token += 1;
                self.longest_token = self.longest_token.max(token);
            } else {
                token = 0;
                self.has_at |= b == b'@';
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(pattern: &str, window: Window) -> Group {
        Group::new(&[pattern], window).expect("builds")
    }

    fn matches(g: &Group, value: &str) -> bool {
        let mut facts = Facts::default();
        facts.learn(value);
        g.is_match(value, &facts)
    }

    #[test]
    fn look_around_sees_the_bytes_beside_a_window() {
        let g = group(r"\bfoo", Window::Whole);
        assert!(!g.search(b"xfoo", 1..4, false));
        assert!(g.search(b"-foo", 1..4, false));
        let g = group(r"\d{3}\b", Window::Whole);
        assert!(!g.search(b"1234", 0..3, false));
    }

    #[test]
    fn facts_find_digit_runs_ats_and_tokens() {
        let mut f = Facts::default();
        f.learn("call (415) 555-0132 or a@b.co");
        assert!(f.has_at);
        assert_eq!(f.digits, 10);
        assert_eq!(f.runs, [(6, 9), (11, 14), (15, 19)]);
        f.learn("sk_live_0123456789abcdef!");
        assert!(!f.has_at);
        assert_eq!(f.longest_token, 24);
    }

    #[test]
    fn windows_find_what_the_whole_value_search_finds() {
        // For each default-style pattern, the windowed search agrees with a search of the whole
        // value over values built to sit at the edges of the windows.
        let cases: &[(&str, Window, &[&str])] = &[
            (
                r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
                Window::Email,
                &[
                    "x a@b.co",
                    "a@b",
                    "@@a@b.co@",
                    "mail: jo.e+1@ex-ample.org.",
                    "a@b@c.de",
                ],
            ),
            (
                r"\(?\b[2-9]\d{2}\)?[-. ][2-9]\d{2}[-. ]\d{4}\b",
                Window::Digits {
                    alphabet: "(). -",
                    digits: 10,
                    separators: 2,
                },
                &[
                    "(415) 555-0132",
                    "(415)555-0132",
                    "(415)5550132",
                    "415-5550132",
                    "x415.555.0132",
                    "415 555 01324",
                    "1 415-555-0132 2",
                    "a4155550132",
                ],
            ),
            (
                r"\+[1-9]\d{7,14}\b",
                Window::Digits {
                    alphabet: "+",
                    digits: 8,
                    separators: 1,
                },
                &[
                    "+14155550123",
                    "14155550123",
                    "++14155550123",
                    "x+1415555012345678",
                    "+1415555",
                ],
            ),
            (
                r"\b((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b",
                Window::Digits {
                    alphabet: ".",
                    digits: 4,
                    separators: 3,
                },
                &[
                    "ip 10.0.0.1.",
                    ".10.0.0",
                    "10.0.0.",
                    "1.2.3.",
                    ".1.2.3",
                    "1700000000",
                    "3.14159",
                    "v1.2.3.4",
                    "1.2.3",
                    "256.1.1.1",
                    "a.1.2.3.4",
                ],
            ),
            (
                r"\b\d{3}-\d{2}-\d{4}\b",
                Window::Digits {
                    alphabet: "-",
                    digits: 9,
                    separators: 2,
                },
                &[
                    "123-45-6789",
                    "x123-45-6789-",
                    "123456789",
                    "12345-6789",
                    "-123-456789",
                ],
            ),
            (
                r"\b(4\d{3}|5[1-5]\d{2}|2[2-7]\d{2}|3[47]\d{2}|6011|65\d{2})([ -]?\d{4}){2}[ -]?\d{3,4}\b",
                Window::Digits {
                    alphabet: " -",
                    digits: 15,
                    separators: 0,
                },
                &[
                    "4242424242424242",
                    "4242 4242 4242 4242",
                    "x4242-4242-4242-424",
                    "4242 4242",
                ],
            ),
            (
                r"(?i)\b\d{1,6}\s+([A-Za-z0-9.'-]+\s+){1,4}(street|st|avenue|ave|road|rd)\b",
                Window::HouseNumber,
                &[
                    "12 Downing Street",
                    "a12 Downing Street",
                    "1234567 Main St",
                    "12\tMain St.",
                    "at 5 Main Road now",
                ],
            ),
            (
                r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{20,}",
                Window::Token { len: 20 },
                &[
                    "Bearer abcdefghijklmnopqrstuvwxyz",
                    "xBearer abcdefghijklmnopqrstuvwxyz",
                    "bearer  short",
                    "BEARER\tABCDEFGHIJKLMNOPQRSTUVWXYZ",
                ],
            ),
            (
                r"\bsk-[A-Za-z0-9_-]{20,}",
                Window::Token { len: 20 },
                &[
                    "key sk-abcdefghijklmnopqrstuvwx",
                    "task-abcdefghijklmnopqrstuvwx",
                    "=sk-abcdefghijklmnopqrstuvwx",
                ],
            ),
        ];
        for (pattern, window, values) in cases {
            let windowed = group(pattern, *window);
            let whole = group(pattern, Window::Whole);
            for value in *values {
                assert_eq!(
                    matches(&windowed, value),
                    matches(&whole, value),
                    "{pattern} on {value:?}"
                );
            }
        }
    }

    #[test]
    fn text_shorter_than_any_match_is_not_searched() {
        let g = Group::new(
            &[r"\d{3}-\d{4}", r"[a-z]+@[a-z]+\.[a-z]{2,}"],
            Window::Whole,
        )
        .expect("builds");
        assert_eq!(g.min_len(), 6);
        assert!(matches(&g, "a@b.co"));
        assert!(!matches(&g, "a@b.c"));
        assert!(matches(&g, "x555-0132"));
        let g = group(
            r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{20,}",
            Window::Token { len: 20 },
        );
        assert_eq!(g.min_len(), 27);
        let never = group(r"[a&&b]", Window::Whole);
        assert_eq!(never.min_len(), usize::MAX);
        assert!(!matches(&never, "anything at all"));
    }

    #[test]
    fn patterns_are_ascii_and_byte_wise() {
        assert!(check_pattern(r"(?i)\bstraße\b").is_ok());
        assert!(check_pattern(r"\p{L}").is_err(), "no Unicode classes");
        assert!(check_pattern("([unclosed").is_err());
        let g = group(r"(?i)^e-?mail$", Window::Whole);
        assert!(g.is_match_whole("E-Mail"));
        assert!(!g.is_match_whole("emails"));
    }
}
