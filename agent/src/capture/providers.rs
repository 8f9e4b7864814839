//! The TLS stacks the agent knows, one [`Provider`] each: which eBPF programs it needs, and how
//! to tell from a file whether the stack lives there and where its probes go. Discovery asks
//! every provider about every file a process maps; the first that finds itself wins. Stacks the
//! agent recognises but cannot trace are providers too: they say so ([`Examined::Unsupported`]),
//! so the operator learns which stack a program uses.
//!
//! Adding a stack: a module beside [`openssl`](super::openssl) with its programs in `agent-ebpf`,
//! a `PROVIDER` constant, and a row in [`PROVIDERS`].

use std::collections::HashMap;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

/// A TLS stack.
#[derive(Debug)]
pub struct Provider {
    /// Its name in logs and errors, e.g. `OpenSSL`.
    pub name: &'static str,
    /// The eBPF programs its attach points use (loaded at start).
    pub programs: &'static [&'static str],
    /// What this stack makes of one file (an executable or a shared library).
    pub examine: fn(&object::File<'_>) -> Examined,
    /// File name prefixes of the host's shared libraries of this stack, attached up front for
    /// every process with `--all` (so a process started later is traced from its first call).
    pub host_libraries: &'static [&'static str],
}

/// Providers are told apart by name.
impl PartialEq for Provider {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Provider {}

/// Where one of a provider's programs goes in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachPoint {
    /// The function, for logs and errors.
    pub function: &'static str,
    /// The program's name in the eBPF object.
    pub program: &'static str,
    /// Offset in the file.
    pub offset: u64,
    /// A return probe (rather than an entry probe).
    pub ret: bool,
    /// Attaching fails when this point cannot be attached; optional ones are skipped.
    pub required: bool,
    /// The BPF cookie the program reads at this point (`bpf_get_attach_cookie`), if any: what
    /// the program needs to know about this file (Go: its struct offsets).
    pub cookie: Option<u64>,
}

/// What a provider makes of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Examined {
    /// The stack lives here: attach these.
    Found(Vec<AttachPoint>),
    /// A part of this stack that is traced only in a process where a file of the same stack is
    /// [`Found`](Self::Found) too (NSPR's I/O functions, which serve NSS but also programs
    /// without TLS): attach these then.
    Part(Vec<AttachPoint>),
    /// Not this stack.
    NotThis,
    /// This stack, in a form the agent cannot trace (the reason says which and why).
    Unsupported(String),
}

/// Every known stack, asked in this order.
pub const PROVIDERS: &[&Provider] = &[
    &super::openssl::PROVIDER,
    &super::gotls::PROVIDER,
    &super::gnutls::PROVIDER,
    &super::nss::PROVIDER,
    &super::rustls::PROVIDER,
    &super::static_openssl::PROVIDER,
    &super::unsupported::JAVA,
];

/// One row of a provider's table: a function and the program attached to it.
#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    /// The function's symbol.
    pub symbol: &'static str,
    /// The program's name in the eBPF object.
    pub program: &'static str,
    /// A return probe.
    pub ret: bool,
    /// The file is not this stack's without it.
    pub required: bool,
}

/// The attach points of `table` in `obj`, when every required symbol is there.
#[must_use]
pub fn points_of(obj: &object::File<'_>, table: &[ProbeSpec]) -> Option<Vec<AttachPoint>> {
    let wanted: Vec<&'static str> = table.iter().map(|s| s.symbol).collect();
    let offsets = symbol_offsets(obj, &wanted);
    let mut points = Vec::with_capacity(table.len());
    for spec in table {
        match offsets.get(spec.symbol) {
            Some(&offset) => points.push(AttachPoint {
                function: spec.symbol,
                program: spec.program,
                offset,
                ret: spec.ret,
                required: spec.required,
                cookie: None,
            }),
            None if spec.required => return None,
            None => {}
        }
    }
    Some(points)
}

/// The file offsets of the `wanted` functions `obj` defines, from its dynamic or static symbol
/// table. Uprobes are placed at file offsets: `address - section address + section offset`.
#[must_use]
pub fn symbol_offsets(
    obj: &object::File<'_>,
    wanted: &[&'static str],
) -> HashMap<&'static str, u64> {
    let mut found = HashMap::new();
    for sym in obj.dynamic_symbols().chain(obj.symbols()) {
        if sym.is_undefined() || sym.address() == 0 {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        let Some(want) = wanted.iter().find(|w| **w == name) else {
            continue;
        };
        if found.contains_key(want) {
            continue;
        }
        if let Some(off) = symbol_file_offset(obj, &sym) {
            found.insert(*want, off);
        }
    }
    found
}

/// The file offset of symbol `sym` of `obj` (where a uprobe on it is placed):
/// `address - section address + section offset`.
#[must_use]
pub fn symbol_file_offset(obj: &object::File<'_>, sym: &object::Symbol<'_, '_>) -> Option<u64> {
    let section = obj.section_by_index(sym.section_index()?).ok()?;
    let (file_off, _) = section.file_range()?;
    sym.address()
        .checked_sub(section.address())?
        .checked_add(file_off)
}

/// The contents of `obj`'s read-only data sections, where builds keep their strings (version
/// texts, source paths).
pub fn read_only_data<'a>(obj: &'a object::File<'_>) -> impl Iterator<Item = &'a [u8]> + 'a {
    obj.sections()
        .filter(|section| {
            matches!(
                section.kind(),
                object::SectionKind::ReadOnlyData | object::SectionKind::ReadOnlyString
            )
        })
        .filter_map(|section| section.data().ok())
}
