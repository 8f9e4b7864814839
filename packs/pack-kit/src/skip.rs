//! Stepping over a JSON array or object by its structure alone, sixteen bytes at a time.
//!
//! A block of sixteen bytes gives one mask of the bytes that matter to the structure (quotes,
//! backslashes and brackets); only those are looked at, in order, by a small state machine
//! (inside a string or not, nesting depth). The bytes between them (the text of strings,
//! numbers, names, white space) are never looked at one by one. On Wasm with `simd128` (how the
//! packs are built) a block's mask is four vector compares; elsewhere it is computed eight bytes
//! at a time, with the same answer.
//!
//! Like the rest of the reader, this trusts the host to write well-formed JSON: it finds where
//! a value ends, and what a pack reads of the value is checked when it is parsed.

/// Bytes per block.
const BLOCK: usize = 16;

/// The index just past the array or object whose opening bracket is `bytes[start]`, or `None`
/// when the text ends first. Brackets inside strings, and bytes after a backslash in a string,
/// do not count.
pub(crate) fn container_end(bytes: &[u8], start: usize) -> Option<usize> {
    debug_assert!(matches!(bytes.get(start), Some(b'{' | b'[')));
    let mut depth = 0usize;
    let mut in_string = false;
    let mut at = start;
    loop {
        // A block's mask, or the mask of the bytes left when fewer than a block are.
        let (mut mask, len) = match bytes.get(at..at + BLOCK) {
            Some(block) => {
                let block: &[u8; BLOCK] = block.try_into().ok()?;
                (structural(block), BLOCK)
            }
            None => {
                let rest = bytes.get(at..)?;
                if rest.is_empty() {
                    return None;
                }
                (structural_tail(rest), rest.len())
            }
        };
        let mut next = at + len;
        while mask != 0 {
            let k = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let c = bytes[at + k];
            if in_string {
                match c {
                    b'"' => in_string = false,
                    b'\\' => {
                        // The escaped byte is text, whatever it is.
                        if k + 1 < len {
                            mask &= !(1 << (k + 1));
                        } else {
                            next = at + k + 2;
                        }
                    }
                    _ => {}
                }
            } else {
                match c {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(at + k + 1);
                        }
                    }
                    // A backslash outside a string is not JSON; it is stepped over like any byte.
                    _ => {}
                }
            }
        }
        at = next;
    }
}

/// The mask of `"`, `\`, `{`, `}`, `[` and `]` in `block`: bit `i` for byte `i`.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn structural(block: &[u8; BLOCK]) -> u32 {
    use core::arch::wasm32::{i8x16_bitmask, u8x16_eq, u8x16_splat, v128, v128_load, v128_or};
    // SAFETY: `block` is sixteen readable bytes; Wasm loads need no alignment.
    let v = unsafe { v128_load(block.as_ptr().cast::<v128>()) };
    // `[` and `]` are `{` and `}` with the 0x20 bit clear; no other byte becomes a bracket.
    let folded = v128_or(v, u8x16_splat(0x20));
    let brackets = v128_or(
        u8x16_eq(folded, u8x16_splat(b'{')),
        u8x16_eq(folded, u8x16_splat(b'}')),
    );
    let text = v128_or(
        u8x16_eq(v, u8x16_splat(b'"')),
        u8x16_eq(v, u8x16_splat(b'\\')),
    );
    u32::from(i8x16_bitmask(v128_or(brackets, text)))
}

/// The mask of `"`, `\`, `{`, `}`, `[` and `]` in `block`: bit `i` for byte `i`.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn structural(block: &[u8; BLOCK]) -> u32 {
    let (low, high) = block.split_at(8);
    let word = |half: &[u8]| u64::from_le_bytes(half.try_into().unwrap_or_default());
    u32::from(word_mask(word(low))) | (u32::from(word_mask(word(high))) << 8)
}

/// The mask of the structural bytes of the last, short piece of the text.
fn structural_tail(rest: &[u8]) -> u32 {
    rest.iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, b'"' | b'\\' | b'{' | b'}' | b'[' | b']'))
        .fold(0, |mask, (i, _)| mask | (1 << i))
}

