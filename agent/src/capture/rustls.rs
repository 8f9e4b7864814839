//! rustls, in executables (or libraries) that keep their symbol table: the functions are found
//! by their demangled names, and every copy of a generic one (client and server) is probed. What
//! is probed and why is in `agent-ebpf/src/rustls.rs`:
//!
//! | function | program |
//! |---|---|
//! | `<ConnectionCommon<T> as PlaintextSink>::write` / `::write_vectored` | plaintext written |
//! | `<Reader as io::Read>::read` | plaintext read (rustls' own `Stream`, tokio-rustls before 0.26) |
//! | `Reader::into_first_chunk` + `<Reader as BufRead>::consume` | plaintext read (tokio-rustls 0.26) |
//! | `DeframerVecBuffer::read` (0.23) / `MessageDeframer::read` (0.21, 0.22) | the socket's fd |
//! | `ConnectionCore::process_new_packets` | ties the fd and the reads to their connection |
//!
//! `process_new_packets` takes one, two or three pointers into the connection depending on the
//! version (0.21, 0.22, 0.23), read from the crate's source paths that every build keeps in its
//! read-only data (`.../rustls-0.23.46/src/...`). rustls is generic and much of it is inlined;
//! these functions survive because they are called through a trait object (`PlaintextSink`,
//! `Read`) or are too large to inline. A stripped binary has no names to find them by: it is
//! recognised by the same source paths and refused with a reason.

use object::{Object as _, ObjectSymbol as _};

use super::providers::{AttachPoint, Examined, Provider, read_only_data, symbol_file_offset};

/// The rustls provider.
pub const PROVIDER: Provider = Provider {
    name: "rustls",
    programs: &[
        "rustls_write",
        "rustls_write_ret",
        "rustls_writev_ret",
        "rustls_read",
        "rustls_read_ret",
        "rustls_first_chunk",
        "rustls_first_chunk_ret",
        "rustls_consume",
        "rustls_deframer_read",
        "rustls_deframer_read_ret",
        "rustls_process",
        "rustls_process2",
        "rustls_process_core",
    ],
    examine,
    host_libraries: &[],
};

/// What a function is, by the end of its demangled name (hash left out), and where it must be
/// inside rustls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Write,
    WriteVectored,
    Read,
    FirstChunk,
    Consume,
    DeframerRead,
    Process,
}

fn role_of(name: &str) -> Option<Role> {
    if !name.contains("rustls::") {
        return None;
    }
    let ends = |s: &str| name.ends_with(s);
    if name.starts_with("<rustls::conn::ConnectionCommon<") && name.contains("PlaintextSink>::") {
        if ends("PlaintextSink>::write") {
            return Some(Role::Write);
        }
        if ends("PlaintextSink>::write_vectored") {
            return Some(Role::WriteVectored);
        }
        return None;
    }
    if name.starts_with("<rustls::conn::") && ends("Reader as std::io::Read>::read") {
        return Some(Role::Read);
    }
    if name.starts_with("<rustls::conn::") && ends("Reader as std::io::BufRead>::consume") {
        return Some(Role::Consume);
    }
    if name.starts_with("rustls::conn::") && ends("Reader::into_first_chunk") {
        return Some(Role::FirstChunk);
    }
    if name.starts_with("rustls::msgs::deframer::")
        && (ends("DeframerVecBuffer::read") || ends("MessageDeframer::read"))
    {
        return Some(Role::DeframerRead);
    }
    if name.starts_with("rustls::conn::ConnectionCore<") && ends(">::process_new_packets") {
        return Some(Role::Process);
    }
    None
}

/// The rustls version whose source paths `obj`'s read-only data holds (`rustls-0.23.46/`).
fn version(obj: &object::File<'_>) -> Option<(u32, u32, u32)> {
    for data in read_only_data(obj) {
        for at in memchr::memmem::find_iter(data, b"/rustls-") {
            if let Some(v) = parse_version(&data[at + 8..]) {
                return Some(v);
            }
        }
    }
    None
}

