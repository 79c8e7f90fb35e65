//! Yuma consensus, one epoch, as subtensor runs it (original Yuma). Plain f64 over ndarray; the chain
//! uses fixed point, and results agree to well below one u16 step before the final conversion.
//! Step numbers refer to the epoch walk-through in REFERENCE.md.

use ndarray::{Array1, Array2, Axis};
use serde::{Deserialize, Serialize};

/// Hyperparameters in the chain's own integer units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct YumaParams {
    pub tempo: u64,
    /// Consensus majority, u16 over 65535.
    pub kappa: u16,
    /// Bonds EMA keep-fraction per million: a = 1 - bonds_moving_average / 1e6.
    pub bonds_moving_average: u64,
    /// u16 over 65535: how far bond weights move from the raw weight toward the clipped one.
    pub bonds_penalty: u16,
    pub max_allowed_validators: u16,
    pub activity_cutoff: u64,
    /// Stake below this (rao) counts as zero: no say in consensus and no validator permit.
    pub stake_threshold: u64,
    /// Yuma3: bonds are per-entry EMAs of bond weights, kept as proportions.
    pub yuma3_enabled: bool,
    /// Yuma3 with liquid alpha: the EMA rate of each bond depends on how far the weight is from
    /// consensus (u16 over 65535 bounds, steepness over 100).
    pub liquid_alpha_enabled: bool,
    pub alpha_low: u16,
    pub alpha_high: u16,
    pub alpha_sigmoid_steepness: i64,
}

impl Default for YumaParams {
    fn default() -> Self {
        Self {
            tempo: 360,
            kappa: 32767,
            bonds_moving_average: 900_000,
            bonds_penalty: 65535,
            max_allowed_validators: 128,
            activity_cutoff: 5000,
            stake_threshold: 0,
            yuma3_enabled: false,
            liquid_alpha_enabled: false,
            alpha_low: 45875,
            alpha_high: 58982,
            alpha_sigmoid_steepness: 1000,
        }
    }
}

/// What carries from one epoch to the next.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct YumaState {
    /// Dense n x n bonds as stored: column max-upscaled u16 (original Yuma) or proportions as u16
    /// (Yuma3).
    pub bonds: Vec<Vec<u16>>,
    pub validator_permit: Vec<bool>,
    pub last_epoch_block: Option<u64>,
}

pub struct EpochInput<'a> {
    pub block: u64,
    pub emission: u64,
    pub stake: &'a [u64],
    /// Sparse rows as stored on chain: (destination uid, u16 weight).
    pub weights: &'a [Vec<(u16, u16)>],
    pub last_update: &'a [u64],
    pub block_at_registration: &'a [u64],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochOutput {
    #[serde(skip)]
    pub active: Vec<bool>,
    pub consensus: Vec<u16>,
    pub incentive: Vec<u16>,
    pub dividends: Vec<u16>,
    pub validator_trust: Vec<u16>,
    pub validator_permit: Vec<bool>,
    pub bonds: Vec<Vec<u16>>,
    pub emission: Vec<u64>,
}

/// Stored u16 form of a proportion: floor(x * 65535), saturating.
pub fn proportion_to_u16(x: f64) -> u16 {
    (x * 65535.0).clamp(0.0, 65535.0) as u16
}

/// Scales so the largest entry is 65535, rounding to nearest (subtensor's max-upscale).
pub fn max_upscale_to_u16(x: &[f64]) -> Vec<u16> {
    let max = x.iter().cloned().fold(0.0, f64::max);
    if max <= 0.0 {
        return vec![0; x.len()];
    }
    x.iter()
        .map(|&v| (v / max * 65535.0).round().clamp(0.0, 65535.0) as u16)
        .collect()
}

fn normalize(v: &mut Array1<f64>) {
    let sum = v.sum();
    if sum > 0.0 {
        *v /= sum;
    }
}

fn normalize_rows(m: &mut Array2<f64>) {
    for mut row in m.rows_mut() {
        let sum = row.sum();
        if sum > 0.0 {
            row /= sum;
        }
    }
}

fn normalize_columns(m: &mut Array2<f64>) {
    for mut col in m.columns_mut() {
        let sum = col.sum();
        if sum > 0.0 {
            col /= sum;
        }
    }
}

