//! Yuma consensus, one epoch, as subtensor runs it (original Yuma, Yuma3, liquid alpha), in the
//! chain's own fixed-point types and order of operations (`fixed_math`), so that outputs equal the
//! chain's to the unit. Step numbers refer to the epoch walk-through in REFERENCE.md.
//!
//! One file on purpose: the steps read in order against REFERENCE.md and subtensor's `run_epoch.rs`,
//! which is how a reader checks the port.
//! `epoch_over` is one function for the same reason: the epoch's steps, in the chain's order.

use crate::fixed_math::{self as fm, Fixed, SparseMatrix};
use serde::{Deserialize, Serialize};
use substrate_fixed::types::{I64F64, I96F32};

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
    /// Under commit-reveal: per uid, the block of its earliest commit that has not expired
    /// (u64::MAX for none); weights toward a uid registered after that commit are dropped.
    pub earliest_commit: Option<&'a [u64]>,
}

impl EpochInput<'_> {
    /// The number of uids, after checking every vector has one entry per uid.
    fn uids(&self) -> usize {
        let n = self.stake.len();
        assert!(
            self.weights.len() == n
                && self.last_update.len() == n
                && self.block_at_registration.len() == n
                && n <= u16::MAX as usize,
            "epoch input vectors must all have one entry per uid (at most 65535 uids)"
        );
        n
    }
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
    fm::proportion_to_u16(Fixed::saturating_from_num(x))
}

/// How set_weights stores a row: scaled so the largest value is 65535, rounding to nearest, in
/// subtensor's fixed point.
pub fn max_upscale_to_u16(values: &[u16]) -> Vec<u16> {
    fm::u16_max_upscale_to_u16(values)
}

/// One epoch. `state` holds the previous epoch's permits and bonds (shorter vectors are padded, as
/// when the subnet grew).
pub fn epoch(params: &YumaParams, state: &YumaState, input: &EpochInput<'_>) -> EpochOutput {
    epoch_over(params, state, input, Rows::ThatCanCarryWeight)
}

/// Which rows of the weight and bond matrices the steps that densify rows (bond weights, the bonds
/// EMA, liquid alphas) compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// Every uid, as the chain does: the reference.
    All,
    /// Only rows holding a weight or a bond, and liquid alphas only where the EMA reads them: every
    /// other row stays empty through those steps, so the result is the same.
    ThatCanCarryWeight,
}

fn sparse_u16(row: &[u16]) -> Vec<(u16, Fixed)> {
    row.iter()
        .enumerate()
        .filter(|(_, b)| **b > 0)
        .map(|(j, &b)| (j as u16, Fixed::saturating_from_num(b)))
        .collect()
}

/// The rows `rows` asks for: all of them, or those with an entry in `a` or `b`.
fn rows_of(rows: Rows, a: &[Vec<(u16, Fixed)>], b: &[Vec<(u16, Fixed)>]) -> Vec<usize> {
    match rows {
        Rows::All => (0..a.len()).collect(),
        Rows::ThatCanCarryWeight => (0..a.len())
            .filter(|&i| !a[i].is_empty() || b.get(i).is_some_and(|r| !r.is_empty()))
            .collect(),
    }
}

/// Step 1: a uid is active when it updated within the activity cutoff.
fn activity(params: &YumaParams, input: &EpochInput<'_>) -> Vec<bool> {
    input
        .last_update
        .iter()
        .map(|&u| u.saturating_add(params.activity_cutoff) >= input.block)
        .collect()
}

/// Step 2: stake below the threshold counts as zero; normalized in I64F64, then I32F32.
fn normalized_stake(params: &YumaParams, stake: &[u64]) -> Vec<Fixed> {
    let mut filtered: Vec<I64F64> = stake
        .iter()
        .map(|&s| {
            let s = I64F64::saturating_from_num(s);
            if s.saturating_to_num::<u64>() < params.stake_threshold {
                I64F64::from_num(0)
            } else {
                s
            }
        })
        .collect();
    fm::inplace_normalize_64(&mut filtered);
    filtered
        .into_iter()
        .map(Fixed::saturating_from_num)
        .collect()
}

