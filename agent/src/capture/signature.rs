//! Byte signatures of OpenSSL's functions, taken from a static `libssl.a`: the code of each
//! function exactly as the archive's object file holds it, with the bytes the linker will patch
//! (every relocated field, and the instruction bytes before a relocation the linker may rewrite
//! while relaxing it) marked as "any". The linker copies the rest of a function's bytes into
//! every executable that links it, so the signature finds the function in an executable whose
//! symbols were stripped.
//!
//! Shared by the agent's build script (which writes the signatures of the `libssl.a` found at
//! build time into the agent) and its tests (which derive them again and compare). Only `std`
//! and `object`.

use std::fmt::Write as _;

use object::{
    Object as _, ObjectSection as _, ObjectSymbol as _, RelocationFlags, RelocationTarget, elf,
    read::archive::ArchiveFile,
};

/// The functions a signature is taken of.
pub const FUNCTIONS: [&str; 6] = [
    "SSL_write",
    "SSL_read",
    "SSL_write_ex",
    "SSL_read_ex",
    "SSL_free",
    "SSL_ctrl",
];

/// One function's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extracted {
    /// The function, one of [`FUNCTIONS`].
    pub function: String,
    /// Its code.
    pub bytes: Vec<u8>,
    /// Per byte: 0xff where the code must match, 0 where the linker fills it in.
    pub mask: Vec<u8>,
    /// PC-relative references to named functions and data: (offset of the 32-bit field, the
    /// symbol, the addend). In a linked program each resolves to one address, the same from
    /// every function that refers to that symbol; that tells apart functions whose bytes are
    /// alike (`SSL_read_ex` and `SSL_write_ex` differ only in the function they call).
    pub refs: Vec<(u32, String, i64)>,
}

/// The signatures of [`FUNCTIONS`] found in the archive `data` (x86-64 ELF objects only).
///
/// # Errors
/// When `data` is not an archive, or a member that claims to be an object cannot be read.
pub fn extract(data: &[u8]) -> Result<Vec<Extracted>, object::Error> {
    let archive = ArchiveFile::parse(data)?;
    let mut out = Vec::new();
    for member in archive.members() {
        let member = member?;
        let Ok(obj) = object::File::parse(member.data(data)?) else {
            continue;
        };
        if obj.architecture() != object::Architecture::X86_64 {
            continue;
        }
        for sym in obj.symbols() {
            let Ok(name) = sym.name() else { continue };
            if !FUNCTIONS.contains(&name) || sym.is_undefined() || sym.size() == 0 {
                continue;
            }
            if let Some(sig) = signature_of(&obj, &sym, name)? {
                out.push(sig);
            }
        }
    }
    out.sort_by_key(|s| FUNCTIONS.iter().position(|f| *f == s.function));
    Ok(out)
}

fn signature_of(
    obj: &object::File<'_>,
    sym: &object::Symbol<'_, '_>,
    name: &str,
) -> Result<Option<Extracted>, object::Error> {
    let Some(index) = sym.section_index() else {
        return Ok(None);
    };
    let section = obj.section_by_index(index)?;
    let code = section.data()?;
    let (Ok(start), Ok(size)) = (usize::try_from(sym.address()), usize::try_from(sym.size()))
    else {
        return Ok(None);
    };
    let Some(bytes) = code.get(start..start + size) else {
        return Ok(None);
    };
    let mut mask = vec![0xff_u8; size];
    let mut refs = Vec::new();
    for (offset, reloc) in section.relocations() {
        let Some(at) = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_sub(start))
            .filter(|o| *o < size)
        else {
            continue;
        };
        let RelocationFlags::Elf { r_type } = reloc.flags() else {
            continue;
        };
        let width = usize::from(reloc.size() / 8).max(1);
        for b in mask.iter_mut().skip(at).take(width) {
            *b = 0;
        }
        let pc_relative = matches!(r_type, elf::R_X86_64_PC32 | elf::R_X86_64_PLT32);
        if !pc_relative {
            // GOT and TLS relocations may be relaxed at link time, rewriting the prefix, opcode
            // and ModRM bytes before the field.
            for b in mask.iter_mut().take(at).skip(at.saturating_sub(3)) {
                *b = 0;
            }
            continue;
        }
        if let RelocationTarget::Symbol(target) = reloc.target()
            && let Ok(target) = obj.symbol_by_index(target)
            && target.kind() != object::SymbolKind::Section
            && let Ok(target_name) = target.name()
            && !target_name.is_empty()
            && let Ok(at32) = u32::try_from(at)
        {
            refs.push((at32, target_name.to_owned(), reloc.addend()));
        }
    }
    Ok(Some(Extracted {
        function: name.to_owned(),
        bytes: bytes.to_vec(),
        mask,
        refs,
    }))
}

/// The OpenSSL version text in `data` (a `libcrypto.a` holds `OpenSSL 3.0.19 27 Jan 2026`), if
/// any.
#[must_use]
pub fn version_text(data: &[u8]) -> Option<String> {
    let mut from = 0;
    while let Some(i) = find(&data[from..], b"OpenSSL ") {
        let at = from + i;
        let rest = &data[at..];
        if rest.get(8).is_some_and(u8::is_ascii_digit) {
            let end = rest
                .iter()
                .position(|b| *b == 0)
                .unwrap_or(rest.len())
                .min(64);
            return String::from_utf8(rest[..end].to_vec()).ok();
        }
        from = at + 8;
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Rust source for `signatures` built from `build` (what the signatures were taken from):
/// `pub static SIGNATURES: &[Signature] = &[...];`.
#[must_use]
pub fn to_rust(signatures: &[Extracted], build: &str) -> String {
    let mut s = String::from("pub static SIGNATURES: &[Signature] = &[\n");
    for sig in signatures {
        let _ = writeln!(
            s,
            "    Signature {{ function: {:?}, build: {:?}, bytes: &{:?}, mask: &{:?}, refs: &{:?} }},",
            sig.function, build, sig.bytes, sig.mask, sig.refs
        );
    }
    s.push_str("];\n");
    s
}
