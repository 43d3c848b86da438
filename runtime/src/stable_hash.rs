//! A hash that is the same in every process and every build (64-bit FNV-1a), for what must not
//! change between runs: which plugin instance a key goes to, and which records must keep their
//! order. `std`'s hashers are seeded per process, or unspecified across releases.

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// The hash of `parts` written one after another.
pub(crate) fn hash(parts: &[&[u8]]) -> u64 {
    let mut h = OFFSET;
    for part in parts {
        for &byte in *part {
            h ^= u64::from(byte);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_fnv_1a() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(hash(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(&[b"foobar"]), 0x8594_4171_f739_67e8);
        assert_eq!(
            hash(&[b"foo", b"bar"]),
            hash(&[b"foobar"]),
            "parts are concatenated"
        );
    }
}
