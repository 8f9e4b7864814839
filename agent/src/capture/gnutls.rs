//! GnuTLS: plaintext at `gnutls_record_send2` (or `gnutls_record_send` in GnuTLS before 3.6.3,
//! which has no `send2`; since then `gnutls_record_send` only jumps to it) and
//! `gnutls_record_recv`, the end of a session at `gnutls_deinit`, its server name at
//! `gnutls_server_name_set`. The connection key is the `gnutls_session_t`; the socket fd comes
//! from the syscalls made inside the call. The stack lives in any file that defines those
//! functions: Debian's `libgnutls.so.30`, used by `wget`, `libcurl-gnutls` (and so `git` over
//! HTTPS) and `apt`.

use super::providers::{AttachPoint, Examined, Provider, symbol_offsets};

/// The sending functions, the newest first: the first one defined is probed.
const SEND: [&str; 2] = ["gnutls_record_send2", "gnutls_record_send"];
const RECV: &str = "gnutls_record_recv";
const DEINIT: &str = "gnutls_deinit";
const SERVER_NAME: &str = "gnutls_server_name_set";

/// The GnuTLS provider.
pub const PROVIDER: Provider = Provider {
    name: "GnuTLS",
    programs: &[
        "gnutls_send",
        "gnutls_send_ret",
        "gnutls_recv",
        "gnutls_recv_ret",
        "gnutls_deinit",
        "gnutls_server_name",
    ],
    examine,
    host_libraries: &["libgnutls.so"],
};

fn point(
    function: &'static str,
    program: &'static str,
    offset: u64,
    ret: bool,
    required: bool,
) -> AttachPoint {
    AttachPoint {
        function,
        program,
        offset,
        ret,
        required,
        cookie: None,
    }
}

fn examine(obj: &object::File<'_>) -> Examined {
    let offsets = symbol_offsets(obj, &[SEND[0], SEND[1], RECV, DEINIT, SERVER_NAME]);
    let Some((send, send_at)) = SEND.iter().find_map(|s| offsets.get(s).map(|o| (*s, *o))) else {
        return Examined::NotThis;
    };
    let Some(&recv_at) = offsets.get(RECV) else {
        return Examined::NotThis;
    };
    let mut points = vec![
        point(send, "gnutls_send", send_at, false, true),
        point(send, "gnutls_send_ret", send_at, true, true),
        point(RECV, "gnutls_recv", recv_at, false, true),
        point(RECV, "gnutls_recv_ret", recv_at, true, true),
    ];
    if let Some(&at) = offsets.get(DEINIT) {
        points.push(point(DEINIT, "gnutls_deinit", at, false, false));
    }
    if let Some(&at) = offsets.get(SERVER_NAME) {
        points.push(point(SERVER_NAME, "gnutls_server_name", at, false, false));
    }
    Examined::Found(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debians_libgnutls_is_found_at_send2_and_recv() {
        let path = "/usr/lib/x86_64-linux-gnu/libgnutls.so.30";
        let Ok(bytes) = std::fs::read(path) else {
            panic!("{path} is needed for this test (Debian's libgnutls30)");
        };
        let obj = object::File::parse(&*bytes).expect("ELF");
        let Examined::Found(points) = examine(&obj) else {
            panic!("libgnutls not recognised");
        };
        let functions: Vec<(&str, &str)> = points.iter().map(|p| (p.function, p.program)).collect();
        // GnuTLS 3.7: gnutls_record_send is a jump to gnutls_record_send2, which is probed alone
        // (probing both would see every call twice).
        assert!(
            functions.contains(&("gnutls_record_send2", "gnutls_send_ret")),
            "{functions:?}"
        );
        assert!(
            !functions.iter().any(|(f, _)| *f == "gnutls_record_send"),
            "{functions:?}"
        );
        for program in PROVIDER.programs {
            assert!(
                functions.iter().any(|(_, p)| p == program),
                "{program} in {functions:?}"
            );
        }
        let me = std::fs::read("/proc/self/exe").expect("own exe");
        let obj = object::File::parse(&*me).expect("ELF");
        assert_eq!(examine(&obj), Examined::NotThis);
    }
}
