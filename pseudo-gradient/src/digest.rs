//! A Blake2b-256 digest: how checkpoints, blobs, payloads, residuals, tasks and signing payloads
//! are named, with the one implementation of the hash (`blake2b`, `Digest::of`). It is written as
//! 64 lowercase hex digits in records and on screens, and parsed back with an error that says what
//! was wrong.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; 32]);

/// Text that is not 64 hex digits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a digest (64 hex digits): {reason}")]
pub struct BadDigest {
    pub text: String,
    pub reason: String,
}

/// Blake2b-256 of `bytes`.
pub fn blake2b(bytes: &[u8]) -> [u8; 32] {
    let mut hasher = Hasher::default();
    hasher.update(bytes);
    hasher.finish()
}

/// Blake2b-256 of bytes that arrive in pieces: the same digest as `blake2b` of them joined.
#[derive(Clone, Default)]
pub struct Hasher(blake2::Blake2b<blake2::digest::consts::U32>);

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        blake2::digest::Digest::update(&mut self.0, bytes);
    }

    /// The digest of everything given so far (the hasher can go on taking bytes).
    pub fn digest(&self) -> [u8; 32] {
        self.clone().finish()
    }

    pub fn finish(self) -> [u8; 32] {
        blake2::digest::Digest::finalize(self.0).into()
    }
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(blake2b(bytes))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<[u8; 32]> for Digest {
    fn from(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = BadDigest;

    fn from_str(text: &str) -> Result<Self, BadDigest> {
        let bad = |reason: String| BadDigest {
            text: text.chars().take(80).collect(),
            reason,
        };
        let bytes = hex::decode(text).map_err(|e| bad(e.to_string()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| bad(format!("{} bytes, not 32", b.len())))?;
        Ok(Digest(bytes))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_reads_back_what_it_writes_and_names_bad_text() {
        let d = Digest([0xab; 32]);
        assert_eq!(d.to_string(), "ab".repeat(32));
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!("abc".parse::<Digest>().unwrap_err().reason.contains("Odd"));
        assert!(
            "abcd"
                .parse::<Digest>()
                .unwrap_err()
                .reason
                .contains("2 bytes")
        );
        assert!(serde_json::from_str::<Digest>("\"zz\"").is_err());
    }

    #[test]
    fn bytes_hashed_in_pieces_have_the_digest_of_the_whole() {
        // Blake2b-256 of "abc" (RFC 7693's input, 32-byte output).
        assert_eq!(
            hex::encode(blake2b(b"abc")),
            "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"
        );
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut hasher = Hasher::default();
        for piece in bytes.chunks(777) {
            hasher.update(piece);
        }
        assert_eq!(hasher.digest(), blake2b(&bytes));
        assert_eq!(hasher.finish(), blake2b(&bytes));
    }
}
