//! The struct offsets from a `*tls.Conn` to its socket fd: from the binary's DWARF when it has
//! any, else from the table of [`super::table`], generated from the DWARF of programs built by
//! real Go toolchains (`cargo xtask go-offsets`).

use std::borrow::Cow;

use agent_common::GoConnOffsets;
use object::{Object as _, ObjectSection as _};

use super::{GoError, GoVersion, table};

/// The four `(struct, member)` pairs of the chain, in [`GoConnOffsets`] field order.
pub const CHAIN: [(&str, &str); 4] = [
    ("crypto/tls.Conn", "conn"),
    ("net.conn", "fd"),
    ("net.netFD", "pfd"),
    ("internal/poll.FD", "Sysfd"),
];

/// Where a binary's offsets came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetsSource {
    /// Its own DWARF.
    Dwarf,
    /// The generated table's entry for its Go release.
    Table,
    /// The generated table's entry for the nearest release it has (the binary's release is
    /// older or newer than every entry): the struct layout is assumed unchanged, which is logged
    /// as a warning. Only the fd depends on it, and user space checks that the fd is a socket.
    Nearest {
        /// The release whose entry was used.
        minor: u32,
    },
}

impl std::fmt::Display for OffsetsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dwarf => f.write_str("dwarf"),
            Self::Table => f.write_str("table"),
            Self::Nearest { minor } => write!(f, "table entry of go1.{minor}, the nearest release"),
        }
    }
}

/// The offsets for `elf`, built by Go `version`.
pub fn for_binary(
    elf: &object::File<'_>,
    version: GoVersion,
    version_text: &str,
) -> Result<(GoConnOffsets, OffsetsSource), GoError> {
    if elf.section_by_name(".debug_info").is_some() {
        match from_dwarf(elf) {
            Ok(Some(offsets)) => return Ok((offsets, OffsetsSource::Dwarf)),
            Ok(None) => {
                tracing::debug!(
                    version = version_text,
                    "DWARF lacks the crypto/tls structs; using the offsets table"
                );
            }
            Err(e) => {
                tracing::debug!(version = version_text, error = %e, "unreadable DWARF; using the offsets table");
            }
        }
    }
    from_table(version).ok_or_else(|| GoError::UnknownOffsets {
        version: version_text.to_owned(),
        detail: format!(
            "the table covers Go {}; build it without -ldflags=-w to keep DWARF",
            known_range()
        ),
    })
}

/// The releases the table has entries for, for messages (`1.19, 1.21, 1.23`).
#[must_use]
pub fn known_range() -> String {
    table::OFFSETS
        .iter()
        .map(|(minor, _)| format!("1.{minor}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table's offsets for `version`: its own entry; or, for a release between two entries that
/// agree, theirs; or, for a release older or newer than every entry, the nearest one's.
#[must_use]
pub fn from_table(version: GoVersion) -> Option<(GoConnOffsets, OffsetsSource)> {
    if version.major != 1 {
        return None;
    }
    let entries = table::OFFSETS;
    if let Some((_, o)) = entries.iter().find(|(m, _)| *m == version.minor) {
        return Some((*o, OffsetsSource::Table));
    }
    let below = entries.iter().rev().find(|(m, _)| *m < version.minor);
    let above = entries.iter().find(|(m, _)| *m > version.minor);
    match (below, above) {
        (Some((_, lo)), Some((_, hi))) if lo == hi => Some((*lo, OffsetsSource::Table)),
        (Some((minor, o)), None) | (None, Some((minor, o))) => {
            Some((*o, OffsetsSource::Nearest { minor: *minor }))
        }
        _ => None,
    }
}

/// The offsets from the binary's DWARF; `None` when it does not describe all four members.
///
/// # Errors
/// When the DWARF cannot be read.
pub fn from_dwarf(elf: &object::File<'_>) -> Result<Option<GoConnOffsets>, gimli::Error> {
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
        Ok(elf
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[])))
    };
    let sections = gimli::DwarfSections::load(load)?;
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
    let mut found: [Option<u16>; 4] = [None; 4];
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut entries = unit.entries();
        // The chain link whose struct is being walked, and the struct's depth.
        let mut inside: Option<(usize, isize)> = None;
        while let Some(entry) = entries.next_dfs()? {
            let depth = entry.depth();
            if let Some((_, d)) = inside
                && depth <= d
            {
                inside = None;
            }
            let tag = entry.tag();
            if tag == gimli::DW_TAG_structure_type {
                let Some(name) = entry.attr_value(gimli::DW_AT_name) else {
                    continue;
                };
                let name = dwarf.attr_string(&unit, name)?;
                if let Some(i) = CHAIN.iter().position(|(s, _)| s.as_bytes() == name.slice()) {
                    inside = Some((i, depth));
                }
            } else if tag == gimli::DW_TAG_member
                && let Some((i, d)) = inside
                && depth == d + 1
                && found[i].is_none()
            {
                let Some(name) = entry.attr_value(gimli::DW_AT_name) else {
                    continue;
                };
                if dwarf.attr_string(&unit, name)?.slice() != CHAIN[i].1.as_bytes() {
                    continue;
                }
                found[i] = entry
                    .attr_value(gimli::DW_AT_data_member_location)
                    .and_then(|v| v.udata_value())
                    .and_then(|v| u16::try_from(v).ok());
            }
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    let [Some(a), Some(b), Some(c), Some(d)] = found else {
        return Ok(None);
    };
    Ok(Some(GoConnOffsets {
        tls_conn_conn: a,
        net_conn_fd: b,
        netfd_pfd: c,
        fd_sysfd: d,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(minor: u32) -> GoVersion {
        GoVersion {
            major: 1,
            minor,
            patch: 0,
        }
    }

    #[test]
    fn the_table_answers_for_its_releases_between_agreeing_ones_and_newer_ones() {
        let entries = table::OFFSETS;
        assert!(!entries.is_empty());
        assert!(
            entries.windows(2).all(|w| w[0].0 < w[1].0),
            "entries sorted by release, one each"
        );
        let (first, o) = entries[0];
        assert_eq!(from_table(v(first)), Some((o, OffsetsSource::Table)));
        let (last, newest) = entries[entries.len() - 1];
        assert_eq!(
            from_table(v(last + 3)),
            Some((newest, OffsetsSource::Nearest { minor: last }))
        );
        assert_eq!(
            from_table(v(first - 1)),
            Some((o, OffsetsSource::Nearest { minor: first }))
        );
        for w in entries.windows(2) {
            if w[1].0 > w[0].0 + 1 {
                let between = from_table(v(w[0].0 + 1));
                if w[0].1 == w[1].1 {
                    assert_eq!(between, Some((w[0].1, OffsetsSource::Table)));
                } else {
                    assert_eq!(between, None, "entries that differ bracket an unknown");
                }
            }
        }
        assert_eq!(
            from_table(GoVersion {
                major: 2,
                minor: 0,
                patch: 0
            }),
            None
        );
    }
}
