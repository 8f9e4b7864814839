//! The categories of personal data, their default patterns, and compiling the configured ones.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{Map, Value};
use taskless_pack_kit::{Config, FastMap};

use crate::matcher::{Group, Window};

/// One category of personal data.
pub struct Category {
    /// The capture prefix, e.g. `email` in `email.send.body.field`.
    pub key: &'static str,
    /// The setting holding field-name patterns (`<field>Fields`) and value patterns
    /// (`<field>Values`).
    pub field: &'static str,
    /// Default field-name patterns.
    pub names: &'static [&'static str],
    /// Default value patterns.
    pub values: &'static [&'static str],
    /// For each default value pattern, where in a value its matches can be (see [`Window`]): the
    /// pattern runs only there, never over the whole value.
    pub windows: &'static [Window],
}

/// Index of the credential category in [`CATEGORIES`]: headers that are expected to carry a
/// credential (`credentialHeaders`) are not checked for it.
pub const CREDENTIAL: usize = 9;

/// Headers that carry credentials by design, when the `credentialHeaders` setting is absent.
pub const DEFAULT_CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "apikey",
    "x-auth-token",
    "x-access-token",
    "x-goog-api-key",
    "cookie",
    "set-cookie",
];

/// Every category, in capture order. The manifest's field defaults repeat these patterns (a test
/// keeps the two equal).
pub const CATEGORIES: &[Category] = &[
    Category {
        key: "email",
        field: "email",
        names: &["(?i)e-?mail"],
        values: &[r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"],
        windows: &[Window::Email],
    },
    Category {
        key: "address",
        field: "address",
        names: &[
            r"(?i)^(street|street_?address|address|address_?line_?[12]?|line_?[12]|city|town|state_?province|zip|zip_?code|postal_?code|post_?code|billing_?address|shipping_?address|home_?address)$",
        ],
        values: &[
            r"(?i)\b\d{1,6}\s+([A-Za-z0-9.'-]+\s+){1,4}(street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|parkway|pkwy)\b",
        ],
        windows: &[Window::HouseNumber],
    },
    Category {
        key: "name",
        field: "name",
        names: &[
            r"(?i)^(first_?name|last_?name|middle_?name|full_?name|given_?name|family_?name|sur_?name|maiden_?name|customer_?name|cardholder_?name|holder_?name|billing_?name|shipping_?name)$",
        ],
        values: &[],
        windows: &[],
    },
    Category {
        key: "phone",
        field: "phone",
        names: &[r"(?i)(phone|mobile|msisdn|^fax$|^tel$|telephone|cell_?number)"],
        values: &[
            r"\+[1-9]\d{7,14}\b",
            r"\(?\b[2-9]\d{2}\)?[-. ][2-9]\d{2}[-. ]\d{4}\b",
        ],
        windows: &[
            Window::Digits {
                alphabet: "+",
                digits: 8,
                separators: 1,
            },
            Window::Digits {
                alphabet: "(). -",
                digits: 10,
                separators: 2,
            },
        ],
    },
    Category {
        key: "identification",
        field: "identification",
        names: &[
            r"(?i)(ssn|social_?security|passport|driver_?s?_?licen[cs]e|national_?id|tax_?id|^tin$|^nin$|id_?number|id_?card)",
        ],
        values: &[r"\b\d{3}-\d{2}-\d{4}\b"],
        windows: &[Window::Digits {
            alphabet: "-",
            digits: 9,
            separators: 2,
        }],
    },
    Category {
        key: "creditcard",
        field: "creditCard",
        names: &[
            r"(?i)(card_?number|cc_?num(ber)?|credit_?card|^pan$|^cvv2?$|^cvc$|card_?cvc|security_?code)",
        ],
        values: &[
            r"\b(4\d{3}|5[1-5]\d{2}|2[2-7]\d{2}|3[47]\d{2}|6011|65\d{2})([ -]?\d{4}){2}[ -]?\d{3,4}\b",
        ],
        windows: &[Window::Digits {
            alphabet: " -",
            digits: 15,
            separators: 0,
        }],
    },
    Category {
        key: "birthdate",
        field: "birthdate",
        names: &[r"(?i)(birth_?date|date_?of_?birth|^dob$|birth_?day|^born)"],
        values: &[],
        windows: &[],
    },
    Category {
        key: "ip",
        field: "ip",
        names: &[
            r"(?i)^(ip|ip_?address|client_?ip|remote_?ip|remote_?addr|x-forwarded-for|x-real-ip|true-client-ip|cf-connecting-ip)$",
        ],
        values: &[r"\b((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"],
        windows: &[Window::Digits {
            alphabet: ".",
            digits: 4,
            separators: 3,
        }],
    },
    Category {
        key: "additional",
        field: "additional",
        names: &[],
        values: &[],
        windows: &[],
    },
    Category {
        key: "credential",
        field: "credential",
        names: &[
            r"(?i)^(api_?key|apikey|api_?secret|secret_?key|secret_?access_?key|private_?key|client_?secret|access_?token|refresh_?token|id_?token|auth_?token|bearer_?token|session_?token|password|passwd|secret|token)$",
        ],
        values: &[
            // Stripe secret and restricted keys.
            r"\b[rs]k_(live|test)_[0-9A-Za-z]{16,}",
            // OpenAI-style keys (sk-..., sk-proj-...; Anthropic's sk-ant-... too).
            r"\bsk-[A-Za-z0-9_-]{20,}",
            // GitHub tokens: classic (ghp_, gho_, ghu_, ghs_, ghr_) and fine-grained.
            r"\b(gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,})\b",
            // AWS access key ids (long-term and temporary).
            r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
            // Slack bot, user and app tokens.
            r"\bxox[abposr]-[0-9A-Za-z-]{20,}",
            // Google API keys.
            r"\bAIza[0-9A-Za-z_-]{35}\b",
            // JSON Web Tokens: three base64url parts, the first two JSON objects.
            r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
            // A bearer credential written out, as in an Authorization header's value.
            r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{20,}",
        ],
        windows: &[
            Window::Token { len: 20 },
            Window::Token { len: 20 },
            Window::Token { len: 20 },
            Window::Token { len: 20 },
            Window::Token { len: 20 },
            Window::Token { len: 20 },
            Window::Token { len: 20 },
            Window::Token { len: 20 },
        ],
    },
];

/// One category's compiled patterns.
pub struct Compiled {
    /// Field-name patterns (all of them in one automaton), if any.
    pub names: Option<Group>,
    /// Value patterns, grouped by where they may match: each group is one automaton.
    pub values: Vec<Group>,
    /// The fewest bytes a value matching any of `values` holds (`usize::MAX` without any).
    pub min_value_len: usize,
    /// When every value group looks only at clusters of digits ([`Window::Digits`]): the
    /// fewest digits a matching value holds. A value with fewer digits cannot match.
    pub min_value_digits: Option<usize>,
}

/// Most field names whose result is remembered across calls.
const NAME_CACHE_SIZE: usize = 4_096;

/// Every category's patterns, compiled from one configuration, and what was learnt with them.
pub struct Rules {
    /// The categories, in [`CATEGORIES`] order.
    pub categories: Vec<Compiled>,
    /// Lower-case names of the headers expected to carry credentials.
    pub credential_headers: Vec<String>,
    /// Field names already checked, with the categories (bit `i` for `categories[i]`) whose
    /// field patterns they match: an API sends the same field names call after call.
    names_seen: RefCell<FastMap<Box<str>, u16>>,
    /// [`Rules::fitting`] for the lengths of short values, which are most values.
    fitting_short: [u16; 64],
    /// See [`Rules::digits_only`].
    digits_only: u16,
    /// [`Rules::wanting_more_digits`] for up to 31 digits.
    wanting_more_digits: [u16; 32],
}

/// The categories that look only at clusters of digits and need more than `digits` of them.
fn wanting_more_digits(categories: &[Compiled], digits: usize) -> u16 {
    categories
        .iter()
        .enumerate()
        .filter(|(_, c)| c.min_value_digits.is_some_and(|need| need > digits))
        .fold(0, |mask, (i, _)| mask | (1 << i))
}

/// The categories with a value pattern whose matches can fit in `len` bytes.
fn fitting(categories: &[Compiled], len: usize) -> u16 {
    categories
        .iter()
        .enumerate()
        .filter(|(_, c)| c.min_value_len <= len)
        .fold(0, |mask, (i, _)| mask | (1 << i))
}

impl Rules {
    /// The categories (bit `i` for `categories[i]`) whose field patterns match `name`.
    pub fn name_categories(&self, name: &str) -> u16 {
        if let Some(mask) = self.names_seen.borrow().get(name) {
            return *mask;
        }
        let mut mask = 0u16;
        for (i, category) in self.categories.iter().enumerate() {
            if category
                .names
                .as_ref()
                .is_some_and(|g| g.is_match_whole(name))
            {
                mask |= 1 << i;
            }
        }
        let mut seen = self.names_seen.borrow_mut();
        if seen.len() >= NAME_CACHE_SIZE {
            seen.clear();
        }
        seen.insert(name.into(), mask);
        mask
    }

    /// The categories (bit `i` for `categories[i]`) with a value pattern whose matches can
    /// fit in `len` bytes.
    pub fn fitting(&self, len: usize) -> u16 {
        match self.fitting_short.get(len) {
            Some(mask) => *mask,
            None => fitting(&self.categories, len),
        }
    }

    /// The categories (bit `i` for `categories[i]`) that look only at clusters of digits.
    pub fn digits_only(&self) -> u16 {
        self.digits_only
    }

    /// The categories that look only at clusters of digits and need more than `digits` of
    /// them: a value holding `digits` digits cannot match them.
    pub fn wanting_more_digits(&self, digits: usize) -> u16 {
        match self.wanting_more_digits.get(digits) {
            Some(mask) => *mask,
            None => wanting_more_digits(&self.categories, digits),
        }
    }

    /// True when header `name` is expected to carry a credential.
    pub fn is_credential_header(&self, name: &str) -> bool {
        self.credential_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// The patterns for every category, from the configuration (each setting falling back to the
/// defaults when absent). Patterns that do not compile are skipped with a warning.
pub fn compile(config: &Config<'_>) -> Rules {
    let categories: Vec<Compiled> = CATEGORIES
        .iter()
        .map(|c| {
            let names = patterns(config, &format!("{}Fields", c.field), c.names);
            let values = patterns(config, &format!("{}Values", c.field), c.values);
            // A pattern keeps its window only when it is the default it was written for.
            let mut by_window: Vec<(Window, Vec<&str>)> = Vec::new();
            for source in values {
                let window = c
                    .values
                    .iter()
                    .position(|d| *d == source)
                    .and_then(|i| c.windows.get(i).copied())
                    .unwrap_or(Window::Whole);
                match by_window.iter_mut().find(|(w, _)| *w == window) {
                    Some((_, sources)) => sources.push(source),
                    None => by_window.push((window, vec![source])),
                }
            }
            let values: Vec<Group> = by_window
                .into_iter()
                .filter_map(|(window, sources)| Group::new(&sources, window))
                .collect();
            Compiled {
                names: Group::new(&names, Window::Whole),
                min_value_len: values
                    .iter()
                    .map(Group::min_len)
                    .min()
                    .unwrap_or(usize::MAX),
                min_value_digits: values
                    .iter()
                    .map(Group::min_digits)
                    .collect::<Option<Vec<usize>>>()
                    .and_then(|d| d.into_iter().min()),
                values,
            }
        })
        .collect();
    let credential_headers = config
        .strings("credentialHeaders")
        .unwrap_or_else(|| DEFAULT_CREDENTIAL_HEADERS.to_vec())
        .into_iter()
        .map(str::to_ascii_lowercase)
        .collect();
    let fitting_short = std::array::from_fn(|len| fitting(&categories, len));
    let digits_only = categories
        .iter()
        .enumerate()
        .filter(|(_, c)| c.min_value_digits.is_some())
        .fold(0, |mask, (i, _)| mask | (1 << i));
    let wanting_more_digits = std::array::from_fn(|d| wanting_more_digits(&categories, d));
    Rules {
        categories,
        credential_headers,
        names_seen: RefCell::new(FastMap::default()),
        fitting_short,
        digits_only,
        wanting_more_digits,
    }
}

/// The setting's patterns (or the defaults) that compile; the others are skipped with a warning.
fn patterns<'a>(config: &Config<'a>, setting: &str, defaults: &[&'a str]) -> Vec<&'a str> {
    let sources = config.strings(setting).unwrap_or_else(|| defaults.to_vec());
    sources
        .into_iter()
        .filter(|p| !p.is_empty())
        .filter(|p| match crate::matcher::check_pattern(p) {
            Ok(()) => true,
            Err(err) => {
                taskless_pack_kit::warn(&format!("pii: {setting}: pattern `{p}` skipped: {err}"));
                false
            }
        })
        .collect()
}

/// The settings the rules were compiled from.
type Settings = Rc<Map<String, Value>>;

thread_local! {
    /// Compiled patterns and the configuration they came from: a pack instance serves one pack
    /// with one configuration, so patterns are compiled once, not on every call.
    static CACHE: RefCell<Option<(Settings, Rc<Rules>)>> = const { RefCell::new(None) };
}

/// [`compile`], cached by the configuration (the same shared settings, or equal ones).
pub fn compiled(configuration: &Settings) -> Rc<Rules> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((cached, rules)) = cache.as_ref()
            && (Rc::ptr_eq(cached, configuration) || cached == configuration)
        {
            return rules.clone();
        }
        let rules = Rc::new(compile(&Config::new(configuration)));
        *cache = Some((configuration.clone(), rules.clone()));
        rules
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bit(key: &str) -> u16 {
        1 << CATEGORIES
            .iter()
            .position(|c| c.key == key)
            .expect("a category")
    }

    #[test]
    fn a_value_with_too_few_digits_rules_out_the_categories_that_look_only_at_digits() {
        let rules = compile(&Config::new(&Map::new()));
        let digits = bit("phone") | bit("identification") | bit("creditcard") | bit("ip");
        assert_eq!(rules.digits_only(), digits);
        assert_eq!(rules.wanting_more_digits(0), digits);
        assert_eq!(rules.wanting_more_digits(3), digits);
        // An IPv4 address holds 4 digits at least, a phone number 8, an SSN 9, a card 15.
        assert_eq!(rules.wanting_more_digits(4), digits & !bit("ip"));
        assert_eq!(
            rules.wanting_more_digits(8),
            bit("identification") | bit("creditcard")
        );
        assert_eq!(rules.wanting_more_digits(9), bit("creditcard"));
        assert_eq!(rules.wanting_more_digits(15), 0);
        assert_eq!(rules.wanting_more_digits(100), 0);
        // A configured pattern that is not a default runs over the whole value: no count of
        // digits rules a value out for it.
        let config = serde_json::json!({
            "identificationValues": [r"\b\d{3}-\d{2}-\d{4}\b", "[A-Z]{2}[0-9]{6}"]
        });
        let config = config.as_object().expect("an object");
        let rules = compile(&Config::new(config));
        assert_eq!(rules.wanting_more_digits(0) & bit("identification"), 0);
        assert_ne!(rules.wanting_more_digits(0) & bit("ip"), 0);
    }
}