/// Step 5: the weight rows of permitted validators, with no diagonal, none set before their target
/// registered (or committed before it, under commit-reveal), each row normalized.
fn masked_weights(input: &EpochInput<'_>, forbids: &[bool]) -> SparseMatrix {
    let n = input.stake.len();
    let raw: SparseMatrix = input
        .weights
        .iter()
        .map(|row| {
            row.iter()
                .filter(|(j, _)| (*j as usize) < n)
                .map(|&(j, w)| (j, Fixed::saturating_from_num(w)))
                .collect()
        })
        .collect();
    let mut weights = fm::mask_rows_sparse(forbids, &raw);
    weights = fm::mask_diag_sparse(&weights);
    weights = fm::vec_mask_sparse_matrix(
        &weights,
        input.last_update,
        input.block_at_registration,
        |updated, registered| updated <= registered,
    );
    if let Some(commit_blocks) = input.earliest_commit {
        weights = fm::vec_mask_sparse_matrix(
            &weights,
            commit_blocks,
            input.block_at_registration,
            |committed, registered| committed < registered,
        );
    }
    fm::inplace_row_normalize_sparse(&mut weights);
    weights
}

/// The bonds the chain stored, as proportions of u16, within the uids that exist.
fn stored_bonds(state: &YumaState, n: usize) -> SparseMatrix {
    (0..n)
        .map(|i| state.bonds.get(i).map_or_else(Vec::new, |r| sparse_u16(r)))
        .map(|mut row| {
            row.retain(|(j, _)| (*j as usize) < n);
            row
        })
        .collect()
}

/// What the bond update reads: this epoch's bond weights and the stored bonds, with what
/// dividends are paid from.
struct BondInputs<'a> {
    weights: &'a SparseMatrix,
    stored: SparseMatrix,
    /// Bonds toward targets registered after this block belong to a previous occupant.
    last_tempo: u64,
    registered: &'a [u64],
    consensus: &'a [Fixed],
    incentive: &'a [Fixed],
    active_stake: &'a [Fixed],
    alpha: Fixed,
    columns: u16,
    rows: Rows,
}

/// Step 12 (Yuma 3): bonds kept as proportions, each an EMA of its bond weight (with liquid alpha
/// where enabled); dividends from the column-normalized bonds. Returns (bonds, dividends).
fn yuma3_bonds(params: &YumaParams, b: BondInputs<'_>) -> (SparseMatrix, Vec<Fixed>) {
    let mut bonds = b.stored;
    for row in bonds.iter_mut() {
        for (_, b) in row.iter_mut() {
            *b = fm::div32(*b, Fixed::saturating_from_num(u16::MAX));
        }
    }
    let bonds = fm::scalar_vec_mask_sparse_matrix(
        &bonds,
        b.last_tempo,
        b.registered,
        |last, registered| last <= registered,
    );
    let liquid = params.liquid_alpha_enabled
        && !b.consensus.is_empty()
        && b.consensus.iter().any(|&c| c != fm::zero());
    let ema = if liquid {
        let curve = (
            fm::u16_proportion(params.alpha_low),
            fm::u16_proportion(params.alpha_high),
            Fixed::saturating_from_num(params.alpha_sigmoid_steepness),
        );
        let alphas = match b.rows {
            Rows::All => fm::liquid_alpha_values_sparse(b.weights, &bonds, b.consensus, curve),
            Rows::ThatCanCarryWeight => {
                fm::liquid_alpha_values_at_entries(b.weights, &bonds, b.consensus, curve)
            }
        };
        fm::mat_ema_alpha_sparse(b.weights, &bonds, &alphas)
    } else {
        fm::mat_ema_sparse(
            b.weights,
            &bonds,
            b.alpha,
            &rows_of(b.rows, b.weights, &bonds),
        )
    };
    let mut normalized = ema.clone();
    fm::inplace_col_normalize_sparse(&mut normalized, b.columns);
    let per_validator = fm::row_sum_sparse(&fm::mat_vec_mul_sparse(&normalized, b.incentive));
    let mut dividends = fm::vec_mul(&per_validator, b.active_stake);
    fm::inplace_normalize(&mut dividends);
    (ema, dividends)
}

