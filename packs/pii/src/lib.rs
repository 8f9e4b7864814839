//! The PII pack: flags personal data — email, address, name, phone, identification, credit card,
//! birthdate, IP address, credentials, and a category of your own — sent to or received from an
//! API, in header names and values, query parameters and body field names and values. It captures
//! only that a category was seen and where (`email.send.body.field = 1`), never the data itself.
//!
//! Each category has two settings of regular expressions: `<category>Fields` for field and header
//! names, and `<category>Values` for values. The defaults are deliberately conservative (a bare
//! `name` field is not flagged: products and repositories have names too); tune them per API.
//!
//! Patterns run on lazy DFAs (`regex-automata`), and the default value patterns only over the
//! few places in a value where they can match (see [`Window`]), so a typical exchange costs
//! microseconds.

mod json;
mod matcher;
mod rules;
mod scan;

use taskless_pack_kit::{Body, Headers, Input, Output};

pub use matcher::Window;
pub use rules::{CATEGORIES, Category, DEFAULT_CREDENTIAL_HEADERS};
use scan::{Direction, Flags, Part, Scan};

taskless_pack_kit::export_hooks!(pre = pre, post = post);

/// Bytes of names and values checked per message when `maxScanBytes` is absent: the most the
/// agent keeps of a body by default (`--max-body`), so a body is checked whole unless the agent
/// is told to keep more.
const DEFAULT_MAX_SCAN_BYTES: usize = 1024 * 1024;

/// Hosts checked when the `domains` setting is absent.
const DEFAULT_DOMAINS: &[&str] = &["*"];

/// Flags personal data in the request: `<category>.send.<header|query|body>.<field|value>`.
pub fn pre(input: &Input) -> Output {
    if !input.in_domains(DEFAULT_DOMAINS) {
        return Output::new();
    }
    let request = &input.request;
    let url = input
        .config()
        .bool("checkQuery", true)
        .then_some(request.url.as_str());
    check(
        input,
        Direction::Send,
        &request.headers,
        url,
        request.body.as_ref(),
    )
}

/// Flags personal data in the response: `<category>.receive.<header|body>.<field|value>`.
pub fn post(input: &Input) -> Output {
    match &input.response {
        Some(response) if input.in_domains(DEFAULT_DOMAINS) => check(
            input,
            Direction::Receive,
            &response.headers,
            None,
            response.body.as_ref(),
        ),
        _ => Output::new(),
    }
}

fn check(
    input: &Input,
    direction: Direction,
    headers: &Headers,
    url: Option<&str>,
    body: Option<&Body>,
) -> Output {
    let config = input.config();
    let rules = rules::compiled(&input.configuration);
    let budget = config
        .number("maxScanBytes")
        .map_or(DEFAULT_MAX_SCAN_BYTES, |n| {
            // Negative or fractional settings mean "no budget" or are rounded down.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let n = n.max(0.0) as usize;
            n
        });
    let size = headers
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum::<usize>()
        + url.map_or(0, str::len)
        + body.map_or(0, |b| b.raw_json().len());
    let mut flags = Flags::with_budget(budget, size);
    if config.bool("checkHeaders", true) {
        scan::headers(&rules, headers, &mut flags);
    }
    if let Some(url) = url {
        scan::query(&rules, url, &mut flags);
    }
    if let Some(body) = body.filter(|_| config.bool("checkBody", true)) {
        let mut s = Scan::new(&rules, Part::Body, &mut flags);
        match body.text() {
            Some(text) if headers.content_type().as_deref() == Some(FORM) => {
                scan::pairs(&mut s, text)
            }
            Some(text) => s.value(text, 0),
            None => json::walk(&mut s, body.raw_json()),
        }
    }
    let mut out = Output::new();
    let mut key = String::with_capacity(48);
    for part in Part::ALL {
        for (kind, found) in [("field", flags.fields), ("value", flags.values)] {
            let found = found[part as usize];
            for (i, category) in CATEGORIES.iter().enumerate() {
                if found & (1 << i) != 0 {
                    key.clear();
                    for piece in [category.key, direction.as_str(), part.as_str(), kind] {
                        if !key.is_empty() {
                            key.push('.');
                        }
                        key.push_str(piece);
                    }
                    out.capture(&key, 1u8);
                }
            }
        }
    }
    if flags.truncated {
        key.clear();
        key.push_str(direction.as_str());
        key.push_str(".truncated");
        out.capture(&key, 1u8);
    }
    out
}

/// The media type of form-encoded bodies, read by their names and values.
const FORM: &str = "application/x-www-form-urlencoded";

#[cfg(test)]
mod tests;
