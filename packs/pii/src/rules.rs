//! The categories of personal data, their default patterns, and compiling the configured ones.

use std::cell::RefCell;

use regex_lite::Regex;
use taskless_pack_kit::Config;

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
    /// For each default value pattern, a byte every match contains: values without it are not
    /// run through the (comparatively slow) pattern.
    pub needs: &'static [Needs],
}

/// A byte class every match of a pattern contains, checked before running the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// An ASCII digit.
    Digit,
    /// An `@`.
    At,
}

impl Needs {
    /// True when `text` could match.
    pub fn admits(self, text: &str) -> bool {
        match self {
            Needs::Digit => text.bytes().any(|b| b.is_ascii_digit()),
            Needs::At => text.contains('@'),
        }
    }
}

/// Every category, in capture order. The manifest's field defaults repeat these patterns (a test
/// keeps the two equal).
pub const CATEGORIES: &[Category] = &[
    Category {
        key: "email",
        field: "email",
        names: &["(?i)e-?mail"],
        values: &[r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"],
        needs: &[Needs::At],
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
        needs: &[Needs::Digit],
    },
    Category {
        key: "name",
        field: "name",
        names: &[
            r"(?i)^(first_?name|last_?name|middle_?name|full_?name|given_?name|family_?name|sur_?name|maiden_?name|customer_?name|cardholder_?name|holder_?name|billing_?name|shipping_?name)$",
        ],
        values: &[],
        needs: &[],
    },
    Category {
        key: "phone",
        field: "phone",
        names: &[r"(?i)(phone|mobile|msisdn|^fax$|^tel$|telephone|cell_?number)"],
        values: &[
            r"\+[1-9]\d{7,14}\b",
            r"\(?\b[2-9]\d{2}\)?[-. ][2-9]\d{2}[-. ]\d{4}\b",
        ],
        needs: &[Needs::Digit, Needs::Digit],
    },
    Category {
        key: "identification",
        field: "identification",
        names: &[
            r"(?i)(ssn|social_?security|passport|driver_?s?_?licen[cs]e|national_?id|tax_?id|^tin$|^nin$|id_?number|id_?card)",
        ],
        values: &[r"\b\d{3}-\d{2}-\d{4}\b"],
        needs: &[Needs::Digit],
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
        needs: &[Needs::Digit],
    },
    Category {
        key: "birthdate",
        field: "birthdate",
        names: &[r"(?i)(birth_?date|date_?of_?birth|^dob$|birth_?day|^born)"],
        values: &[],
        needs: &[],
    },
    Category {
        key: "ip",
        field: "ip",
        names: &[
            r"(?i)^(ip|ip_?address|client_?ip|remote_?ip|remote_?addr|x-forwarded-for|x-real-ip|true-client-ip|cf-connecting-ip)$",
        ],
        values: &[r"\b((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"],
        needs: &[Needs::Digit],
    },
    Category {
        key: "additional",
        field: "additional",
        names: &[],
        values: &[],
        needs: &[],
    },
];

/// One category's compiled patterns.
pub struct Compiled {
    /// The capture prefix.
    pub key: &'static str,
    /// Field-name patterns.
    pub names: Vec<Regex>,
    /// Value patterns, each with the prefilter of the default it equals (if any).
    pub values: Vec<(Regex, Option<Needs>)>,
}

/// The patterns for every category, from the configuration (each setting falling back to the
/// defaults when absent). Patterns that do not compile are skipped with a warning.
pub fn compile(config: &Config<'_>) -> Vec<Compiled> {
    CATEGORIES
        .iter()
        .map(|c| Compiled {
            key: c.key,
            names: patterns(config, &format!("{}Fields", c.field), c.names)
                .into_iter()
                .map(|(_, re)| re)
                .collect(),
            values: patterns(config, &format!("{}Values", c.field), c.values)
                .into_iter()
                .map(|(source, re)| {
                    let needs = c
                        .values
                        .iter()
                        .position(|d| *d == source)
                        .and_then(|i| c.needs.get(i).copied());
                    (re, needs)
                })
                .collect(),
        })
        .collect()
}

/// The setting's patterns (or the defaults), compiled, with their source text.
fn patterns<'a>(config: &Config<'a>, setting: &str, defaults: &[&'a str]) -> Vec<(&'a str, Regex)> {
    let sources = config.strings(setting).unwrap_or_else(|| defaults.to_vec());
    sources
        .into_iter()
        .filter(|p| !p.is_empty())
        .filter_map(|p| match Regex::new(p) {
            Ok(re) => Some((p, re)),
            Err(err) => {
                taskless_pack_kit::warn(&format!("pii: {setting}: pattern `{p}` skipped: {err}"));
                None
            }
        })
        .collect()
}

thread_local! {
    /// Compiled patterns and the configuration they came from: a pack instance serves one pack
    /// with one configuration, so patterns are compiled once, not on every call.
    static CACHE: RefCell<Option<(String, std::rc::Rc<Vec<Compiled>>)>> = const { RefCell::new(None) };
}

/// [`compile`], cached by the configuration's JSON text.
pub fn compiled(
    configuration: &serde_json::Map<String, serde_json::Value>,
) -> std::rc::Rc<Vec<Compiled>> {
    let key = serde_json::Value::Object(configuration.clone()).to_string();
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((cached_key, rules)) = cache.as_ref()
            && *cached_key == key
        {
            return rules.clone();
        }
        let rules = std::rc::Rc::new(compile(&Config::new(configuration)));
        *cache = Some((key, rules.clone()));
        rules
    })
}
