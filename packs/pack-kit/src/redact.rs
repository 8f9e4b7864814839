//! Credential-like query parameters, redacted in every capture a pack returns.
//!
//! URLs carry secrets in their query strings (`?api_key=sk_live_...`, `?access_token=...`,
//! presigned `X-Amz-Signature`s). Every text capture that holds a query string has the values of
//! such parameters replaced by [`REDACTED`] before it leaves the pack, whatever the pack: the
//! kit's hook runner ([`crate::call_hook`]) applies it. The names come from the pack's
//! `redactQueryParameters` setting (case-insensitive), [`DEFAULT_REDACTED_QUERY_PARAMETERS`] when
//! it is absent; an empty list switches redaction off.

use std::borrow::Cow;

use crate::Input;

/// The setting that lists the parameter names to redact.
pub const REDACT_SETTING: &str = "redactQueryParameters";

/// What a redacted value becomes.
pub const REDACTED: &str = "REDACTED";

/// Parameter names redacted when a pack's `redactQueryParameters` setting is absent. Every
/// shipped pack's manifest declares the setting with this default (a test keeps them equal).
pub const DEFAULT_REDACTED_QUERY_PARAMETERS: &[&str] = &[
    "key",
    "api_key",
    "apikey",
    "api-key",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth",
    "auth_token",
    "authorization",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "signature",
    "sig",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
];

/// The parameter names `input`'s configuration asks to redact.
pub fn redacted_parameters(input: &Input) -> Vec<&str> {
    input
        .config()
        .strings(REDACT_SETTING)
        .unwrap_or_else(|| DEFAULT_REDACTED_QUERY_PARAMETERS.to_vec())
}

/// Bytes that end a query string inside a longer text: a fragment, white space, quotes and
/// angle brackets (a URL quoted in a message).
fn ends_query(b: u8) -> bool {
    matches!(b, b'#' | b'"' | b'\'' | b'<' | b'>' | b'`') || b.is_ascii_whitespace()
}

/// `text` with the value of every query parameter named in `names` (compared case-insensitively
/// after percent-decoding) replaced by [`REDACTED`]. Every `?` in the text starts a query (a text
/// may hold several URLs), which runs to a `#`, white space or a quote; inside it both `&` and a
/// further `?` separate parameters, so a URL nested unencoded in a value is covered too. Empty
/// values stay empty.
///
/// ```
/// use taskless_pack_kit::redact_query;
/// assert_eq!(
///     redact_query("https://api.stripe.com/v1/customers?api_key=sk_live_x&limit=1", &["api_key"]),
///     "https://api.stripe.com/v1/customers?api_key=REDACTED&limit=1"
/// );
/// ```
pub fn redact_query<'a>(text: &'a str, names: &[&str]) -> Cow<'a, str> {
    if names.is_empty() || !text.contains('?') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    // Byte ranges of values to replace, in order.
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while let Some(q) = bytes[i..].iter().position(|b| *b == b'?') {
        let start = i + q + 1;
        let end = bytes[start..]
            .iter()
            .position(|b| ends_query(*b))
            .map_or(bytes.len(), |n| start + n);
        let mut pair_start = start;
        while pair_start < end {
            let pair_end = bytes[pair_start..end]
                .iter()
                .position(|b| matches!(b, b'&' | b'?'))
                .map_or(end, |n| pair_start + n);
            if let Some(eq) = bytes[pair_start..pair_end].iter().position(|b| *b == b'=') {
                // Cut at ASCII bytes, so always at character boundaries (`get` never panics).
                let name = text.get(pair_start..pair_start + eq).unwrap_or_default();
                let value = (pair_start + eq + 1, pair_end);
                if value.0 < value.1 && names_match(name, names) {
                    cuts.push(value);
                }
            }
            pair_start = pair_end + 1;
        }
        i = end;
    }
    if cuts.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (from, to) in cuts {
        out.push_str(text.get(at..from).unwrap_or_default());
        out.push_str(REDACTED);
        at = to;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    Cow::Owned(out)
}

/// True when the parameter `name` (percent-encoded as on the wire) is one of `names`.
fn names_match(name: &str, names: &[&str]) -> bool {
    let decoded = percent_decode(name);
    names.iter().any(|n| n.eq_ignore_ascii_case(&decoded))
}

/// Percent-decodes a query component (`+` is a space); invalid escapes stay as they are.
pub fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
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
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(text: &str) -> String {
        redact_query(text, DEFAULT_REDACTED_QUERY_PARAMETERS).into_owned()
    }

    #[test]
    fn credential_parameters_are_redacted_and_others_kept() {
        assert_eq!(
            redact("https://api.stripe.com/v1/customers?api_key=sk_live_x&limit=1"),
            "https://api.stripe.com/v1/customers?api_key=REDACTED&limit=1"
        );
        assert_eq!(
            redact("/graph?fields=id&access_token=EAAB&Token=t#frag?token=t2"),
            "/graph?fields=id&access_token=REDACTED&Token=REDACTED#frag?token=REDACTED"
        );
        assert_eq!(
            redact(
                "https://b.s3.amazonaws.com/o?X-Amz-Credential=AKIA%2F2026&X-Amz-Signature=ab12&X-Amz-Expires=60"
            ),
            "https://b.s3.amazonaws.com/o?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&X-Amz-Expires=60"
        );
    }

    #[test]
    fn names_are_percent_decoded_and_empty_values_kept() {
        assert_eq!(
            redact("/x?api%5Fkey=1&key=&sig"),
            "/x?api%5Fkey=REDACTED&key=&sig"
        );
    }

    #[test]
    fn every_query_in_a_text_is_covered() {
        assert_eq!(
            redact("see https://a.io/?token=abc and \"https://b.io/cb?next=/x?secret=s\""),
            "see https://a.io/?token=REDACTED and \"https://b.io/cb?next=/x?secret=REDACTED\""
        );
    }

    #[test]
    fn text_without_a_query_is_not_copied() {
        assert!(matches!(
            redact_query(
                "https://api.x.io/v1/things",
                DEFAULT_REDACTED_QUERY_PARAMETERS
            ),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            redact_query("/v1/things?limit=2", DEFAULT_REDACTED_QUERY_PARAMETERS),
            Cow::Borrowed(_)
        ));
        assert!(matches!(redact_query("/x?token=1", &[]), Cow::Borrowed(_)));
    }

    fn error_link(_: &crate::Input) -> crate::Output {
        let mut out = crate::Output::new();
        out.capture("docUrl", "https://docs.example.com/errors?code=x&token=t0k")
            .capture("status", 401u16)
            .capture("message", "key sk_live_x was refused");
        out
    }

    #[test]
    fn the_hook_runner_redacts_every_text_capture_of_any_pack() {
        let input = crate::Input::from_json(br#"{"request": {"domain": "x.io"}}"#).expect("valid");
        let out = crate::call_hook(error_link, &input);
        assert_eq!(
            out.captures()["docUrl"],
            "https://docs.example.com/errors?code=x&token=REDACTED"
        );
        assert_eq!(out.captures()["status"], 401);
        assert_eq!(out.captures()["message"], "key sk_live_x was refused");
        let input = crate::Input::from_json(
            br#"{"request": {"domain": "x.io"}, "configuration": {"redactQueryParameters": ["code"]}}"#,
        )
        .expect("valid");
        assert_eq!(
            crate::call_hook(error_link, &input).captures()["docUrl"],
            "https://docs.example.com/errors?code=REDACTED&token=t0k"
        );
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("Hi+there%21"), "Hi there!");
    }
}