/// Stake-weighted median with majority `kappa` (step 6): the largest w such that the stake of
/// entries >= w is at least kappa. Only entries with positive stake take part; stake is renormalized
/// over them.
pub fn weighted_median(stake: &[f64], scores: &[f64], kappa: f64) -> f64 {
    let mut pairs: Vec<(f64, f64)> = stake
        .iter()
        .zip(scores)
        .filter(|(s, _)| **s > 0.0)
        .map(|(&s, &w)| (s, w))
        .collect();
    let total: f64 = pairs.iter().map(|p| p.0).sum();
    if total <= 0.0 {
        return 0.0;
    }
    pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut cumulative = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        let value = pairs[i].1;
        while i < pairs.len() && pairs[i].1 == value {
            cumulative += pairs[i].0 / total;
            i += 1;
        }
        // Tolerance for the f64 sum of stakes that are exactly kappa in fixed point.
        if cumulative >= kappa - 1e-12 {
            return value;
        }
    }
    0.0
}

/// Column-wise weighted median (step 6) over a dense matrix.
pub fn weighted_median_columns(stake: &[f64], weights: &Array2<f64>, kappa: f64) -> Vec<f64> {
    weights
        .columns()
        .into_iter()
        .map(|col| weighted_median(stake, &col.to_vec(), kappa))
        .collect()
}

/// Clips each column to its consensus (step 7).
pub fn clip_columns(weights: &Array2<f64>, consensus: &[f64]) -> Array2<f64> {
    let mut clipped = weights.clone();
    for (mut col, &c) in clipped.columns_mut().into_iter().zip(consensus) {
        col.mapv_inplace(|w| w.min(c));
    }
    clipped
}

/// One epoch. `state` holds the previous epoch's permits and bonds (shorter vectors are padded, as
/// when the subnet grew).
pub fn epoch(params: &YumaParams, state: &YumaState, input: &EpochInput<'_>) -> EpochOutput {
    epoch_over(params, state, input, Rows::ThatCanCarryWeight)
}

/// Which rows of the weight and bond matrices an epoch computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// Every uid, as the chain lays the matrices out: the reference.
    All,
    /// Only uids with a validator permit or old bonds: every other row is zero throughout the epoch
    /// (no permit, no weights; no permit last epoch, no bonds), so the result is the same.
    ThatCanCarryWeight,
}

