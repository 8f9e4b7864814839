//! The ELF side of a Go binary: its build info (the Go version), its architecture, where its
//! functions are and where their `RET` instructions are.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use object::{Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _};

use super::{GoError, GoFunction, READ_FUNCTION, SymbolSource, WRITE_FUNCTION, pclntab};

/// The first bytes of the `.go.buildinfo` section.
const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// A Go release, as `go1.MINOR.PATCH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoVersion {
    /// `1`.
    pub major: u32,
    /// The release (`21` in `go1.21.13`).
    pub minor: u32,
    /// The patch release (`13`), 0 for release candidates and development builds.
    pub patch: u32,
}

impl std::fmt::Display for GoVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "go{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Parses the version a Go binary names: `go1.21.13`, `go1.22rc1`, `go1.27.3 X:boringcrypto`,
/// `devel go1.23-abcdef Tue ...`.
#[must_use]
pub fn parse_version(text: &str) -> Option<GoVersion> {
    let start = text.find("go1.")?;
    let rest = &text[start + 2..];
    let mut numbers = rest
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(str::parse::<u32>);
    let major = numbers.next()?.ok()?;
    let minor = numbers.next()?.ok()?;
    // The patch is the next number only when a dot leads to it (`go1.22rc1` has none).
    let after_minor = &rest[major.to_string().len() + 1 + minor.to_string().len()..];
    let patch = if after_minor.starts_with('.') {
        numbers.next().and_then(Result::ok).unwrap_or(0)
    } else {
        0
    };
    Some(GoVersion {
        major,
        minor,
        patch,
    })
}

/// What the build info says.
pub struct BuildInfo {
    /// The version text, as written (`go1.21.13`).
    pub version_text: String,
    /// The same, parsed.
    pub version: GoVersion,
}

/// The Go build info of `elf`, `None` when it has none (not a Go binary).
pub fn build_info(elf: &object::File<'_>) -> Result<Option<BuildInfo>, GoError> {
    let Some(section) = elf.section_by_name(".go.buildinfo") else {
        return Ok(None);
    };
    let data = section
        .data()
        .map_err(|e| GoError::Malformed(format!(".go.buildinfo: {e}")))?;
    if !data.starts_with(BUILDINFO_MAGIC) || data.len() < 32 {
        return Err(GoError::Malformed(
            ".go.buildinfo without its magic header".into(),
        ));
    }
    let ptr_size = usize::from(data[14]);
    let flags = data[15];
    let version_text = if flags & 2 != 0 {
        // Go 1.18 and later: length-prefixed strings from offset 32.
        read_varint_string(&data[32..])
            .ok_or_else(|| GoError::Malformed("unreadable version in .go.buildinfo".into()))?
    } else {
        // Before: two pointers to Go string headers (pointer, length).
        let big_endian = flags & 1 != 0;
        read_indirect_string(elf, &data[16..], ptr_size, big_endian).ok_or_else(|| {
            GoError::Malformed("the Go version in .go.buildinfo points outside the file".into())
        })?
    };
    if version_text.contains("gccgo") {
        return Err(GoError::Gccgo {
            detail: format!("build info says {version_text:?}"),
        });
    }
    let version = parse_version(&version_text).ok_or_else(|| {
        GoError::Malformed(format!(
            "unparsable Go version {version_text:?} in build info"
        ))
    })?;
    Ok(Some(BuildInfo {
        version_text,
        version,
    }))
}

