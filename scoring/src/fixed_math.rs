//! The fixed-point arithmetic of subtensor's epoch (its `epoch/math.rs`), in substrate-fixed's
//! I32F32 and I64F64, with the same saturating operations in the same order, so that every result is
//! the chain's to the last bit. Division by zero gives zero, as subtensor's `safe_div` does.
//! Sparse matrices are rows of (column, value), columns ascending.
//!
//! One file on purpose: one function per function of subtensor's `epoch/math.rs`, in its order, so
//! the two can be read side by side.

use substrate_fixed::transcendental::exp;
use substrate_fixed::types::{I32F32, I64F64};

pub type Fixed = I32F32;
pub type SparseMatrix = Vec<Vec<(u16, Fixed)>>;

pub fn zero() -> Fixed {
    Fixed::from_num(0)
}

pub fn one() -> Fixed {
    Fixed::from_num(1)
}

pub fn div32(x: Fixed, y: Fixed) -> Fixed {
    x.checked_div(y).unwrap_or_default()
}

pub fn div64(x: I64F64, y: I64F64) -> I64F64 {
    x.checked_div(y).unwrap_or_default()
}

/// A u16 over 65535 as a proportion.
pub fn u16_proportion(x: u16) -> Fixed {
    div32(
        Fixed::saturating_from_num(x),
        Fixed::saturating_from_num(u16::MAX),
    )
}

/// A proportion stored as u16: x * 65535, truncated, saturating.
pub fn proportion_to_u16(x: Fixed) -> u16 {
    x.saturating_mul(Fixed::saturating_from_num(u16::MAX))
        .saturating_to_num::<u16>()
}

/// Max-upscale to u16 (the largest entry becomes 65535), rounding (`vec_max_upscale_to_u16`).
pub fn max_upscale_to_u16(v: &[Fixed]) -> Vec<u16> {
    let u16_max = Fixed::saturating_from_num(u16::MAX);
    let threshold = Fixed::saturating_from_num(32768);
    let Some(&max) = v.iter().max() else {
        return Vec::new();
    };
    if max == zero() {
        return v
            .iter()
            .map(|e| e.saturating_mul(u16_max).saturating_to_num::<u16>())
            .collect();
    }
    if max > threshold {
        return v
            .iter()
            .map(|e| {
                e.saturating_mul(div32(u16_max, max))
                    .round()
                    .saturating_to_num::<u16>()
            })
            .collect();
    }
    v.iter()
        .map(|e| {
            div32(e.saturating_mul(u16_max), max)
                .round()
                .saturating_to_num::<u16>()
        })
        .collect()
}

/// Max-upscale u16 values (how set_weights stores a row).
pub fn u16_max_upscale_to_u16(v: &[u16]) -> Vec<u16> {
    let fixed: Vec<Fixed> = v.iter().map(|&e| Fixed::saturating_from_num(e)).collect();
    max_upscale_to_u16(&fixed)
}

pub fn sum(x: &[Fixed]) -> Fixed {
    x.iter().sum()
}

pub fn is_zero(x: &[Fixed]) -> bool {
    sum(x) == zero()
}

pub fn inplace_normalize(x: &mut [Fixed]) {
    let total = sum(x);
    if total == zero() {
        return;
    }
    x.iter_mut().for_each(|v| *v = div32(*v, total));
}

pub fn inplace_normalize_using_sum(x: &mut [Fixed], total: Fixed) {
    if total == zero() {
        return;
    }
    x.iter_mut().for_each(|v| *v = div32(*v, total));
}

pub fn inplace_normalize_64(x: &mut [I64F64]) {
    let total: I64F64 = x.iter().sum();
    if total == I64F64::from_num(0) {
        return;
    }
    x.iter_mut().for_each(|v| *v = div64(*v, total));
}

/// True for the k largest non-zero entries (an ascending stable sort drops the n - k smallest, so
/// ties keep the higher index).
pub fn is_topk_nonzero(x: &[Fixed], k: usize) -> Vec<bool> {
    let n = x.len();
    let mut result: Vec<bool> = x.iter().map(|&e| e != zero()).collect();
    if n < k {
        return result;
    }
    let mut idxs: Vec<usize> = (0..n).collect();
    idxs.sort_by_key(|&i| x[i]);
    for &i in idxs.iter().take(n - k) {
        result[i] = false;
    }
    result
}

