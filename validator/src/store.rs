//! A validator's data directory: content-addressed blobs (checkpoints and gradient payloads), the
//! state a restart resumes from, and the append-only replay log.
//!
//! Layout: `task.toml` (the task the directory belongs to), `state.json`, `replay.log`,
//! `blobs/<hex digest>`, `reveals.json` (the weight commits still to reveal, with their salts, saved
//! before each commit is sent), `commitments.json` (the commitments collected while recent windows
//! were open), and `lock`, which the one validator writing the directory holds locked
//! (readers such as `subnet replay` take no lock and write nothing). Blobs and the state are written to a temporary file, synced and renamed, so
//! a crash leaves either the old or the new file. A replay-log record is one frame,
//! `len: u32 LE | digest(body): 32 bytes | body (JSON)`, appended and synced after the blobs it
//! names; a torn frame at the end (a crash mid-append) is skipped by readers and cut off when the
//! validator opens the directory again, and nothing before it is lost.

use crate::audit::ResidualLedger;
use crate::record::WindowRecord;
use scoring::{Averages, Bans};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use task::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "{path} belongs to task {found}, not to this task ({expected}): use another --data directory"
    )]
    OtherTask {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("blob {digest} is missing from {dir}")]
    MissingBlob { dir: PathBuf, digest: String },
    #[error(
        "{path} is in use by another validator (one writer per data directory): stop it, or use another --data directory"
    )]
    InUse { path: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a restarted validator resumes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    /// The global checkpoint (a blob) and the window it starts.
    pub checkpoint: Digest,
    pub window: u64,
    pub averages: Averages,
    /// Weights committed under commit-reveal, still to be revealed.
    #[serde(default)]
    pub pending_reveals: Vec<PendingReveal>,
    /// The outer momentum buffer (a blob), None for zeros or plain SGD.
    #[serde(default)]
    pub momentum: Option<Digest>,
    /// Hotkeys banned after a fraud, through a window.
    #[serde(default)]
    pub bans: Bans,
    /// The outgoing residuals of the commitments collected, for the residual chain.
    #[serde(default)]
    pub ledger: ResidualLedger,
    /// The audits that have not resolved (the miner did not serve the audited window's artefacts in
    /// time): asked again every window until they resolve or the grace runs out.
    #[serde(default)]
    pub unresolved: crate::window::Unresolved,
    /// The commitments those audits name (hex of each encoded commitment), by uid.
    #[serde(default)]
    pub audit_commitments: BTreeMap<u16, String>,
    /// The hotkey on each uid whose audit has completed at least once; a hotkey not here is
    /// audited in the first window it contributes to.
    #[serde(default)]
    pub audited_hotkeys: BTreeMap<u16, String>,
    /// The secret that draws this validator's audit windows.
    #[serde(default)]
    pub audit_secret: Option<u64>,
    /// The error-feedback residual of the validator's reference training (a blob), None for zero.
    #[serde(default)]
    pub reference_residual: Option<Digest>,
}

/// Weights committed in `window`, with the salt that reveals them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingReveal {
    pub window: u64,
    pub reveal: chain_client::WeightsReveal,
}

/// An open data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
    /// The writer's exclusive lock on `lock`, held while any clone lives (None for readers).
    _lock: Option<Arc<File>>,
}

const TASK_FILE: &str = "task.toml";
const STATE_FILE: &str = "state.json";
const LOG_FILE: &str = "replay.log";
const LOCK_FILE: &str = "lock";
const REVEALS_FILE: &str = "reveals.json";

/// Collected commitments as `commitments.json` keeps them: hex of each encoded commitment, by window
/// and uid.
pub type KeptCommitments = BTreeMap<u64, BTreeMap<u16, String>>;
const COMMITMENTS_FILE: &str = "commitments.json";
const FRAME_HEADER: usize = 4 + 32;

