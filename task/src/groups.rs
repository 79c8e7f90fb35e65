//! Parameter groups: the model cut into contiguous runs of whole tensors (in the flat vector's visit
//! order), so that a miner can train one group while the rest of the model stays frozen. A task asks
//! for `shards.groups` balanced groups (0 or 1: the whole model); each window every miner is given one
//! group that fits the size it declared it can hold, rotating with the window seed.

use crate::params::ParamLayout;
use crate::rng::{derive_seed, salt};
use std::ops::Range;

/// One group: the tensors `first..=last` of the layout, parameters `range` of the flat vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamGroup {
    pub index: usize,
    pub range: Range<usize>,
    pub first: String,
    pub last: String,
}

impl ParamGroup {
    pub fn len(&self) -> usize {
        self.range.len()
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// Bytes a miner training this group holds for the model's parameters (f32 for every one of
    /// `total`) and for this group's gradients and two AdamW moments (f32 each), before activations.
    pub fn state_bytes(&self, total: usize) -> u64 {
        4 * total as u64 + 12 * self.len() as u64
    }
}

/// No group of the task fits what a miner declared it can hold.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "no parameter group fits a miner that holds at most {capacity} parameters (the smallest has {smallest})"
)]
pub struct NoGroupFits {
    pub capacity: u64,
    pub smallest: usize,
}

/// The model's parameter groups, covering the flat vector in order without gaps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamGroups(Vec<ParamGroup>);

