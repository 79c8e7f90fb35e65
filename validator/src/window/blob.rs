//! Artefact bytes an audit reads: held in memory, or kept as a blob in the validator's data
//! directory and read only when the audit reaches them. A live validator keeps each part as it
//! arrives, so a window holds one miner's artefacts at a time, however many miners it audits.

use crate::store::{BlobWriter, DataDir, StoreError};
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

/// An artefact arriving in pieces: written to the data directory as it comes (never whole in
/// memory), or held where there is no directory or the disk refuses it.
pub enum Incoming {
    Held(Vec<u8>),
    Kept(Box<BlobWriter>),
}

impl Incoming {
    /// To `store` where there is one and it takes a new blob, else held.
    pub fn new(store: Option<&DataDir>) -> Incoming {
        match store.map(DataDir::blob_writer) {
            Some(Ok(writer)) => Incoming::Kept(Box::new(writer)),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "could not start a blob on disk: holding it in memory");
                Incoming::Held(Vec::new())
            }
            None => Incoming::Held(Vec::new()),
        }
    }

    /// Takes the next piece; a disk that fails mid-way costs memory (what was written is read
    /// back and held), an error only if even that fails.
    pub fn push(&mut self, piece: &[u8]) -> Result<(), StoreError> {
        match self {
            Incoming::Held(bytes) => bytes.extend_from_slice(piece),
            Incoming::Kept(writer) => {
                if let Err(e) = writer.write(piece) {
                    tracing::warn!(error = %e, "could not write a blob on disk: holding it in memory");
                    let mut bytes = writer.read_back()?;
                    bytes.extend_from_slice(piece);
                    *self = Incoming::Held(bytes);
                }
            }
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        match self {
            Incoming::Held(bytes) => bytes.len() as u64,
            Incoming::Kept(writer) => writer.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn digest(&self) -> [u8; 32] {
        match self {
            Incoming::Held(bytes) => subnet_proto::digest(bytes),
            Incoming::Kept(writer) => writer.digest(),
        }
    }

    /// The bytes, where they are held in memory.
    pub fn into_held(self) -> Option<Vec<u8>> {
        match self {
            Incoming::Held(bytes) => Some(bytes),
            Incoming::Kept(_) => None,
        }
    }

    /// The artefact, complete.
    pub fn finish(self) -> Result<Blob, StoreError> {
        match self {
            Incoming::Held(bytes) => Ok(Blob::Held(bytes)),
            Incoming::Kept(mut writer) => match writer.keep() {
                Ok(digest) => Ok(Blob::Kept {
                    digest: Digest(digest),
                    store: writer.store().clone(),
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "could not keep a blob on disk: holding it in memory");
                    writer.read_back().map(Blob::Held)
                }
            },
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

    fn blob_files(store: &DataDir) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(store.root().join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_artefact_arriving_in_pieces_is_kept_whole_and_nothing_else_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = DataDir::open(dir.path(), "task").unwrap();
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let mut incoming = Incoming::new(Some(&store));
        for piece in bytes.chunks(65_536) {
            incoming.push(piece).unwrap();
        }
        assert_eq!(incoming.len(), bytes.len() as u64);
        assert_eq!(incoming.digest(), subnet_proto::digest(&bytes));
        let blob = incoming.finish().unwrap();
        assert!(matches!(blob, Blob::Kept { .. }));
        assert_eq!(blob.read().unwrap().as_ref(), bytes.as_slice());
        assert_eq!(blob_files(&store), vec![blob.digest().to_string()]);

        // The same bytes again: the blob is there once; one abandoned mid-way leaves nothing.
        let mut again = Incoming::new(Some(&store));
        again.push(&bytes).unwrap();
        assert_eq!(again.finish().unwrap().digest(), blob.digest());
        let mut abandoned = Incoming::new(Some(&store));
        abandoned.push(&bytes[..1000]).unwrap();
        drop(abandoned);
        assert_eq!(blob_files(&store), vec![blob.digest().to_string()]);

        // Without a data directory the artefact is held.
        let mut held = Incoming::new(None);
        held.push(&bytes).unwrap();
        assert!(matches!(held.finish().unwrap(), Blob::Held(b) if b == bytes));
    }

    #[test]
    fn a_half_written_blob_a_crash_left_is_removed_when_the_writer_opens_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = DataDir::open(dir.path(), "task").unwrap();
        // What a writer killed mid-way leaves.
        let remnant = store.root().join("blobs").join("incoming-1-0.tmp");
        std::fs::write(&remnant, [1, 2, 3]).unwrap();
        assert_eq!(blob_files(&store).len(), 1);
        drop(store);
        let reopened = DataDir::open(dir.path(), "task").unwrap();
        assert!(blob_files(&reopened).is_empty());
    }
}