/// One epoch computed over the chosen rows; `epoch` uses the compact form.
pub fn epoch_over(
    params: &YumaParams,
    state: &YumaState,
    input: &EpochInput<'_>,
    rows: Rows,
) -> EpochOutput {
    let n = input.stake.len();
    assert!(
        input.weights.len() == n
            && input.last_update.len() == n
            && input.block_at_registration.len() == n,
        "epoch input vectors must all have one entry per uid"
    );
    let kappa = params.kappa as f64 / 65535.0;

    // Step 1: activity.
    let active: Vec<bool> = (0..n)
        .map(|i| input.last_update[i] + params.activity_cutoff >= input.block)
        .collect();

    // Step 2: stake, zeroed below the stake threshold, normalized.
    let raw_stake: Vec<u64> = input
        .stake
        .iter()
        .map(|&s| if s >= params.stake_threshold { s } else { 0 })
        .collect();
    let mut stake = Array1::from_iter(raw_stake.iter().map(|&s| s as f64));
    normalize(&mut stake);

    // Step 3: new permits are the top-k nonzero stakes (ties to the higher uid); this epoch uses the
    // previous epoch's permits.
    let mut by_stake: Vec<usize> = (0..n).filter(|&i| raw_stake[i] > 0).collect();
    by_stake.sort_by(|&a, &b| raw_stake[b].cmp(&raw_stake[a]).then(b.cmp(&a)));
    let mut new_permit = vec![false; n];
    for &i in by_stake.iter().take(params.max_allowed_validators as usize) {
        new_permit[i] = true;
    }
    let permit: Vec<bool> = (0..n)
        .map(|i| state.validator_permit.get(i).copied().unwrap_or(false))
        .collect();

    // Step 4: active stake.
    let mut active_stake = Array1::from_iter((0..n).map(|i| {
        if active[i] && permit[i] {
            stake[i]
        } else {
            0.0
        }
    }));
    normalize(&mut active_stake);

    // The rows computed: `rows[r]` is the uid of matrix row r.
    let rows: Vec<usize> = match rows {
        Rows::All => (0..n).collect(),
        Rows::ThatCanCarryWeight => (0..n)
            .filter(|&i| {
                permit[i]
                    || state
                        .bonds
                        .get(i)
                        .is_some_and(|row| row.iter().any(|&b| b > 0))
            })
            .collect(),
    };
    let m = rows.len();
    let row_stake = Array1::from_iter(rows.iter().map(|&i| active_stake[i]));

    // Step 5: weights; non-permitted rows, the diagonal and weights set before the target registered
    // are removed; rows normalized.
    // Entries are tracked as present (explicit zeros included), which sparse Yuma3 bonds depend on.
    let mut w = Array2::<f64>::zeros((m, n));
    let mut present = Array2::<bool>::from_elem((m, n), false);
    for (r, &i) in rows.iter().enumerate() {
        if !permit[i] {
            continue;
        }
        for &(j, v) in &input.weights[i] {
            let j = j as usize;
            if j < n && j != i && input.last_update[i] > input.block_at_registration[j] {
                w[[r, j]] = v as f64 / 65535.0;
                present[[r, j]] = true;
            }
        }
    }
    normalize_rows(&mut w);

    // Steps 6-9: consensus, clipping, validator trust, rank and incentive.
    let consensus = weighted_median_columns(row_stake.as_slice().expect("contiguous"), &w, kappa);
    let clipped = clip_columns(&w, &consensus);
    let mut validator_trust = Array1::<f64>::zeros(n);
    for (r, t) in clipped.sum_axis(Axis(1)).into_iter().enumerate() {
        validator_trust[rows[r]] = t;
    }
    let mut incentive = clipped.t().dot(&row_stake);
    normalize(&mut incentive);

    // Step 10: bond weights.
    let beta = params.bonds_penalty as f64 / 65535.0;
    let bond_weights = &w + &((&clipped - &w) * beta);

    // Old bonds toward targets registered since the last epoch belong to the uid's previous
    // occupant and are dropped.
    let since = state
        .last_epoch_block
        .map(|b| b + 1)
        .unwrap_or(input.block.saturating_sub(params.tempo));
    let mut old = Array2::<f64>::zeros((m, n));
    for (r, &i) in rows.iter().enumerate() {
        let Some(row) = state.bonds.get(i) else {
            continue;
        };
        for (j, &b) in row.iter().enumerate().take(n) {
            if input.block_at_registration[j] < since {
                old[[r, j]] = b as f64 / 65535.0;
            }
        }
    }
    let (bonds, row_dividends) = if params.yuma3_enabled {
        yuma3_bonds(
            params,
            &old,
            &w,
            &bond_weights,
            &present,
            &consensus,
            &row_stake,
            &incentive,
        )
    } else {
        // Step 11 (original): column-normalized EMA of stake-scaled bond weights.
        normalize_columns(&mut old);
        let mut delta = &bond_weights * &row_stake.clone().insert_axis(Axis(1));
        normalize_columns(&mut delta);
        let a = 1.0 - params.bonds_moving_average as f64 / 1_000_000.0;
        let mut bonds = &delta * a + &old * (1.0 - a);
        normalize_columns(&mut bonds);
        let dividends = bonds.dot(&incentive);
        (bonds, dividends)
    };
    let mut dividends = Array1::<f64>::zeros(n);
    for (r, d) in row_dividends.into_iter().enumerate() {
        dividends[rows[r]] = d;
    }
    normalize(&mut dividends);

    // Step 13: emission split between incentive and dividends; both zero falls back to active stake.
    let (sum_i, sum_d) = (incentive.sum(), dividends.sum());
    let shares: Vec<f64> = if sum_i + sum_d > 0.0 {
        (0..n)
            .map(|i| (incentive[i] + dividends[i]) / (sum_i + sum_d))
            .collect()
    } else {
        active_stake.to_vec()
    };
    let emission = shares
        .iter()
        .map(|s| (s * input.emission as f64).floor() as u64)
        .collect();

    // Original bonds are stored column max-upscaled, Yuma3 bonds as proportions; rows of uids
    // without a new permit are cleared.
    let mut stored = vec![vec![0u16; n]; n];
    for (j, col) in bonds.columns().into_iter().enumerate() {
        let column = if params.yuma3_enabled {
            col.iter().map(|&b| proportion_to_u16(b)).collect()
        } else {
            max_upscale_to_u16(&col.to_vec())
        };
        for (r, v) in column.into_iter().enumerate() {
            let i = rows[r];
            stored[i][j] = if new_permit[i] { v } else { 0 };
        }
    }

    let to_u16 = |v: &[f64]| {
        v.iter()
            .map(|&x| proportion_to_u16(x))
            .collect::<Vec<u16>>()
    };
    EpochOutput {
        active,
        consensus: to_u16(&consensus),
        incentive: to_u16(incentive.as_slice().expect("contiguous")),
        dividends: to_u16(dividends.as_slice().expect("contiguous")),
        validator_trust: to_u16(validator_trust.as_slice().expect("contiguous")),
        validator_permit: new_permit,
        bonds: stored,
        emission,
    }
}

