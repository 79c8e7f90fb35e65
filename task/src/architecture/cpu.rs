//! What the CPU backend's own kernels (`gelu`, `attention`) share: reaching `Flex` from a generic
//! backend, making its tensors without burn's extra copy, and reductions and an exponential that
//! give the same bits on every x86-64.
//!
//! The loops here use the baseline instructions alone and a fixed order of operations (no fused
//! multiply-add, sums over eight fixed lanes), so a value does not depend on the machine or on how
//! many threads ran beside it.

use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use std::any::{Any, TypeId};

/// A tensor cast back to the backend it was cast from.
pub(super) fn same<T: Backend, B: Backend, const D: usize>(x: Tensor<T, D>) -> Tensor<B, D> {
    cast(x).unwrap_or_else(|_| unreachable!("cast from B before"))
}

/// `x` as a tensor of backend `T` when `B` is `T`.
pub(super) fn cast<B: Backend, T: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<Tensor<T, D>, Tensor<B, D>> {
    if TypeId::of::<B>() != TypeId::of::<T>() {
        return Err(x);
    }
    let primitive: Box<dyn Any> = Box::new(x.into_primitive());
    let primitive = primitive
        .downcast::<TensorPrimitive<T>>()
        .unwrap_or_else(|_| unreachable!("B is T"));
    Ok(Tensor::from_primitive(*primitive))
}

/// A contiguous f32 tensor that owns `values`. (`FlexTensor::empty` zeroes a byte buffer and then
/// copies it into an aligned one: two passes over memory before a kernel writes its result.)
pub(super) fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    let shape = shape.into();
    debug_assert_eq!(values.len(), shape.num_elements());
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The sum of `xs` over eight lanes added in a fixed order: vectorized, and the same bits wherever
/// it runs.
pub(super) fn sum(xs: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += x;
        }
    }
    for (lane, &x) in lanes.iter_mut().zip(rest) {
        *lane += x;
    }
    ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
        + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
}

/// `Σ a_i b_i`, in the lanes of [`sum`].
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let (a_rest, b_rest) = (a_chunks.remainder(), b_chunks.remainder());
    for (a, b) in a_chunks.zip(b_chunks) {
        for ((lane, &a), &b) in lanes.iter_mut().zip(a).zip(b) {
            *lane += a * b;
        }
    }
    for ((lane, &a), &b) in lanes.iter_mut().zip(a_rest).zip(b_rest) {
        *lane += a * b;
    }
    ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
        + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
}

/// The largest of `xs` (negative infinity for none), over eight lanes.
pub(super) fn max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(x);
        }
    }
    for (lane, &x) in lanes.iter_mut().zip(rest) {
        *lane = lane.max(x);
    }
    lanes.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

/// e^y for y <= 0 (0 below -87), branch-free: y = n ln 2 + r with |r| <= ln 2 / 2, e^r by its
/// Taylor polynomial to r^7 (relative error below 1e-8), 2^n from the exponent bits.
#[inline(always)]
pub(super) fn exp_nonpositive(y: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let y = y.max(-87.0);
    // Rounds y / ln 2 to the nearest integer (halves downwards) for y <= 0.
    let n = (y * std::f32::consts::LOG2_E - 0.5) as i32;
    let nf = n as f32;
    let r = (y - nf * LN2_HI) - nf * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lane_reductions_are_the_plain_ones_up_to_rounding() {
        for n in [0usize, 1, 7, 8, 9, 100, 1027] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let b: Vec<f32> = (0..n)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) / 3.0)
                .collect();
            let plain_sum: f64 = a.iter().map(|&x| x as f64).sum();
            let plain_dot: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let plain_max = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert!((sum(&a) as f64 - plain_sum).abs() <= 1e-4 * (1.0 + plain_sum.abs()));
            assert!((dot(&a, &b) as f64 - plain_dot).abs() <= 1e-4 * (1.0 + plain_dot.abs()));
            assert_eq!(max(&a), plain_max, "n = {n}");
        }
    }

    #[test]
    fn exp_matches_the_exact_exponential_below_zero() {
        for y in [0.0f32, -1e-3, -0.5, -1.0, -10.0, -50.0, -86.0, -87.5, -1e9] {
            let exact = (y as f64).exp();
            let ours = exp_nonpositive(y) as f64;
            assert!(
                (ours - exact).abs() <= 1e-7 * exact + 1e-37,
                "exp({y}) = {ours}, exact {exact}"
            );
        }
    }
}