/// Step 11 (classic Yuma): the column-normalized EMA of stake-scaled bond weights; dividends from
/// it before it is max-upscaled for storage. Returns (bonds, dividends).
fn classic_bonds(b: BondInputs<'_>) -> (SparseMatrix, Vec<Fixed>) {
    let mut bonds = fm::scalar_vec_mask_sparse_matrix(
        &b.stored,
        b.last_tempo,
        b.registered,
        |last, registered| last <= registered,
    );
    fm::inplace_col_normalize_sparse(&mut bonds, b.columns);
    let mut delta = fm::row_hadamard_sparse(b.weights, b.active_stake);
    fm::inplace_col_normalize_sparse(&mut delta, b.columns);
    let mut ema = fm::mat_ema_sparse(&delta, &bonds, b.alpha, &rows_of(b.rows, &delta, &bonds));
    fm::inplace_col_normalize_sparse(&mut ema, b.columns);
    let mut dividends = fm::matmul_transpose_sparse(&ema, b.incentive);
    fm::inplace_normalize(&mut dividends);
    fm::inplace_col_max_upscale_sparse(&mut ema, b.columns);
    (ema, dividends)
}

/// Step 13: each uid's share of incentive plus dividends (miners are paid incentive and
/// validators dividends, each over the joint sum); when that sum is zero (no weights, outdated
/// weights, self-weights only) it goes by active stake, or by stake when no stake is active.
/// What the chain stores as Emission: the share in I96F32 times the rao, truncated.
fn emission_shares(
    incentive: &[Fixed],
    dividends: &[Fixed],
    active_stake: &[Fixed],
    stake: &[Fixed],
    emission: u64,
) -> Vec<u64> {
    let mut shares: Vec<Fixed> = incentive
        .iter()
        .zip(dividends)
        .map(|(i, d)| i.saturating_add(*d))
        .collect();
    if fm::is_zero(&shares) {
        shares = if fm::is_zero(active_stake) {
            stake.to_vec()
        } else {
            active_stake.to_vec()
        };
    } else {
        fm::inplace_normalize(&mut shares);
    }
    let rao = I96F32::saturating_from_num(emission);
    shares
        .iter()
        .map(|&share| {
            I96F32::saturating_from_num(share)
                .saturating_mul(rao)
                .saturating_to_num::<u64>()
        })
        .collect()
}

/// The bonds the chain keeps as u16, for uids that hold a permit from now on; the others' rows are
/// cleared.
fn bonds_to_store(ema_bonds: &SparseMatrix, new_permit: &[bool], n: usize) -> Vec<Vec<u16>> {
    let mut bonds = vec![vec![0u16; n]; n];
    for (i, row) in ema_bonds.iter().enumerate() {
        if new_permit[i] {
            for &(j, b) in row {
                bonds[i][j as usize] = fm::proportion_to_u16(b);
            }
        }
    }
    bonds
}

