//! Causal multi-head self-attention from the product of the queries', keys' and values' projection,
//! written for the CPU backend as one operation forward and one backward.
//!
//! Composed from burn's operations, attention made the scores' scale, the causal mask, each step of
//! the softmax and the heads' reshapes a tensor of their own, and their backward a zeroed tensor and
//! a copy for every slice of the projection: a third of tiny-lm's training time outside matrix
//! products (BENCHMARKS.md). Here every sequence's heads are read in place from the projection
//! `[b * t, 3d]`, their scores and softmax computed in one buffer, and the output written straight
//! into `[b * t, d]`; the backward writes the projection's gradient the same way. The matrix
//! products are `gemm`'s, the crate burn's CPU backend calls, on one thread per sequence; the
//! softmax uses [`super::cpu`]'s fixed-order loops, so the result does not depend on the threads.
//! Other backends (the GPUs) compose burn's operations as before.

use super::cpu::{
    Out, Threads, View, cast, dot, exp_nonpositive, fresh, max, pool_is_free, product, same, sum,
    tensor,
};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, TensorPrimitive};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Attention of `b` sequences: `qkv` is `[b * t, 3d]`, each position's queries, keys and values
/// side by side, head `i` of each at columns `i * d / heads ..`; the result is `[b * t, d]`, each
/// position attending to itself and the positions before it.
pub fn causal_attention<B: Backend>(qkv: Tensor<B, 2>, b: usize, heads: usize) -> Tensor<B, 2> {
    let qkv = match cast::<B, Autodiff<Flex>, 2>(qkv) {
        Ok(qkv) => return same(autodiff_attention(qkv, b, heads)),
        Err(qkv) => qkv,
    };
    match cast::<B, Flex, 2>(qkv) {
        Ok(qkv) => match qkv.into_primitive() {
            TensorPrimitive::Float(t) if t.dtype() == DType::F32 => {
                let shape = Heads::of(t.layout().shape(), b, heads);
                let t = t.to_contiguous();
                let (out, _) = forward(t.storage::<f32>(), shape, false);
                same(Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(
                    tensor(out, [shape.rows(), shape.width()]),
                )))
            }
            other => same(composed(Tensor::<Flex, 2>::from_primitive(other), b, heads)),
        },
        Err(qkv) => composed(qkv, b, heads),
    }
}

/// The same attention composed from burn's tensor operations: what the GPU backends run, and the
/// reference the kernels are tested against.
pub fn composed<B: Backend>(qkv: Tensor<B, 2>, b: usize, heads: usize) -> Tensor<B, 2> {
    let [rows, width3] = qkv.dims();
    let (t, d, h) = (rows / b, width3 / 3, heads);
    let dh = d / h;
    // [b * t, 3d] as [b, 3h, t, dh] without a copy: queries are the first h heads, keys the next
    // h, values the last h, each a strided view the matrix products read in place.
    let qkv = qkv.reshape([b, t, 3 * h, dh]).swap_dims(1, 2);
    let part = |i: usize| qkv.clone().narrow(1, i * h, h);
    let (q, k, v) = (part(0), part(1), part(2));
    let scores = q
        .matmul(k.swap_dims(2, 3))
        .mul_scalar(1.0 / (dh as f64).sqrt())
        + causal_mask::<B>(t, &qkv.device());
    softmax(scores, 3)
        .matmul(v)
        .swap_dims(1, 2)
        .reshape([rows, d])
}

/// `[1, 1, t, t]`: 0 on and below the diagonal, a large negative number above.
fn causal_mask<B: Backend>(t: usize, device: &B::Device) -> Tensor<B, 4> {
    let values: Vec<f32> = (0..t * t)
        .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
        .collect();
    Tensor::<B, 2>::from_data(TensorData::new(values, [t, t]), device).reshape([1, 1, t, t])
}

/// The sizes of one call.
#[derive(Clone, Copy, Debug)]
struct Heads {
    /// Sequences.
    batch: usize,
    /// Positions per sequence.
    len: usize,
    heads: usize,
    /// Columns per head.
    dim: usize,
}