impl DataDir {
    /// Opens (creating it if needed) the data directory of a validator for the task whose canonical
    /// text is `task_toml`, as its one writer: a directory another writer holds, or one written for
    /// another task, is refused.
    pub fn open(root: impl Into<PathBuf>, task_toml: &str) -> Result<Self, StoreError> {
        let root = root.into();
        fs::create_dir_all(root.join("blobs")).map_err(io_err(&root))?;
        let lock_path = root.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::InUse { path: root }),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let dir = Self {
            root,
            _lock: Some(Arc::new(lock)),
        };
        dir.remove_temporaries();
        let task_path = dir.root.join(TASK_FILE);
        match fs::read_to_string(&task_path) {
            Ok(existing) if existing == task_toml => {}
            Ok(existing) => {
                return Err(StoreError::OtherTask {
                    path: dir.root.clone(),
                    expected: hex::encode(subnet_proto::digest(task_toml.as_bytes())),
                    found: hex::encode(subnet_proto::digest(existing.as_bytes())),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_atomic(&task_path, task_toml.as_bytes())?;
            }
            Err(e) => return Err(io_err(&task_path)(e)),
        }
        dir.repair_log()?;
        Ok(dir)
    }

    /// Opens an existing data directory for reading (a replay): its task comes from `task.toml`.
    pub fn open_existing(root: impl Into<PathBuf>) -> Result<(Self, String), StoreError> {
        let root = root.into();
        let task_path = root.join(TASK_FILE);
        let task = fs::read_to_string(&task_path).map_err(|e| StoreError::Corrupt {
            path: root.clone(),
            message: format!("not a validator data directory ({TASK_FILE}: {e})"),
        })?;
        Ok((Self { root, _lock: None }, task))
    }

    /// Blobs a crash left half written (`*.tmp` in the blob directory): only the one writer, which
    /// holds the lock, removes them.
    fn remove_temporaries(&self) {
        let Ok(entries) = fs::read_dir(self.root.join("blobs")) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, digest: &[u8; 32]) -> PathBuf {
        self.root.join("blobs").join(hex::encode(digest))
    }

    /// Stores `bytes` under their digest (once) and returns the digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<[u8; 32], StoreError> {
        let digest = subnet_proto::digest(bytes);
        let path = self.blob_path(&digest);
        if !path.exists() {
            write_atomic(&path, bytes)?;
        }
        Ok(digest)
    }

    /// A blob to be written as its bytes arrive (`BlobWriter`).
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .root
            .join("blobs")
            .join(format!("incoming-{}-{n}.tmp", std::process::id()));
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        Ok(BlobWriter {
            store: self.clone(),
            file,
            tmp: Some(tmp),
            hasher: pseudo_gradient::digest::Hasher::default(),
            len: 0,
        })
    }

    /// A stored blob as a reference that an audit reads when it reaches it (missing: an error
    /// now).
    pub fn kept_blob(&self, digest: &Digest) -> Result<crate::window::Blob, StoreError> {
        if !self.blob_path(&digest.0).exists() {
            return Err(StoreError::MissingBlob {
                dir: self.root.clone(),
                digest: digest.to_string(),
            });
        }
        Ok(crate::window::Blob::Kept {
            digest: *digest,
            store: self.clone(),
        })
    }

    /// A stored blob, checked against its digest.
    pub fn blob(&self, digest: &[u8; 32]) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingBlob {
                    dir: self.root.clone(),
                    digest: hex::encode(digest),
                });
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        if subnet_proto::digest(&bytes) != *digest {
            return Err(StoreError::Corrupt {
                path,
                message: "content does not match its digest".into(),
            });
        }
        Ok(bytes)
    }

    pub fn save_state(&self, state: &SavedState) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(state).expect("state serializes");
        write_atomic(&self.root.join(STATE_FILE), &json)
    }

    /// Keeps the weight commits still to reveal (their salts), written before each commit is sent.
    pub fn save_reveals(&self, reveals: &[PendingReveal]) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(reveals).expect("reveals serialize");
        write_atomic(&self.root.join(REVEALS_FILE), &json)
    }

    /// The commits still to reveal, if they were ever kept.
    pub fn load_reveals(&self) -> Result<Option<Vec<PendingReveal>>, StoreError> {
        read_json(&self.root.join(REVEALS_FILE))
    }

    /// Keeps the commitments collected while windows were open (hex of each encoded commitment, by
    /// window and uid), so that a validator restarted after a window closed can still score it.
    pub fn save_commitments(&self, collected: &KeptCommitments) -> Result<(), StoreError> {
        let json = serde_json::to_vec(collected).expect("commitments serialize");
        write_atomic(&self.root.join(COMMITMENTS_FILE), &json)
    }

    /// The commitments kept by `save_commitments`, if any.
    pub fn load_commitments(&self) -> Result<Option<KeptCommitments>, StoreError> {
        read_json(&self.root.join(COMMITMENTS_FILE))
    }

    pub fn load_state(&self) -> Result<Option<SavedState>, StoreError> {
        read_json(&self.root.join(STATE_FILE))
    }

    /// Appends one window's record to the replay log and syncs it.
    pub fn append_record(&self, record: &WindowRecord) -> Result<(), StoreError> {
        let path = self.root.join(LOG_FILE);
        let body = serde_json::to_vec(record).expect("records serialize");
        let mut frame = Vec::with_capacity(FRAME_HEADER + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&subnet_proto::digest(&body));
        frame.extend_from_slice(&body);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.write_all(&frame).map_err(io_err(&path))?;
        file.sync_data().map_err(io_err(&path))
    }

    /// Every complete record in the log, read only: a torn or corrupt frame at the end (a crash
    /// mid-append, or an append in progress) is left out and its length returned as the second
    /// value; corruption followed by valid frames is an error.
    pub fn records(&self) -> Result<(Vec<WindowRecord>, u64), StoreError> {
        let path = self.root.join(LOG_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let scoring = self.task_scoring();
        let (records, good) =
            parse_log(&bytes, scoring.as_ref()).map_err(|message| StoreError::Corrupt {
                path: path.clone(),
                message,
            })?;
        Ok((records, bytes.len() as u64 - good))
    }

    /// The `[scoring]` section of the directory's task file, if it reads as TOML.
    fn task_scoring(&self) -> Option<toml::Table> {
        let text = fs::read_to_string(self.root.join(TASK_FILE)).ok()?;
        let mut task: toml::Table = text.parse().ok()?;
        match task.remove("scoring")? {
            toml::Value::Table(scoring) => Some(scoring),
            _ => None,
        }
    }

    /// Cuts a torn frame off the end of the log, so the next append follows the last whole record.
    /// Only the directory's writer calls it, when it opens the directory.
    fn repair_log(&self) -> Result<(), StoreError> {
        let path = self.root.join(LOG_FILE);
        let (_, torn) = self.records()?;
        if torn == 0 {
            return Ok(());
        }
        let len = fs::metadata(&path).map_err(io_err(&path))?.len();
        tracing::warn!(
            path = %path.display(),
            offset = len - torn,
            bytes = torn,
            "cutting a torn record off the end of the replay log"
        );
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.set_len(len - torn).map_err(io_err(&path))?;
        file.sync_data().map_err(io_err(&path))
    }
}

