//! Go `crypto/tls`: recognising a Go program, finding `(*Conn).Write` and `(*Conn).Read` and
//! the `RET` instructions of `Read` in its machine code, and the struct offsets that lead from a
//! `*tls.Conn` to its socket fd. Worked out once per binary file and cached by the caller.
//!
//! - A Go binary is recognised by its build info (`.go.buildinfo`), which names the Go version.
//!   Only Go 1.17 and later on x86-64 are supported: the probes read arguments and results from
//!   registers (the register ABI came with Go 1.17) and the goroutine from `r14`. Older Go,
//!   other architectures and gccgo are refused with an error that says what was found.
//! - Functions come from `.symtab`, or from the Go function table (`pclntab`) when the binary is
//!   stripped: by section name, or by its magic number in position-independent builds.
//! - `RET` instructions are found by decoding the function's machine code (`iced-x86`): Go
//!   functions are probed at every `RET`, never with a uretprobe (the runtime moves goroutine
//!   stacks, and a return address rewritten by a uretprobe crashes the program).
//! - Struct offsets come from the binary's DWARF when it has any, else from a table per Go
//!   version generated from real toolchains ([`offsets`]).

mod binary;
pub mod offsets;
mod pclntab;
mod table;

use std::path::Path;

use agent_common::GoConnOffsets;

use super::providers::{AttachPoint, Examined, Provider};

pub use binary::{GoVersion, parse_version};
pub use offsets::OffsetsSource;

/// The eBPF programs (`agent-ebpf/src/gotls.rs`).
const WRITE_PROGRAM: &str = "go_tls_write";
const READ_PROGRAM: &str = "go_tls_read";
const READ_RET_PROGRAM: &str = "go_tls_read_ret";

/// The Go provider: any executable or shared library with Go build info and crypto/tls.
pub const PROVIDER: Provider = Provider {
    name: "Go crypto/tls",
    programs: &[WRITE_PROGRAM, READ_PROGRAM, READ_RET_PROGRAM],
    examine,
    // Go programs carry their TLS stack in their own executable.
    host_libraries: &[],
};

/// What this provider makes of a file: a Go binary with crypto/tls gets its attach points, one
/// that cannot be probed says why, anything else (a Go program without crypto/tls too) is not
/// this stack.
fn examine(obj: &object::File<'_>) -> Examined {
    match analyze_object(obj) {
        Ok(None) | Err(GoError::NoCryptoTls { .. }) => Examined::NotThis,
        Ok(Some(bin)) => {
            tracing::debug!(version = %bin.version_text, symbols = ?bin.symbols, offsets = %bin.offsets_source, rets = bin.read.return_offsets.len(), "Go crypto/tls");
            if let OffsetsSource::Nearest { minor } = bin.offsets_source {
                tracing::warn!(version = %bin.version_text, "no DWARF and no offsets for this Go release: assuming go1.{minor}'s struct layout to find socket fds");
            }
            Examined::Found(attach_points(&bin))
        }
        Err(e) => Examined::Unsupported(e.to_string()),
    }
}

/// Where the programs go in `bin`: `Write`'s entry, `Read`'s entry and each of `Read`'s `RET`
/// instructions (plain uprobes, never uretprobes). The entry programs get the struct offsets in
/// their cookie.
#[must_use]
pub fn attach_points(bin: &GoBinary) -> Vec<AttachPoint> {
    let cookie = Some(bin.offsets.to_cookie());
    let point = |function, program, offset, cookie| AttachPoint {
        function,
        program,
        offset,
        ret: false,
        required: true,
        cookie,
    };
    let mut points = vec![
        point(
            WRITE_FUNCTION,
            WRITE_PROGRAM,
            bin.write.entry_offset,
            cookie,
        ),
        point(READ_FUNCTION, READ_PROGRAM, bin.read.entry_offset, cookie),
    ];
    points.extend(
        bin.read
            .return_offsets
            .iter()
            .map(|&at| point(READ_FUNCTION, READ_RET_PROGRAM, at, None)),
    );
    points
}