/// One epoch as subtensor's `epoch` computes it (sparse, in I32F32 with I64F64 stake and I96F32
/// emission, in the same order of operations), for a subnet with no owner hotkey among its uids.
/// Step numbers refer to REFERENCE.md.
pub fn epoch_over(
    params: &YumaParams,
    state: &YumaState,
    input: &EpochInput<'_>,
    rows: Rows,
) -> EpochOutput {
    let n = input.uids();
    let columns = n as u16;

    // Step 1: activity.
    let active = activity(params, input);

    // Step 2: stake below the threshold counts as zero.
    let stake = normalized_stake(params, input.stake);

    // Step 3: this epoch uses the previous epoch's permits; the new ones are the top-k non-zero
    // stakes (ties to the higher uid).
    let forbids: Vec<bool> = (0..n)
        .map(|i| !state.validator_permit.get(i).copied().unwrap_or(false))
        .collect();
    let new_permit = fm::is_topk_nonzero(&stake, params.max_allowed_validators as usize);

    // Step 4: active stake.
    let active_stake = active_stake(&stake, &active, &forbids);

    // Step 5: weights of permitted rows, no diagonal, none set before the target registered (or
    // committed before it, under commit-reveal), rows normalized.
    let weights = masked_weights(input, &forbids);

    // Steps 6-9: consensus, clipping, validator trust, rank and incentive.
    let Consensus {
        consensus,
        clipped,
        validator_trust,
        incentive,
    } = consensus(params, &active_stake, &weights, columns);

    // Step 10: bond weights, the weights pulled toward their clipped form by the bonds penalty.
    let penalty = fm::u16_proportion(params.bonds_penalty);
    let row_set = rows_of(rows, &weights, &clipped);
    let weights_for_bonds = fm::interpolate_sparse(&weights, &clipped, columns, penalty, &row_set);

    // Old bonds toward targets registered since the last epoch belong to the uid's previous
    // occupant and are dropped.
    let bonds = BondInputs {
        weights: &weights_for_bonds,
        stored: stored_bonds(state, n),
        last_tempo: last_tempo(params, state, input.block),
        registered: input.block_at_registration,
        consensus: &consensus,
        incentive: &incentive,
        active_stake: &active_stake,
        alpha: bonds_alpha(params),
        columns,
        rows,
    };
    let (ema_bonds, mut dividends) = if params.yuma3_enabled {
        yuma3_bonds(params, bonds)
    } else {
        classic_bonds(bonds)
    };
    if dividends.len() < n {
        dividends.resize(n, fm::zero());
    }

    // Step 13: each uid's share of incentive plus dividends, paid out of the epoch's emission.
    let emission = emission_shares(
        &incentive,
        &dividends,
        &active_stake,
        &stake,
        input.emission,
    );
    let bonds = bonds_to_store(&ema_bonds, &new_permit, n);
    EpochOutput {
        active,
        consensus: to_u16(&consensus),
        incentive: to_u16(&incentive),
        dividends: to_u16(&dividends),
        validator_trust: to_u16(&validator_trust),
        validator_permit: new_permit,
        bonds,
        emission,
    }
}

/// What the stake-weighted median makes of the weights (steps 6-9).
struct Consensus {
    consensus: Vec<Fixed>,
    clipped: fm::SparseMatrix,
    validator_trust: Vec<Fixed>,
    incentive: Vec<Fixed>,
}

fn consensus(
    params: &YumaParams,
    active_stake: &[Fixed],
    weights: &[Vec<(u16, Fixed)>],
    columns: u16,
) -> Consensus {
    let kappa = fm::u16_proportion(params.kappa);
    let consensus = fm::weighted_median_col_sparse(active_stake, weights, columns, kappa);
    let clipped = fm::col_clip_sparse(weights, &consensus);
    let validator_trust = fm::row_sum_sparse(&clipped);
    let mut incentive = fm::matmul_sparse(&clipped, active_stake, columns);
    fm::inplace_normalize(&mut incentive);
    Consensus {
        consensus,
        clipped,
        validator_trust,
        incentive,
    }
}

/// Stake of the uids that are active and held a permit, normalized to sum to one.
fn active_stake(stake: &[Fixed], active: &[bool], forbids: &[bool]) -> Vec<Fixed> {
    let inactive: Vec<bool> = active.iter().map(|a| !a).collect();
    let mut active_stake = stake.to_vec();
    fm::inplace_mask_vector(&inactive, &mut active_stake);
    fm::inplace_mask_vector(forbids, &mut active_stake);
    fm::inplace_normalize(&mut active_stake);
    active_stake
}

/// The bonds EMA's weight on the new bonds: one minus the moving average (parts per million).
fn bonds_alpha(params: &YumaParams) -> Fixed {
    let bma = I64F64::saturating_from_num(params.bonds_moving_average)
        .checked_div(I64F64::saturating_from_num(1_000_000))
        .unwrap_or_default();
    fm::one().saturating_sub(Fixed::saturating_from_num(bma))
}

/// The first block of the tempo this epoch closes.
fn last_tempo(params: &YumaParams, state: &YumaState, block: u64) -> u64 {
    match state.last_epoch_block.unwrap_or(0) {
        0 => block.saturating_sub(params.tempo),
        last => last.saturating_add(1),
    }
}

fn to_u16(v: &[Fixed]) -> Vec<u16> {
    v.iter().map(|&x| fm::proportion_to_u16(x)).collect()
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
            earliest_commit: None,
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

mod null;
pub use null::{null_epoch, validator_stake as null_validator_stake, winner as null_winner};

#[cfg(test)]
mod tests;