/// Zeroes the entries where `mask` is true.
pub fn inplace_mask_vector(mask: &[bool], x: &mut [Fixed]) {
    for (v, &m) in x.iter_mut().zip(mask) {
        if m {
            *v = zero();
        }
    }
}

/// Empties the rows where `mask` is true (missing mask entries mask).
pub fn mask_rows_sparse(mask: &[bool], m: &[Vec<(u16, Fixed)>]) -> SparseMatrix {
    m.iter()
        .enumerate()
        .map(|(i, row)| {
            if mask.get(i).copied().unwrap_or(true) {
                Vec::new()
            } else {
                row.clone()
            }
        })
        .collect()
}

pub fn mask_diag_sparse(m: &[Vec<(u16, Fixed)>]) -> SparseMatrix {
    m.iter()
        .enumerate()
        .map(|(i, row)| {
            row.iter()
                .filter(|(j, _)| i != *j as usize)
                .copied()
                .collect()
        })
        .collect()
}

/// Drops entry (i, j) where `mask_fn(first[i], second[j])`.
pub fn vec_mask_sparse_matrix(
    m: &[Vec<(u16, Fixed)>],
    first: &[u64],
    second: &[u64],
    mask_fn: impl Fn(u64, u64) -> bool,
) -> SparseMatrix {
    m.iter()
        .enumerate()
        .map(|(i, row)| {
            let f = first.get(i).copied().unwrap_or(0);
            row.iter()
                .filter(|(j, _)| !mask_fn(f, second.get(*j as usize).copied().unwrap_or(0)))
                .copied()
                .collect()
        })
        .collect()
}

/// Drops entry (i, j) where `mask_fn(scalar, v[j])`.
pub fn scalar_vec_mask_sparse_matrix(
    m: &[Vec<(u16, Fixed)>],
    scalar: u64,
    v: &[u64],
    mask_fn: impl Fn(u64, u64) -> bool,
) -> SparseMatrix {
    m.iter()
        .map(|row| {
            row.iter()
                .filter(|(j, _)| !mask_fn(scalar, v.get(*j as usize).copied().unwrap_or(0)))
                .copied()
                .collect()
        })
        .collect()
}

pub fn inplace_row_normalize_sparse(m: &mut [Vec<(u16, Fixed)>]) {
    for row in m.iter_mut() {
        let total: Fixed = row.iter().map(|(_, v)| *v).sum();
        if total > zero() {
            row.iter_mut().for_each(|(_, v)| *v = div32(*v, total));
        }
    }
}

pub fn row_sum_sparse(m: &[Vec<(u16, Fixed)>]) -> Vec<Fixed> {
    m.iter()
        .map(|row| row.iter().map(|(_, v)| v).sum())
        .collect()
}

pub fn inplace_col_normalize_sparse(m: &mut [Vec<(u16, Fixed)>], columns: u16) {
    let mut col_sum = vec![zero(); columns as usize];
    for row in m.iter() {
        for &(j, v) in row {
            if let Some(s) = col_sum.get_mut(j as usize) {
                *s = s.saturating_add(v);
            }
        }
    }
    for row in m.iter_mut() {
        for (j, v) in row.iter_mut() {
            let denom = col_sum.get(*j as usize).copied().unwrap_or(zero());
            if denom != zero() {
                *v = div32(*v, denom);
            }
        }
    }
}

pub fn inplace_col_max_upscale_sparse(m: &mut [Vec<(u16, Fixed)>], columns: u16) {
    let mut col_max = vec![zero(); columns as usize];
    for row in m.iter() {
        for &(j, v) in row {
            if let Some(c) = col_max.get_mut(j as usize)
                && *c < v
            {
                *c = v;
            }
        }
    }
    for row in m.iter_mut() {
        for (j, v) in row.iter_mut() {
            let c = col_max.get(*j as usize).copied().unwrap_or(zero());
            if c != zero() {
                *v = div32(*v, c);
            }
        }
    }
}

pub fn row_hadamard_sparse(m: &[Vec<(u16, Fixed)>], v: &[Fixed]) -> SparseMatrix {
    m.iter()
        .zip(v)
        .map(|(row, &scale)| {
            row.iter()
                .map(|&(j, x)| (j, x.saturating_mul(scale)))
                .collect()
        })
        .collect()
}