/// Parses a replay log's frames from the start; returns the records and the length of the valid
/// prefix (a torn or corrupt last frame is not part of it). Corruption followed by whole frames is
/// an error. `task_scoring` is the directory task's `[scoring]` section (`record::parse_record`).
pub fn parse_log(
    bytes: &[u8],
    task_scoring: Option<&toml::Table>,
) -> Result<(Vec<WindowRecord>, u64), String> {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < FRAME_HEADER {
            break;
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if rest.len() < FRAME_HEADER + len {
            break;
        }
        let body = &rest[FRAME_HEADER..FRAME_HEADER + len];
        if subnet_proto::digest(body)[..] != rest[4..FRAME_HEADER] {
            // A crash can only tear the last frame; a bad frame with a whole one after it is damage.
            if at + FRAME_HEADER + len < bytes.len() {
                return Err(format!("record at offset {at} does not match its digest"));
            }
            break;
        }
        let record = crate::record::parse_record(body, task_scoring)
            .map_err(|e| format!("record at offset {at} does not parse: {e}"))?;
        records.push(record);
        at += FRAME_HEADER + len;
    }
    Ok((records, at as u64))
}

/// The JSON value in `path`, None if there is no such file.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// A blob written as it arrives, so that it is never whole in memory: to a temporary file in the
/// blob directory, digested on the way, and put under its digest by `keep` (synced, renamed). One
/// dropped without `keep` leaves nothing behind.
pub struct BlobWriter {
    store: DataDir,
    /// Unbuffered: pieces arrive as whole chunks, and a buffer would be memory held per stream.
    file: File,
    tmp: Option<PathBuf>,
    hasher: pseudo_gradient::digest::Hasher,
    len: u64,
}

impl BlobWriter {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        let tmp = self.tmp.as_deref().unwrap_or(Path::new(""));
        self.file.write_all(bytes).map_err(io_err(tmp))
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of the bytes written so far.
    pub fn digest(&self) -> [u8; 32] {
        self.hasher.digest()
    }

    /// The bytes written so far, read back (to hold them in memory when the disk fails mid-way).
    pub fn read_back(&mut self) -> Result<Vec<u8>, StoreError> {
        let tmp = self.tmp.clone().unwrap_or_default();
        let bytes = fs::read(&tmp).map_err(io_err(&tmp))?;
        if bytes.len() as u64 != self.len || subnet_proto::digest(&bytes) != self.digest() {
            return Err(StoreError::Corrupt {
                path: tmp,
                message: "the bytes read back are not those written".into(),
            });
        }
        Ok(bytes)
    }

    /// Puts the blob under its digest (once; a blob already there is kept as it is), and returns
    /// the digest. On an error the bytes can still be read back.
    pub fn keep(&mut self) -> Result<[u8; 32], StoreError> {
        let digest = self.digest();
        let tmp = self.tmp.clone().unwrap_or_default();
        let path = self.store.blob_path(&digest);
        self.file.sync_all().map_err(io_err(&tmp))?;
        if !path.exists() {
            fs::rename(&tmp, &path).map_err(io_err(&path))?;
            self.tmp = None;
        }
        Ok(digest)
    }

    pub fn store(&self) -> &DataDir {
        &self.store
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(parent) = path.parent()
        && let Ok(dir) = File::open(parent)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}
