//! OpenSSL and BoringSSL: plaintext at `SSL_write` / `SSL_read` (and OpenSSL 1.1.1's `_ex`
//! variants), the end of a connection at `SSL_free`, its server name at `SSL_ctrl`. The stack
//! lives in any file that defines `SSL_write` and `SSL_read` in its dynamic or static symbol
//! table: a shared `libssl`, or an executable that links it in and exports it (Node.js).

use super::providers::{Examined, ProbeSpec, Provider, points_of};

const fn spec(symbol: &'static str, program: &'static str, ret: bool, required: bool) -> ProbeSpec {
    ProbeSpec {
        symbol,
        program,
        ret,
        required,
    }
}

/// The attach table.
pub const PROBES: &[ProbeSpec] = &[
    spec("SSL_write", "ssl_write", false, true),
    spec("SSL_write", "ssl_write_ret", true, true),
    spec("SSL_read", "ssl_read", false, true),
    spec("SSL_read", "ssl_read_ret", true, true),
    // Optional: the `_ex` variants do not exist before OpenSSL 1.1.1.
    spec("SSL_write_ex", "ssl_write_ex", false, false),
    spec("SSL_write_ex", "ssl_write_ex_ret", true, false),
    spec("SSL_read_ex", "ssl_read_ex", false, false),
    spec("SSL_read_ex", "ssl_read_ex_ret", true, false),
    spec("SSL_free", "ssl_free", false, false),
    spec("SSL_ctrl", "ssl_ctrl", false, false),
];

/// The OpenSSL provider.
pub const PROVIDER: Provider = Provider {
    name: "OpenSSL",
    programs: &[
        "ssl_write",
        "ssl_write_ret",
        "ssl_read",
        "ssl_read_ret",
        "ssl_write_ex",
        "ssl_write_ex_ret",
        "ssl_read_ex",
        "ssl_read_ex_ret",
        "ssl_free",
        "ssl_ctrl",
    ],
    examine,
    host_libraries: &["libssl.so"],
};

fn examine(obj: &object::File<'_>) -> Examined {
    points_of(obj, PROBES).map_or(Examined::NotThis, Examined::Found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_of_the_table_is_loaded_and_every_loaded_one_is_used() {
        let mut used: Vec<&str> = PROBES.iter().map(|s| s.program).collect();
        used.sort_unstable();
        used.dedup();
        let mut loaded = PROVIDER.programs.to_vec();
        loaded.sort_unstable();
        assert_eq!(used, loaded);
    }

    #[test]
    fn the_systems_libssl_is_found_with_its_required_points() {
        // Debian's libssl3, which the end-to-end tests use too.
        let path = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
        let Ok(bytes) = std::fs::read(path) else {
            panic!("{path} is needed for this test (Debian's libssl3)");
        };
        let obj = object::File::parse(&*bytes).expect("ELF");
        let Examined::Found(points) = examine(&obj) else {
            panic!("libssl not recognised");
        };
        for program in ["ssl_write", "ssl_write_ret", "ssl_read", "ssl_read_ret"] {
            assert!(points.iter().any(|p| p.program == program), "{program}");
        }
        // This test's own executable is not OpenSSL.
        let me = std::fs::read("/proc/self/exe").expect("own exe");
        let obj = object::File::parse(&*me).expect("ELF");
        assert_eq!(examine(&obj), Examined::NotThis);
    }
}
