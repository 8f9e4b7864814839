//! The Go binary analysis against real Go programs, built by every toolchain `cargo xtask setup`
//! installed, each normal, stripped (`-ldflags=-s -w`) and position independent: the version, the
//! functions (from the symbol table and from the Go function table, which must agree), their `RET`
//! instructions (checked against objdump's disassembly) and the struct offsets (the generated
//! table must agree with every toolchain's DWARF).
//!
//! `TASKLESS_WRITE_GO_OFFSETS=1` makes the table test write the table instead of checking it
//! (`cargo xtask go-offsets`).

use std::{collections::BTreeMap, path::Path, process::Command};

use object::{Object as _, ObjectSection as _};
use taskless_agent::capture::gotls::{
    self, GoBinary, GoError, OffsetsSource, READ_FUNCTION, SymbolSource, WRITE_FUNCTION, offsets,
};
use taskless_e2e::golang::{self, Toolchain, Variant};

fn analyze(path: &Path) -> GoBinary {
    gotls::analyze(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .unwrap_or_else(|| panic!("{} not recognised as Go", path.display()))
}

fn client(tc: &Toolchain, variant: Variant) -> std::path::PathBuf {
    golang::build(tc, "client", variant).expect("go build")
}

#[test]
fn every_toolchain_and_variant_gives_version_functions_rets_and_offsets() {
    for tc in golang::toolchains() {
        let dwarf = gotls::dwarf_offsets(&std::fs::read(client(&tc, Variant::Normal)).unwrap())
            .unwrap()
            .expect("DWARF offsets of the normal build");
        for variant in Variant::ALL {
            let path = client(&tc, variant);
            let what = format!("{} {}", tc.version, variant.name());
            let bin = analyze(&path);
            assert_eq!(bin.version_text, tc.version, "{what}");
            assert_eq!(bin.version.minor, tc.minor(), "{what}");
            let (symbols, source) = match variant {
                Variant::Stripped => (SymbolSource::Pclntab, OffsetsSource::Table),
                Variant::Normal | Variant::Pie => (SymbolSource::Symtab, OffsetsSource::Dwarf),
            };
            assert_eq!(bin.symbols, symbols, "{what}");
            assert_eq!(bin.offsets_source, source, "{what}");
            assert_eq!(bin.offsets, dwarf, "{what}: offsets");

            let data = std::fs::read(&path).unwrap();
            for (name, f) in [(WRITE_FUNCTION, &bin.write), (READ_FUNCTION, &bin.read)] {
                assert!(!f.return_offsets.is_empty(), "{what} {name}: no RET");
                for &at in &f.return_offsets {
                    assert!(
                        (f.start_offset..f.start_offset + f.size).contains(&at),
                        "{what} {name}: RET outside the function"
                    );
                    let op = data[usize::try_from(at).unwrap()];
                    assert!(
                        op == 0xc3 || op == 0xc2,
                        "{what} {name}: {op:#x} at {at:#x}"
                    );
                }
            }
            // The function table finds what the symbol table finds (its sizes include the
            // padding up to the next function).
            let (w, r) = gotls::functions_from_pclntab(&data).expect("pclntab functions");
            for (from_table, found) in [(&w, &bin.write), (&r, &bin.read)] {
                assert_eq!(from_table.address, found.address, "{what}");
                assert_eq!(from_table.start_offset, found.start_offset, "{what}");
                assert_eq!(from_table.entry_offset, found.entry_offset, "{what}");
                // Both functions grow their stack when they must: the entry probe sits after
                // the check, where a call that grows its stack does not pass twice.
                assert!(found.entry_offset > found.start_offset, "{what}");
                assert_eq!(from_table.return_offsets, found.return_offsets, "{what}");
                assert!(from_table.size >= found.size, "{what}");
            }
            eprintln!(
                "{what}: Write at {:#x}, Read at {:#x} with {} RETs, from {:?}, offsets from {}",
                bin.write.entry_offset,
                bin.read.entry_offset,
                bin.read.return_offsets.len(),
                bin.symbols,
                bin.offsets_source
            );
            if variant == Variant::Normal {
                for (name, f) in [(WRITE_FUNCTION, &bin.write), (READ_FUNCTION, &bin.read)] {
                    assert_eq!(
                        objdump_rets(&path, f.address, f.size),
                        f.return_offsets
                            .iter()
                            .map(|o| o - f.start_offset + f.address)
                            .collect::<Vec<_>>(),
                        "{what} {name}: RETs as objdump decodes them"
                    );
                }
            }
        }
    }
}

/// The addresses of `ret` instructions objdump finds in `[address, address + size)`.
fn objdump_rets(path: &Path, address: u64, size: u64) -> Vec<u64> {
    let out = Command::new("objdump")
        .args([
            "-d",
            "--no-show-raw-insn",
            &format!("--start-address={address:#x}"),
            &format!("--stop-address={:#x}", address + size),
        ])
        .arg(path)
        .output()
        .expect("objdump (binutils)");
    assert!(out.status.success(), "objdump failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (addr, insn) = l.split_once(":\t")?;
            let mnemonic = insn.split_whitespace().next()?;
            (mnemonic == "ret" || mnemonic == "retq")
                .then(|| u64::from_str_radix(addr.trim(), 16).ok())
                .flatten()
        })
        .collect()
}

