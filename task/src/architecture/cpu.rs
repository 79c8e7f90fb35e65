//! What the CPU backend's own kernels (`gelu`, `attention`, `linear`, `norm`) share: reaching
//! `Flex` from a generic backend, making its tensors without burn's extra copy, matrix products on
//! views read in place, and reductions and an exponential that give the same bits on every x86-64.
//!
//! The loops here keep a fixed order of operations (no fused multiply-add, sums over eight fixed
//! lanes; element-wise maps run 8 lanes wide with AVX2 where the CPU has it, with the bits of the
//! 4-lane baseline), so a value does not depend on the machine or on how many threads ran beside
//! it. The matrix products are `gemm`'s, whose last bits follow the kind of CPU (README, "Replay a
//! validator's decisions").

use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use std::any::{Any, TypeId};
use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

/// Whether `B` is `T`.
pub(super) fn is<B: Backend, T: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<T>()
}

/// A tensor of `T` as one of `B`, which is `T` (checked by [`is`] or a [`cast`] before).
pub(super) fn same<T: Backend, B: Backend, const D: usize>(x: Tensor<T, D>) -> Tensor<B, D> {
    cast(x).unwrap_or_else(|_| unreachable!("B is T"))
}

/// `x` as a tensor of backend `T` when `B` is `T`.
pub(super) fn cast<B: Backend, T: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<Tensor<T, D>, Tensor<B, D>> {
    if !is::<B, T>() {
        return Err(x);
    }
    let primitive: Box<dyn Any> = Box::new(x.into_primitive());
    let primitive = primitive
        .downcast::<TensorPrimitive<T>>()
        .unwrap_or_else(|_| unreachable!("B is T"));
    Ok(Tensor::from_primitive(*primitive))
}

/// The float primitive of a tensor the caller checked to be f32.
pub(super) fn float<T: Backend, const D: usize>(x: Tensor<T, D>) -> T::FloatTensorPrimitive {
    match x.into_primitive() {
        TensorPrimitive::Float(t) => t,
        TensorPrimitive::QFloat(_) => unreachable!("checked f32 before"),
    }
}

/// A contiguous f32 tensor that owns `values`. (`FlexTensor::empty` zeroes a byte buffer and then
/// copies it into an aligned one: two passes over memory before a kernel writes its result.)
pub(super) fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    let shape = shape.into();
    debug_assert_eq!(values.len(), shape.num_elements());
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// A matrix read in place: element (i, j) at `data[i * row + j * col]`.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    data: &'a [f32],
    row: usize,
    col: usize,
}

impl<'a> View<'a> {
    /// Rows `row` apart, columns adjacent.
    pub(super) fn rows(data: &'a [f32], row: usize) -> Self {
        View { data, row, col: 1 }
    }

    pub(super) fn transposed(self) -> Self {
        View {
            row: self.col,
            col: self.row,
            ..self
        }
    }

    /// Whether an `m x n` matrix fits in the slice.
    fn holds(&self, m: usize, n: usize) -> bool {
        m == 0 || n == 0 || (m - 1) * self.row + (n - 1) * self.col < self.data.len()
    }
}

/// A matrix written in place, rows `row` apart, columns adjacent: overwritten, or added to.
pub(super) struct Out<'a> {
    data: *mut f32,
    len: usize,
    row: usize,
    add: bool,
    _borrow: PhantomData<&'a mut [f32]>,
}

impl<'a> Out<'a> {
    pub(super) fn rows(data: &'a mut [f32], row: usize) -> Self {
        Out {
            data: data.as_mut_ptr(),
            len: data.len(),
            row,
            add: false,
            _borrow: PhantomData,
        }
    }

    /// Memory not written yet: the product overwrites it without reading it.
    pub(super) fn fresh(data: &'a mut [MaybeUninit<f32>], row: usize) -> Self {
        Out {
            data: data.as_mut_ptr().cast(),
            len: data.len(),
            row,
            add: false,
            _borrow: PhantomData,
        }
    }

    /// The product is added to what the matrix holds.
    pub(super) fn adding(self) -> Self {
        Out { add: true, ..self }
    }
}

/// `n` values written by `write` into memory that is not zeroed first (a zeroing pass costs as much
/// as the copy it would guard).
///
/// # Safety
/// `write` writes every one of the `n` elements (as products into [`Out::fresh`] blocks that tile
/// the whole slice do).
pub(super) unsafe fn fresh(n: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut values = Vec::with_capacity(n);
    write(&mut values.spare_capacity_mut()[..n]);
    // SAFETY: the caller's `write` wrote all n elements.
    unsafe { values.set_len(n) };
    values
}