impl Heads {
    fn of(qkv: &burn::tensor::Shape, batch: usize, heads: usize) -> Self {
        let (rows, width3) = (qkv[0], qkv[1]);
        assert!(
            batch > 0 && rows.is_multiple_of(batch) && width3.is_multiple_of(3 * heads),
            "attention of [{rows}, {width3}] as {batch} sequences of {heads} heads"
        );
        Heads {
            batch,
            len: rows / batch,
            heads,
            dim: width3 / 3 / heads,
        }
    }

    fn width(&self) -> usize {
        self.heads * self.dim
    }

    fn rows(&self) -> usize {
        self.batch * self.len
    }

    /// Entries of one sequence's attention probabilities, all heads.
    fn probs_per_sequence(&self) -> usize {
        self.heads * self.len * self.len
    }

    fn scale(&self) -> f32 {
        1.0 / (self.dim as f32).sqrt()
    }
}

/// Attention on the training backend, recorded as one operation whose backward reads the
/// projection and the probabilities the forward kept.
fn autodiff_attention(
    qkv: Tensor<Autodiff<Flex>, 2>,
    b: usize,
    heads: usize,
) -> Tensor<Autodiff<Flex>, 2> {
    #[derive(Debug)]
    struct Attention;

    impl Backward<Flex, 1> for Attention {
        type State = (FlexTensor, FlexTensor, Heads);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (qkv, probs, shape) = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
                let grad = grad.to_contiguous();
                let dqkv = backward(
                    qkv.storage::<f32>(),
                    probs.storage::<f32>(),
                    grad.storage::<f32>(),
                    shape,
                );
                tensor(dqkv, [shape.rows(), 3 * shape.width()])
            });
        }
    }

    let qkv = match qkv.into_primitive() {
        TensorPrimitive::Float(x) if x.primitive.dtype() == DType::F32 => x,
        other => return composed(Tensor::from_primitive(other), b, heads),
    };
    let shape = Heads::of(qkv.primitive.layout().shape(), b, heads);
    let input = qkv.primitive.to_contiguous();
    let out_shape = [shape.rows(), shape.width()];
    let y = match Attention
        .prepare::<NoCheckpointing>([qkv.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, probs) = forward(input.storage::<f32>(), shape, true);
            let probs = tensor(probs, [shape.batch * shape.probs_per_sequence()]);
            prep.finish((input, probs, shape), tensor(out, out_shape))
        }
        OpsKind::UnTracked(prep) => {
            let (out, _) = forward(input.storage::<f32>(), shape, false);
            prep.finish(tensor(out, out_shape))
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// The output `[b * t, d]` and, when `keep` (for the backward), every head's probabilities
/// `[b, heads, t, t]`.
fn forward(qkv: &[f32], shape: Heads, keep: bool) -> (Vec<f32>, Vec<f32>) {
    let Heads { len: t, dim, .. } = shape;
    let d = shape.width();
    let per_sequence = shape.probs_per_sequence();
    let mut probs = vec![0.0f32; if keep { shape.batch * per_sequence } else { 0 }];
    let sequence = |s: usize, out: &mut [MaybeUninit<f32>], probs: &mut [f32]| {
        let qkv = &qkv[s * t * 3 * d..(s + 1) * t * 3 * d];
        for head in 0..shape.heads {
            let p = &mut probs[head * t * t..(head + 1) * t * t];
            let (q, k, v) = head_views(qkv, shape, head);
            // Scores Q Kᵀ, then each row's softmax over the positions up to its own.
            product(
                t,
                t,
                dim,
                Out::rows(p, t),
                q,
                k.transposed(),
                Threads::Calling,
            );
            for (i, row) in p.chunks_exact_mut(t).enumerate() {
                softmax_causal(row, i, shape.scale());
            }
            // Output P V, into this head's columns.
            let o = Out::fresh(&mut out[head * dim..], d);
            product(t, dim, t, o, View::rows(p, t), v, Threads::Calling);
        }
    };
    // SAFETY: each sequence's heads write their columns of every one of its rows.
    let out = unsafe {
        fresh(shape.rows() * d, |out| {
            let rows = t * d;
            match (keep, pool_is_free()) {
                (true, true) => out
                    .par_chunks_mut(rows)
                    .zip(probs.par_chunks_mut(per_sequence))
                    .enumerate()
                    .for_each(|(s, (out, probs))| sequence(s, out, probs)),
                (true, false) => out
                    .chunks_mut(rows)
                    .zip(probs.chunks_mut(per_sequence))
                    .enumerate()
                    .for_each(|(s, (out, probs))| sequence(s, out, probs)),
                (false, true) => out.par_chunks_mut(rows).enumerate().for_each_init(
                    || vec![0.0f32; per_sequence],
                    |probs, (s, out)| sequence(s, out, probs),
                ),
                (false, false) => {
                    let mut probs = vec![0.0f32; per_sequence];
                    for (s, out) in out.chunks_mut(rows).enumerate() {
                        sequence(s, out, &mut probs);
                    }
                }
            }
        })
    };
    (out, probs)
}

/// The projection's gradient `[b * t, 3d]` from the output's gradient `grad` `[b * t, d]`.
fn backward(qkv: &[f32], probs: &[f32], grad: &[f32], shape: Heads) -> Vec<f32> {
    let Heads { len: t, dim, .. } = shape;
    let d = shape.width();
    let per_sequence = shape.probs_per_sequence();
    let sequence = |s: usize, dqkv: &mut [MaybeUninit<f32>], ds: &mut [f32]| {
        let qkv = &qkv[s * t * 3 * d..(s + 1) * t * 3 * d];
        let grad = &grad[s * t * d..(s + 1) * t * d];
        let probs = &probs[s * per_sequence..(s + 1) * per_sequence];
        for head in 0..shape.heads {
            let p = &probs[head * t * t..(head + 1) * t * t];
            let (q, k, v) = head_views(qkv, shape, head);
            let g = View::rows(&grad[head * dim..], d);
            let column = |part: usize| part * d + head * dim;
            // dV = Pᵀ dO.
            let dv = Out::fresh(&mut dqkv[column(2)..], 3 * d);
            let pt = View::rows(p, t).transposed();
            product(t, dim, t, dv, pt, g, Threads::Calling);
            // dP = dO Vᵀ, then the softmax's backward: dS = P ∘ (dP - rowsum(P ∘ dP)), times the
            // scores' scale.
            let dp = Out::rows(ds, t);
            product(t, t, dim, dp, g, v.transposed(), Threads::Calling);
            for (dsr, pr) in ds.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                let weighted = dot(pr, dsr);
                for (dsv, &pv) in dsr.iter_mut().zip(pr) {
                    *dsv = pv * (*dsv - weighted) * shape.scale();
                }
            }
            // dQ = dS K and dK = dSᵀ Q.
            let dq = Out::fresh(&mut dqkv[column(0)..], 3 * d);
            product(t, dim, t, dq, View::rows(ds, t), k, Threads::Calling);
            let dk = Out::fresh(&mut dqkv[column(1)..], 3 * d);
            let dst = View::rows(ds, t).transposed();
            product(t, dim, t, dk, dst, q, Threads::Calling);
        }
    };
    // SAFETY: each sequence's heads write their query, key and value columns of all its rows.
    unsafe {
        fresh(shape.rows() * 3 * d, |dqkv| {
            let rows = t * 3 * d;
            if pool_is_free() {
                dqkv.par_chunks_mut(rows).enumerate().for_each_init(
                    || vec![0.0f32; t * t],
                    |ds, (s, dqkv)| sequence(s, dqkv, ds),
                );
            } else {
                let mut ds = vec![0.0f32; t * t];
                for (s, dqkv) in dqkv.chunks_mut(rows).enumerate() {
                    sequence(s, dqkv, &mut ds);
                }
            }
        })
    }
}

