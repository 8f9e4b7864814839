//! The PII pack: flags personal data — email, address, name, phone, identification, credit card,
//! birthdate, IP address, and a category of your own — sent to or received from an API, in
//! header names and values and in body field names and values. It captures only that a category
//! was seen and where (`email.send.body.field = 1`), never the data itself.
//!
//! Each category has two settings of regular expressions: `<category>Fields` for field and header
//! names, and `<category>Values` for values. The defaults are deliberately conservative (a bare
//! `name` field is not flagged: products and repositories have names too); tune them per API.

mod rules;
mod scan;

use taskless_pack_kit::{Input, Output};

pub use rules::{CATEGORIES, Category};
use scan::{Direction, Flags};

taskless_pack_kit::export_hooks!(pre = pre, post = post);

/// Bytes of header and body values checked per message when `maxScanBytes` is absent. The
/// default value patterns together cost about 0.6 ms per kilobyte of digit-rich text (natively;
/// values without a digit or `@` skip them), so large bodies are only partly checked.
const DEFAULT_MAX_SCAN_BYTES: usize = 32_768;

/// Hosts checked when the `domains` setting is absent.
const DEFAULT_DOMAINS: &[&str] = &["*"];

/// Flags personal data in the request: `<category>.send.<header|body>.<field|value>`.
pub fn pre(input: &Input) -> Output {
    if !input.in_domains(DEFAULT_DOMAINS) {
        return Output::new();
    }
    let request = &input.request;
    check(
        input,
        Direction::Send,
        &request.headers,
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
            response.body.as_ref(),
        ),
        _ => Output::new(),
    }
}

fn check(
    input: &Input,
    direction: Direction,
    headers: &taskless_pack_kit::Headers,
    body: Option<&serde_json::Value>,
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
    let mut flags = Flags::with_budget(budget);
    if config.bool("checkHeaders", true) {
        scan::headers(&rules, direction, headers, &mut flags);
    }
    if let Some(body) = body.filter(|_| config.bool("checkBody", true)) {
        scan::body(
            &rules,
            direction,
            body,
            headers.content_type().as_deref(),
            &mut flags,
        );
    }
    let mut out = Output::new();
    for flag in &flags.found {
        out.capture(flag, 1u8);
    }
    if flags.truncated {
        out.capture(&format!("{}.truncated", direction.as_str()), 1u8);
    }
    out
}

#[cfg(test)]
mod tests;