/// An unsigned LEB128 length, then that many bytes of text.
fn read_varint_string(data: &[u8]) -> Option<String> {
    let mut len: u64 = 0;
    let mut shift = 0;
    let mut pos = 0;
    loop {
        let b = *data.get(pos)?;
        pos += 1;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let len = usize::try_from(len).ok()?;
    let bytes = data.get(pos..pos.checked_add(len)?)?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// Reads a pointer-sized word.
fn word(data: &[u8], ptr_size: usize, big_endian: bool) -> Option<u64> {
    let bytes = data.get(..ptr_size)?;
    let mut v: u64 = 0;
    for i in 0..ptr_size {
        let b = if big_endian {
            bytes[i]
        } else {
            bytes[ptr_size - 1 - i]
        };
        v = (v << 8) | u64::from(b);
    }
    Some(v)
}

/// The pre-1.18 build info: a pointer to a Go string header, read through the file's segments.
fn read_indirect_string(
    elf: &object::File<'_>,
    data: &[u8],
    ptr_size: usize,
    big_endian: bool,
) -> Option<String> {
    let header_addr = word(data, ptr_size, big_endian)?;
    let header = bytes_at(elf, header_addr, 2 * ptr_size as u64)?;
    let addr = word(header, ptr_size, big_endian)?;
    let len = word(&header[ptr_size..], ptr_size, big_endian)?;
    if len > 1024 {
        return None;
    }
    let bytes = bytes_at(elf, addr, len)?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// The file bytes behind `len` bytes at virtual address `addr`.
pub fn bytes_at<'a>(elf: &object::File<'a>, addr: u64, len: u64) -> Option<&'a [u8]> {
    for segment in elf.segments() {
        let start = segment.address();
        let Ok(data) = segment.data() else { continue };
        if addr >= start && addr.checked_add(len)? <= start + data.len() as u64 {
            let from = usize::try_from(addr - start).ok()?;
            return data.get(from..from + usize::try_from(len).ok()?);
        }
    }
    None
}

/// The file offset of virtual address `addr` (where a uprobe is placed).
pub fn file_offset(elf: &object::File<'_>, addr: u64) -> Option<u64> {
    for segment in elf.segments() {
        let start = segment.address();
        let (offset, size) = segment.file_range();
        if addr >= start && addr < start.checked_add(size)? {
            return Some(addr - start + offset);
        }
    }
    None
}

/// Refuses anything but x86-64.
pub fn check_architecture(elf: &object::File<'_>, version: &str) -> Result<(), GoError> {
    match elf.architecture() {
        object::Architecture::X86_64 => Ok(()),
        other => Err(GoError::Architecture {
            arch: format!("{other:?}").to_lowercase(),
            version: version.to_owned(),
        }),
    }
}

/// A binary without Go build info that links gccgo's runtime (`libgo.so`) is a Go program all
/// the same: say so rather than treat it as a program without TLS.
pub fn refuse_gccgo(elf: &object::File<'_>) -> Result<(), GoError> {
    let needs_libgo = elf
        .section_by_name(".dynstr")
        .and_then(|s| s.data().ok())
        .is_some_and(|d| d.split(|b| *b == 0).any(|n| n.starts_with(b"libgo.so")));
    if needs_libgo {
        return Err(GoError::Gccgo {
            detail: "it links libgo.so".into(),
        });
    }
    Ok(())
}

/// Finds `(*Conn).Write` and `(*Conn).Read` and their `RET` instructions.
pub fn find_functions(
    elf: &object::File<'_>,
    version: &str,
) -> Result<(GoFunction, GoFunction, SymbolSource), GoError> {
    if let Some((write, read)) = symtab_functions(elf) {
        return Ok((
            locate(elf, WRITE_FUNCTION, write)?,
            locate(elf, READ_FUNCTION, read)?,
            SymbolSource::Symtab,
        ));
    }
    let (write, read) = functions_from_pclntab(elf, version)?;
    Ok((write, read, SymbolSource::Pclntab))
}

/// The two functions from the Go function table.
pub fn functions_from_pclntab(
    elf: &object::File<'_>,
    version: &str,
) -> Result<(GoFunction, GoFunction), GoError> {
    let table = pclntab::find(elf)?;
    let (write, read) = table.functions(&[WRITE_FUNCTION, READ_FUNCTION]);
    let missing = |function| GoError::NoCryptoTls {
        version: version.to_owned(),
        function,
    };
    let write = write.ok_or_else(|| missing(WRITE_FUNCTION))?;
    let read = read.ok_or_else(|| missing(READ_FUNCTION))?;
    Ok((
        locate(elf, WRITE_FUNCTION, write)?,
        locate(elf, READ_FUNCTION, read)?,
    ))
}

/// `(address, size)` of the two functions from the symbol table, when it has both.
fn symtab_functions(elf: &object::File<'_>) -> Option<(pclntab::Span, pclntab::Span)> {
    let mut write = None;
    let mut read = None;
    for sym in elf.symbols() {
        if sym.kind() != object::SymbolKind::Text || sym.size() == 0 {
            continue;
        }
        match sym.name() {
            Ok(WRITE_FUNCTION) => write = Some((sym.address(), sym.size())),
            Ok(READ_FUNCTION) => read = Some((sym.address(), sym.size())),
            _ => continue,
        }
        if write.is_some() && read.is_some() {
            break;
        }
    }
    Some((write?, read?))
}

/// The file offsets of a function's entry and of its `RET` instructions.
fn locate(
    elf: &object::File<'_>,
    name: &str,
    (address, size): pclntab::Span,
) -> Result<GoFunction, GoError> {
    let code = bytes_at(elf, address, size)
        .ok_or_else(|| GoError::Malformed(format!("{name} at {address:#x} is not in the file")))?;
    let start_offset = file_offset(elf, address)
        .ok_or_else(|| GoError::Malformed(format!("{name} at {address:#x} has no file offset")))?;
    let returns = return_addresses(code, address)
        .map_err(|at| GoError::Malformed(format!("{name}: undecodable instruction at {at:#x}")))?;
    if returns.is_empty() {
        return Err(GoError::Malformed(format!(
            "{name} at {address:#x} has no RET instruction"
        )));
    }
    let return_offsets = returns.iter().map(|a| a - address + start_offset).collect();
    // The entry probe goes after the stack check: when the goroutine's stack must grow, the
    // runtime copies it and runs the function again from its first instruction, which would
    // fire a probe there twice for one call (and send a write's bytes twice).
    let entry_offset = start_offset + (after_stack_check(code, address) - address);
    Ok(GoFunction {
        address,
        size,
        start_offset,
        entry_offset,
        return_offsets,
    })
}

/// The address of the first instruction after the stack check Go compiles at the start of a
/// function (`cmp rsp, [r14+16]` or `lea r12, [rsp-N]; cmp r12, [r14+16]`, then `jbe` to the
/// call of `runtime.morestack`), or `address` when the function starts otherwise. There the
/// arguments are still in their registers and `r14` is still the goroutine.
#[must_use]
pub fn after_stack_check(code: &[u8], address: u64) -> u64 {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut compared_with_g = false;
    for _ in 0..4 {
        if !decoder.can_decode() {
            break;
        }
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            break;
        }
        match instruction.mnemonic() {
            Mnemonic::Cmp => {
                compared_with_g = (0..instruction.op_count()).any(|i| {
                    instruction.op_kind(i) == iced_x86::OpKind::Memory
                        && instruction.memory_base() == iced_x86::Register::R14
                });
            }
            Mnemonic::Jbe if compared_with_g => return instruction.next_ip(),
            Mnemonic::Lea => {}
            _ => break,
        }
    }
    address
}

