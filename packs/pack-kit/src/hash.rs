//! A fast, non-cryptographic hash for the kit's and packs' own tables: std's default SipHash is
//! several times slower, and packs hash nothing an attacker can choose to collide with to any
//! effect (a collision costs a lookup, or, for [`hash`] of the settings, a stale parse of
//! equally-sized settings with a 1 in 2^64 chance).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// The multiplier of the `FxHash` family (as rustc uses).
const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// A word-at-a-time multiplicative hasher.
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A `HashSet` with [`FastHasher`].
pub type FastSet<T> = HashSet<T, BuildHasherDefault<FastHasher>>;

/// The [`FastHasher`] hash of `bytes` and their length.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h = FastHasher::default();
    h.write(bytes);
    h.write_usize(bytes.len());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_bytes_hash_equal_and_a_change_shows() {
        let a = br#"{"emailFields": ["(?i)e-?mail"], "maxScanBytes": 1048576}"#;
        let copy = a.to_vec();
        assert_eq!(hash(a), hash(copy.as_slice()), "the same bytes elsewhere");
        let mut b = a.to_vec();
        b[40] ^= 1;
        assert_ne!(hash(a), hash(&b));
        assert_ne!(
            hash(b"abc"),
            hash(b"abc\0"),
            "padding does not hide a trailing zero"
        );
    }
}
