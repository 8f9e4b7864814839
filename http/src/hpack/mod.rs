//! HPACK header block decoding (RFC 7541) for an observer that may have joined the connection
//! in the middle: fields that refer to dynamic table entries it never saw inserted are reported
//! as unknown instead of failing the block, and entries inserted from then on are learnt (see
//! [`table`]). A field value is never guessed.

mod huffman;
mod table;

pub(crate) use table::INITIAL_MAX_SIZE;
use table::{DynamicTable, Lookup};

/// Why a header block could not be decoded. The block's stream is skipped and the dynamic
/// table of that direction is forgotten (its later entries are unknown until relearnt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum BlockError {
    /// An index that names no entry of a table whose every entry is known.
    #[error("table index out of range")]
    IndexOutOfRange,
    /// An integer longer than any a conforming peer sends.
    #[error("integer too large")]
    IntegerOverflow,
    /// The block ends inside a field.
    #[error("block truncated inside a field")]
    Truncated,
    /// A Huffman-coded string that is not valid.
    #[error("invalid Huffman code")]
    Huffman,
    /// A dynamic table size update after a field, or at the end of the block.
    #[error("misplaced dynamic table size update")]
    SizeUpdate,
    /// The block is larger than `Config::max_header_bytes`.
    #[error("header block too large")]
    TooLarge,
    /// CONTINUATION frames whose HEADERS frame was not seen, or that were interrupted by
    /// another frame.
    #[error("header block fragments out of sequence")]
    Sequence,
    /// Padding longer than the frame.
    #[error("invalid padding")]
    Padding,
}

/// One decoded field, borrowed until the next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Field<'a> {
    /// A name and value.
    Known(&'a [u8], &'a [u8]),
    /// A field whose name (and maybe value) is in a table entry the observer never saw.
    Unknown,
}

/// The HPACK decoder of one direction.
#[derive(Debug)]
pub(crate) struct Decoder {
    table: DynamicTable,
    /// Decoded Huffman strings (name, then value).
    scratch: Vec<u8>,
}

/// Largest integer accepted: far beyond any table size, index or string a block can hold.
const MAX_INT: usize = 1 << 28;

/// Reads an integer with an `n`-bit prefix from `buf` at `*pos`.
fn integer(buf: &[u8], pos: &mut usize, prefix_bits: u32) -> Result<usize, BlockError> {
    let mask = (1usize << prefix_bits) - 1;
    let first = usize::from(*buf.get(*pos).ok_or(BlockError::Truncated)?) & mask;
    *pos += 1;
    if first < mask {
        return Ok(first);
    }
    let mut value = mask;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos).ok_or(BlockError::Truncated)?;
        *pos += 1;
        value += usize::from(b & 0x7f) << shift;
        if value > MAX_INT {
            return Err(BlockError::IntegerOverflow);
        }
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 28 {
            // Zero continuation bytes can pad an integer forever.
            return Err(BlockError::IntegerOverflow);
        }
    }
}

/// Where a string read by [`string`] lies.
#[derive(Clone, Copy)]
enum Str {
    /// In the block.
    Raw(usize, usize),
    /// In the scratch buffer.
    Decoded(usize, usize),
}

fn string(buf: &[u8], pos: &mut usize, scratch: &mut Vec<u8>) -> Result<Str, BlockError> {
    let huffman = buf.get(*pos).ok_or(BlockError::Truncated)? & 0x80 != 0;
    let len = integer(buf, pos, 7)?;
    let start = *pos;
    let end = start.checked_add(len).ok_or(BlockError::Truncated)?;
    let bytes = buf.get(start..end).ok_or(BlockError::Truncated)?;
    *pos = end;
    if !huffman {
        return Ok(Str::Raw(start, end));
    }
    let from = scratch.len();
    huffman::decode(bytes, scratch).map_err(|_| BlockError::Huffman)?;
    Ok(Str::Decoded(from, scratch.len()))
}

fn resolve<'a>(s: Str, block: &'a [u8], scratch: &'a [u8]) -> &'a [u8] {
    match s {
        Str::Raw(a, b) => &block[a..b],
        Str::Decoded(a, b) => &scratch[a..b],
    }
}

impl Decoder {
    /// The decoder of a connection followed from its start; the dynamic table holds at most
    /// `cap` bytes of entries.
    pub(crate) fn new(cap: usize) -> Self {
        Decoder {
            table: DynamicTable::new(cap),
            scratch: Vec::new(),
        }
    }

    /// The decoder of a connection joined in the middle: the dynamic table is unknown.
    pub(crate) fn joined(cap: usize) -> Self {
        Decoder {
            table: DynamicTable::unknown(cap),
            scratch: Vec::new(),
        }
    }

    /// Header block bytes were missed: the dynamic table becomes unknown.
    pub(crate) fn forget(&mut self) {
        self.table.forget();
    }

    /// Decodes `block`, calling `on_field` for each field in order. On an error the table is
    /// forgotten (what the rest of the block inserted is unknown).
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        mut on_field: impl FnMut(Field<'_>),
    ) -> Result<(), BlockError> {
        let result = self.decode_inner(block, &mut on_field);
        if result.is_err() {
            self.table.forget();
        }
        // A huge Huffman string must not stay allocated.
        if self.scratch.capacity() > 16 << 10 {
            self.scratch = Vec::new();
        }
        result
    }