/// `0.23.46/...` → (0, 23, 46).
fn parse_version(s: &[u8]) -> Option<(u32, u32, u32)> {
    let end = s.iter().position(|b| *b == b'/')?;
    let text = std::str::from_utf8(&s[..end.min(24)]).ok()?;
    let mut parts = text.splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    // A pre-release or build suffix may follow the patch number.
    let patch: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor, patch.parse().ok()?))
}

fn examine(obj: &object::File<'_>) -> Examined {
    let mut found: Vec<(Role, &'static str, u64)> = Vec::new();
    for sym in obj.symbols() {
        if sym.is_undefined() || sym.address() == 0 || sym.kind() != object::SymbolKind::Text {
            continue;
        }
        let Ok(raw) = sym.name() else { continue };
        // Cheap filter before demangling: every wanted name mentions rustls.
        if !raw.contains("rustls") {
            continue;
        }
        let name = format!("{:#}", rustc_demangle::demangle(raw));
        let Some(role) = role_of(&name) else { continue };
        let Some(offset) = symbol_file_offset(obj, &sym) else {
            continue;
        };
        found.push((role, function_name(role), offset));
    }
    let version = version(obj);
    if found.is_empty() {
        return match version {
            Some((a, b, c)) if !has_symbols(obj) => Examined::Unsupported(format!(
                "rustls {a}.{b}.{c} in an executable without a symbol table (stripped): the agent finds rustls's functions by name; build it with symbols (e.g. `strip = false` in its Cargo profile)"
            )),
            _ => Examined::NotThis,
        };
    }
    let has = |role| found.iter().any(|(r, _, _)| *r == role);
    let reads = has(Role::Read) || (has(Role::FirstChunk) && has(Role::Consume));
    let missing: Vec<&str> = [
        (
            has(Role::Write) || has(Role::WriteVectored),
            "PlaintextSink::write",
        ),
        (reads, "Reader::read or Reader::into_first_chunk/consume"),
        (has(Role::DeframerRead), "the deframer's read"),
        (has(Role::Process), "ConnectionCore::process_new_packets"),
    ]
    .iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, what)| *what)
    .collect();
    let shown = version.map_or_else(
        || "of unknown version".to_owned(),
        |(a, b, c)| format!("{a}.{b}.{c}"),
    );
    if !missing.is_empty() {
        return Examined::Unsupported(format!(
            "rustls {shown}: {} not found in the symbol table (inlined away in this build)",
            missing.join(", ")
        ));
    }
    // How many pointers into the connection `process_new_packets` takes.
    let process = match version {
        Some((0, minor, _)) if minor >= 23 => "rustls_process",
        Some((0, 22, _)) => "rustls_process2",
        Some((0, 21, _)) => "rustls_process_core",
        _ => {
            return Examined::Unsupported(format!(
                "rustls {shown}: only 0.21, 0.22 and 0.23 are known (the connection's layout differs between versions)"
            ));
        }
    };
    let mut points = Vec::new();
    for (role, function, offset) in found {
        let programs: &[(&'static str, bool)] = match role {
            Role::Write => &[("rustls_write", false), ("rustls_write_ret", true)],
            Role::WriteVectored => &[("rustls_write", false), ("rustls_writev_ret", true)],
            Role::Read => &[("rustls_read", false), ("rustls_read_ret", true)],
            Role::FirstChunk => &[
                ("rustls_first_chunk", false),
                ("rustls_first_chunk_ret", true),
            ],
            Role::Consume => &[("rustls_consume", false)],
            Role::DeframerRead => &[
                ("rustls_deframer_read", false),
                ("rustls_deframer_read_ret", true),
            ],
            Role::Process => match process {
                "rustls_process" => &[("rustls_process", false)],
                "rustls_process2" => &[("rustls_process2", false)],
                _ => &[("rustls_process_core", false)],
            },
        };
        for (program, ret) in programs {
            points.push(AttachPoint {
                function,
                program,
                offset,
                ret: *ret,
                required: true,
                cookie: None,
            });
        }
    }
    Examined::Found(points)
}

