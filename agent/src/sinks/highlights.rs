//! What the `pretty` output shows of the packs' captures: a few words per pack that found
//! something (`stripe card_error/insufficient_funds`, `openai gpt-4o 18 tokens`,
//! `pii sent:email,phone`). Packs without a rule here show how many values they captured.

use std::collections::BTreeSet;

use taskless_pack_runtime::Dimension;

/// The captures of one pack, by key (the dimension name without `pack/`).
struct Pack<'a> {
    name: &'a str,
    dims: Vec<(&'a str, &'a str)>,
}

impl Pack<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.dims
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_empty())
    }

    fn number(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.parse().ok())
    }
}

/// Highlights of every pack that captured something, in the order the packs first captured.
#[must_use]
pub fn highlights(dimensions: &[Dimension], status: Option<u16>) -> Vec<String> {
    let mut packs: Vec<Pack<'_>> = Vec::new();
    for d in dimensions {
        let (pack, key) = d.name.split_once('/').unwrap_or(("", d.name.as_str()));
        match packs.iter_mut().find(|p| p.name == pack) {
            Some(p) => p.dims.push((key, &d.value)),
            None => packs.push(Pack {
                name: pack,
                dims: vec![(key, &d.value)],
            }),
        }
    }
    let failed = status.is_some_and(|s| s >= 400);
    let mut out: Vec<String> = packs.iter().filter_map(|p| highlight(p, failed)).collect();
    // core repeats the line's own columns; its error is worth showing when no pack said more.
    if out.is_empty()
        && let Some(error) = packs
            .iter()
            .find(|p| p.name == "core")
            .and_then(|p| p.get("error"))
    {
        out.push(format!("error {error}"));
    }
    out
}

fn joined(parts: &[Option<String>]) -> Option<String> {
    let parts: Vec<&str> = parts.iter().flatten().map(String::as_str).collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

fn highlight(p: &Pack<'_>, failed: bool) -> Option<String> {
    let text = match p.name {
        "core" => return None,
        "stripe" => {
            if let Some(kind) = p.get("errorType") {
                let code = p.get("declineCode").or_else(|| p.get("errorCode"));
                Some(code.map_or_else(|| kind.to_owned(), |c| format!("{kind}/{c}")))
            } else {
                p.get("idempotencyKey")
                    .map(|k| format!("idempotency {k}"))
                    .or_else(|| p.get("requestId").map(str::to_owned))
            }
        }
        "openai" | "anthropic" => {
            let model = p.get("responseModel").or_else(|| p.get("model"));
            let tokens = p.number("totalTokens").or_else(|| {
                let sum =
                    p.number("inputTokens").unwrap_or(0) + p.number("outputTokens").unwrap_or(0);
                (sum > 0).then_some(sum)
            });
            joined(&[
                model.map(str::to_owned),
                tokens.map(|t| format!("{t} tokens")),
                p.get("stream").map(|_| "stream".to_owned()),
                p.get("errorType")
                    .or_else(|| p.get("errorCode"))
                    .filter(|_| failed)
                    .map(str::to_owned),
            ])
        }
        "github" => joined(&[
            p.get("message").filter(|_| failed).map(str::to_owned),
            p.get("rateLimitRemaining")
                .map(|r| match p.get("rateLimitLimit") {
                    Some(l) => format!("{r}/{l} left"),
                    None => format!("{r} left"),
                }),
        ]),
        "twilio" => joined(&[
            p.get("errorCode").map(|c| format!("error {c}")),
            p.get("resourceStatus").map(str::to_owned),
        ]),
        "pii" => pii(p),
        _ => Some(format!(
            "{} capture{}",
            p.dims.len(),
            if p.dims.len() == 1 { "" } else { "s" }
        )),
    }?;
    Some(format!("{} {text}", p.name))
}

/// `sent:email,phone received:name` from keys `<category>.<send|receive>.<part>.<kind>`.
fn pii(p: &Pack<'_>) -> Option<String> {
    let mut sent = BTreeSet::new();
    let mut received = BTreeSet::new();
    for (key, _) in &p.dims {
        let mut parts = key.split('.');
        match (parts.next(), parts.next()) {
            (Some(category), Some("send")) => {
                sent.insert(category);
            }
            (Some(category), Some("receive")) => {
                received.insert(category);
            }
            _ => {}
        }
    }
    let list = |label: &str, set: &BTreeSet<&str>| {
        (!set.is_empty()).then(|| {
            format!(
                "{label}:{}",
                set.iter().copied().collect::<Vec<_>>().join(",")
            )
        })
    };
    joined(&[list("sent", &sent), list("received", &received)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(pairs: &[(&str, &str)]) -> Vec<Dimension> {
        pairs
            .iter()
            .map(|(n, v)| Dimension {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect()
    }

    #[test]
    fn each_pack_says_what_it_found_in_a_few_words() {
        let d = dims(&[
            ("core/status", "402"),
            ("core/error", "card_error"),
            ("stripe/status", "402"),
            ("stripe/errorType", "card_error"),
            ("stripe/errorCode", "card_declined"),
            ("stripe/declineCode", "insufficient_funds"),
            ("pii/email.send.body.field", "1"),
            ("pii/phone.send.body.value", "1"),
            ("pii/name.receive.body.field", "1"),
            ("acme/thing", "x"),
        ]);
        assert_eq!(
            highlights(&d, Some(402)),
            [
                "stripe card_error/insufficient_funds",
                "pii sent:email,phone received:name",
                "acme 1 capture"
            ]
        );
        let d = dims(&[
            ("openai/model", "gpt-4o"),
            ("openai/promptTokens", "12"),
            ("openai/completionTokens", "6"),
            ("openai/totalTokens", "18"),
        ]);
        assert_eq!(highlights(&d, Some(200)), ["openai gpt-4o 18 tokens"]);
        let d = dims(&[
            ("anthropic/model", "claude-x"),
            ("anthropic/inputTokens", "10"),
            ("anthropic/outputTokens", "5"),
            ("anthropic/stream", "1"),
        ]);
        assert_eq!(
            highlights(&d, Some(200)),
            ["anthropic claude-x 15 tokens stream"]
        );
    }

    #[test]
    fn core_alone_shows_its_error_and_nothing_else() {
        let d = dims(&[("core/status", "200"), ("core/path", "/x")]);
        assert!(highlights(&d, Some(200)).is_empty());
        let d = dims(&[("core/status", "500"), ("core/error", "boom")]);
        assert_eq!(highlights(&d, Some(500)), ["error boom"]);
    }
}
