//! The error-feedback residual on disk, so a restarted miner carries on with it.
//!
//! The file holds the residual that went into window `w`'s compression (with the window it came out
//! of) and the one that came out of it. A miner restarted mid-window retrains that window from the
//! residual that went in (the one that came out already subtracted what window `w` sent); any later
//! window takes the one that came out. Commitments name both residuals and the window each came
//! from, so validators can follow the chain from window to window. Layout: `MAGIC | task digest
//! (32) | window u64 LE | source window u64 LE | n u64 LE | before f32 LE x n | after f32 LE x n |
//! Blake2b-256 of everything before (32)`, written to a temporary file, synced and renamed, so a
//! crash leaves the old file or the new one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"SNRESID2";

/// The residuals around one window's compression.
#[derive(Clone, Debug, PartialEq)]
pub struct Residual {
    pub window: u64,
    /// The window whose compression left `before` (0 when `before` is zero).
    pub source_window: u64,
    pub before: Vec<f32>,
    pub after: Vec<f32>,
}

impl Residual {
    /// The residual to add to `window`'s pseudo-gradient and the window that left it, if this one
    /// applies to it.
    pub fn carried_into(&self, window: u64) -> Option<(&[f32], u64)> {
        match window.cmp(&self.window) {
            std::cmp::Ordering::Greater => Some((&self.after, self.window)),
            std::cmp::Ordering::Equal => Some((&self.before, self.source_window)),
            std::cmp::Ordering::Less => None,
        }
    }
}

const HEADER: usize = 8 + 32 + 24;

fn floats(out: &mut Vec<u8>, values: &[f32]) {
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Writes `residual` for the task with digest `task` to `path`, atomically.
pub fn save(path: &Path, task: &[u8; 32], residual: &Residual) -> io::Result<()> {
    let n = residual.after.len();
    assert_eq!(
        residual.before.len(),
        n,
        "before and after have one entry per parameter"
    );
    let mut bytes = Vec::with_capacity(HEADER + 8 * n + 32);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(task);
    bytes.extend_from_slice(&residual.window.to_le_bytes());
    bytes.extend_from_slice(&residual.source_window.to_le_bytes());
    bytes.extend_from_slice(&(n as u64).to_le_bytes());
    floats(&mut bytes, &residual.before);
    floats(&mut bytes, &residual.after);
    let digest = subnet_proto::digest(&bytes);
    bytes.extend_from_slice(&digest);
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // Makes the rename durable.
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads the residual at `path`: None when there is no file; an error that says why when the file
/// is damaged or belongs to another task or model size.
pub fn load(path: &Path, task: &[u8; 32], params: usize) -> Result<Option<Residual>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let bad = |why: &str| Err(format!("{}: {why}", path.display()));
    let header = HEADER;
    if bytes.len() >= 8 && &bytes[..8] == b"SNRESID1" {
        return bad("written by an older miner; remove it to start with an empty residual");
    }
    if bytes.len() < header + 32 || &bytes[..8] != MAGIC {
        return bad("not a residual file");
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if subnet_proto::digest(body).as_slice() != digest {
        return bad("damaged (digest mismatch)");
    }
    if &body[8..40] != task {
        return bad("written for another task; remove it to start with an empty residual");
    }
    let word = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let (window, source_window, n) = (word(40), word(48), word(56) as usize);
    if n != params || body.len() != header + 8 * n {
        return bad(&format!("holds {n} parameters, the task has {params}"));
    }
    let read = |from: usize| -> Vec<f32> {
        body[from..from + 4 * n]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect()
    };
    Ok(Some(Residual {
        window,
        source_window,
        before: read(header),
        after: read(header + 4 * n),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage_and_other_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("residual.bin");
        let task = [7u8; 32];
        assert_eq!(load(&path, &task, 3).unwrap(), None);
        let r = Residual {
            window: 12,
            source_window: 10,
            before: vec![0.5, -1.0, 0.0],
            after: vec![0.25, f32::MIN_POSITIVE, -3.5],
        };
        save(&path, &task, &r).unwrap();
        assert_eq!(load(&path, &task, 3).unwrap(), Some(r.clone()));
        assert_eq!(r.carried_into(12), Some((&r.before[..], 10)));
        assert_eq!(r.carried_into(13), Some((&r.after[..], 12)));
        assert_eq!(r.carried_into(11), None);

        let e = load(&path, &[8u8; 32], 3).unwrap_err();
        assert!(e.contains("another task"), "{e}");
        let e = load(&path, &task, 4).unwrap_err();
        assert!(e.contains("holds 3 parameters"), "{e}");
        let mut bytes = fs::read(&path).unwrap();
        bytes[60] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let e = load(&path, &task, 3).unwrap_err();
        assert!(e.contains("damaged"), "{e}");
    }
}
