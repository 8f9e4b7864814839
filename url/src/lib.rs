//! The one place that says how a request's URL, domain and path are formed, how a pack's
//! host patterns match a domain, and how credentials are taken out of a URL
//! ([`redact_url`], [`redact_query`]). The live path, `replay` (recordings and HAR files), `pack
//! check` and the packs themselves all use it, so a pack sees the same request in a fixture as
//! live.
//!
//! Rules:
//! - the **domain** is the authority's host: user info and port removed, IPv6 brackets removed,
//!   ASCII lower-cased;
//! - the **path** is the request target up to `?` or `#`, `/` when empty;
//! - the **url** is `scheme://authority` followed by the target (fragment removed), the scheme
//!   lower-cased and `https` when unknown (the agent sees TLS traffic);
//! - a request target in absolute form (`GET https://host/x`, as sent to proxies) gives its own
//!   scheme and authority.

use std::borrow::Cow;

mod redact;

pub use redact::{REDACTED, SECRET_QUERY_NAMES, is_secret_name, redact_query, redact_url};

/// A request's URL and the two parts of it packs are given on their own.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RequestUrl {
    /// `scheme://authority/target`.
    pub url: String,
    /// The host, lower-case, without port or brackets.
    pub domain: String,
    /// The target's path, without query or fragment.
    pub path: String,
}

impl RequestUrl {
    /// From a request head: its scheme (HTTP/2 `:scheme`, else unknown), its authority
    /// (`:authority` or `Host`; empty when neither was sent) and its request target.
    #[must_use]
    pub fn from_parts(scheme: Option<&str>, authority: &str, target: &str) -> Self {
        if target.contains("://") {
            let parts = split(target);
            let authority = if parts.authority.is_empty() {
                authority
            } else {
                parts.authority
            };
            return Self::build(parts.scheme.or(scheme), authority, &parts.target);
        }
        let target = strip_fragment(target);
        let target: Cow<'_, str> = if target.starts_with('/') {
            Cow::Borrowed(target)
        } else {
            Cow::Owned(format!("/{target}"))
        };
        Self::build(scheme, authority, &target)
    }

    /// From a full URL (a fixture's or a HAR entry's).
    #[must_use]
    pub fn parse(url: &str) -> Self {
        let parts = split(url);
        Self::build(parts.scheme, parts.authority, &parts.target)
    }

    fn build(scheme: Option<&str>, authority: &str, target: &str) -> Self {
        let authority = strip_user_info(authority);
        let scheme = scheme.unwrap_or("https").to_ascii_lowercase();
        let path = target.split(['?', '#']).next().unwrap_or_default();
        Self {
            url: format!("{scheme}://{authority}{target}"),
            domain: domain_of(authority),
            path: if path.is_empty() { "/" } else { path }.to_owned(),
        }
    }
}

/// A URL cut into the parts of a request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// The scheme as written, `None` when the URL has none.
    pub scheme: Option<&'a str>,
    /// The authority without user info (`host[:port]`); empty when the URL has none.
    pub authority: &'a str,
    /// The request target: path and query, starting with `/`, without fragment.
    pub target: Cow<'a, str>,
}

/// Splits `scheme://authority/path?query#fragment` into the parts a request head carries. A
/// string without `://` is taken as a request target.
#[must_use]
pub fn split(url: &str) -> UrlParts<'_> {
    let (scheme, rest, has_authority) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest, true),
        None => (None, url, false),
    };
    let (authority, target) = if has_authority {
        let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        rest.split_at(cut)
    } else {
        ("", rest)
    };
    let target = strip_fragment(target);
    let target = if target.starts_with('/') {
        Cow::Borrowed(target)
    } else {
        Cow::Owned(format!("/{target}"))
    };
    UrlParts {
        scheme,
        authority: strip_user_info(authority),
        target,
    }
}

fn strip_fragment(target: &str) -> &str {
    target.split('#').next().unwrap_or_default()
}

fn strip_user_info(authority: &str) -> &str {
    authority.rsplit('@').next().unwrap_or(authority)
}

/// The host of an authority (`user@host:port`, `[v6]:port`) as written: no user info, port or
/// brackets.
#[must_use]
pub fn host_of(authority: &str) -> &str {
    let a = strip_user_info(authority);
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match a.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => a,
    }
}

/// The domain packs see for an authority: [`host_of`], ASCII lower-cased.
#[must_use]
pub fn domain_of(authority: &str) -> String {
    host_of(authority).to_ascii_lowercase()
}

