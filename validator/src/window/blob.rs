//! Artefact bytes an audit reads: held in memory, or kept as a blob in the validator's data
//! directory and read only when the audit reaches them. A live validator keeps each part as it
//! arrives, so a window holds one miner's artefacts at a time, however many miners it audits.

use crate::store::{DataDir, StoreError};
use std::borrow::Cow;
use std::fmt;
use task::Digest;

#[derive(Clone)]
pub enum Blob {
    Held(Vec<u8>),
    Kept { digest: Digest, store: DataDir },
}

impl Blob {
    /// `bytes` kept in `store` where it can be, else held (a disk that refuses a write costs
    /// memory, not a miner's gradient).
    pub fn keep_or_hold(bytes: Vec<u8>, store: Option<&DataDir>) -> Blob {
        match store.map(|s| s.put_blob(&bytes).map(|d| (d, s))) {
            Some(Ok((digest, store))) => Blob::Kept {
                digest: Digest(digest),
                store: store.clone(),
            },
            Some(Err(e)) => {
                tracing::warn!(error = %e, "could not keep a blob on disk: holding it in memory");
                Blob::Held(bytes)
            }
            None => Blob::Held(bytes),
        }
    }

    /// Its digest, once it is in `store` (a held blob is written there now).
    pub fn stored_in(&self, store: &DataDir) -> Result<Digest, StoreError> {
        match self {
            Blob::Held(bytes) => store.put_blob(bytes).map(Digest),
            Blob::Kept { digest, .. } => Ok(*digest),
        }
    }

    pub fn digest(&self) -> Digest {
        match self {
            Blob::Held(bytes) => Digest::of(bytes),
            Blob::Kept { digest, .. } => *digest,
        }
    }

    /// The bytes (a kept blob is read back and checked against its digest).
    pub fn read(&self) -> Result<Cow<'_, [u8]>, StoreError> {
        match self {
            Blob::Held(bytes) => Ok(Cow::Borrowed(bytes)),
            Blob::Kept { digest, store } => store.blob(&digest.0).map(Cow::Owned),
        }
    }
}

impl From<Vec<u8>> for Blob {
    fn from(bytes: Vec<u8>) -> Blob {
        Blob::Held(bytes)
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blob::Held(bytes) => write!(f, "Blob::Held({} bytes)", bytes.len()),
            Blob::Kept { digest, .. } => write!(f, "Blob::Kept({digest})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_blob_reads_back_what_a_held_one_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = DataDir::open(dir.path(), "task").unwrap();
        let bytes = vec![7u8; 1000];
        let held = Blob::keep_or_hold(bytes.clone(), None);
        let kept = Blob::keep_or_hold(bytes.clone(), Some(&store));
        assert!(matches!(kept, Blob::Kept { .. }));
        assert_eq!(held.digest(), kept.digest());
        assert_eq!(kept.read().unwrap().as_ref(), bytes.as_slice());
        assert_eq!(held.read().unwrap().as_ref(), bytes.as_slice());
        // A held blob is written when a record needs it; a kept one is already there.
        let other = tempfile::tempdir().unwrap();
        let elsewhere = DataDir::open(other.path(), "task").unwrap();
        assert_eq!(held.stored_in(&elsewhere).unwrap(), held.digest());
        assert_eq!(elsewhere.blob(&held.digest().0).unwrap(), bytes);
        assert!(matches!(held, Blob::Held(_)));
    }
}