/// Row `i` of the scores, in place: the softmax of `scale * row[..=i]`, zeros after.
fn softmax_causal(row: &mut [f32], i: usize, scale: f32) {
    let (live, masked) = row.split_at_mut(i + 1);
    let top = max(live);
    for x in live.iter_mut() {
        *x = exp_nonpositive((*x - top) * scale);
    }
    let inverse = 1.0 / sum(live);
    for x in live.iter_mut() {
        *x *= inverse;
    }
    masked.fill(0.0);
}

/// Queries, keys and values of one head of one sequence, as `[t, dim]` views into the sequence's
/// rows of the projection.
fn head_views(qkv: &[f32], shape: Heads, head: usize) -> (View<'_>, View<'_>, View<'_>) {
    let d = shape.width();
    let view = |part: usize| View::rows(&qkv[part * d + head * shape.dim..], 3 * d);
    (view(0), view(1), view(2))
}

#[cfg(test)]
mod tests {
    use super::super::cpu::testing::close;
    use super::*;

    /// A deterministic `[rows, cols]` in [-1.5, 1.5].
    fn values(rows: usize, cols: usize, salt: u64) -> TensorData {
        super::super::cpu::testing::values(rows, cols, salt, 1.5, 0.0)
    }

    #[test]
    fn forward_and_backward_are_burns_composed_attention_up_to_rounding() {
        // Odd sizes: 3 sequences of 7 positions, 2 heads of 5 columns.
        let (b, t, heads, dim) = (3, 7, 2, 5);
        let d = heads * dim;
        let device = Default::default();
        let input = || {
            Tensor::<Autodiff<Flex>, 2>::from_data(values(b * t, 3 * d, 1), &device).require_grad()
        };
        let weights = Tensor::<Autodiff<Flex>, 2>::from_data(values(b * t, d, 2), &device);
        let (ours, burns) = (input(), input());
        let y_ours = causal_attention(ours.clone(), b, heads);
        let y_burns = composed(burns.clone(), b, heads);
        close(y_ours.to_data(), y_burns.to_data(), 2e-5, "forward");
        let g_ours = (y_ours * weights.clone()).sum().backward();
        let g_burns = (y_burns * weights).sum().backward();
        close(
            ours.grad(&g_ours).unwrap().into_data(),
            burns.grad(&g_burns).unwrap().into_data(),
            2e-5,
            "gradient of the projection",
        );

        let plain = Tensor::<Flex, 2>::from_data(values(b * t, 3 * d, 1), &device);
        close(
            causal_attention(plain.clone(), b, heads).into_data(),
            composed(plain, b, heads).into_data(),
            2e-5,
            "forward without autodiff",
        );
    }

