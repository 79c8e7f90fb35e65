//! Where a miner keeps the training states it committed to until validators stop asking for them:
//! in memory, or, with a data directory, in files it reads when a validator asks. A window's states
//! are three vectors of the trained parameters per segment (8.2 MB a window on localnet-lm, 200 MB
//! on tiny-lm, several GB on a 100M-parameter model), and a miner keeps five windows.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One segment's state as kept.
#[derive(Clone, Debug)]
pub enum KeptState {
    Held(Arc<Vec<u8>>),
    File(Arc<StateFile>),
}

impl KeptState {
    /// The state's bytes (a file is read now).
    pub fn bytes(&self) -> io::Result<Arc<Vec<u8>>> {
        match self {
            KeptState::Held(bytes) => Ok(bytes.clone()),
            KeptState::File(file) => std::fs::read(&file.path).map(Arc::new),
        }
    }
}

/// A state's file, removed when the last reference to it goes (the window is no longer kept).
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
}

impl Drop for StateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The directory a miner keeps segment states in; emptied when the miner starts (a state from an
/// earlier run belongs to a window this process no longer serves).
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn open(dir: &Path) -> io::Result<StateDir> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "state" || e == "tmp") {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    /// Keeps `bytes` as window `window`'s segment `index` (held in memory when the file cannot be
    /// written: a full disk costs memory, not the window).
    pub fn keep(dir: Option<&StateDir>, window: u64, index: usize, bytes: Vec<u8>) -> KeptState {
        let Some(dir) = dir else {
            return KeptState::Held(Arc::new(bytes));
        };
        let path = dir.dir.join(format!("{window}-{index}.state"));
        let tmp = path.with_extension("tmp");
        match std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path)) {
            Ok(()) => KeptState::File(Arc::new(StateFile { path })),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(window, segment = index, path = %path.display(), error = %e, "cannot write a segment state: holding it in memory");
                KeptState::Held(Arc::new(bytes))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_in_a_file_reads_back_and_goes_with_its_window() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("1-0.state"), b"stale").unwrap();
        let dir = StateDir::open(root.path()).unwrap();
        assert!(
            !root.path().join("1-0.state").exists(),
            "stale states are removed"
        );
        let kept = StateDir::keep(Some(&dir), 3, 1, vec![5; 100]);
        let path = root.path().join("3-1.state");
        assert!(path.exists());
        assert_eq!(*kept.bytes().unwrap(), vec![5; 100]);
        drop(kept);
        assert!(!path.exists(), "the file goes with the last reference");
        let held = StateDir::keep(None, 3, 1, vec![1, 2]);
        assert!(matches!(held, KeptState::Held(_)));
        assert_eq!(*held.bytes().unwrap(), vec![1, 2]);
    }
}
