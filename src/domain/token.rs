//! Session secrets and their stored form.
//!
//! A [`SessionToken`] is 256 bits from the operating system's RNG. Clients see it
//! as 64 lowercase hex digits (Commvault wraps it as `QSDK <hex>`); the store only
//! ever sees its SHA-256, a [`TokenHash`].

use sha2::{Digest, Sha256};
use std::fmt;

/// Length of a session secret in bytes (256 bits).
pub const TOKEN_BYTES: usize = 32;

/// The clear secret. Shown to the client once; never stored, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken([u8; TOKEN_BYTES]);

/// SHA-256 of a [`SessionToken`]: the only form that reaches a store.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

/// The OS random number generator failed; no token can be issued safely.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RngFailure;

impl SessionToken {
    /// A fresh random secret.
    pub fn generate() -> Result<Self, RngFailure> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|_| RngFailure)?;
        Ok(SessionToken(bytes))
    }

    /// Parses the 64-hex-digit wire form (either case), as the bytes of a header
    /// or a string. Anything else is `None`.
    /// By hand rather than `hex::decode_to_slice`: every request parses one, and
    /// the crate's decoder took twice the instructions (~1,000, callgrind); a
    /// table rather than a `match` per digit halves it again.
    pub fn parse(s: &[u8]) -> Option<Self> {
        if s.len() != TOKEN_BYTES * 2 {
            return None;
        }
        let mut bytes = [0u8; TOKEN_BYTES];
        // Any digit outside the table's 0..=15 sets a high bit somewhere in `bad`.
        let mut bad = 0u8;
        for (out, pair) in bytes.iter_mut().zip(s.chunks_exact(2)) {
            let (hi, lo) = (
                HEX_VALUE[usize::from(pair[0])],
                HEX_VALUE[usize::from(pair[1])],
            );
            bad |= hi | lo;
            *out = (hi << 4) | (lo & 0x0f);
        }
        (bad & 0xf0 == 0).then_some(SessionToken(bytes))
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0).into())
    }

    /// The wire form: 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// The value of each hex digit (either case); 0xff for any other byte.
static HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

impl TokenHash {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(b).ok().map(TokenHash)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to tell hashes apart in a debug dump.
        write!(f, "TokenHash({}..)", &hex::encode(&self.0[..4]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_hex_in_either_case() {
        let t = SessionToken::generate().unwrap();
        let hex = t.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(SessionToken::parse(hex.as_bytes()), Some(t.clone()));
        assert_eq!(SessionToken::parse(hex.to_uppercase().as_bytes()), Some(t));
    }

    #[test]
    fn rejects_anything_but_64_hex_digits() {
        assert!(SessionToken::parse(b"").is_none());
        assert!(SessionToken::parse("a".repeat(63).as_bytes()).is_none());
        assert!(SessionToken::parse("a".repeat(65).as_bytes()).is_none());
        assert!(SessionToken::parse("g".repeat(64).as_bytes()).is_none());
        assert!(SessionToken::parse(format!("{}é", "a".repeat(62)).as_bytes()).is_none());
    }

    #[test]
    fn every_byte_in_every_place_decodes_as_the_hex_crate_does() {
        for b in 0..=255u8 {
            for at in [0, 1, 30, 63] {
                let mut text =
                    b"0123456789abcdefABCDEF0123456789abcdef0123456789ABCDEF0123456789".to_vec();
                text[at] = b;
                let expected = hex::decode(&text).ok();
                let got = SessionToken::parse(&text).map(|t| t.0.to_vec());
                assert_eq!(got, expected, "byte {b:#04x} at {at}");
            }
        }
    }

    #[test]
    fn hash_is_sha256_of_the_raw_bytes() {
        let t = SessionToken::parse("00".repeat(32).as_bytes()).unwrap();
        assert_eq!(
            t.hash().to_hex(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = SessionToken::generate().unwrap();
        assert!(!format!("{t:?}").contains(&t.to_hex()));
    }

    #[test]
    fn two_tokens_differ() {
        assert_ne!(
            SessionToken::generate().unwrap(),
            SessionToken::generate().unwrap()
        );
    }
}
