//! Taking credentials out of URLs before they leave the agent: the values of query (and
//! fragment) parameters whose names say they hold a secret, and user info in the authority.
//! Follows OpenTelemetry's rule for `url.full`: the value becomes `REDACTED`, the name stays,
//! so a reader still sees that a key was sent.

use std::borrow::Cow;

/// What a redacted value is replaced with (OpenTelemetry's `url.full` convention).
pub const REDACTED: &str = "REDACTED";

/// Query parameter names whose values are credentials, compared without regard to ASCII case
/// after percent-decoding. A name may hold `*`, matching any run of characters.
pub const SECRET_QUERY_NAMES: &[&str] = &[
    "key",
    "api_key",
    "apikey",
    "api-key",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "private_token",
    "auth",
    "authorization",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "signature",
    "sig",
    "code",
    "session",
    "sessionid",
    "jwt",
    "AWSAccessKeyId",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "X-Goog-Signature",
    "X-Goog-Credential",
];

/// What every output of the agent's own does to a URL before it leaves: every query (and
/// `=`-holding fragment) value replaced by [`REDACTED`], names kept, and user info in the
/// authority redacted. A query value can hold a credential under any name, so none is kept.
/// Borrowed when nothing had to change.
#[must_use]
pub fn redact_url(url: &str) -> Cow<'_, str> {
    redact_query(url, &["*"])
}

/// `url` with the value of every query or fragment parameter named in `names` replaced by
/// [`REDACTED`], and user info in the authority (`user:pass@`) replaced by
/// `REDACTED:REDACTED@` (or `REDACTED@`). Borrowed when nothing had to change.
///
/// Parameters are `&`-separated `name=value` pairs; names are percent-decoded and compared
/// without regard to ASCII case, and a name in `names` may hold `*` (any run of characters). A
/// fragment is treated like a query when it holds a `=` (OAuth's `#access_token=...`). A string
/// without `://` is taken as a request target (`/path?query`).
#[must_use]
pub fn redact_query<'a, S: AsRef<str>>(url: &'a str, names: &[S]) -> Cow<'a, str> {
    let (head, fragment) = match url.split_once('#') {
        Some((h, f)) => (h, Some(f)),
        None => (url, None),
    };
    let (before_query, query) = match head.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (head, None),
    };
    let base = redact_user_info(before_query);
    let query_out = query.map(|q| redact_params(q, names));
    let fragment_out = fragment.map(|f| {
        if f.contains('=') {
            redact_params(f, names)
        } else {
            Cow::Borrowed(f)
        }
    });
    let changed = matches!(base, Cow::Owned(_))
        || matches!(query_out, Some(Cow::Owned(_)))
        || matches!(fragment_out, Some(Cow::Owned(_)));
    if !changed {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len() + 8);
    out.push_str(&base);
    if let Some(q) = query_out {
        out.push('?');
        out.push_str(&q);
    }
    if let Some(f) = fragment_out {
        out.push('#');
        out.push_str(&f);
    }
    Cow::Owned(out)
}

/// Whether a parameter called `name` (as written, percent-encoded or not) is one of `names`.
#[must_use]
pub fn is_secret_name<S: AsRef<str>>(name: &str, names: &[S]) -> bool {
    let decoded = percent_decode(name);
    names
        .iter()
        .any(|n| crate::domain_matches(n.as_ref(), decoded.trim()))
}

fn redact_params<'a, S: AsRef<str>>(params: &'a str, names: &[S]) -> Cow<'a, str> {
    let secret = |pair: &str| {
        pair.split_once('=')
            .is_some_and(|(name, value)| value != REDACTED && is_secret_name(name, names))
    };
    if !params.split('&').any(secret) {
        return Cow::Borrowed(params);
    }
    let mut out = String::with_capacity(params.len());
    for (i, pair) in params.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if secret(pair) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
    Cow::Owned(out)
}

/// `scheme://user:pass@host/...` → `scheme://REDACTED:REDACTED@host/...`.
fn redact_user_info(before_query: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = before_query.split_once("://") else {
        return Cow::Borrowed(before_query);
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return Cow::Borrowed(before_query);
    };
    let replaced = if user_info.contains(':') {
        "REDACTED:REDACTED"
    } else {
        REDACTED
    };
    if user_info == replaced {
        return Cow::Borrowed(before_query);
    }
    Cow::Owned(format!("{scheme}://{replaced}@{host}{path}"))
}

/// `%XX` sequences decoded (invalid ones kept as written), `+` as a space.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(url: &str) -> Cow<'_, str> {
        redact_query(url, SECRET_QUERY_NAMES)
    }

    #[test]
    fn credential_values_are_replaced_and_the_names_kept() {
        assert_eq!(
            r("https://api.example.com/v1/x?api_key=sk-live-123&limit=10&Token=abc"),
            "https://api.example.com/v1/x?api_key=REDACTED&limit=10&Token=REDACTED"
        );
        assert_eq!(
            r(
                "https://s3.amazonaws.com/b/k?X-Amz-Credential=AKIA%2F2024&X-Amz-Signature=ff&x-id=GetObject"
            ),
            "https://s3.amazonaws.com/b/k?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&x-id=GetObject"
        );
        // Percent-encoded names are still recognised; the name is kept as written.
        assert_eq!(r("/p?api%5Fkey=1&q=2"), "/p?api%5Fkey=REDACTED&q=2");
        // An OAuth fragment.
        assert_eq!(
            r("https://app.example.com/cb#access_token=eyJ&state=s"),
            "https://app.example.com/cb#access_token=REDACTED&state=s"
        );
    }

    #[test]
    fn a_url_without_secrets_is_borrowed_unchanged() {
        for url in [
            "https://api.stripe.com/v1/charges",
            "https://api.stripe.com/v1/charges?limit=3&starting_after=ch_1",
            "https://x.io/a#section-2",
            "https://x.io/?token",
            "",
        ] {
            assert!(matches!(r(url), Cow::Borrowed(u) if u == url), "{url}");
        }
        // Already redacted: nothing to do.
        let done = "https://x.io/?key=REDACTED";
        assert!(matches!(r(done), Cow::Borrowed(_)));
    }

    #[test]
    fn redact_url_takes_out_every_query_value() {
        assert_eq!(
            redact_url("https://u:p@api.example.com/v1/x?api_key=sk-1&limit=10&flag#frag"),
            "https://REDACTED:REDACTED@api.example.com/v1/x?api_key=REDACTED&limit=REDACTED&flag#frag"
        );
        assert_eq!(
            redact_url("/cb?a=1#access_token=eyJ&state=s"),
            "/cb?a=REDACTED#access_token=REDACTED&state=REDACTED"
        );
        assert!(matches!(
            redact_url("https://x.io/v1/charges"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn user_info_is_redacted() {
        assert_eq!(
            r("https://user:pw@example.com/x?q=1"),
            "https://REDACTED:REDACTED@example.com/x?q=1"
        );
        assert_eq!(r("https://tok@example.com"), "https://REDACTED@example.com");
        assert_eq!(r("https://example.com/a@b"), "https://example.com/a@b");
    }

    #[test]
    fn names_can_be_patterns_and_the_list_is_the_callers() {
        assert_eq!(
            redact_query("/x?my_secret_thing=1&other=2", &["*secret*"]),
            "/x?my_secret_thing=REDACTED&other=2"
        );
        assert_eq!(redact_query("/x?key=1", &[] as &[&str]), "/x?key=1");
        assert!(is_secret_name("CLIENT_SECRET", SECRET_QUERY_NAMES));
        assert!(!is_secret_name("keys", SECRET_QUERY_NAMES));
    }
}
