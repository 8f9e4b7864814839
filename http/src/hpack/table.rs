//! The HPACK tables as an observer knows them: the static table, and a dynamic table in which
//! entries inserted before the observer joined (or while it was not following) are unknown.
//!
//! A dynamic index names the n-th newest entry, so an entry keeps its meaning as newer ones are
//! inserted whatever the sizes of the entries before it: the entries inserted since the
//! observer joined are exactly the newest entries of the peer's table. An index past them names
//! an entry inserted earlier, which is reported unknown rather than guessed. Sizes only decide
//! eviction; the table uses exact sizes for known entries and lower bounds for unknown ones, so
//! it never drops an entry the peer still has, and it learns the whole table again once the
//! entries it knows fill the peer's maximum size (or the peer sets that size to zero).

use std::collections::VecDeque;

/// RFC 7541 appendix A.
pub(crate) const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Per-entry overhead counted by HPACK.
const ENTRY_OVERHEAD: usize = 32;
/// The initial maximum table size of an HTTP/2 connection (`SETTINGS_HEADER_TABLE_SIZE`).
pub(crate) const INITIAL_MAX_SIZE: usize = 4096;

/// One dynamic table entry.
#[derive(Debug)]
enum Entry {
    Known {
        name: Box<[u8]>,
        value: Box<[u8]>,
    },
    /// Inserted with a name that referred to an unknown entry.
    Unknown {
        min_size: usize,
    },
}

impl Entry {
    fn size(&self) -> usize {
        match self {
            Entry::Known { name, value } => name.len() + value.len() + ENTRY_OVERHEAD,
            Entry::Unknown { min_size } => *min_size,
        }
    }
}

/// What a table index names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup<'a> {
    Field(&'a [u8], &'a [u8]),
    /// An entry the observer did not see inserted.
    Unknown,
    /// No entry has this index: the block is malformed.
    Invalid,
}

/// The dynamic table of one direction.
#[derive(Debug)]
pub(crate) struct DynamicTable {
    /// Newest first.
    entries: VecDeque<Entry>,
    /// Sum of the entries' sizes (lower bounds for unknown ones).
    size: usize,
    /// The peer's current maximum size, once known.
    max_size: Option<usize>,
    /// Most bytes of entries kept, whatever the peer's size: memory bound.
    cap: usize,
    /// Whether entries older than `entries` may exist in the peer's table.
    unknown_tail: bool,
}

impl DynamicTable {
    /// The table of a connection followed from its start.
    pub(crate) fn new(cap: usize) -> Self {
        DynamicTable {
            entries: VecDeque::new(),
            size: 0,
            max_size: Some(INITIAL_MAX_SIZE),
            cap,
            unknown_tail: false,
        }
    }

    /// The table of a connection joined in the middle: nothing is known.
    pub(crate) fn unknown(cap: usize) -> Self {
        let mut t = Self::new(cap);
        t.forget();
        t
    }

    /// Inserts were missed (a block could not be decoded, bytes were lost): every entry
    /// becomes unknown.
    pub(crate) fn forget(&mut self) {
        self.entries.clear();
        self.size = 0;
        self.max_size = None;
        self.unknown_tail = true;
    }

    /// Whether every entry of the peer's table is known.
    #[cfg(test)]
    pub(crate) fn fully_known(&self) -> bool {
        !self.unknown_tail
            && self
                .entries
                .iter()
                .all(|e| matches!(e, Entry::Known { .. }))
    }