impl ParamGroups {
    /// `count` contiguous groups of whole tensors whose largest is as small as possible (fewer when
    /// the model has fewer tensors; 0 means 1: the whole model).
    pub fn balanced(layout: &ParamLayout, count: usize) -> Self {
        let entries = &layout.entries;
        let count = count.clamp(1, entries.len().max(1));
        if entries.is_empty() {
            return Self(vec![ParamGroup {
                index: 0,
                range: 0..layout.total,
                first: String::new(),
                last: String::new(),
            }]);
        }
        // The smallest largest-group size that `count` greedy runs reach, by bisection.
        let runs_needed = |cap: usize| {
            let (mut runs, mut filled) = (1, 0);
            for e in entries {
                if filled > 0 && filled + e.len > cap {
                    runs += 1;
                    filled = 0;
                }
                filled += e.len;
            }
            runs
        };
        let (mut low, mut high) = (
            entries.iter().map(|e| e.len).max().unwrap_or(0),
            layout.total,
        );
        while low < high {
            let mid = low + (high - low) / 2;
            if runs_needed(mid) <= count {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        // Cut greedily at that size, but leave at least one tensor for each group still to come.
        let mut groups: Vec<ParamGroup> = Vec::with_capacity(count);
        let mut start = 0;
        let mut filled = 0;
        for (i, e) in entries.iter().enumerate() {
            let left = entries.len() - i;
            let groups_to_come = count - groups.len() - 1;
            if filled > 0 && (filled + e.len > low || left == groups_to_come) {
                groups.push(Self::group(layout, groups.len(), start, i));
                start = i;
                filled = 0;
            }
            filled += e.len;
        }
        groups.push(Self::group(layout, groups.len(), start, entries.len()));
        Self(groups)
    }

    fn group(layout: &ParamLayout, index: usize, first: usize, end: usize) -> ParamGroup {
        let (a, b) = (&layout.entries[first], &layout.entries[end - 1]);
        ParamGroup {
            index,
            range: a.offset..b.offset + b.len,
            first: a.name.clone(),
            last: b.name.clone(),
        }
    }

    pub fn groups(&self) -> &[ParamGroup] {
        &self.0
    }

    pub fn get(&self, index: usize) -> Option<&ParamGroup> {
        self.0.get(index)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the model is one group (every miner trains all of it).
    pub fn is_whole(&self) -> bool {
        self.0.len() == 1
    }

    /// The group `uid` trains in the window with `window_seed`, among those of at most `capacity`
    /// parameters (0: no limit). The groups that fit are rotated by a value drawn from the window
    /// seed and uid `u` takes position `u` of the rotation, so consecutive uids spread over the
    /// groups, every group changes hands from window to window, and anyone can derive any miner's
    /// group from its uid and declared capacity alone.
    pub fn assigned(
        &self,
        window_seed: u64,
        uid: u16,
        capacity: u64,
    ) -> Result<&ParamGroup, NoGroupFits> {
        let fits: Vec<&ParamGroup> = self
            .0
            .iter()
            .filter(|g| capacity == 0 || g.len() as u64 <= capacity)
            .collect();
        if fits.is_empty() {
            return Err(NoGroupFits {
                capacity,
                smallest: self.0.iter().map(ParamGroup::len).min().unwrap_or(0),
            });
        }
        let rotation = derive_seed(&[window_seed, salt::GROUPS]);
        let position = (rotation.wrapping_add(uid as u64)) % fits.len() as u64;
        Ok(fits[position as usize])
    }
}

/// `values` inside `range`, zero outside it.
pub fn masked(values: &[f32], range: &Range<usize>) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    out[range.clone()].copy_from_slice(&values[range.clone()]);
    out
}

/// A vector of `total` zeros with `part` written at `range`.
pub fn scattered(part: &[f32], total: usize, range: &Range<usize>) -> Vec<f32> {
    assert_eq!(
        part.len(),
        range.len(),
        "part of another length than its range"
    );
    let mut out = vec![0.0; total];
    out[range.clone()].copy_from_slice(part);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParamEntry;

    fn layout(lens: &[usize]) -> ParamLayout {
        let mut entries = Vec::new();
        let mut offset = 0;
        for (i, &len) in lens.iter().enumerate() {
            entries.push(ParamEntry {
                name: format!("t{i}"),
                owner: String::new(),
                shape: vec![len],
                offset,
                len,
            });
            offset += len;
        }
        ParamLayout {
            entries,
            total: offset,
        }
    }

    fn sizes(groups: &ParamGroups) -> Vec<usize> {
        groups.groups().iter().map(ParamGroup::len).collect()
    }

    #[test]
    fn groups_cover_the_model_in_order_and_balance_it() {
        let l = layout(&[10, 10, 10, 10, 40, 5, 5, 10]);
        let g = ParamGroups::balanced(&l, 3);
        assert_eq!(sizes(&g), vec![40, 40, 20]);
        let mut end = 0;
        for (i, group) in g.groups().iter().enumerate() {
            assert_eq!(group.index, i);
            assert_eq!(group.range.start, end);
            end = group.range.end;
        }
        assert_eq!(end, l.total);
        assert_eq!(sizes(&ParamGroups::balanced(&l, 0)), vec![100]);
        assert_eq!(sizes(&ParamGroups::balanced(&l, 1)), vec![100]);
        // Never an empty group: more groups than tensors gives one tensor each.
        assert_eq!(sizes(&ParamGroups::balanced(&l, 20)).len(), 8);
        // Many small tensors after a large one still give the count asked for.
        let skewed = layout(&[100, 1, 1, 1]);
        assert_eq!(
            sizes(&ParamGroups::balanced(&skewed, 4)),
            vec![100, 1, 1, 1]
        );
        assert_eq!(sizes(&ParamGroups::balanced(&skewed, 2)), vec![100, 3]);
    }

    #[test]
    fn assignment_respects_capacity_spreads_over_groups_and_rotates() {
        let l = layout(&[10, 10, 10, 10, 40, 5, 5, 10]);
        let g = ParamGroups::balanced(&l, 3);
        for seed in 0..50u64 {
            for uid in 0..20u16 {
                for capacity in [20u64, 30, 40, 0] {
                    let group = g.assigned(seed, uid, capacity).unwrap();
                    assert!(capacity == 0 || group.len() as u64 <= capacity);
                }
            }
            // Three consecutive uids without a limit train three different groups.
            let seen: std::collections::HashSet<usize> = (0..3)
                .map(|uid| g.assigned(seed, uid, 0).unwrap().index)
                .collect();
            assert_eq!(seen.len(), 3);
        }
        let over_windows: std::collections::HashSet<usize> = (0..20u64)
            .map(|seed| g.assigned(seed, 7, 0).unwrap().index)
            .collect();
        assert_eq!(
            over_windows.len(),
            3,
            "a miner's group changes over windows"
        );
        assert_eq!(
            g.assigned(1, 0, 19),
            Err(NoGroupFits {
                capacity: 19,
                smallest: 20
            })
        );
    }

    #[test]
    fn masks_and_scatters() {
        assert_eq!(
            masked(&[1.0, 2.0, 3.0, 4.0], &(1..3)),
            vec![0.0, 2.0, 3.0, 0.0]
        );
        assert_eq!(scattered(&[5.0, 6.0], 4, &(2..4)), vec![0.0, 0.0, 5.0, 6.0]);
    }
}
