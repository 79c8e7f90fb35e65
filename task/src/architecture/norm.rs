//! LayerNorm over each row, written for the CPU backend as one operation forward and one backward.
//!
//! burn's autodiff composes LayerNorm from ten tensor operations (mean, difference, square, mean,
//! square root, quotient, scale, shift), each a pass over the rows and a tensor it keeps for its
//! backward. Here a row is normalized in one pass and the backward needs only the normalized rows
//! and each row's inverse deviation. Sums are [`super::cpu`]'s fixed-order lanes and rows are taken
//! in order, so the bits do not depend on the threads. Other backends (the GPUs) run burn's
//! `LayerNorm::forward`.

use super::cpu::{dot, float, is, same, sum, tensor};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};

/// The epsilon added to each row's variance: burn's and PyTorch's default, and what an exported
/// model's config names.
pub const EPSILON: f64 = 1e-5;

/// A LayerNorm of `d` features with [`EPSILON`], the one these kernels compute.
pub fn layer_norm_of<B: Backend>(d: usize, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(d).with_epsilon(EPSILON).init(device)
}

/// `layer` (made by [`layer_norm_of`]) applied to each row of `x` (`[rows, d]`).
pub fn layer_norm<B: Backend>(layer: &LayerNorm<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    let Some(beta) = &layer.beta else {
        return layer.forward(x);
    };
    let (gamma, beta) = (layer.gamma.val(), beta.val());
    if [x.dtype(), gamma.dtype(), beta.dtype()] != [DType::F32; 3] {
        return layer.forward(x);
    }
    if is::<B, Autodiff<Flex>>() {
        return same(autodiff_layer_norm(same(x), same(gamma), same(beta)));
    }
    if is::<B, Flex>() {
        let (x, gamma, beta) = (
            float(same::<B, Flex, 2>(x)).to_contiguous(),
            float(same::<B, Flex, 1>(gamma)).to_contiguous(),
            float(same::<B, Flex, 1>(beta)).to_contiguous(),
        );
        let (y, _) = forward(&x, &gamma, &beta, false);
        return same(Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(y)));
    }
    layer.forward(x)
}

/// d(loss)/d(gamma): the sum over rows of the normalized input times the output's gradient.
fn gamma_gradient(xhat: &[f32], dy: &[f32], d: usize) -> Vec<f32> {
    let mut dgamma = vec![0.0f32; d];
    for (xr, gr) in xhat.chunks_exact(d).zip(dy.chunks_exact(d)) {
        for ((s, &x), &g) in dgamma.iter_mut().zip(xr).zip(gr) {
            *s += x * g;
        }
    }
    dgamma
}

/// d(loss)/d(beta): the sum over rows of the output's gradient.
fn beta_gradient(dy: &[f32], d: usize) -> Vec<f32> {
    let mut dbeta = vec![0.0f32; d];
    for gr in dy.chunks_exact(d) {
        for (s, &g) in dbeta.iter_mut().zip(gr) {
            *s += g;
        }
    }
    dbeta
}

/// LayerNorm on the training backend as one recorded operation.
fn autodiff_layer_norm(
    x: Tensor<Autodiff<Flex>, 2>,
    gamma: Tensor<Autodiff<Flex>, 1>,
    beta: Tensor<Autodiff<Flex>, 1>,
) -> Tensor<Autodiff<Flex>, 2> {
    #[derive(Debug)]
    struct Norm;

    impl Backward<Flex, 3> for Norm {
        /// The normalized rows, each row's inverse deviation, and gamma.
        type State = (FlexTensor, Vec<f32>, FlexTensor);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [node_x, node_gamma, node_beta] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
            let (normalized, inverse_deviation, gamma) = ops.state;
            let (xhat, dy) = (normalized.storage::<f32>(), grad.storage::<f32>());
            let d = gamma.layout().shape()[0];
            if let Some(node) = node_x {
                let dx = input_gradient(xhat, &inverse_deviation, gamma.storage::<f32>(), dy);
                grads.register::<Flex>(node.id, tensor(dx, [dy.len() / d, d]));
            }
            if let Some(node) = node_gamma {
                grads.register::<Flex>(node.id, tensor(gamma_gradient(xhat, dy, d), [d]));
            }
            if let Some(node) = node_beta {
                grads.register::<Flex>(node.id, tensor(beta_gradient(dy, d), [d]));
            }
        }
    }

    let (x, gamma, beta) = (float(x), float(gamma), float(beta));
    let (xp, gp, bp) = (
        x.primitive.to_contiguous(),
        gamma.primitive.to_contiguous(),
        beta.primitive.to_contiguous(),
    );
    let y = match Norm
        .prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (y, kept) = forward(&xp, &gp, &bp, true);
            let (normalized, inverse_deviation) = kept.expect("kept when asked");
            prep.finish((normalized, inverse_deviation, gp), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&xp, &gp, &bp, false).0),
    };
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// `gamma * (x - mean) / sqrt(var + EPSILON) + beta` for each row; with `keep`, also the normalized
/// rows and each row's `1 / sqrt(var + EPSILON)` for the backward.
fn forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    keep: bool,
) -> (FlexTensor, Option<(FlexTensor, Vec<f32>)>) {
    let shape = x.layout().shape().clone();
    let (gamma, beta) = (gamma.storage::<f32>(), beta.storage::<f32>());
    let d = gamma.len();
    assert!(
        shape.num_dims() == 2 && shape[1] == d && beta.len() == d,
        "LayerNorm of {d} features over {shape:?}"
    );
    let x = x.storage::<f32>();
    let rows = x.len() / d;
    let mut y = vec![0.0f32; x.len()];
    let mut normalized = vec![0.0f32; if keep { x.len() } else { 0 }];
    let mut inverse_deviation = Vec::with_capacity(if keep { rows } else { 0 });
    let mut centered = vec![0.0f32; d];
    for (r, (xr, yr)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
        let mean = sum(xr) / d as f32;
        for (c, &v) in centered.iter_mut().zip(xr) {
            *c = v - mean;
        }
        let variance = dot(&centered, &centered) / d as f32;
        let inverse = 1.0 / (variance + EPSILON as f32).sqrt();
        for (((o, &c), &g), &b) in yr.iter_mut().zip(&centered).zip(gamma).zip(beta) {
            *o = c * inverse * g + b;
        }
        if keep {
            for (n, &c) in normalized[r * d..(r + 1) * d].iter_mut().zip(&centered) {
                *n = c * inverse;
            }
            inverse_deviation.push(inverse);
        }
    }
    let kept = keep.then(|| (tensor(normalized, shape.clone()), inverse_deviation));
    (tensor(y, shape), kept)
}

