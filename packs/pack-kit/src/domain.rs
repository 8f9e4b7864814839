//! Host name patterns where `*` matches any run of characters.

/// True when `domain` matches `pattern`. `*` matches any run of characters (including none and
/// including dots); everything else matches itself, ignoring ASCII case.
pub fn domain_matches(pattern: &str, domain: &str) -> bool {
    let pattern = pattern.trim().as_bytes();
    let domain = domain.as_bytes();
    // Iterative wildcard matching with backtracking to the last `*`.
    let (mut p, mut d) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while d < domain.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, d));
            p += 1;
        } else if p < pattern.len() && pattern[p].eq_ignore_ascii_case(&domain[d]) {
            p += 1;
            d += 1;
        } else if let Some((sp, sd)) = star {
            p = sp + 1;
            d = sd + 1;
            star = Some((sp, sd + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// True when `domain` matches any of `patterns`.
pub fn any_domain_matches<S: AsRef<str>>(patterns: &[S], domain: &str) -> bool {
    patterns.iter().any(|p| domain_matches(p.as_ref(), domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_match_ignoring_case() {
        assert!(domain_matches("api.stripe.com", "api.stripe.com"));
        assert!(domain_matches("API.Stripe.com", "api.stripe.COM"));
        assert!(!domain_matches("api.stripe.com", "api.stripe.co"));
        assert!(!domain_matches("api.stripe.com", "xapi.stripe.com"));
    }

    #[test]
    fn star_matches_any_run() {
        assert!(domain_matches("*", "anything.example"));
        assert!(domain_matches("*", ""));
        assert!(domain_matches("*.openai.com", "api.openai.com"));
        assert!(domain_matches("*.openai.com", "a.b.openai.com"));
        assert!(!domain_matches("*.openai.com", "openai.com"));
        assert!(!domain_matches("*.openai.com", "api.openai.com.evil.io"));
        assert!(domain_matches("api.*.com", "api.stripe.com"));
        assert!(domain_matches("a*b*c", "axxbyyc"));
        assert!(!domain_matches("a*b*c", "axxbyy"));
        assert!(domain_matches("**.io", "x.io"));
    }

    #[test]
    fn any_of_a_list() {
        assert!(any_domain_matches(
            &["api.stripe.com", "*.openai.com"],
            "api.openai.com"
        ));
        assert!(!any_domain_matches::<&str>(&[], "api.openai.com"));
    }
}