/// Eight bytes at a time: `0x7f` in every byte.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// The high bit of every byte of `word` that is zero, and of no other (no borrow crosses bytes).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn zero_bytes(word: u64) -> u64 {
    !(((word & LOW7) + LOW7) | word | LOW7)
}

/// The mask of the structural bytes of an eight-byte word: bit `i` for byte `i`.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn word_mask(word: u64) -> u8 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let folded = word | (ONES * 0x20);
    let high = zero_bytes(folded ^ (ONES * u64::from(b'{')))
        | zero_bytes(folded ^ (ONES * u64::from(b'}')))
        | zero_bytes(word ^ (ONES * u64::from(b'"')))
        | zero_bytes(word ^ (ONES * u64::from(b'\\')));
    // Gathers the eight high bits, byte `i`'s into bit `i`.
    #[allow(clippy::cast_possible_truncation)]
    let mask = ((high >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8;
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same walk, one byte at a time.
    fn bytewise_end(bytes: &[u8], start: usize) -> Option<usize> {
        let (mut depth, mut in_string, mut i) = (0usize, false, start);
        while let Some(&c) = bytes.get(i) {
            if in_string {
                match c {
                    b'"' => in_string = false,
                    b'\\' => i += 1,
                    _ => {}
                }
            } else {
                match c {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        None
    }

    #[test]
    fn a_block_mask_has_exactly_the_structural_bytes() {
        for fill in 0..=255u8 {
            for special in [
                b'"', b'\\', b'{', b'}', b'[', b']', b'|', b';', b'=', b'\x00',
            ] {
                for at in 0..BLOCK {
                    let mut block = [fill; BLOCK];
                    block[at] = special;
                    let expected = structural_tail(&block);
                    assert_eq!(structural(&block), expected, "{block:?}");
                }
            }
        }
    }

    #[test]
    fn finds_the_end_of_nested_values_with_strings_and_escapes() {
        let docs: &[&str] = &[
            r#"{}"#,
            r#"[]"#,
            r#"{"a":1}"#,
            r#"{"a":"}","b":["]",{"c":"\"}"}],"d":"\\"}"#,
            r#"[1,2,[3,[4,{"x":"[[["}]],"\\\""]"#,
            r#"{"long":"abcdefghijklmnopqrstuvwxyz0123456789\"{[","n":[1.5e3,-2,null,true]}"#,
        ];
        for doc in docs {
            for pad in 0..20 {
                // The value at every offset of a block, then more text after it.
                let text = format!("{}{doc}, \"after\": {{}}]", " ".repeat(pad));
                let bytes = text.as_bytes();
                assert_eq!(container_end(bytes, pad), Some(pad + doc.len()), "{text}");
            }
        }
    }

    #[test]
    fn agrees_with_a_bytewise_walk_around_escapes_at_block_edges() {
        // Backslashes at every position, before quotes and brackets, so that an escape falls
        // at the end of a block and its escaped byte at the start of the next.
        for n in 0..40 {
            for tail in ["\\\"", "\\\\", "\\}", "}\\\"", "\\\\\""] {
                let inner = format!("{}{}", "x".repeat(n), tail);
                let doc = format!("[\"{inner}\", {{\"k\": \"{inner}\"}}, \"end\"]   ");
                let bytes = doc.as_bytes();
                assert_eq!(container_end(bytes, 0), bytewise_end(bytes, 0), "{doc}");
            }
        }
    }

    #[test]
    fn text_that_ends_inside_the_value_has_no_end() {
        for doc in [r#"{"a":"}"#, r#"[[1,2]"#, r#"{"a":"\"#, "["] {
            assert_eq!(container_end(doc.as_bytes(), 0), None, "{doc}");
        }
        // A closing bracket too many before the value opens is not this value's end.
        assert_eq!(container_end(b"{\"a\":[]}", 0), Some(8));
    }
}