/// `data` with `from` replaced by `to` (same length) inside section `section` only.
fn patch_section(data: &[u8], section: &str, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let elf = object::File::parse(data).expect("ELF");
    let (start, size) = elf
        .section_by_name(section)
        .and_then(|s| s.file_range())
        .unwrap_or_else(|| panic!("no {section}"));
    let (start, end) = (
        usize::try_from(start).expect("offset"),
        usize::try_from(start + size).expect("offset"),
    );
    let mut out = data.to_vec();
    let at = out[start..end]
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{} not in {section}", String::from_utf8_lossy(from)))
        + start;
    out[at..at + to.len()].copy_from_slice(to);
    out
}

#[test]
fn the_function_table_is_found_by_its_magic_when_no_section_names_it() {
    for tc in golang::toolchains() {
        for variant in [Variant::Stripped, Variant::Pie] {
            let data = std::fs::read(client(&tc, variant)).unwrap();
            let expected = gotls::functions_from_pclntab(&data).unwrap();
            let hidden = patch_section(&data, ".shstrtab", b".gopclntab", b".xopclntab");
            let elf = object::File::parse(&*hidden).unwrap();
            assert!(
                elf.sections()
                    .all(|s| !s.name().unwrap_or("").contains("gopclntab"))
            );
            assert_eq!(
                gotls::functions_from_pclntab(&hidden).unwrap(),
                expected,
                "{} {}",
                tc.version,
                variant.name()
            );
        }
    }
}

#[test]
fn unsupported_go_programs_are_refused_saying_what_was_found() {
    let tc = golang::newest();
    let arm = golang::build_for(&tc, "client", Variant::Normal, "arm64").unwrap();
    let err = gotls::analyze(&arm).unwrap_err();
    assert!(matches!(err, GoError::Architecture { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("aarch64") && msg.contains(&tc.version) && msg.contains("x86-64"),
        "{msg}"
    );

    let hello = golang::build(&tc, "hello", Variant::Normal).unwrap();
    let err = gotls::analyze(&hello).unwrap_err();
    assert!(
        matches!(err, GoError::NoCryptoTls { .. }) && err.to_string().contains("crypto/tls"),
        "{err}"
    );

    // A binary whose build info names Go 1.16 (the stack-based calling convention).
    let data = std::fs::read(client(&tc, Variant::Normal)).unwrap();
    let release = format!("go1.{}", tc.minor());
    let old = patch_section(&data, ".go.buildinfo", release.as_bytes(), b"go1.16");
    let err = gotls::analyze_bytes(&old).unwrap_err();
    assert!(matches!(err, GoError::TooOld { .. }), "{err}");
    assert!(
        err.to_string().contains("go1.16") && err.to_string().contains("1.17"),
        "{err}"
    );
    let gcc = patch_section(&data, ".go.buildinfo", release.as_bytes(), b"gccgo ");
    assert!(matches!(
        gotls::analyze_bytes(&gcc),
        Err(GoError::Gccgo { .. })
    ));

    // Not Go at all.
    let me = std::env::current_exe().unwrap();
    assert!(gotls::analyze(&me).unwrap().is_none());
}

/// The table's path in the source tree.
fn table_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/capture/gotls/table.rs")
}

#[test]
fn the_offsets_table_agrees_with_the_dwarf_of_every_toolchain() {
    let mut measured: BTreeMap<u32, (String, agent_common::GoConnOffsets)> = BTreeMap::new();
    for tc in golang::toolchains() {
        let data = std::fs::read(client(&tc, Variant::Normal)).unwrap();
        let o = gotls::dwarf_offsets(&data)
            .unwrap()
            .expect("DWARF has the crypto/tls structs");
        measured.insert(tc.minor(), (tc.version.clone(), o));
    }
    if std::env::var_os("TASKLESS_WRITE_GO_OFFSETS").is_some() {
        std::fs::write(table_path(), render_table(&measured)).unwrap();
        eprintln!("wrote {}", table_path().display());
        return;
    }
    for (minor, (version, o)) in &measured {
        let v = gotls::parse_version(version).unwrap();
        assert_eq!(
            offsets::from_table(v),
            Some((*o, OffsetsSource::Table)),
            "the table's entry for go1.{minor} differs from {version}'s DWARF: run `cargo xtask go-offsets`"
        );
    }
}

fn render_table(measured: &BTreeMap<u32, (String, agent_common::GoConnOffsets)>) -> String {
    let mut s = String::from(
        "//! Generated by `cargo xtask go-offsets`; do not edit. Each entry was read from the DWARF of a\n\
         //! program built by that Go toolchain (`tests/go/client`), with the same reader the agent uses\n\
         //! on binaries that have DWARF. `agent/tests/go_binaries.rs` checks that the table agrees with\n\
         //! the DWARF of every toolchain `cargo xtask setup` installs.\n\
         //!\n\
         //! Toolchains: ",
    );
    s.push_str(
        &measured
            .values()
            .map(|(v, _)| v.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    );
    s.push_str(
        ".\n\nuse agent_common::GoConnOffsets;\n\n\
         /// `(Go 1.x release, offsets)`, sorted by release.\n\
         pub const OFFSETS: &[(u32, GoConnOffsets)] = &[\n",
    );
    for (minor, (version, o)) in measured {
        s.push_str(&format!(
            "    // {version}\n    (\n        {minor},\n        GoConnOffsets {{\n            tls_conn_conn: {},\n            net_conn_fd: {},\n            netfd_pfd: {},\n            fd_sysfd: {},\n        }},\n    ),\n",
            o.tls_conn_conn, o.net_conn_fd, o.netfd_pfd, o.fd_sysfd
        ));
    }
    s.push_str("];\n");
    s
}
