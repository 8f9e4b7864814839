//! The pack input built from an exchange: the request as packs see it (URL, domain and path by
//! the shared rules of `taskless-url`, lower-case header pairs, the kept body, the kernel
//! timestamps as Unix time), built once per exchange and lent to every hook.

use taskless_http::Request;
use taskless_pack_runtime::{RequestView, Timing};
use taskless_url::RequestUrl;

use crate::{clock::Clock, flows::Role};

/// The request side of an exchange, owned for as long as its hooks run.
pub struct PackRequest {
    method: String,
    /// URL, domain and path.
    pub url: RequestUrl,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    /// The exchange's timestamps, completed when the response arrives.
    pub timing: Timing,
    role: Option<Role>,
    /// The request head had fields left out (an HTTP/2 connection joined mid-way).
    pub partial: bool,
}

impl PackRequest {
    /// The request of `request`, made on a connection where the process is `role`, its
    /// timestamps converted by `clock`.
    #[must_use]
    pub fn new(request: &Request, role: Option<Role>, clock: &Clock) -> Self {
        let head = &request.head;
        let headers: Vec<(String, String)> = head
            .headers
            .iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        let authority = head.authority.as_deref().or_else(|| {
            headers
                .iter()
                .find(|(n, _)| n == "host")
                .map(|(_, v)| v.as_str())
        });
        let url = RequestUrl::from_parts(
            head.scheme.as_deref(),
            authority.unwrap_or_default(),
            &head.target,
        );
        Self {
            method: head.method.to_string(),
            url,
            headers,
            body: (!request.body.data.is_empty()).then(|| request.body.data.to_vec()),
            timing: Timing {
                request_start_unix_ns: clock.to_unix_ns(request.start_ns),
                request_end_unix_ns: clock.to_unix_ns(request.end_ns),
                response_start_unix_ns: None,
                response_end_unix_ns: None,
            },
            role,
            partial: head.partial,
        }
    }

    /// The method, e.g. `POST`.
    #[must_use]
    pub fn method(&self) -> &str {
        &self.method
    }

    /// What the pack runtime is given.
    #[must_use]
    pub fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            url: &self.url.url,
            domain: &self.url.domain,
            path: &self.url.path,
            headers: &self.headers,
            body: self.body.as_deref(),
            timing: self.timing,
            role: self.role.map(Role::as_str),
        }
    }
}
