//! The Go function table (`pclntab`): every Go function's name and entry address, kept in every
//! Go binary (the runtime needs it for stack traces and garbage collection), stripped or not.
//!
//! It is found by section name (`.gopclntab`, or `.data.rel.ro.gopclntab` in position-independent
//! builds), else by its magic number in the read-only data (a stripped position-independent
//! build may keep it in `.data.rel.ro` under no name of its own). Three header layouts:
//!
//! | magic | Go | header after the 8 fixed bytes (pointer-sized words) | function table entries |
//! |---|---|---|---|
//! | `0xfffffffa` | 1.16, 1.17 | nfunc, nfiles, funcname, cu, filetab, pctab, functab offsets | (entry address, func offset), words |
//! | `0xfffffff0` | 1.18, 1.19 | nfunc, nfiles, text start, then the same five offsets | (entry − text start, func offset), `u32` |
//! | `0xfffffff1` | 1.20 and later | as 1.18 | as 1.18 |
//!
//! The function table has `nfunc + 1` entries sorted by address, the last one marking the end of
//! the code, so a function ends where the next one starts. Each `_func` record starts with its
//! entry (a word before 1.18, a `u32` offset since) and then the `i32` offset of its name in the
//! function-name table.

use object::{Object as _, ObjectSection as _, SectionKind};

use super::GoError;

const MAGIC_116: u32 = 0xffff_fffa;
const MAGIC_118: u32 = 0xffff_fff0;
const MAGIC_120: u32 = 0xffff_fff1;

/// A function's `(address, size)`.
pub type Span = (u64, u64);

/// A parsed function table over the bytes that hold it.
pub struct Pclntab<'a> {
    data: &'a [u8],
    /// Layout generation: 116, 118 or 120.
    layout: u32,
    nfunc: usize,
    text_start: u64,
    funcname: usize,
    functab: usize,
}

/// Finds the table in `elf`.
pub fn find<'a>(elf: &object::File<'a>) -> Result<Pclntab<'a>, GoError> {
    let text_start = elf.section_by_name(".text").map(|s| s.address());
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(section) = elf.section_by_name(name) {
            let data = section
                .data()
                .map_err(|e| GoError::Malformed(format!("{name}: {e}")))?;
            return Pclntab::parse(data, text_start)
                .ok_or_else(|| GoError::Malformed(format!("{name} has no function table header")));
        }
    }
    // No section of its own: look for the header in read-only data.
    for section in elf.sections() {
        if !matches!(
            section.kind(),
            SectionKind::ReadOnlyData | SectionKind::ReadOnlyDataWithRel | SectionKind::Data
        ) {
            continue;
        }
        let Ok(data) = section.data() else { continue };
        let mut at = 0;
        while at + 8 <= data.len() {
            if let Some(table) = Pclntab::parse(&data[at..], text_start)
                && table.is_plausible()
            {
                return Ok(table);
            }
            // The table is pointer aligned.
            at += 8;
        }
    }
    Err(GoError::Malformed(
        "no Go function table (pclntab) found: neither a .gopclntab section nor its header in the data".into(),
    ))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

fn usize_at(data: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64_at(data, at)?).ok()
}

impl<'a> Pclntab<'a> {
    /// Reads the header at the start of `data` (64-bit little-endian layouts only). When the
    /// table's own text start is 0 (not relocated in the file, as in position-independent
    /// builds), `text_start` (the `.text` section's address) stands in for it.
    pub fn parse(data: &'a [u8], text_start: Option<u64>) -> Option<Self> {
        let magic = u32_at(data, 0)?;
        let layout = match magic {
            MAGIC_116 => 116,
            MAGIC_118 => 118,
            MAGIC_120 => 120,
            _ => return None,
        };
        // pad, pad, minimum instruction size (1 on x86), pointer size.
        if data.get(4..8)? != [0, 0, 1, 8] {
            return None;
        }
        let nfunc = usize_at(data, 8)?;
        let (text, offsets_at) = if layout == 116 {
            (0, 24)
        } else {
            (u64_at(data, 24)?, 32)
        };
        let text_start = if text == 0 {
            text_start.unwrap_or(0)
        } else {
            text
        };
        let funcname = usize_at(data, offsets_at)?;
        // cu, filetab and pctab offsets are not needed.
        let functab = usize_at(data, offsets_at + 32)?;
        let table = Self {
            data,
            layout,
            nfunc,
            text_start,
            funcname,
            functab,
        };
        (funcname < data.len()
            && functab < data.len()
            && nfunc > 0
            && table.entry_size().checked_mul(nfunc + 1)? <= data.len() - functab)
            .then_some(table)
    }

    /// Bytes per function-table entry.
    fn entry_size(&self) -> usize {
        if self.layout == 116 { 16 } else { 8 }
    }

    /// `(entry address, offset of its _func record)` of function-table entry `i`.
    fn entry(&self, i: usize) -> Option<(u64, usize)> {
        let at = self.functab + i * self.entry_size();
        if self.layout == 116 {
            Some((u64_at(self.data, at)?, usize_at(self.data, at + 8)?))
        } else {
            let entry = self
                .text_start
                .checked_add(u64::from(u32_at(self.data, at)?))?;
            let func = usize::try_from(u32_at(self.data, at + 4)?).ok()?;
            Some((entry, func))
        }
    }