    #[test]
    fn a_position_sees_nothing_after_it() {
        let (b, t, heads, dim) = (2, 6, 3, 4);
        let d = heads * dim;
        let device = Default::default();
        let data = values(b * t, 3 * d, 7);
        let before = causal_attention(
            Tensor::<Flex, 2>::from_data(data.clone(), &device),
            b,
            heads,
        );
        // Change every key and value of the last position of each sequence.
        let mut changed = data.to_vec::<f32>().unwrap();
        for s in 0..b {
            let row = (s * t + t - 1) * 3 * d;
            for x in &mut changed[row + d..row + 3 * d] {
                *x += 3.0;
            }
        }
        let after = causal_attention(
            Tensor::<Flex, 2>::from_data(TensorData::new(changed, [b * t, 3 * d]), &device),
            b,
            heads,
        );
        let (before, after) = (
            before.into_data().to_vec::<f32>().unwrap(),
            after.into_data().to_vec::<f32>().unwrap(),
        );
        for s in 0..b {
            for i in 0..t {
                let row = (s * t + i) * d..(s * t + i + 1) * d;
                if i < t - 1 {
                    assert_eq!(before[row.clone()], after[row], "sequence {s} position {i}");
                } else {
                    assert_ne!(before[row.clone()], after[row], "the last position itself");
                }
            }
        }
    }
}
