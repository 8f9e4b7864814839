//! Where a process's resident memory is, from `/proc/PID/smaps`: the soak prints it for the
//! agent at its peak.

use std::collections::BTreeMap;

/// Resident KiB per kind of mapping.
#[derive(Debug, Default, Clone)]
pub struct Breakdown {
    /// KiB per kind, in the order [`Breakdown::rows`] gives them.
    kib: BTreeMap<Kind, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Ring,
    Binary,
    Libraries,
    Heap,
    ThreadHeaps,
    PackCode,
    WasmMemory,
    Other,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Ring => "ring buffer (kernel pages mapped by the reader)",
            Kind::Binary => "the agent's executable (file pages)",
            Kind::Libraries => "shared libraries (file pages)",
            Kind::Heap => "main heap (`[heap]`: flows, parsers, records)",
            Kind::ThreadHeaps => "other anonymous memory (threads' heaps and stacks)",
            Kind::PackCode => "compiled pack code (anonymous, executable)",
            Kind::WasmMemory => "Wasm linear memories and their images",
            Kind::Other => "other",
        }
    }
}

/// One mapping of `smaps`.
struct Mapping {
    start: u64,
    end: u64,
    exec: bool,
    path: String,
    rss_kib: u64,
}

fn parse(smaps: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            let perms = fields.next().unwrap_or("");
            // offset, device, inode, then the path (which may hold spaces).
            let path = fields.skip(3).collect::<Vec<_>>().join(" ");
            out.push(Mapping {
                start,
                end,
                exec: perms.contains('x'),
                path,
                rss_kib: 0,
            });
        } else if first == "Rss:"
            && let Some(last) = out.last_mut()
        {
            last.rss_kib = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    out
}

/// The breakdown of process `pid`'s resident memory, `None` when it is gone.
pub fn of(pid: u32) -> Option<Breakdown> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    Some(classify(&parse(&smaps), &exe.to_string_lossy()))
}

/// Anonymous mappings are taken in runs of adjacent ones: wasmtime reserves gigabytes for each
/// linear memory (mostly inaccessible guard), so a run that large is a Wasm memory.
fn classify(maps: &[Mapping], exe: &str) -> Breakdown {
    const WASM_RESERVATION: u64 = 1 << 30;
    let mut b = Breakdown::default();
    let mut i = 0;
    while i < maps.len() {
        let m = &maps[i];
        let kind = if m.path.contains("bpf-map") || m.path.contains("bpf_ringbuf") {
            Kind::Ring
        } else if m.path == exe || m.path.starts_with(&format!("{exe} ")) {
            Kind::Binary
        } else if m.path.contains("wasm-memory-image") {
            Kind::WasmMemory
        } else if m.path == "[heap]" {
            Kind::Heap
        } else if m.path.starts_with('/') {
            Kind::Libraries
        } else if m.path.is_empty() {
            // A run of adjacent anonymous mappings.
            let mut j = i + 1;
            while j < maps.len() && maps[j].path.is_empty() && maps[j].start == maps[j - 1].end {
                j += 1;
            }
            let run = &maps[i..j];
            let size = run[run.len() - 1].end - run[0].start;
            for m in run {
                let kind = if m.exec {
                    Kind::PackCode
                } else if size >= WASM_RESERVATION {
                    Kind::WasmMemory
                } else {
                    Kind::ThreadHeaps
                };
                *b.kib.entry(kind).or_default() += m.rss_kib;
            }
            i = j;
            continue;
        } else {
            Kind::Other
        };
        *b.kib.entry(kind).or_default() += m.rss_kib;
        i += 1;
    }
    b
}

impl Breakdown {
    /// `(label, KiB)` of every kind with resident pages.
    pub fn rows(&self) -> Vec<(&'static str, u64)> {
        self.kib
            .iter()
            .filter(|(_, k)| **k > 0)
            .map(|(kind, k)| (kind.label(), *k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_are_sorted_by_kind() {
        let smaps = "\
55d0-55e0 r-xp 00000000 fe:01 12 /opt/agent/taskless-agent
Rss:                  64 kB
5600-5700 rw-p 00000000 00:00 0                          [heap]
Rss:                 256 kB
7f00-7f10 r--s 00000000 00:0e 99                         anon_inode:bpf-map
Rss:                  16 kB
7f10-7f20 r-xp 00000000 00:00 0 
Rss:                   8 kB
7f20-7f30 rw-p 00000000 00:00 0 
Rss:                   4 kB
100000000-200000000 ---p 00000000 00:00 0 
Rss:                   0 kB
200000000-200001000 rw-p 00000000 00:00 0 
Rss:                  32 kB
7f40-7f50 r-xp 00000000 fe:01 13 /usr/lib/libc.so.6
Rss:                 128 kB
";
        let b = classify(&parse(smaps), "/opt/agent/taskless-agent");
        let rows: BTreeMap<_, _> = b.kib.into_iter().collect();
        assert_eq!(rows[&Kind::Binary], 64);
        assert_eq!(rows[&Kind::Heap], 256);
        assert_eq!(rows[&Kind::Ring], 16);
        assert_eq!(rows[&Kind::PackCode], 8);
        assert_eq!(rows[&Kind::ThreadHeaps], 4);
        assert_eq!(rows[&Kind::WasmMemory], 32);
        assert_eq!(rows[&Kind::Libraries], 128);
    }
}