/// Step 12 (Yuma3): each present entry's bond moves toward its bond weight at rate alpha, capped at 1;
/// entries absent from the weight row lose their bond. Dividends are proportional to active stake
/// times column-normalized bonds times incentive.
#[allow(clippy::too_many_arguments)]
fn yuma3_bonds(
    params: &YumaParams,
    old: &Array2<f64>,
    weights: &Array2<f64>,
    bond_weights: &Array2<f64>,
    present: &Array2<bool>,
    consensus: &[f64],
    active_stake: &Array1<f64>,
    incentive: &Array1<f64>,
) -> (Array2<f64>, Array1<f64>) {
    let (m, n) = weights.dim();
    let fixed_alpha = 1.0 - params.bonds_moving_average as f64 / 1_000_000.0;
    let (low, high) = (
        params.alpha_low as f64 / 65535.0,
        params.alpha_high as f64 / 65535.0,
    );
    let steepness = params.alpha_sigmoid_steepness as f64 / 100.0;
    let mut bonds = Array2::<f64>::zeros((m, n));
    for i in 0..m {
        for j in 0..n {
            if !present[[i, j]] {
                continue;
            }
            let (w, b) = (weights[[i, j]], old[[i, j]]);
            let alpha = if params.liquid_alpha_enabled {
                let diff = if w >= b {
                    (w - consensus[j]).clamp(0.0, 1.0)
                } else {
                    (b - w).clamp(0.0, 1.0)
                };
                low + (high - low) / (1.0 + (-steepness * (diff - 0.5)).exp())
            } else {
                fixed_alpha
            };
            bonds[[i, j]] = ((1.0 - alpha) * b + alpha * bond_weights[[i, j]].max(0.0)).min(1.0);
        }
    }
    let mut normalized = bonds.clone();
    normalize_columns(&mut normalized);
    let dividends =
        Array1::from_iter((0..m).map(|i| active_stake[i] * normalized.row(i).dot(incentive)));
    (bonds, dividends)
}

/// A synthetic subnet for benchmarks and equivalence tests: `validators` staked uids (the rest hold
/// no stake) that each weigh `per_row` random miners, drawn from a seeded generator.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub stake: Vec<u64>,
    pub weights: Vec<Vec<(u16, u16)>>,
    pub last_update: Vec<u64>,
    pub block_at_registration: Vec<u64>,
}

impl Scenario {
    pub fn random(n: usize, validators: usize, per_row: usize, seed: u64) -> Self {
        assert!(
            validators <= n && n <= 1 << 16,
            "at most 65536 uids, validators among them"
        );
        // splitmix64: small, seedable and good enough to spread weights.
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let stake = (0..n)
            .map(|i| {
                if i < validators {
                    1_000 + next() % 1_000_000
                } else {
                    0
                }
            })
            .collect();
        let weights = (0..n)
            .map(|i| {
                if i >= validators {
                    return vec![];
                }
                let mut row: Vec<(u16, u16)> = (0..per_row)
                    .map(|_| ((next() % n as u64) as u16, (next() % 65536) as u16))
                    .collect();
                row.sort_by_key(|e| e.0);
                row.dedup_by_key(|e| e.0);
                row
            })
            .collect();
        let last_update = (0..n).map(|_| 1_000 + next() % 1_000).collect();
        let block_at_registration = (0..n).map(|_| next() % 1_500).collect();
        Self {
            stake,
            weights,
            last_update,
            block_at_registration,
        }
    }

    pub fn input(&self, block: u64, emission: u64) -> EpochInput<'_> {
        EpochInput {
            block,
            emission,
            stake: &self.stake,
            weights: &self.weights,
            last_update: &self.last_update,
            block_at_registration: &self.block_at_registration,
        }
    }
}