    /// Bytes held by the known entries.
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|e| match e {
                Entry::Known { name, value } => name.len() + value.len(),
                Entry::Unknown { .. } => 0,
            })
            .sum()
    }

    /// Looks up a 1-based index of the combined static and dynamic index space.
    pub(crate) fn get(&self, index: usize) -> Lookup<'_> {
        if index == 0 {
            return Lookup::Invalid;
        }
        if let Some((name, value)) = STATIC.get(index - 1) {
            return Lookup::Field(name, value);
        }
        match self.entries.get(index - STATIC.len() - 1) {
            Some(Entry::Known { name, value }) => Lookup::Field(name, value),
            Some(Entry::Unknown { .. }) => Lookup::Unknown,
            None if self.unknown_tail => Lookup::Unknown,
            None => Lookup::Invalid,
        }
    }

    /// A dynamic table size update to `size`.
    pub(crate) fn set_max_size(&mut self, size: usize) {
        self.max_size = Some(size);
        if size == 0 {
            // Everything is evicted: from here on the table is known.
            self.entries.clear();
            self.size = 0;
            self.unknown_tail = false;
        }
        self.evict();
    }

    /// Inserts a known entry (a literal with incremental indexing).
    pub(crate) fn insert(&mut self, name: &[u8], value: &[u8]) {
        let entry = Entry::Known {
            name: name.into(),
            value: value.into(),
        };
        self.size += entry.size();
        self.entries.push_front(entry);
        self.evict();
    }

    /// Inserts an entry whose name is unknown; `value_len` bounds its size from below.
    pub(crate) fn insert_unknown(&mut self, value_len: usize) {
        let entry = Entry::Unknown {
            min_size: value_len + 1 + ENTRY_OVERHEAD,
        };
        self.size += entry.size();
        self.entries.push_front(entry);
        self.evict();
    }

    /// Drops the oldest entries past the peer's maximum size (then no older unknown entry can
    /// be left) and past the memory cap (then older entries may still exist in the peer's
    /// table, and are unknown).
    fn evict(&mut self) {
        if let Some(max) = self.max_size {
            if self.size > max {
                self.unknown_tail = false;
            }
            self.shrink_to(max);
        }
        if self.size > self.cap {
            self.shrink_to(self.cap);
            self.unknown_tail = true;
        }
    }

    fn shrink_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.entries.pop_back() {
                Some(e) => self.size -= e.size(),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: usize = STATIC.len() + 1;

    #[test]
    fn static_entries_are_always_known() {
        let t = DynamicTable::unknown(4096);
        assert_eq!(t.get(2), Lookup::Field(b":method", b"GET"));
        assert_eq!(t.get(61), Lookup::Field(b"www-authenticate", b""));
        assert_eq!(t.get(0), Lookup::Invalid);
    }

    #[test]
    fn entries_inserted_after_the_join_are_known_older_ones_are_not() {
        let mut t = DynamicTable::unknown(4096);
        assert_eq!(t.get(D), Lookup::Unknown);
        t.insert(b"x-a", b"1");
        t.insert(b"x-b", b"2");
        assert_eq!(t.get(D), Lookup::Field(b"x-b", b"2"));
        assert_eq!(t.get(D + 1), Lookup::Field(b"x-a", b"1"));
        assert_eq!(t.get(D + 2), Lookup::Unknown);
        t.insert_unknown(5);
        assert_eq!(t.get(D), Lookup::Unknown);
        assert_eq!(t.get(D + 1), Lookup::Field(b"x-b", b"2"));
        assert!(!t.fully_known());
    }

    #[test]
    fn a_connection_followed_from_the_start_knows_every_index() {
        let mut t = DynamicTable::new(4096);
        assert_eq!(t.get(D), Lookup::Invalid);
        t.insert(b"x-a", b"1");
        assert_eq!(t.get(D), Lookup::Field(b"x-a", b"1"));
        assert_eq!(t.get(D + 1), Lookup::Invalid);
        assert!(t.fully_known());
    }

    #[test]
    fn size_zero_makes_the_table_known() {
        let mut t = DynamicTable::unknown(4096);
        t.set_max_size(0);
        t.set_max_size(4096);
        assert!(t.fully_known());
        assert_eq!(t.get(D), Lookup::Invalid);
    }

    #[test]
    fn known_entries_filling_the_known_maximum_evict_every_unknown_one() {
        let mut t = DynamicTable::unknown(1 << 16);
        t.set_max_size(100);
        t.insert(b"n", &[b'v'; 40]); // 73 bytes: older unknown entries may still fit
        assert_eq!(t.get(D + 1), Lookup::Unknown);
        t.insert(b"m", &[b'w'; 40]); // 146 > 100: the first is evicted, and all before it
        assert_eq!(t.get(D), Lookup::Field(b"m", &[b'w'; 40]));
        assert_eq!(t.get(D + 1), Lookup::Invalid);
        assert!(t.fully_known());
    }

    #[test]
    fn the_memory_cap_bounds_the_table_and_forgets_honestly() {
        let mut t = DynamicTable::new(200);
        t.set_max_size(1 << 20);
        for i in 0..100u8 {
            t.insert(b"name", &[i; 60]);
        }
        assert!(t.held_bytes() <= 200);
        assert_eq!(t.get(D), Lookup::Field(b"name", &[99; 60]));
        // Entries the peer still has but the observer dropped are unknown, not invalid.
        assert_eq!(t.get(D + 10), Lookup::Unknown);
    }
}