/// The function's name in logs and errors.
fn function_name(role: Role) -> &'static str {
    match role {
        Role::Write => "<ConnectionCommon as PlaintextSink>::write",
        Role::WriteVectored => "<ConnectionCommon as PlaintextSink>::write_vectored",
        Role::Read => "<Reader as Read>::read",
        Role::FirstChunk => "Reader::into_first_chunk",
        Role::Consume => "<Reader as BufRead>::consume",
        Role::DeframerRead => "deframer read",
        Role::Process => "ConnectionCore::process_new_packets",
    }
}

fn has_symbols(obj: &object::File<'_>) -> bool {
    obj.symbols().next().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_told_by_demangled_name_in_each_version() {
        let cases = [
            (
                "<rustls::conn::ConnectionCommon<T> as rustls::conn::connection::PlaintextSink>::write",
                Some(Role::Write),
            ),
            (
                "<rustls::conn::ConnectionCommon<T> as rustls::conn::PlaintextSink>::write_vectored",
                Some(Role::WriteVectored),
            ),
            (
                "<rustls::conn::ConnectionCommon<T> as rustls::conn::connection::PlaintextSink>::flush",
                None,
            ),
            (
                "<rustls::conn::Reader as std::io::Read>::read",
                Some(Role::Read),
            ),
            (
                "<rustls::conn::connection::Reader as std::io::BufRead>::consume",
                Some(Role::Consume),
            ),
            (
                "rustls::conn::connection::Reader::into_first_chunk",
                Some(Role::FirstChunk),
            ),
            (
                "rustls::msgs::deframer::buffers::DeframerVecBuffer::read",
                Some(Role::DeframerRead),
            ),
            (
                "rustls::msgs::deframer::MessageDeframer::read",
                Some(Role::DeframerRead),
            ),
            (
                "rustls::conn::ConnectionCore<Data>::process_new_packets",
                Some(Role::Process),
            ),
            ("<std::io::pipe::PipeReader as std::io::Read>::read", None),
            (
                "<rustls::conn::connection::Writer as std::io::Write>::write",
                None,
            ),
        ];
        for (name, role) in cases {
            assert_eq!(role_of(name), role, "{name}");
        }
    }

    #[test]
    fn versions_are_read_from_source_paths() {
        assert_eq!(parse_version(b"0.23.46/src/conn.rs"), Some((0, 23, 46)));
        assert_eq!(parse_version(b"0.21.12/src/x"), Some((0, 21, 12)));
        assert_eq!(parse_version(b"0.24.0-alpha.1/src"), Some((0, 24, 0)));
        assert_eq!(parse_version(b"webpki-0.103/src"), None);
        assert_eq!(parse_version(b"no slash"), None);
    }

    #[test]
    fn the_agents_own_rustls_is_found() {
        // The agent links rustls 0.23 itself (its HTTPS clients: the kubelet, OTLP): a real
        // binary with the symbol table, in the test profile's build.
        let me = std::fs::read("/proc/self/exe").expect("own exe");
        let obj = object::File::parse(&*me).expect("ELF");
        let Examined::Found(points) = examine(&obj) else {
            panic!("rustls not found in the agent's own test binary");
        };
        let has = |program: &str| points.iter().any(|p| p.program == program);
        for program in [
            "rustls_write",
            "rustls_write_ret",
            "rustls_deframer_read",
            "rustls_deframer_read_ret",
            "rustls_process",
        ] {
            assert!(has(program), "{program} in {points:#?}");
        }
        assert!(
            has("rustls_read") || (has("rustls_first_chunk") && has("rustls_consume")),
            "a read path in {points:#?}"
        );
        assert!(points.iter().all(|p| p.offset > 0 && p.required));
    }

    #[test]
    fn a_binary_without_rustls_is_not_this() {
        let data = std::fs::read("/bin/true").expect("/bin/true");
        let obj = object::File::parse(&*data).expect("ELF");
        assert_eq!(examine(&obj), Examined::NotThis);
    }
}
