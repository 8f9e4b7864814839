//! NSS: plaintext at NSPR's `PR_Write`, `PR_Send`, `PR_Read` and `PR_Recv`, on descriptors NSS
//! made TLS only (the eBPF side checks each call: see `agent-ebpf/src/nss.rs`), the end of a
//! connection at `PR_Close`, its server name at `SSL_SetURL`. The connection key is the
//! `PRFileDesc *`; the socket fd comes from the syscalls made inside the call.
//!
//! The stack spans two files: NSS's `libssl3.so` (`SSL_ImportFD`, which makes a descriptor TLS)
//! and NSPR's `libnspr4.so` (the I/O functions). NSPR alone is no TLS stack (programs use it for
//! plain files and sockets), so it is a [`Examined::Part`]: attached only in processes that map
//! NSS's `libssl3` too.

use super::providers::{Examined, ProbeSpec, Provider, points_of};

const fn spec(symbol: &'static str, program: &'static str, ret: bool, required: bool) -> ProbeSpec {
    ProbeSpec {
        symbol,
        program,
        ret,
        required,
    }
}

/// NSS's `libssl3`: where descriptors become TLS, and the server name.
pub const SSL_PROBES: &[ProbeSpec] = &[
    spec("SSL_ImportFD", "nss_import_fd_ret", true, true),
    spec("SSL_SetURL", "nss_set_url", false, false),
];

/// NSPR's I/O functions.
pub const NSPR_PROBES: &[ProbeSpec] = &[
    spec("PR_Write", "nss_write", false, true),
    spec("PR_Write", "nss_write_ret", true, true),
    spec("PR_Send", "nss_write", false, true),
    spec("PR_Send", "nss_write_ret", true, true),
    spec("PR_Read", "nss_read", false, true),
    spec("PR_Read", "nss_read_ret", true, true),
    spec("PR_Recv", "nss_read", false, true),
    spec("PR_Recv", "nss_read_ret", true, true),
    spec("PR_Close", "nss_close", false, false),
];

/// The NSS provider.
pub const PROVIDER: Provider = Provider {
    name: "NSS",
    programs: &[
        "nss_import_fd_ret",
        "nss_set_url",
        "nss_write",
        "nss_write_ret",
        "nss_read",
        "nss_read_ret",
        "nss_close",
    ],
    examine,
    host_libraries: &["libssl3.so", "libnspr4.so"],
};

fn examine(obj: &object::File<'_>) -> Examined {
    if let Some(points) = points_of(obj, SSL_PROBES) {
        return Examined::Found(points);
    }
    points_of(obj, NSPR_PROBES).map_or(Examined::NotThis, Examined::Part)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examine_path(path: &str) -> Examined {
        let Ok(bytes) = std::fs::read(path) else {
            panic!("{path} is needed for this test (Debian's libnss3 and libnspr4)");
        };
        examine(&object::File::parse(&*bytes).expect("ELF"))
    }

    #[test]
    fn nss_is_its_libssl3_and_nspr_a_part() {
        let Examined::Found(ssl) = examine_path("/usr/lib/x86_64-linux-gnu/libssl3.so") else {
            panic!("libssl3 not recognised");
        };
        assert!(
            ssl.iter()
                .any(|p| p.program == "nss_import_fd_ret" && p.ret)
        );
        let Examined::Part(nspr) = examine_path("/usr/lib/x86_64-linux-gnu/libnspr4.so") else {
            panic!("libnspr4 not recognised as a part");
        };
        let mut programs: Vec<&str> = ssl.iter().chain(&nspr).map(|p| p.program).collect();
        programs.sort_unstable();
        programs.dedup();
        let mut loaded = PROVIDER.programs.to_vec();
        loaded.sort_unstable();
        assert_eq!(programs, loaded);
        // The OpenSSL-compatible names are not in NSS's libssl3: no other provider claims it.
        assert_eq!(
            examine_path("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
            Examined::NotThis
        );
    }
}
