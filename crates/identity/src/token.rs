//! Tokens: 32 random bytes shown as `veto_` + 52 lowercase base32 letters.
//!
//! The prefix makes a leaked token recognisable (secret scanners, log
//! review); lowercase base32 needs no escaping in a proxy URL and survives
//! being read aloud or retyped.
//!
//! Stored as SHA-256 of the whole token string. Passwords need a slow KDF
//! (argon2, scrypt) because people choose them from a small space that an
//! attacker holding the hashes can enumerate; a token with 256 bits from the
//! OS's random source cannot be enumerated at any hashing speed, so a slow
//! hash would only slow down every proxied request. A single SHA-256 is
//! preimage-resistant, which is all that is needed.

use crate::IdentityError;
use sha2::{Digest, Sha256};

/// What every token starts with.
pub const PREFIX: &str = "veto_";

/// Random bytes in a token: 256 bits.
pub const BYTES: usize = 32;

/// A fresh token from the OS's random source.
pub fn generate() -> Result<String, IdentityError> {
    let mut raw = [0u8; BYTES];
    getrandom::fill(&mut raw).map_err(IdentityError::Random)?;
    let mut out = String::with_capacity(PREFIX.len() + BYTES.div_ceil(5) * 8);
    out.push_str(PREFIX);
    base32_lower(&raw, &mut out);
    Ok(out)
}

/// What is stored and compared: SHA-256 of the token as presented.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// RFC 4648 base32, lowercase, without padding.
fn base32_lower(bytes: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b32(bytes: &[u8]) -> String {
        let mut s = String::new();
        base32_lower(bytes, &mut s);
        s
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        // RFC 4648 section 10, lowercased and without padding.
        assert_eq!(b32(b""), "");
        assert_eq!(b32(b"f"), "my");
        assert_eq!(b32(b"fo"), "mzxq");
        assert_eq!(b32(b"foo"), "mzxw6");
        assert_eq!(b32(b"foob"), "mzxw6yq");
        assert_eq!(b32(b"fooba"), "mzxw6ytb");
        assert_eq!(b32(b"foobar"), "mzxw6ytboi");
    }

    #[test]
    fn tokens_look_right_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX));
        assert_eq!(a.len(), PREFIX.len() + 52);
        assert!(
            a[PREFIX.len()..]
                .bytes()
                .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c))
        );
    }
}