/// result_j = sum_i v_i * m_ij.
pub fn matmul_sparse(m: &[Vec<(u16, Fixed)>], v: &[Fixed], columns: u16) -> Vec<Fixed> {
    let mut result = vec![zero(); columns as usize];
    for (i, row) in m.iter().enumerate() {
        let scale = v.get(i).copied().unwrap_or(zero());
        for &(j, x) in row {
            if let Some(r) = result.get_mut(j as usize) {
                *r = r.saturating_add(scale.saturating_mul(x));
            }
        }
    }
    result
}

/// result_i = sum_j v_j * m_ij.
pub fn matmul_transpose_sparse(m: &[Vec<(u16, Fixed)>], v: &[Fixed]) -> Vec<Fixed> {
    m.iter()
        .map(|row| {
            row.iter().fold(zero(), |acc, &(j, x)| {
                acc.saturating_add(
                    v.get(j as usize)
                        .copied()
                        .unwrap_or(zero())
                        .saturating_mul(x),
                )
            })
        })
        .collect()
}

/// Entries above their column's threshold are clipped to it (and dropped when it is zero).
pub fn col_clip_sparse(m: &[Vec<(u16, Fixed)>], threshold: &[Fixed]) -> SparseMatrix {
    m.iter()
        .map(|row| {
            row.iter()
                .filter_map(|&(j, x)| {
                    let th = threshold.get(j as usize).copied().unwrap_or(zero());
                    if th < x {
                        (th > zero()).then_some((j, th))
                    } else {
                        Some((j, x))
                    }
                })
                .collect()
        })
        .collect()
}

/// Stake-weighted median by a mid-pivot partition search (subtensor's `weighted_median`): the
/// pivot's stake interval must straddle `minority` (1 - majority) for the pivot to be the answer.
pub fn weighted_median(
    stake: &[Fixed],
    score: &[Fixed],
    partition: &[usize],
    minority: Fixed,
    mut lo: Fixed,
    mut hi: Fixed,
) -> Fixed {
    let at = |v: &[Fixed], i: usize| v.get(i).copied().unwrap_or(zero());
    let mut current = partition.to_vec();
    let limit = partition.len();
    let mut iterations = 0usize;
    loop {
        let n = current.len();
        if n == 0 {
            return zero();
        }
        if n == 1 {
            return at(score, current[0]);
        }
        let pivot = at(score, current[n / 2]);
        let (mut lo_stake, mut hi_stake) = (zero(), zero());
        let (mut lower, mut upper) = (Vec::new(), Vec::new());
        for &idx in &current {
            let s = at(score, idx);
            if s == pivot {
                continue;
            }
            if s < pivot {
                lo_stake = lo_stake.saturating_add(at(stake, idx));
                lower.push(idx);
            } else {
                hi_stake = hi_stake.saturating_add(at(stake, idx));
                upper.push(idx);
            }
        }
        if minority < lo.saturating_add(lo_stake) && !lower.is_empty() {
            hi = lo.saturating_add(lo_stake);
            current = lower;
        } else if hi.saturating_sub(hi_stake) <= minority && !upper.is_empty() {
            lo = hi.saturating_sub(hi_stake);
            current = upper;
        } else {
            return pivot;
        }
        iterations += 1;
        if iterations > limit {
            return zero();
        }
    }
}

/// The weighted median of each column over the rows with positive stake (stake renormalized over
/// them).
pub fn weighted_median_col_sparse(
    stake: &[Fixed],
    score: &[Vec<(u16, Fixed)>],
    columns: u16,
    majority: Fixed,
) -> Vec<Fixed> {
    let mut use_stake: Vec<Fixed> = stake.iter().copied().filter(|&s| s > zero()).collect();
    inplace_normalize(&mut use_stake);
    let stake_sum = sum(&use_stake);
    let minority = stake_sum.saturating_sub(majority);
    let idx: Vec<usize> = (0..use_stake.len()).collect();
    let mut use_score = vec![vec![zero(); use_stake.len()]; columns as usize];
    let mut k = 0;
    for (&s, row) in stake.iter().zip(score) {
        if s > zero() {
            for &(c, v) in row {
                if let Some(cell) = use_score.get_mut(c as usize).and_then(|col| col.get_mut(k)) {
                    *cell = v;
                }
            }
            k += 1;
        }
    }
    use_score
        .iter()
        .map(|col| weighted_median(&use_stake, col, &idx, minority, zero(), stake_sum))
        .collect()
}