    /// The name of the function whose `_func` record is at `func` (relative to the function
    /// table).
    fn name(&self, func: usize) -> Option<&'a [u8]> {
        let record = self.functab.checked_add(func)?;
        let name_field = record + if self.layout == 116 { 8 } else { 4 };
        let name_off = usize::try_from(u32_at(self.data, name_field)?).ok()?;
        let start = self.funcname.checked_add(name_off)?;
        let rest = self.data.get(start..)?;
        let len = rest.iter().position(|b| *b == 0)?;
        Some(&rest[..len])
    }

    /// A header found by its magic number alone could be a coincidence: the first entries must
    /// be in order, inside the table, and have printable names.
    fn is_plausible(&self) -> bool {
        let mut last = 0;
        for i in 0..self.nfunc.min(16) {
            let Some((entry, func)) = self.entry(i) else {
                return false;
            };
            if entry < last {
                return false;
            }
            last = entry;
            let Some(name) = self.name(func) else {
                return false;
            };
            if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
                return false;
            }
        }
        true
    }

    /// `(address, size)` of each function named in `names`, where found.
    pub fn functions(&self, names: &[&str; 2]) -> (Option<Span>, Option<Span>) {
        let mut found = [None, None];
        for i in 0..self.nfunc {
            let Some((entry, func)) = self.entry(i) else {
                break;
            };
            let Some(name) = self.name(func) else {
                continue;
            };
            let Some(slot) = names.iter().position(|n| n.as_bytes() == name) else {
                continue;
            };
            let end = self.entry(i + 1).map_or(entry, |(next, _)| next);
            if end > entry {
                found[slot] = Some((entry, end - entry));
            }
            if found.iter().all(Option::is_some) {
                break;
            }
        }
        (found[0], found[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of the given layout with functions `a` at 0x1000 (0x20 bytes) and `b` at 0x1020
    /// (0x40 bytes), code ending at 0x1060.
    fn synthetic(layout: u32) -> Vec<u8> {
        let magic = match layout {
            116 => MAGIC_116,
            118 => MAGIC_118,
            _ => MAGIC_120,
        };
        let mut t = Vec::new();
        t.extend(magic.to_le_bytes());
        t.extend([0, 0, 1, 8]);
        t.extend(2u64.to_le_bytes()); // nfunc
        t.extend(0u64.to_le_bytes()); // nfiles
        if layout != 116 {
            t.extend(0x1000u64.to_le_bytes()); // text start
        }
        let header_len = t.len() + 5 * 8;
        let funcname = header_len;
        let names = b"a\0b\0";
        let functab = funcname + names.len();
        let entry_size = if layout == 116 { 16 } else { 8 };
        let records = functab + 3 * entry_size;
        t.extend((funcname as u64).to_le_bytes());
        t.extend([0u8; 24]); // cu, filetab, pctab
        t.extend((functab as u64).to_le_bytes());
        t.extend(names);
        let entries: [(u64, u64); 3] = [(0x1000, 0), (0x1020, 0), (0x1060, 0)];
        let record_size: usize = if layout == 116 { 12 } else { 8 };
        for (i, (addr, _)) in entries.iter().enumerate() {
            let func = (records - functab + i * record_size) as u64;
            if layout == 116 {
                t.extend(addr.to_le_bytes());
                t.extend(func.to_le_bytes());
            } else {
                t.extend(((addr - 0x1000) as u32).to_le_bytes());
                t.extend((func as u32).to_le_bytes());
            }
        }
        for name_off in [0u32, 2] {
            if layout == 116 {
                t.extend(0u64.to_le_bytes());
            } else {
                t.extend(0u32.to_le_bytes());
            }
            t.extend(name_off.to_le_bytes());
        }
        t
    }

    #[test]
    fn every_layout_gives_names_addresses_and_sizes() {
        for layout in [116, 118, 120] {
            let data = synthetic(layout);
            let table = Pclntab::parse(&data, None).expect("header");
            assert!(table.is_plausible(), "layout {layout}");
            assert_eq!(
                table.functions(&["b", "a"]),
                (Some((0x1020, 0x40)), Some((0x1000, 0x20))),
                "layout {layout}"
            );
            assert_eq!(table.functions(&["c", "a"]).0, None);
        }
    }

    #[test]
    fn an_unrelocated_text_start_falls_back_to_the_text_section() {
        let mut data = synthetic(120);
        data[24..32].copy_from_slice(&0u64.to_le_bytes());
        let table = Pclntab::parse(&data, Some(0x40_1000)).expect("header");
        assert_eq!(table.functions(&["a", "b"]).0, Some((0x40_1000, 0x20)));
    }

    #[test]
    fn headers_that_do_not_hold_together_are_refused() {
        let data = synthetic(120);
        assert!(Pclntab::parse(&data[..40], None).is_none(), "truncated");
        let mut bad = data.clone();
        bad[7] = 4;
        assert!(Pclntab::parse(&bad, None).is_none(), "32-bit pointers");
        let mut bad = data;
        bad[0] = 0xfb;
        assert!(Pclntab::parse(&bad, None).is_none(), "Go 1.2 to 1.15 magic");
    }
}