thread_local! {
    /// Set while this thread computes one of several parts of a training step that run at once.
    static ONE_OF_SEVERAL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` as one of several computations running at once, a thread each (a training step's
/// parts): the kernels' products and loops then stay on this thread, since the other parts already
/// occupy the other cores. (With two parts on two cores, products spread over rayon's pool as well
/// trained tiny-lm 5-8% slower.) The bits are the same either way.
pub(crate) fn as_one_of_several<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ONE_OF_SEVERAL.with(|flag| flag.set(self.0));
        }
    }
    let _restore = Restore(ONE_OF_SEVERAL.with(|flag| flag.replace(true)));
    f()
}

/// Whether this thread's kernels may spread their work over rayon's pool.
pub(super) fn pool_is_free() -> bool {
    !ONE_OF_SEVERAL.with(Cell::get)
}

/// Where a matrix product runs.
#[derive(Clone, Copy, Debug)]
pub(super) enum Threads {
    /// On the calling thread: the caller already runs one product per thread.
    Calling,
    /// On rayon's pool when it is large enough to gain from it, as burn's CPU backend decides, and
    /// the pool is free (see [`as_one_of_several`]). Each output element is still one sum in one
    /// order, so the bits do not depend on the pool.
    Pool,
}

/// `out = lhs x rhs` (or `out += lhs x rhs`) for an `m x k` `lhs` and a `k x n` `rhs`.
pub(super) fn product(
    m: usize,
    n: usize,
    k: usize,
    out: Out<'_>,
    lhs: View<'_>,
    rhs: View<'_>,
    threads: Threads,
) {
    assert!(
        lhs.holds(m, k) && rhs.holds(k, n),
        "a factor outside its slice"
    );
    assert!(
        m == 0 || n == 0 || (m - 1) * out.row + n <= out.len,
        "the product outside its slice"
    );
    // burn's flex: products of at least 192^3 multiply-adds go to the pool.
    let parallelism = match threads {
        Threads::Pool if m * n * k >= 192 * 192 * 192 && pool_is_free() => {
            gemm::Parallelism::Rayon(0)
        }
        _ => gemm::Parallelism::None,
    };
    // SAFETY: the asserts above keep every element gemm reads or writes inside its slice, the
    // output is borrowed mutably, apart from the factors, and gemm reads it only when adding (a
    // fresh `Out` never adds).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.data,
            1,
            out.row as isize,
            out.add,
            lhs.data.as_ptr(),
            lhs.col as isize,
            lhs.row as isize,
            rhs.data.as_ptr(),
            rhs.col as isize,
            rhs.row as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `f` of each element of `xs`, with the 8-lane instructions of AVX2 where the CPU has them (the
/// same bits as 4 lanes: each lane runs the same IEEE operations, and fused multiply-add stays off).
#[inline(always)]
pub(super) fn map(xs: &[f32], f: impl Fn(f32) -> f32) -> Vec<f32> {
    zip_map(xs, xs, |x, _| f(x))
}

/// `f` of each pair of `xs` and `ys` (of one length), as [`map`].
#[inline(always)]
pub(super) fn zip_map(xs: &[f32], ys: &[f32], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    assert_eq!(xs.len(), ys.len(), "elementwise over two lengths");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { zip_map_avx2(xs, ys, f) };
    }
    zip_map_baseline(xs, ys, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn zip_map_avx2(xs: &[f32], ys: &[f32], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    zip_map_baseline(xs, ys, f)
}

#[inline(always)]
pub(super) fn zip_map_baseline(xs: &[f32], ys: &[f32], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(xs.len());
    for ((o, &x), &y) in out.spare_capacity_mut().iter_mut().zip(xs).zip(ys) {
        o.write(f(x, y));
    }
    // SAFETY: the loop wrote all xs.len() elements.
    unsafe { out.set_len(xs.len()) };
    out
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

/// What the kernels' tests share: deterministic inputs and a comparison up to rounding.
#[cfg(test)]
pub(super) mod testing {
    use burn::tensor::TensorData;

    /// A deterministic `[rows, cols]` of values spread over `offset ± scale`.
    pub fn values(rows: usize, cols: usize, salt: u64, scale: f32, offset: f32) -> TensorData {
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let x = (i as u64 + salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                ((x % 2001) as f32 / 1000.0 - 1.0) * scale + offset
            })
            .collect();
        TensorData::new(v, [rows, cols])
    }

    /// Asserts that `a` is `b` element by element within `tolerance * (1 + |b|)`.
    pub fn close(a: TensorData, b: TensorData, tolerance: f32, what: &str) {
        let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!(
                (a - b).abs() <= tolerance * (1.0 + b.abs()),
                "{what} at {i}: {a} against {b}"
            );
        }
    }
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
    fn a_product_on_the_pool_has_the_bits_of_one_on_the_calling_thread() {
        // 300 x 200 x 250 multiply-adds: above the size that goes to the pool.
        let (m, n, k) = (300, 200, 250);
        let lhs: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0)
            .collect();
        let rhs: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104_729 % 997) as f32 - 498.0) / 89.0)
            .collect();
        let run = |threads| {
            let mut out = vec![0.0f32; m * n];
            product(
                m,
                n,
                k,
                Out::rows(&mut out, n),
                View::rows(&lhs, k),
                View::rows(&rhs, n),
                threads,
            );
            out.into_iter().map(f32::to_bits).collect::<Vec<_>>()
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        assert_eq!(pool.install(|| run(Threads::Pool)), run(Threads::Calling));
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