/// A + ratio * (B - A), entry by entry, keeping positive results. `rows` limits the work to the
/// rows that hold entries in either matrix (every other row stays empty either way).
pub fn interpolate_sparse(
    a: &[Vec<(u16, Fixed)>],
    b: &[Vec<(u16, Fixed)>],
    columns: u16,
    ratio: Fixed,
    rows: &[usize],
) -> SparseMatrix {
    if ratio == zero() {
        return a.to_vec();
    }
    if ratio == one() {
        return b.to_vec();
    }
    let mut result = vec![Vec::new(); a.len()];
    for &i in rows {
        let mut row_a = vec![zero(); columns as usize];
        for &(j, v) in &a[i] {
            if let Some(e) = row_a.get_mut(j as usize) {
                *e = v;
            }
        }
        let mut row_b = vec![zero(); columns as usize];
        for &(j, v) in &b[i] {
            if let Some(e) = row_b.get_mut(j as usize) {
                *e = v;
            }
        }
        for j in 0..columns as usize {
            let interp =
                row_a[j].saturating_add(ratio.saturating_mul(row_b[j].saturating_sub(row_a[j])));
            if zero() < interp {
                result[i].push((j as u16, interp));
            }
        }
    }
    result
}

/// alpha * new + (1 - alpha) * old, keeping positive entries, over `rows`.
pub fn mat_ema_sparse(
    new: &[Vec<(u16, Fixed)>],
    old: &[Vec<(u16, Fixed)>],
    alpha: Fixed,
    rows: &[usize],
) -> SparseMatrix {
    let n = new.len();
    let one_minus_alpha = one().saturating_sub(alpha);
    let mut result = vec![Vec::new(); n];
    for &i in rows {
        let mut acc = vec![zero(); n];
        for &(j, v) in &new[i] {
            if let Some(c) = acc.get_mut(j as usize) {
                *c = c.saturating_add(alpha.saturating_mul(v));
            }
        }
        if let Some(row) = old.get(i) {
            for &(j, v) in row {
                if let Some(c) = acc.get_mut(j as usize) {
                    *c = c.saturating_add(one_minus_alpha.saturating_mul(v));
                }
            }
        }
        result[i] = acc
            .into_iter()
            .enumerate()
            .filter(|(_, v)| *v > zero())
            .map(|(j, v)| (j as u16, v))
            .collect();
    }
    result
}

/// Per-entry EMA with its own alpha (Yuma3): (1 - a) old + a new, clamped to [0, 1]; only entries
/// present in `new` survive.
pub fn mat_ema_alpha_sparse(
    new: &[Vec<(u16, Fixed)>],
    old: &[Vec<(u16, Fixed)>],
    alpha: &[Vec<Fixed>],
) -> SparseMatrix {
    new.iter()
        .zip(old)
        .zip(alpha)
        .map(|((new_row, old_row), alpha_row)| {
            let mut decayed = vec![zero(); alpha_row.len()];
            for &(j, o) in old_row {
                if let (Some(&a), Some(cell)) =
                    (alpha_row.get(j as usize), decayed.get_mut(j as usize))
                {
                    *cell = one().saturating_sub(a).saturating_mul(o);
                }
            }
            new_row
                .iter()
                .filter_map(|&(j, v)| {
                    let (a, d) = (*alpha_row.get(j as usize)?, *decayed.get(j as usize)?);
                    let value = d.saturating_add(a.saturating_mul(v).max(zero())).min(one());
                    (value > zero()).then_some((j, value))
                })
                .collect()
        })
        .collect()
}

/// Element-wise product of each row with `v` (by column), keeping non-zero entries.
pub fn mat_vec_mul_sparse(m: &[Vec<(u16, Fixed)>], v: &[Fixed]) -> SparseMatrix {
    m.iter()
        .map(|row| {
            row.iter()
                .filter_map(|&(j, x)| {
                    let y = x.saturating_mul(*v.get(j as usize)?);
                    (y != zero()).then_some((j, y))
                })
                .collect()
        })
        .collect()
}