/// Whether `domain` matches a host `pattern`, where `*` matches any run of characters (none,
/// and dots, included) and everything else matches itself without regard to ASCII case.
/// Surrounding white space in the pattern is ignored.
#[must_use]
pub fn domain_matches(pattern: &str, domain: &str) -> bool {
    let p = pattern.trim().as_bytes();
    let t = domain.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    // Iterative matching, backtracking to the last `*`.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi].eq_ignore_ascii_case(&t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether `domain` matches any of `patterns`.
#[must_use]
pub fn any_domain_matches<S: AsRef<str>>(patterns: &[S], domain: &str) -> bool {
    patterns.iter().any(|p| domain_matches(p.as_ref(), domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(u: &RequestUrl) -> (&str, &str, &str) {
        (&u.url, &u.domain, &u.path)
    }

    #[test]
    fn a_request_head_and_its_full_url_give_the_same_request() {
        let live = RequestUrl::from_parts(None, "API.Stripe.com:443", "/v1/charges?limit=1#x");
        assert_eq!(
            parts(&live),
            (
                "https://API.Stripe.com:443/v1/charges?limit=1",
                "api.stripe.com",
                "/v1/charges"
            )
        );
        assert_eq!(RequestUrl::parse(&live.url), live);
    }

    #[test]
    fn hosts_lose_user_info_ports_and_brackets() {
        assert_eq!(host_of("api.stripe.com"), "api.stripe.com");
        assert_eq!(host_of("localhost:8443"), "localhost");
        assert_eq!(host_of("user:pw@example.com:1"), "example.com");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("[::1]"), "::1");
        assert_eq!(host_of(""), "");
        assert_eq!(domain_of("[FE80::1]:8443"), "fe80::1");
        let v6 = RequestUrl::parse("https://[::1]:8443/x");
        assert_eq!(parts(&v6), ("https://[::1]:8443/x", "::1", "/x"));
    }

    #[test]
    fn odd_targets_still_give_a_path() {
        assert_eq!(
            parts(&RequestUrl::from_parts(Some("HTTPS"), "x.io", "?q=1")),
            ("https://x.io/?q=1", "x.io", "/")
        );
        assert_eq!(
            parts(&RequestUrl::from_parts(None, "", "*")),
            ("https:///*", "", "/*")
        );
        // Absolute form, as sent to a proxy.
        assert_eq!(
            parts(&RequestUrl::from_parts(
                None,
                "proxy:3128",
                "http://api.example.com/v1/x?y"
            )),
            ("http://api.example.com/v1/x?y", "api.example.com", "/v1/x")
        );
        assert_eq!(
            parts(&RequestUrl::parse("https://x.io")),
            ("https://x.io/", "x.io", "/")
        );
        assert_eq!(
            parts(&RequestUrl::parse("https://u@x.io?q#f")),
            ("https://x.io/?q", "x.io", "/")
        );
    }

    #[test]
    fn split_gives_the_parts_of_a_request_head() {
        let p = split("https://user@api.example.com:8443/v1/chat?x=1#frag");
        assert_eq!(p.scheme, Some("https"));
        assert_eq!(p.authority, "api.example.com:8443");
        assert_eq!(p.target, "/v1/chat?x=1");
        assert_eq!(split("http://a.b?q").target, "/?q");
        assert_eq!(split("http://a.b").target, "/");
        let bare = split("/only/a/target");
        assert_eq!((bare.scheme, bare.authority), (None, ""));
        assert_eq!(bare.target, "/only/a/target");
    }

    #[test]
    fn wildcards_match_any_run_of_characters_ignoring_case() {
        assert!(domain_matches("*", ""));
        assert!(domain_matches("*", "api.stripe.com"));
        assert!(domain_matches("*.openai.com", "api.openai.com"));
        assert!(domain_matches("*.OpenAI.com", "a.b.openai.COM"));
        assert!(!domain_matches("*.openai.com", "openai.com"));
        assert!(!domain_matches("*.openai.com", "api.openai.com.evil"));
        assert!(domain_matches("api.*.com", "api.stripe.com"));
        assert!(domain_matches("a*b*c", "aXXbYYc"));
        assert!(!domain_matches("a*b*c", "aXXbYY"));
        assert!(domain_matches(" api.stripe.com ", "api.stripe.com"));
        assert!(!domain_matches("api.stripe.com", "api.stripe.co"));
        assert!(any_domain_matches(&["x", "*.y"], "a.y"));
        assert!(!any_domain_matches::<&str>(&[], "a.y"));
    }
}