/// `dx = (dx̂ - mean(dx̂) - x̂ mean(dx̂ x̂)) / sqrt(var + EPSILON)` with `dx̂ = dy * gamma`, row by row.
fn input_gradient(xhat: &[f32], inverse_deviation: &[f32], gamma: &[f32], dy: &[f32]) -> Vec<f32> {
    let d = gamma.len();
    let mut dx = vec![0.0f32; dy.len()];
    let mut dxhat = vec![0.0f32; d];
    for (((xr, gr), dr), &inverse) in xhat
        .chunks_exact(d)
        .zip(dy.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
        .zip(inverse_deviation)
    {
        for ((h, &g), &w) in dxhat.iter_mut().zip(gr).zip(gamma) {
            *h = g * w;
        }
        let mean = sum(&dxhat) / d as f32;
        let mean_times_xhat = dot(&dxhat, xr) / d as f32;
        for ((o, &h), &x) in dr.iter_mut().zip(&dxhat).zip(xr) {
            *o = (h - mean - x * mean_times_xhat) * inverse;
        }
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::super::cpu::testing::close;
    use super::*;
    use burn::module::Param;

    fn values(rows: usize, cols: usize, salt: u64, scale: f32) -> TensorData {
        super::super::cpu::testing::values(rows, cols, salt, scale, 0.3)
    }

    /// A LayerNorm whose gamma and beta are not the initial ones and all differ.
    fn layer<B: Backend>(d: usize, device: &B::Device) -> LayerNorm<B> {
        let mut layer = layer_norm_of::<B>(d, device);
        let data = |salt| values(1, d, salt, 1.0).convert::<f32>();
        layer.gamma = Param::from_tensor(Tensor::<B, 2>::from_data(data(8), device).reshape([d]));
        layer.beta = Some(Param::from_tensor(
            Tensor::<B, 2>::from_data(data(9), device).reshape([d]),
        ));
        layer
    }

    #[test]
    fn forward_and_gradients_are_burns_layer_norm_up_to_rounding() {
        for (rows, d, scale) in [(37, 24, 1.0), (5, 3, 100.0)] {
            let device = Default::default();
            let norm = layer::<Autodiff<Flex>>(d, &device);
            let x = Tensor::<Autodiff<Flex>, 2>::from_data(values(rows, d, 3, scale), &device)
                .require_grad();
            let weights = Tensor::<Autodiff<Flex>, 2>::from_data(values(rows, d, 4, 1.0), &device);
            let ours = layer_norm(&norm, x.clone());
            let burns = norm.forward(x.clone());
            close(ours.to_data(), burns.to_data(), 2e-5, "forward");
            let g_ours = (ours * weights.clone()).sum().backward();
            let g_burns = (burns * weights).sum().backward();
            close(
                x.grad(&g_ours).unwrap().into_data(),
                x.grad(&g_burns).unwrap().into_data(),
                2e-5,
                "input gradient",
            );
            close(
                norm.gamma.grad(&g_ours).unwrap().into_data(),
                norm.gamma.grad(&g_burns).unwrap().into_data(),
                2e-5,
                "gamma gradient",
            );
            let beta = norm.beta.as_ref().unwrap();
            close(
                beta.grad(&g_ours).unwrap().into_data(),
                beta.grad(&g_burns).unwrap().into_data(),
                2e-5,
                "beta gradient",
            );

            let plain = layer::<Flex>(d, &device);
            let x = Tensor::<Flex, 2>::from_data(values(rows, d, 5, scale), &device);
            close(
                layer_norm(&plain, x.clone()).into_data(),
                plain.forward(x).into_data(),
                2e-5,
                "forward without autodiff",
            );
        }
    }
}