/// The function whose entry gets the write probe.
pub const WRITE_FUNCTION: &str = "crypto/tls.(*Conn).Write";
/// The function whose entry and `RET` instructions get the read probes.
pub const READ_FUNCTION: &str = "crypto/tls.(*Conn).Read";

/// The oldest Go release whose binaries can be probed (the register ABI).
pub const MIN_MINOR: u32 = 17;

/// One function of a Go binary, located for probing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFunction {
    /// Its virtual address in the file's own address space.
    pub address: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The file offset of its first instruction.
    pub start_offset: u64,
    /// The file offset where the entry uprobe goes: after Go's stack check, which a call runs
    /// twice when its goroutine's stack grows (see `binary::after_stack_check`).
    pub entry_offset: u64,
    /// The file offsets of its `RET` instructions.
    pub return_offsets: Vec<u64>,
}

/// Where the functions were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolSource {
    /// The ELF symbol table.
    Symtab,
    /// The Go function table (stripped binaries).
    Pclntab,
}

/// Everything the probes need to watch one Go binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoBinary {
    /// The Go version that built it, as its build info says (`go1.21.13`).
    pub version_text: String,
    /// The same, parsed.
    pub version: GoVersion,
    /// `crypto/tls.(*Conn).Write`.
    pub write: GoFunction,
    /// `crypto/tls.(*Conn).Read`.
    pub read: GoFunction,
    /// Where the functions were found.
    pub symbols: SymbolSource,
    /// The offsets from a `*tls.Conn` to its fd.
    pub offsets: GoConnOffsets,
    /// Where the offsets came from.
    pub offsets_source: OffsetsSource,
}

/// Why a Go binary cannot be probed.
#[derive(Debug, thiserror::Error)]
pub enum GoError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A Go binary for another architecture.
    #[error(
        "it is a Go program for {arch} ({version}), and Go crypto/tls is supported on x86-64 only (the probes read Go's register ABI and the goroutine from r14)"
    )]
    Architecture {
        /// What the ELF header says.
        arch: String,
        /// The Go version, if it could be read.
        version: String,
    },
    /// Built by a Go release before the register ABI.
    #[error(
        "it was built by {version}, and Go crypto/tls is supported from Go 1.17 (its register ABI): this program passes arguments on the stack"
    )]
    TooOld {
        /// The version text.
        version: String,
    },
    /// Built by gccgo (no Go function table, no register ABI of the gc toolchain).
    #[error(
        "it was built by gccgo ({detail}), and only programs of the standard Go toolchain (gc) are supported"
    )]
    Gccgo {
        /// What gave it away.
        detail: String,
    },
    /// The binary has no crypto/tls, or its functions could not be found.
    #[error("it is a Go program ({version}) without {function}: it does not use crypto/tls")]
    NoCryptoTls {
        /// The Go version.
        version: String,
        /// The function not found.
        function: &'static str,
    },
    /// Stripped, and the struct offsets are not known for this Go version.
    #[error(
        "it was built by {version} without DWARF, and the struct offsets of that version are not known: {detail}"
    )]
    UnknownOffsets {
        /// The Go version.
        version: String,
        /// Which versions are known.
        detail: String,
    },
    /// The file is not what its Go markers say.
    #[error("its Go metadata is malformed: {0}")]
    Malformed(String),
}

/// Looks at the ELF file at `path`: `Ok(None)` when it is not a Go program, the functions and
/// offsets to probe when it is one that can be probed, an error saying why not otherwise.
///
/// # Errors
/// A [`GoError`] for a Go program that cannot be probed, or a file that cannot be read.
pub fn analyze(path: &Path) -> Result<Option<GoBinary>, GoError> {
    let io = |source| GoError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the map is read-only and only parsed; a file truncated underneath could fault, the
    // documented risk of reading a mapped file, acceptable for executables in use.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    analyze_bytes(&map)
}

