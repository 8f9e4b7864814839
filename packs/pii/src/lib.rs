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
    let mut flags = Flags::default();
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
    for flag in &flags.0 {
        out.capture(flag, 1u8);
    }
    out
}

#[cfg(test)]
mod tests;