impl YumaState {
    /// The state after `output`, for the next epoch.
    pub fn advance(&mut self, block: u64, output: &EpochOutput) {
        self.bonds = output.bonds.clone();
        self.validator_permit = output.validator_permit.clone();
        self.last_epoch_block = Some(block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    // Public vectors from subtensor's math tests (REFERENCE.md).
    #[test]
    fn weighted_median_vectors() {
        assert_eq!(
            weighted_median(&[0.49, 0.01, 0.5], &[0.5, 0.7, 1.0], 0.51),
            0.7
        );
        assert_eq!(
            weighted_median(&[0.2; 5], &[0.8, 0.2, 1.0, 0.6, 0.4], 0.51),
            0.6
        );
        assert_eq!(weighted_median(&[0.51, 0.49], &[0.5, 1.0], 0.51), 0.5);
        assert_eq!(weighted_median(&[0.49, 0.51], &[0.5, 1.0], 0.51), 1.0);
    }

    #[test]
    fn column_median_vectors() {
        let stake = [0.0, 0.75, 0.25, 0.0];
        let w = array![
            [0.0, 0.1, 0.0],
            [0.0, 0.2, 0.4],
            [0.0, 0.3, 0.1],
            [0.0, 0.4, 0.5]
        ];
        assert_eq!(
            weighted_median_columns(&stake, &w, 0.24),
            vec![0.0, 0.3, 0.4]
        );
        assert_eq!(
            weighted_median_columns(&stake, &w, 0.26),
            vec![0.0, 0.2, 0.4]
        );
        assert_eq!(
            weighted_median_columns(&stake, &w, 0.76),
            vec![0.0, 0.2, 0.1]
        );
    }

    #[test]
    fn column_clip_vector() {
        let w = array![
            [0.0, 2.0, 3.0],
            [4.0, 5.0, 6.0],
            [7.0, 8.0, 9.0],
            [10.0, 11.0, 12.0]
        ];
        let clipped = clip_columns(&w, &[0.0, 5.0, 12.0]);
        assert_eq!(
            clipped,
            array![
                [0.0, 2.0, 3.0],
                [0.0, 5.0, 6.0],
                [0.0, 5.0, 9.0],
                [0.0, 5.0, 12.0]
            ]
        );
    }

    #[test]
    fn max_upscale_vector() {
        let x = [
            0.000001, 0.000006, 0.000007, 0.0001, 0.001, 0.01, 0.1, 0.2, 0.3, 0.4,
        ];
        assert_eq!(
            max_upscale_to_u16(&x),
            vec![0, 1, 1, 16, 164, 1638, 16384, 32768, 49151, 65535]
        );
    }

    /// Two validators (uids 0, 1) with permits from a previous epoch and two miners (2, 3). Both
    /// validators weight the miners 3:1, so consensus equals the weights, nothing is clipped, and the
    /// miners' incentive is 0.75 / 0.25; each validator's bonds are proportional to its stake, so its
    /// dividends are too; emission splits 50/50 between miners and validators.
    #[test]
    fn agreeing_validators_split_emission_by_the_book() {
        let params = YumaParams {
            tempo: 10,
            ..Default::default()
        };
        let state = YumaState {
            bonds: vec![],
            validator_permit: vec![true, true, false, false],
            last_epoch_block: Some(10),
        };
        let weights = vec![
            vec![(2, 65535), (3, 21845)],
            vec![(2, 65535), (3, 21845)],
            vec![],
            vec![],
        ];
        let out = epoch(
            &params,
            &state,
            &EpochInput {
                block: 20,
                emission: 1_000_000,
                stake: &[300, 100, 0, 0],
                weights: &weights,
                last_update: &[19, 19, 0, 0],
                block_at_registration: &[0, 0, 0, 0],
            },
        );
        assert_eq!(out.incentive[2], proportion_to_u16(0.75));
        assert_eq!(out.incentive[3], proportion_to_u16(0.25));
        assert_eq!(out.dividends[0], proportion_to_u16(0.75));
        assert_eq!(out.dividends[1], proportion_to_u16(0.25));
        assert_eq!(out.emission, vec![375_000, 125_000, 375_000, 125_000]);
        assert_eq!(out.validator_trust[0], 65535);
        assert_eq!(out.validator_permit, vec![true, true, false, false]);
    }

    /// A validator that disagrees with the stake majority is clipped to consensus: its trust falls and
    /// its dividends shrink below its stake share.
    #[test]
    fn a_dissenting_validator_is_clipped() {
        let params = YumaParams {
            tempo: 10,
            ..Default::default()
        };
        let state = YumaState {
            bonds: vec![],
            validator_permit: vec![true, true, false, false],
            last_epoch_block: Some(10),
        };
        let weights = vec![
            vec![(2, 65535), (3, 0)],
            vec![(2, 0), (3, 65535)],
            vec![],
            vec![],
        ];
        let out = epoch(
            &params,
            &state,
            &EpochInput {
                block: 20,
                emission: 1_000_000,
                stake: &[700, 300, 0, 0],
                weights: &weights,
                last_update: &[19, 19, 0, 0],
                block_at_registration: &[0, 0, 0, 0],
            },
        );
        assert_eq!(out.consensus[2], 65535);
        assert_eq!(out.consensus[3], 0);
        assert_eq!(out.validator_trust[1], 0);
        assert_eq!(out.incentive[3], 0);
        assert_eq!(out.emission[1], 0);
        assert_eq!(out.emission[3], 0);
        assert_eq!(out.emission[0] + out.emission[2], 1_000_000);
    }

    /// The compact epoch (rows of permitted uids only) equals the full-matrix reference, bit for bit,
    /// over several epochs of random subnets (so bonds and permits carry), in every Yuma variant;
    /// some permitted uids fall inactive and some targets register between epochs.
    #[test]
    fn compact_rows_match_the_full_matrix() {
        for (variant, (yuma3, liquid)) in [(false, false), (true, false), (true, true)]
            .into_iter()
            .enumerate()
        {
            let params = YumaParams {
                tempo: 100,
                max_allowed_validators: 12,
                yuma3_enabled: yuma3,
                liquid_alpha_enabled: liquid,
                ..Default::default()
            };
            let (mut compact, mut full) = (YumaState::default(), YumaState::default());
            for k in 0..4u64 {
                let scenario = Scenario::random(64, 20, 10, 7 * variant as u64 + k);
                let block = 2_000 + 100 * k;
                let input = scenario.input(block, 1_000_000_000);
                let a = epoch_over(&params, &compact, &input, Rows::ThatCanCarryWeight);
                let b = epoch_over(&params, &full, &input, Rows::All);
                assert_eq!(a, b, "variant {variant}, epoch {k}");
                // The first epoch has no permits yet, so nothing is emitted.
                assert_eq!(a.emission.iter().sum::<u64>() > 0, k > 0);
                compact.advance(block, &a);
                full.advance(block, &b);
            }
        }
    }

    /// Stake below the threshold counts as zero: such a uid gets no permit however few others
    /// compete for one.
    #[test]
    fn stake_below_the_threshold_earns_no_permit() {
        let params = YumaParams {
            tempo: 10,
            max_allowed_validators: 3,
            stake_threshold: 100,
            ..Default::default()
        };
        let weights = vec![vec![], vec![], vec![]];
        let out = epoch(
            &params,
            &YumaState::default(),
            &EpochInput {
                block: 10,
                emission: 1000,
                stake: &[500, 99, 0],
                weights: &weights,
                last_update: &[9, 9, 9],
                block_at_registration: &[0, 0, 0],
            },
        );
        assert_eq!(out.validator_permit, vec![true, false, false]);
    }

    /// With no permits yet (first epoch), nobody's weights count: both sums are zero and there is no
    /// active stake, so nothing is emitted, and the top-stake uids get permits for the next epoch.
    #[test]
    fn first_epoch_has_no_permits() {
        let params = YumaParams {
            tempo: 10,
            max_allowed_validators: 1,
            ..Default::default()
        };
        let weights = vec![vec![(1, 65535)], vec![]];
        let out = epoch(
            &params,
            &YumaState::default(),
            &EpochInput {
                block: 10,
                emission: 1000,
                stake: &[5, 5],
                weights: &weights,
                last_update: &[9, 0],
                block_at_registration: &[0, 0],
            },
        );
        assert_eq!(out.emission, vec![0, 0]);
        assert_eq!(
            out.validator_permit,
            vec![false, true],
            "ties go to the higher uid"
        );
    }
}
