//! FNV-1a, the stable hash behind the advisory-lock ids: the same in every
//! build and version, so processes of different versions agree on which
//! lock an aggregate or a lease is. (Written here, not taken from a hasher
//! crate: the ids must never change with a dependency.)

/// FNV-1a, 64 bits, over `parts` in order (the aggregates' lock ids).
pub fn fnv1a_64<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.into_iter().flatten() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// FNV-1a, 32 bits (the lease keys, which PostgreSQL's two-key advisory
/// locks take as 32-bit integers).
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published FNV-1a test vectors: the ids stay what they were.
    #[test]
    fn known_values() {
        assert_eq!(fnv1a_64([&b""[..]]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64([&b"a"[..]]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64([&b"foo"[..]]), 0xdcb2_7518_fed9_d577);
        assert_eq!(fnv1a_64([&b"fo"[..], &b"o"[..]]), 0xdcb2_7518_fed9_d577);
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foo"), 0xa9f3_7ed7);
    }
}
