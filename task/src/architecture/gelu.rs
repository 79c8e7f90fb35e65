//! The exact GELU, `x * Φ(x)` with Φ the standard normal distribution function, written for the
//! CPU backend as loops the compiler vectorizes, forward and backward.
//!
//! burn's flex computes GELU with libm's scalar `erff` one element at a time, and its backward
//! with `erff` and `exp` again: 11% of tiny-lm's training samples (BENCHMARKS.md). Here Φ comes
//! from the Abramowitz-Stegun 7.1.26 approximation of erf (absolute error below 1.5e-7) and its
//! `exp` from a branch-free polynomial, so a loop over a tensor runs four lanes at a time with the
//! baseline x86-64 instructions alone: no fused multiply-add and no choice of kernel by CPU, so
//! every machine computes the same bits. On `Autodiff<Flex>` the backward is recorded as one
//! operation of burn's autodiff; other backends (the GPUs) keep burn's own GELU.

use super::cpu::{cast, exp_nonpositive, map, same, tensor, zip_map};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::ops::ActivationOps;
use burn::tensor::{DType, TensorPrimitive};

/// GELU of `x`: this module's kernels on the CPU backend (training and evaluation), burn's
/// `gelu` elsewhere.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let x = match cast::<B, Autodiff<Flex>, D>(x) {
        Ok(x) => return same(autodiff_gelu(x)),
        Err(x) => x,
    };
    match cast::<B, Flex, D>(x) {
        Ok(x) => same(match x.into_primitive() {
            TensorPrimitive::Float(t) => Tensor::from_primitive(TensorPrimitive::Float(forward(t))),
            quantized => burn::tensor::activation::gelu(Tensor::from_primitive(quantized)),
        }),
        Err(x) => burn::tensor::activation::gelu(x),
    }
}

/// GELU on the training backend, with its backward as one recorded operation.
fn autodiff_gelu<const D: usize>(x: Tensor<Autodiff<Flex>, D>) -> Tensor<Autodiff<Flex>, D> {
    #[derive(Debug)]
    struct Gelu;

    impl Backward<Flex, 1> for Gelu {
        type State = FlexTensor;

        fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
                backward(ops.state, grad)
            });
        }
    }

    let x = match x.into_primitive() {
        TensorPrimitive::Float(x) => x,
        other => return burn::tensor::activation::gelu(Tensor::from_primitive(other)),
    };
    let y = match Gelu
        .prepare::<burn::backend::autodiff::checkpoint::strategy::NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(x.primitive.clone(), forward(x.primitive)),
        OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// `x * Φ(x)` element by element (f32; other types go to flex's own GELU).
fn forward(x: FlexTensor) -> FlexTensor {
    if x.dtype() != DType::F32 {
        return <Flex as ActivationOps<Flex>>::gelu(x);
    }
    let x = x.to_contiguous();
    let y = map(x.storage::<f32>(), |x| x * normal(x).0);
    tensor(y, x.layout().shape().clone())
}

/// `grad * (Φ(x) + x φ(x))`, the derivative of `x * Φ(x)` times the gradient flowing back.
fn backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
    if x.dtype() != DType::F32 || grad.dtype() != DType::F32 {
        return <Flex as ActivationOps<Flex>>::gelu_backward(x, grad);
    }
    let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
    let out = zip_map(x.storage::<f32>(), grad.storage::<f32>(), |x, g| {
        let (cdf, pdf) = normal(x);
        g * (cdf + x * pdf)
    });
    tensor(out, x.layout().shape().clone())
}

/// Φ(x) and φ(x), the standard normal distribution and density functions, without a branch.
#[inline(always)]
fn normal(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let e = exp_nonpositive(-z * z);
    // 1 - erf(|x| / √2): Φ(x) is half of it below zero and one less half of it above, which keeps
    // the far negative tail's relative accuracy.
    let tail = poly * e;
    let cdf = if x < 0.0 {
        0.5 * tail
    } else {
        1.0 - 0.5 * tail
    };
    (cdf, FRAC_1_SQRT_2PI * e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn reference(x: f64) -> (f64, f64) {
        let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
        let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        (x * cdf, cdf + x * pdf)
    }

    fn grid() -> Vec<f32> {
        (-12_000..12_000).map(|i| i as f32 / 1000.0).collect()
    }

    #[test]
    fn the_kernels_match_the_exact_gelu_and_its_derivative() {
        for x in grid() {
            let (value, slope) = reference(x as f64);
            let (cdf, pdf) = normal(x);
            let (ours, our_slope) = (x * cdf, cdf + x * pdf);
            assert!(
                (ours as f64 - value).abs() <= 2e-7 * (1.0 + x.abs() as f64),
                "gelu({x}) = {ours}, exact {value}"
            );
            assert!(
                (our_slope as f64 - slope).abs() <= 4e-7 * (1.0 + x.abs() as f64),
                "gelu'({x}) = {our_slope}, exact {slope}"
            );
        }
    }

    #[test]
    fn wide_lanes_give_the_bits_of_narrow_ones() {
        let xs = grid();
        let gs: Vec<f32> = xs.iter().map(|x| (x * 3.0).sin()).collect();
        let slope = |x: f32, g: f32| {
            let (cdf, pdf) = normal(x);
            g * (cdf + x * pdf)
        };
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(
            bits(map(&xs, |x| x * normal(x).0)),
            bits(super::super::cpu::zip_map_baseline(&xs, &xs, |x, _| x * normal(x).0))
        );
        assert_eq!(
            bits(zip_map(&xs, &gs, slope)),
            bits(super::super::cpu::zip_map_baseline(&xs, &gs, slope))
        );
    }

    #[test]
    fn on_each_backend_path_it_is_burns_gelu_up_to_rounding() {
        let values = grid();
        let n = values.len();
        let device = Default::default();
        let tensor = || TensorData::new(values.clone(), [n / 8, 8]);
        let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
            for (i, (a, b)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                    "{what} at {i}: {a} against {b}"
                );
            }
        };
        let read = |d: TensorData| d.to_vec::<f32>().unwrap();

        let x = Tensor::<Flex, 2>::from_data(tensor(), &device);
        close(
            read(gelu(x.clone()).into_data()),
            read(burn::tensor::activation::gelu(x).into_data()),
            "flex forward",
        );

        let ours = Tensor::<Autodiff<Flex>, 2>::from_data(tensor(), &device).require_grad();
        let burns = Tensor::<Autodiff<Flex>, 2>::from_data(tensor(), &device).require_grad();
        // A weighting per element, so each gradient is checked against its own slope.
        let weights = Tensor::<Autodiff<Flex>, 2>::from_data(tensor(), &device).sin();
        let y_ours = gelu(ours.clone());
        let y_burns = burn::tensor::activation::gelu(burns.clone());
        close(
            read(y_ours.clone().into_data()),
            read(y_burns.clone().into_data()),
            "autodiff forward",
        );
        let g_ours = (y_ours * weights.clone()).sum().backward();
        let g_burns = (y_burns * weights).sum().backward();
        close(
            read(ours.grad(&g_ours).unwrap().into_data()),
            read(burns.grad(&g_burns).unwrap().into_data()),
            "autodiff backward",
        );
        // A strided input (a transpose) is read as its elements, not its buffer.
        let x = Tensor::<Flex, 2>::from_data(tensor(), &device).transpose();
        close(
            read(gelu(x.clone()).into_data()),
            read(burn::tensor::activation::gelu(x).into_data()),
            "strided forward",
        );
    }
}
