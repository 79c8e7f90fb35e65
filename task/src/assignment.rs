//! Who trains on what. The pages of a window are a pseudo-random permutation of the training split,
//! keyed by the window seed: miner `uid` takes positions [uid * k, (uid + 1) * k) of it. Any party
//! computes any miner's pages alone, and the pages of different uids never overlap.

use crate::rng::{derive_seed, salt};

/// The training pages of one miner in one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowAssignment {
    pub window: u64,
    pub uid: u16,
    pub pages: Vec<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "uid {uid} needs pages up to position {needed} but the training split has only {train_pages} pages"
)]
pub struct AssignmentError {
    pub uid: u16,
    pub needed: u64,
    pub train_pages: u64,
}

/// Pages of `uid` in the window with `window_seed`.
pub fn assign_pages(
    window: u64,
    window_seed: u64,
    uid: u16,
    pages_per_miner: usize,
    train_pages: u64,
) -> Result<WindowAssignment, AssignmentError> {
    let first = uid as u64 * pages_per_miner as u64;
    let end = first + pages_per_miner as u64;
    if end > train_pages {
        return Err(AssignmentError {
            uid,
            needed: end,
            train_pages,
        });
    }
    let key = derive_seed(&[window_seed, salt::ASSIGNMENT]);
    let pages = (first..end)
        .map(|position| permute(position, train_pages, key))
        .collect();
    Ok(WindowAssignment { window, uid, pages })
}

/// A keyed bijection on [0, n): a balanced Feistel network on the smallest even power of two that
/// holds n, with cycle walking back into range.
pub fn permute(x: u64, n: u64, key: u64) -> u64 {
    assert!(x < n, "position {x} outside [0, {n})");
    let bits = (64 - (n.max(2) - 1).leading_zeros()).div_ceil(2).max(1);
    let mask = (1u64 << bits) - 1;
    let mut y = x;
    loop {
        let (mut left, mut right) = (y >> bits, y & mask);
        for round in 0..4u64 {
            let f = derive_seed(&[key, round, right]) & mask;
            (left, right) = (right, left ^ f);
        }
        y = (left << bits) | right;
        if y < n {
            return y;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn permutation_is_a_bijection() {
        for n in [1u64, 2, 7, 100, 1000, 4097] {
            let image: HashSet<u64> = (0..n).map(|x| permute(x, n, 99)).collect();
            assert_eq!(image.len() as u64, n);
            assert!(image.iter().all(|&y| y < n));
        }
    }

    #[test]
    fn assignments_are_disjoint_deterministic_and_change_per_window() {
        let mut seen = HashSet::new();
        for uid in 0..64u16 {
            let a = assign_pages(3, 1234, uid, 16, 1_000_000).unwrap();
            assert_eq!(a, assign_pages(3, 1234, uid, 16, 1_000_000).unwrap());
            for p in a.pages {
                assert!(seen.insert(p), "page {p} assigned twice");
            }
        }
        assert_ne!(
            assign_pages(3, 1234, 0, 16, 1_000_000).unwrap().pages,
            assign_pages(4, 1235, 0, 16, 1_000_000).unwrap().pages
        );
        assert!(assign_pages(0, 1, 100, 16, 1000).is_err());
    }
}
