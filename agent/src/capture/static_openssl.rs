//! OpenSSL (or BoringSSL) linked into a file that neither exports its functions nor keeps a
//! symbol table: a stripped executable built against a static `libssl.a`. Its `SSL_write` and
//! `SSL_read` (and `_ex`, `SSL_free`, `SSL_ctrl`) are found by their code: byte signatures taken
//! from the `libssl.a` present when the agent was built ([`super::signature`], written in by
//! `build.rs`). The probes are OpenSSL's own.
//!
//! A file is looked at only when its read-only data holds libssl's own source file name
//! (`ssl/ssl_lib.c`, in its error records); when its code matches no signature the agent knows,
//! it says so: the stack is named, and why it cannot be traced.
//! A file that exports the functions or keeps them in its symbol table is the
//! [`openssl`](super::openssl) provider's.

use std::collections::HashMap;

use object::{Object as _, ObjectSection as _, SectionKind};

use super::{
    openssl,
    providers::{AttachPoint, Examined, Provider, read_only_data, symbol_offsets},
};

/// One function's signature (see [`super::signature::Extracted`]).
#[derive(Clone, Debug)]
pub struct Signature {
    /// The function.
    pub function: &'static str,
    /// The OpenSSL build it was taken from.
    pub build: &'static str,
    /// Its code.
    pub bytes: &'static [u8],
    /// 0xff where the code must match.
    pub mask: &'static [u8],
    /// PC-relative references: (field offset, symbol, addend).
    pub refs: &'static [(u32, &'static str, i64)],
}

include!(concat!(env!("OUT_DIR"), "/openssl_signatures.rs"));

/// The static OpenSSL provider (OpenSSL's programs, placed by signature).
pub const PROVIDER: Provider = Provider {
    name: "OpenSSL (static)",
    programs: openssl::PROVIDER.programs,
    examine,
    host_libraries: &[],
};

/// What libssl leaves in the read-only data of whatever links it: the source file name of its
/// error records, a C string ending in `ssl/ssl_lib.c` (BoringSSL's in `ssl_lib.cc`). Kept here
/// followed by a byte that is not NUL, so the agent's own binary never holds the C string.
const MARKER_AND_GUARD: &[u8] = b"ssl/ssl_lib.c\x01";

fn examine(obj: &object::File<'_>) -> Examined {
    examine_with(obj, SIGNATURES)
}

fn examine_with(obj: &object::File<'_>, signatures: &[Signature]) -> Examined {
    let Some(stack) = libssl_inside(obj) else {
        return Examined::NotThis;
    };
    let exported = symbol_offsets(obj, &["SSL_write", "SSL_read"]);
    if exported.len() == 2 {
        // The symbol table names them: the OpenSSL provider's.
        return Examined::NotThis;
    }
    let found = match_signatures(obj, signatures);
    let mut points = Vec::new();
    for spec in openssl::PROBES {
        match found.get(spec.symbol) {
            Some(&offset) => points.push(AttachPoint {
                function: spec.symbol,
                program: spec.program,
                offset,
                ret: spec.ret,
                required: spec.required,
                cookie: None,
            }),
            None if spec.required => {
                let mut builds: Vec<&str> = signatures.iter().map(|s| s.build).collect();
                builds.dedup();
                let known = if builds.is_empty() {
                    "none: the agent was built without a static libssl.a".to_owned()
                } else {
                    builds.join(", ")
                };
                return Examined::Unsupported(format!(
                    "{stack} is linked in statically without symbols, and its SSL_write/SSL_read match none of the signatures this agent knows (taken from: {known})"
                ));
            }
            None => {}
        }
    }
    Examined::Found(points)
}

/// The stack linked into `obj`, by its marker and version text, if libssl is there at all.
fn libssl_inside(obj: &object::File<'_>) -> Option<String> {
    let mut marked = false;
    let mut boring = false;
    let mut version = None;
    for data in read_only_data(obj) {
        let marker = &MARKER_AND_GUARD[..MARKER_AND_GUARD.len() - 1];
        for at in memchr::memmem::find_iter(data, marker) {
            let end = at + marker.len();
            match (data.get(end), data.get(end + 1)) {
                (Some(0), _) => marked = true,
                (Some(b'c'), Some(0)) => {
                    marked = true;
                    boring = true;
                }
                _ => {}
            }
        }
        if version.is_none() {
            version = super::signature::version_text(data);
        }
    }
    if !marked {
        return None;
    }
    Some(if boring {
        "BoringSSL".to_owned()
    } else {
        version.unwrap_or_else(|| "OpenSSL".to_owned())
    })
}

/// Executable code of a file: where it is loaded and where it lies in the file.
#[derive(Clone, Copy, Debug)]
struct Code<'a> {
    /// Virtual address of `data[0]`.
    address: u64,
    /// File offset of `data[0]`.
    offset: u64,
    /// The bytes.
    data: &'a [u8],
}

