//! A real corpus from a file: plain text read as bytes (vocab 256), or a nanoGPT-style token file
//! (little-endian u16 token ids, as nanoGPT's `prepare.py` writes `train.bin`). The file is pinned by
//! its Blake2b-256 digest in the task file, so every party trains and evaluates on the same bytes.
//! Page `i` is tokens `[i * page_len, (i + 1) * page_len)`; the task's training pages come first and
//! its held-out pages right after them.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Arc, OnceLock};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextFormat {
    /// Each byte is a token (vocab 256).
    Bytes,
    /// Little-endian u16 token ids (nanoGPT's `.bin` files).
    U16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    /// The corpus file: absolute, or relative to the task file's directory (to the working
    /// directory for a task given as text).
    pub path: String,
    pub format: TextFormat,
    /// Hex Blake2b-256 of the file's bytes (`subnet task check` prints it when it does not match).
    pub digest: String,
    /// Where a relative `path` starts: set when the task is read from a file, never serialized (the
    /// digest pins the content, wherever the file lives).
    #[serde(skip)]
    pub base_dir: Option<std::path::PathBuf>,
    /// The file, read once: validation and the engine share it (clones of the spec too).
    #[serde(skip)]
    loaded: Loaded,
}

/// A memo of the loaded corpus; not part of what the spec says, so it compares equal.
#[derive(Clone, Debug, Default)]
struct Loaded(Arc<OnceLock<Result<TextCorpus, String>>>);

impl PartialEq for Loaded {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl TextSpec {
    /// The corpus, read and checked on first use (`TextCorpus::load`).
    pub fn corpus(&self) -> Result<TextCorpus, String> {
        self.loaded.0.get_or_init(|| TextCorpus::load(self)).clone()
    }

    /// The file to read.
    pub fn resolved_path(&self) -> std::path::PathBuf {
        let path = Path::new(&self.path);
        match &self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_path_buf(),
        }
    }
}

/// A corpus file in memory, its tokens widened to u16.
#[derive(Clone, Debug)]
pub struct TextCorpus {
    tokens: Arc<Vec<u16>>,
    max_token: u16,
}

impl TextCorpus {
    /// Reads and checks the file; the error says what is wrong (and the right digest).
    pub fn load(spec: &TextSpec) -> Result<Self, String> {
        let path = spec.resolved_path();
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let digest = crate::Digest::of(&bytes).to_string();
        if digest != spec.digest.to_lowercase() {
            return Err(format!(
                "{} has digest {digest}, not {} (set data.text.digest = \"{digest}\" if this is the intended file)",
                path.display(),
                spec.digest
            ));
        }
        let tokens: Vec<u16> = match spec.format {
            TextFormat::Bytes => bytes.iter().map(|&b| b as u16).collect(),
            TextFormat::U16 => {
                if bytes.len() % 2 != 0 {
                    return Err(format!(
                        "{} has an odd number of bytes: not a file of u16 tokens",
                        path.display()
                    ));
                }
                bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect()
            }
        };
        let max_token = tokens.iter().copied().max().unwrap_or(0);
        Ok(Self {
            tokens: Arc::new(tokens),
            max_token,
        })
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The largest token id in the file (the model's vocab must exceed it).
    pub fn max_token(&self) -> u16 {
        self.max_token
    }

    /// The first `len` tokens of page `index` of `page_len` tokens.
    pub fn page(&self, index: u64, page_len: usize, len: usize) -> &[u16] {
        let start = index as usize * page_len;
        &self.tokens[start..start + len.min(page_len)]
    }
}