    fn decode_inner(
        &mut self,
        block: &[u8],
        on_field: &mut impl FnMut(Field<'_>),
    ) -> Result<(), BlockError> {
        let mut pos = 0;
        let mut fields_seen = false;
        let mut last_was_update = false;
        while pos < block.len() {
            let first = block[pos];
            last_was_update = false;
            self.scratch.clear();
            if first & 0x80 != 0 {
                // Indexed field.
                let index = integer(block, &mut pos, 7)?;
                match self.table.get(index) {
                    Lookup::Field(n, v) => on_field(Field::Known(n, v)),
                    Lookup::Unknown => on_field(Field::Unknown),
                    Lookup::Invalid => return Err(BlockError::IndexOutOfRange),
                }
                fields_seen = true;
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update: only before the first field.
                if fields_seen {
                    return Err(BlockError::SizeUpdate);
                }
                let size = integer(block, &mut pos, 5)?;
                self.table.set_max_size(size);
                last_was_update = true;
            } else {
                // Literal: with incremental indexing (01), without (0000) or never (0001).
                let (prefix, indexing) = if first & 0xc0 == 0x40 {
                    (6, true)
                } else {
                    (4, false)
                };
                let name_index = integer(block, &mut pos, prefix)?;
                fields_seen = true;
                if name_index == 0 {
                    let name = string(block, &mut pos, &mut self.scratch)?;
                    let value = string(block, &mut pos, &mut self.scratch)?;
                    let (n, v) = (
                        resolve(name, block, &self.scratch),
                        resolve(value, block, &self.scratch),
                    );
                    on_field(Field::Known(n, v));
                    if indexing {
                        self.table.insert(n, v);
                    }
                    continue;
                }
                let value = string(block, &mut pos, &mut self.scratch)?;
                let v = resolve(value, block, &self.scratch);
                match self.table.get(name_index) {
                    Lookup::Field(n, _) => {
                        on_field(Field::Known(n, v));
                        if indexing {
                            let n = n.to_vec();
                            self.table.insert(&n, v);
                        }
                    }
                    Lookup::Unknown => {
                        on_field(Field::Unknown);
                        if indexing {
                            self.table.insert_unknown(v.len());
                        }
                    }
                    Lookup::Invalid => return Err(BlockError::IndexOutOfRange),
                }
            }
        }
        if last_was_update {
            return Err(BlockError::SizeUpdate);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(
        d: &mut Decoder,
        block: &[u8],
    ) -> Result<Vec<Option<(String, String)>>, BlockError> {
        let mut out = Vec::new();
        d.decode(block, |f| {
            out.push(match f {
                Field::Known(n, v) => Some((
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )),
                Field::Unknown => None,
            });
        })?;
        Ok(out)
    }

    fn kv(n: &str, v: &str) -> Option<(String, String)> {
        Some((n.to_owned(), v.to_owned()))
    }

    #[test]
    fn rfc_7541_c3_requests_without_huffman() {
        let mut d = Decoder::new(4096);
        let first = hex("828684410f7777772e6578616d706c652e636f6d");
        assert_eq!(
            decode_all(&mut d, &first),
            Ok(vec![
                kv(":method", "GET"),
                kv(":scheme", "http"),
                kv(":path", "/"),
                kv(":authority", "www.example.com"),
            ])
        );
        let second = hex("828684be58086e6f2d6361636865");
        assert_eq!(
            decode_all(&mut d, &second),
            Ok(vec![
                kv(":method", "GET"),
                kv(":scheme", "http"),
                kv(":path", "/"),
                kv(":authority", "www.example.com"),
                kv("cache-control", "no-cache"),
            ])
        );
    }

    #[test]
    fn rfc_7541_c4_requests_with_huffman() {
        let mut d = Decoder::new(4096);
        let first = hex("828684418cf1e3c2e5f23a6ba0ab90f4ff");
        assert_eq!(
            decode_all(&mut d, &first).expect("valid")[3],
            kv(":authority", "www.example.com")
        );
        let third = hex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf");
        // The second request (not fed) would have inserted cache-control: the third block
        // refers to it as index 63, which the decoder that missed it reports unknown.
        let mut joined = Decoder::joined(4096);
        let fields = decode_all(&mut joined, &third).expect("valid");
        assert_eq!(fields[3], None);
        assert_eq!(fields[4], kv("custom-key", "custom-value"));
        // The entry the third block inserted is known from then on.
        let again = decode_all(&mut joined, &[0xbe]).expect("valid");
        assert_eq!(again, vec![kv("custom-key", "custom-value")]);
    }

    #[test]
    fn invalid_blocks_are_typed_errors_and_forget_the_table() {
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode_all(&mut d, &[0xbe]),
            Err(BlockError::IndexOutOfRange)
        );
        // After an error the table is unknown: the same index is now reported unknown.
        assert_eq!(decode_all(&mut d, &[0xbe]), Ok(vec![None]));
        assert_eq!(
            decode_all(&mut d, &[0x80 | 0x7f, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(BlockError::IntegerOverflow)
        );
        assert_eq!(
            decode_all(
                &mut d,
                &[
                    0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80
                ]
            ),
            Err(BlockError::IntegerOverflow)
        );
        assert_eq!(
            decode_all(&mut d, &[0x40, 0x05, b'a']),
            Err(BlockError::Truncated)
        );
        assert_eq!(
            decode_all(&mut d, &[0x82, 0x3f, 0x01]),
            Err(BlockError::SizeUpdate)
        );
        assert_eq!(decode_all(&mut d, &[0x20]), Err(BlockError::SizeUpdate));
        assert_eq!(
            decode_all(&mut d, &[0x40, 0x81, 0x00, 0x01, b'v']),
            Err(BlockError::Huffman)
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }
}