/// A place in the code where a signature matches.
#[derive(Clone, Copy, Debug)]
struct Candidate<'a> {
    /// Virtual address.
    address: u64,
    /// File offset.
    offset: u64,
    /// The code from there on.
    bytes: &'a [u8],
}

/// The file offsets of the functions of `signatures` found in `obj`'s code.
fn match_signatures(
    obj: &object::File<'_>,
    signatures: &[Signature],
) -> HashMap<&'static str, u64> {
    let code: Vec<Code<'_>> = obj
        .sections()
        .filter(|s| s.kind() == SectionKind::Text)
        .filter_map(|s| {
            Some(Code {
                address: s.address(),
                offset: s.file_range()?.0,
                data: s.data().ok()?,
            })
        })
        .collect();
    match_in(&code, signatures)
}

/// Finds each signature's function in `code`: every place its bytes match, narrowed down by what
/// its references resolve to (two functions that refer to the same symbol must resolve it to the
/// same address). Returns the file offset of each function found at exactly one place.
fn match_in(code: &[Code<'_>], signatures: &[Signature]) -> HashMap<&'static str, u64> {
    let mut candidates: Vec<Vec<Candidate<'_>>> = signatures
        .iter()
        .map(|sig| {
            code.iter()
                .flat_map(|c| {
                    matches(c.data, sig).into_iter().map(|at| Candidate {
                        address: c.address + at as u64,
                        offset: c.offset + at as u64,
                        bytes: &c.data[at..],
                    })
                })
                .collect()
        })
        .collect();
    // Resolve references until nothing changes.
    let mut bound: HashMap<&str, u64> = HashMap::new();
    loop {
        let mut changed = false;
        for (sig, cands) in signatures.iter().zip(&mut candidates) {
            let before = cands.len();
            cands.retain(|c| {
                sig.refs.iter().all(|(at, symbol, addend)| {
                    bound
                        .get(symbol)
                        .is_none_or(|addr| resolve(c, *at, *addend) == Some(*addr))
                })
            });
            changed |= cands.len() != before;
            if let [only] = cands.as_slice() {
                for (at, symbol, addend) in sig.refs {
                    if let Some(addr) = resolve(only, *at, *addend)
                        && bound.insert(symbol, addr).is_none()
                    {
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    signatures
        .iter()
        .zip(&candidates)
        .filter_map(|(sig, cands)| match cands.as_slice() {
            [only] => Some((sig.function, only.offset)),
            _ => None,
        })
        .collect()
}

/// The address a PC-relative field at `at` of the code at `c` refers to.
fn resolve(c: &Candidate<'_>, at: u32, addend: i64) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    let field = i32::from_le_bytes(c.bytes.get(at..at + 4)?.try_into().ok()?);
    // field = S + A - P, with P the field's address.
    let p = c.address.checked_add(at as u64)?;
    let s = i64::try_from(p).ok()? + i64::from(field) - addend;
    u64::try_from(s).ok()
}

/// Every offset of `data` where `sig` matches.
fn matches(data: &[u8], sig: &Signature) -> Vec<usize> {
    let n = sig.bytes.len();
    if n == 0 || data.len() < n {
        return Vec::new();
    }
    // Look for the longest run of fixed bytes, then check the rest.
    let (anchor_at, anchor_len) = longest_fixed_run(sig.mask);
    let anchor = &sig.bytes[anchor_at..anchor_at + anchor_len];
    let check = |start: usize| {
        data.get(start..start + n).is_some_and(|window| {
            window
                .iter()
                .zip(sig.bytes.iter().zip(sig.mask))
                .all(|(d, (b, m))| d & m == b & m)
        })
    };
    if anchor_len == 0 {
        return (0..=data.len() - n).filter(|s| check(*s)).collect();
    }
    memchr::memmem::find_iter(data, anchor)
        .filter_map(|i| i.checked_sub(anchor_at))
        .filter(|s| check(*s))
        .collect()
}

/// Start and length of the longest run of 0xff in `mask`.
fn longest_fixed_run(mask: &[u8]) -> (usize, usize) {
    let (mut best, mut start, mut len) = ((0, 0), 0, 0);
    for (i, m) in mask.iter().enumerate() {
        if *m == 0xff {
            if len == 0 {
                start = i;
            }
            len += 1;
            if len > best.1 {
                best = (start, len);
            }
        } else {
            len = 0;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signatures_written_in_are_those_of_the_systems_libssl_a() {
        let path = "/usr/lib/x86_64-linux-gnu/libssl.a";
        let Ok(data) = std::fs::read(path) else {
            panic!("{path} is needed for this test (Debian's libssl-dev; `cargo xtask setup`)");
        };
        let extracted = super::super::signature::extract(&data).expect("archive");
        assert_eq!(
            extracted.len(),
            SIGNATURES.len(),
            "one signature per function"
        );
        for (e, s) in extracted.iter().zip(SIGNATURES) {
            assert_eq!(e.function, s.function);
            assert_eq!(e.bytes, s.bytes, "{}", s.function);
            assert_eq!(e.mask, s.mask, "{}", s.function);
            assert!(s.build.starts_with("OpenSSL 3"), "{}", s.build);
        }
        let read_ex = SIGNATURES
            .iter()
            .find(|s| s.function == "SSL_read_ex")
            .expect("SSL_read_ex");
        assert!(
            read_ex.refs.iter().any(|r| r.1 == "ssl_read_internal"),
            "{read_ex:?}"
        );
    }

    /// Two functions alike but for the call they make, as `SSL_read_ex` and `SSL_write_ex`.
    fn alike() -> [Signature; 3] {
        // sub rsp,8; call rel32; add rsp,8; ret
        const CODE: &[u8] = &[
            0x48, 0x83, 0xec, 0x08, 0xe8, 0, 0, 0, 0, 0x48, 0x83, 0xc4, 0x08, 0xc3,
        ];
        const MASK: &[u8] = &[
            0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        // mov eax,1; call rel32; ret: refers to `read_internal` only.
        const READ: &[u8] = &[0xb8, 1, 0, 0, 0, 0xe8, 0, 0, 0, 0, 0xc3];
        const READ_MASK: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0xff];
        [
            Signature {
                function: "SSL_read",
                build: "test",
                bytes: READ,
                mask: READ_MASK,
                refs: &[(6, "read_internal", -4)],
            },
            Signature {
                function: "SSL_write_ex",
                build: "test",
                bytes: CODE,
                mask: MASK,
                refs: &[(5, "write_internal", -4)],
            },
            Signature {
                function: "SSL_read_ex",
                build: "test",
                bytes: CODE,
                mask: MASK,
                refs: &[(5, "read_internal", -4)],
            },
        ]
    }

    #[test]
    fn references_tell_apart_functions_whose_bytes_are_alike() {
        let sigs = alike();
        // Code at address 0: write_internal at 0x100, read_internal at 0x200; SSL_read at 0x10,
        // SSL_write_ex at 0x20, SSL_read_ex at 0x40.
        let mut text = vec![0x90_u8; 0x300];
        let call = |text: &mut Vec<u8>, at: usize, field: usize, target: usize| {
            let rel = i32::try_from(target as i64 - (field as i64 + 4)).expect("near");
            text[at + field..at + field + 4].copy_from_slice(&rel.to_le_bytes());
        };
        text[0x10..0x10 + sigs[0].bytes.len()].copy_from_slice(sigs[0].bytes);
        call(&mut text, 0x10, 6, 0x200 - 0x10);
        for (at, target) in [(0x20, 0x100), (0x40, 0x200)] {
            text[at..at + sigs[1].bytes.len()].copy_from_slice(sigs[1].bytes);
            call(&mut text, at, 5, target - at);
        }
        for sig in &sigs[1..] {
            assert_eq!(matches(&text, sig), vec![0x20, 0x40], "alike by bytes");
        }
        let code = [Code {
            address: 0x1000,
            offset: 0x10,
            data: &text,
        }];
        let found = match_in(&code, &sigs);
        assert_eq!(found.get("SSL_read"), Some(&0x20));
        assert_eq!(found.get("SSL_read_ex"), Some(&0x50), "{found:?}");
        assert_eq!(
            found.get("SSL_write_ex"),
            None,
            "nothing binds write_internal: {found:?}"
        );
        // Once write_internal is known too, SSL_write_ex is the other one.
        let mut more = sigs.to_vec();
        more.push(Signature {
            function: "SSL_write",
            build: "test",
            bytes: &[0xb8, 2, 0, 0, 0, 0xe8, 0, 0, 0, 0, 0xc3],
            mask: &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0xff],
            refs: &[(6, "write_internal", -4)],
        });
        text[0x80..0x8b].copy_from_slice(more[3].bytes);
        call(&mut text, 0x80, 6, 0x100 - 0x80);
        let code = [Code {
            address: 0x1000,
            offset: 0x10,
            data: &text,
        }];
        let found = match_in(&code, &more);
        assert_eq!(found.get("SSL_write_ex"), Some(&0x30), "{found:?}");
        assert_eq!(found.get("SSL_read_ex"), Some(&0x50), "{found:?}");
    }

    #[test]
    fn the_longest_fixed_run_anchors_the_search() {
        assert_eq!(
            longest_fixed_run(&[0xff, 0, 0xff, 0xff, 0xff, 0, 0xff]),
            (2, 3)
        );
        assert_eq!(longest_fixed_run(&[0, 0]), (0, 0));
    }
}