/// Element-wise product (an overflow gives zero).
pub fn vec_mul(a: &[Fixed], b: &[Fixed]) -> Vec<Fixed> {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.checked_mul(*y).unwrap_or_default())
        .collect()
}

fn clamp(value: Fixed, low: Fixed, high: Fixed) -> Fixed {
    value.min(high).max(low)
}

/// exp on [-20, 20], saturating outside what the type holds.
pub fn exp_safe(input: Fixed) -> Fixed {
    let x = input.clamp(Fixed::from_num(-20), Fixed::from_num(20));
    match exp::<Fixed, Fixed>(x) {
        Ok(v) => v,
        Err(()) if x <= zero() => zero(),
        Err(()) => Fixed::max_value(),
    }
}

/// Liquid alpha for one bond: low + sigmoid(steepness/100 * (diff - 1/2)) * (high - low), where diff
/// is how far the weight runs ahead of consensus (buying) or falls below the bond (selling).
pub fn alpha_sigmoid(
    consensus: Fixed,
    weight: Fixed,
    bond: Fixed,
    low: Fixed,
    high: Fixed,
    steepness: Fixed,
) -> Fixed {
    let diff_buy = clamp(weight.saturating_sub(consensus), zero(), one());
    let diff_sell = clamp(bond.saturating_sub(weight), zero(), one());
    let diff = if weight >= bond { diff_buy } else { diff_sell };
    let sigmoid = one().saturating_div(
        one().saturating_add(exp_safe(
            steepness
                .saturating_div(Fixed::from_num(-100))
                .saturating_mul(diff.saturating_sub(Fixed::from_num(0.5))),
        )),
    );
    let alpha = low.saturating_add(sigmoid.saturating_mul(high.saturating_sub(low)));
    clamp(alpha, low, high)
}

/// Liquid alphas for every (row, column) of `consensus`'s width.
pub fn liquid_alpha_values_sparse(
    weights: &[Vec<(u16, Fixed)>],
    bonds: &[Vec<(u16, Fixed)>],
    consensus: &[Fixed],
    (low, high, steepness): (Fixed, Fixed, Fixed),
) -> Vec<Vec<Fixed>> {
    weights
        .iter()
        .zip(bonds)
        .map(|(w_row, b_row)| {
            let (mut w_it, mut b_it) = (w_row.iter().peekable(), b_row.iter().peekable());
            consensus
                .iter()
                .enumerate()
                .map(|(j, &c)| {
                    let j = j as u16;
                    let take =
                        |it: &mut std::iter::Peekable<std::slice::Iter<'_, (u16, Fixed)>>| {
                            let mut value = zero();
                            while let Some(&&(i, v)) = it.peek() {
                                if i < j {
                                    it.next();
                                } else {
                                    if i == j {
                                        value = v;
                                    }
                                    break;
                                }
                            }
                            value
                        };
                    let (weight, bond) = (take(&mut w_it), take(&mut b_it));
                    alpha_sigmoid(c, weight, bond, low, high, steepness)
                })
                .collect()
        })
        .collect()
}

/// The liquid alphas `mat_ema_alpha_sparse` reads: those at the entries of `weights` (its `new`);
/// the others stay zero. Equal there to `liquid_alpha_values_sparse`, at a fraction of the work.
pub fn liquid_alpha_values_at_entries(
    weights: &[Vec<(u16, Fixed)>],
    bonds: &[Vec<(u16, Fixed)>],
    consensus: &[Fixed],
    (low, high, steepness): (Fixed, Fixed, Fixed),
) -> Vec<Vec<Fixed>> {
    weights
        .iter()
        .zip(bonds)
        .map(|(w_row, b_row)| {
            let mut alphas = vec![zero(); if w_row.is_empty() { 0 } else { consensus.len() }];
            for &(j, w) in w_row {
                let Some(&c) = consensus.get(j as usize) else {
                    continue;
                };
                // Rows are sorted by column: the bond at j, or zero.
                let b = b_row
                    .binary_search_by_key(&j, |e| e.0)
                    .map_or(zero(), |k| b_row[k].1);
                alphas[j as usize] = alpha_sigmoid(c, w, b, low, high, steepness);
            }
            alphas
        })
        .collect()
}

#[cfg(test)]
mod tests;