/// The addresses of the `RET` instructions in `code`, which starts at `address`; the address of
/// the first undecodable instruction as the error.
pub fn return_addresses(code: &[u8], address: u64) -> Result<Vec<u64>, u64> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut out = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            return Err(instruction.ip());
        }
        if instruction.mnemonic() == Mnemonic::Ret {
            out.push(instruction.ip());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_probes_go_after_the_stack_check() {
        // lea r12, [rsp-0x48]; cmp r12, [r14+0x10]; jbe ...; push rbp
        let big_frame = [
            0x4c, 0x8d, 0x64, 0x24, 0xb8, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xb3, 0x07, 0x00,
            0x00, 0x55,
        ];
        assert_eq!(after_stack_check(&big_frame, 0x1000), 0x1000 + 15);
        // cmp rsp, [r14+0x10]; jbe short; push rbp
        let small_frame = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x20, 0x55];
        assert_eq!(after_stack_check(&small_frame, 0x1000), 0x1000 + 6);
        // push rbp; mov rbp, rsp: no stack check (a function marked nosplit)
        assert_eq!(after_stack_check(&[0x55, 0x48, 0x89, 0xe5], 0x1000), 0x1000);
        // cmp rax, [rbx+0x10]; jbe: not the goroutine's stack bound
        assert_eq!(
            after_stack_check(&[0x48, 0x3b, 0x43, 0x10, 0x76, 0x20], 0x1000),
            0x1000
        );
    }

    #[test]
    fn versions_parse_in_every_form_go_writes() {
        let v = |major, minor, patch| GoVersion {
            major,
            minor,
            patch,
        };
        assert_eq!(parse_version("go1.21.13"), Some(v(1, 21, 13)));
        assert_eq!(parse_version("go1.17"), Some(v(1, 17, 0)));
        assert_eq!(parse_version("go1.22rc1"), Some(v(1, 22, 0)));
        assert_eq!(parse_version("go1.27.3 X:boringcrypto"), Some(v(1, 27, 3)));
        assert_eq!(
            parse_version("devel go1.23-2a1b3c4 Tue Jan 2 15:04:05 2024 +0000"),
            Some(v(1, 23, 0))
        );
        assert_eq!(parse_version("gccgo"), None);
        assert_eq!(parse_version("go2"), None);
    }

    #[test]
    fn rets_are_found_by_decoding_not_by_searching_bytes() {
        // mov eax, 0xc3c3c3c3 (C3 bytes inside an immediate); ret; int3; ret 8
        let code = [0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xcc, 0xc2, 0x08, 0x00];
        assert_eq!(return_addresses(&code, 0x1000), Ok(vec![0x1005, 0x1007]));
        // A lone prefix byte at the end cannot be decoded.
        assert_eq!(return_addresses(&[0xc3, 0x66], 0x2000), Err(0x2001));
    }

    #[test]
    fn varint_strings_and_words_read_as_go_writes_them() {
        assert_eq!(
            read_varint_string(b"\x09go1.21.13rest").as_deref(),
            Some("go1.21.13")
        );
        let mut long = vec![0x80 | 0x2c, 0x01];
        long.extend(std::iter::repeat_n(b'x', 172));
        assert_eq!(read_varint_string(&long).map(|s| s.len()), Some(172));
        assert_eq!(read_varint_string(b"\x05abc"), None);
        assert_eq!(word(&[1, 2, 0, 0, 0, 0, 0, 0], 8, false), Some(0x0201));
        assert_eq!(word(&[0, 0, 0, 1], 4, true), Some(1));
    }
}