/// [`analyze`] on the bytes of an ELF file.
///
/// # Errors
/// As [`analyze`].
pub fn analyze_bytes(data: &[u8]) -> Result<Option<GoBinary>, GoError> {
    let Ok(elf) = object::File::parse(data) else {
        return Ok(None);
    };
    analyze_object(&elf)
}

/// [`analyze`] on a parsed ELF file.
///
/// # Errors
/// As [`analyze`].
pub fn analyze_object(elf: &object::File<'_>) -> Result<Option<GoBinary>, GoError> {
    let Some(info) = binary::build_info(elf)? else {
        return binary::refuse_gccgo(elf).map(|()| None);
    };
    binary::check_architecture(elf, &info.version_text)?;
    let version = info.version;
    if version.minor < MIN_MINOR {
        return Err(GoError::TooOld {
            version: info.version_text,
        });
    }
    let (write, read, symbols) = binary::find_functions(elf, &info.version_text)?;
    let (offsets, offsets_source) = offsets::for_binary(elf, version, &info.version_text)?;
    Ok(Some(GoBinary {
        version_text: info.version_text,
        version,
        write,
        read,
        symbols,
        offsets,
        offsets_source,
    }))
}

/// `(*Conn).Write` and `(*Conn).Read` located through the Go function table alone, as for a
/// stripped binary, whatever else the file has (to check one way of finding them against the
/// other).
///
/// # Errors
/// When the file is not an ELF file with a function table that has both.
pub fn functions_from_pclntab(data: &[u8]) -> Result<(GoFunction, GoFunction), GoError> {
    let elf = object::File::parse(data).map_err(|e| GoError::Malformed(e.to_string()))?;
    binary::functions_from_pclntab(&elf, "?")
}

/// The struct offsets in the DWARF of the ELF file `data`, `None` when it has none for them.
///
/// # Errors
/// When the file or its DWARF cannot be parsed.
pub fn dwarf_offsets(data: &[u8]) -> Result<Option<GoConnOffsets>, GoError> {
    let elf = object::File::parse(data).map_err(|e| GoError::Malformed(e.to_string()))?;
    offsets::from_dwarf(&elf).map_err(|e| GoError::Malformed(format!("DWARF: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_is_used_and_rets_are_plain_uprobes_without_cookies() {
        let f = |entry_offset, return_offsets: Vec<u64>| GoFunction {
            start_offset: entry_offset,
            address: entry_offset,
            size: 0x100,
            entry_offset,
            return_offsets,
        };
        let offsets = GoConnOffsets {
            fd_sysfd: 16,
            ..GoConnOffsets::default()
        };
        let bin = GoBinary {
            version_text: "go1.21.13".into(),
            version: parse_version("go1.21.13").expect("version"),
            write: f(0x1000, vec![0x1080]),
            read: f(0x2000, vec![0x2040, 0x20f0]),
            symbols: SymbolSource::Symtab,
            offsets,
            offsets_source: OffsetsSource::Dwarf,
        };
        let points = attach_points(&bin);
        let summary: Vec<_> = points
            .iter()
            .map(|p| (p.program, p.offset, p.cookie))
            .collect();
        let cookie = Some(offsets.to_cookie());
        assert_eq!(
            summary,
            [
                (WRITE_PROGRAM, 0x1000, cookie),
                (READ_PROGRAM, 0x2000, cookie),
                (READ_RET_PROGRAM, 0x2040, None),
                (READ_RET_PROGRAM, 0x20f0, None),
            ]
        );
        assert!(points.iter().all(|p| p.required && !p.ret));
        let mut used: Vec<&str> = points.iter().map(|p| p.program).collect();
        used.dedup();
        assert_eq!(used, PROVIDER.programs);
    }
}
