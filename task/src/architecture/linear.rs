//! A linear layer `x W + b` on rows, written for the CPU backend: the bias is the product's starting
//! value instead of a pass of its own, and every result is written into memory allocated once.
//!
//! burn's CPU backend allocates each product's output by zeroing a byte buffer and copying it into
//! an aligned one, then adds the bias as another tensor, and sums the bias gradient with a general
//! reduction. The products here are the same `gemm` calls, on rayon's pool when burn would use it
//! and no other part of the step is running beside (`as_one_of_several`); each output element is
//! one sum in one order, so the bits do not depend on the threads. Other backends (the GPUs) run
//! burn's `Linear::forward`.

use super::cpu::{Out, Threads, View, float, fresh, is, product, same, tensor};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};

/// `layer` applied to the rows of `x` (`[rows, in]` to `[rows, out]`).
pub fn linear<B: Backend>(layer: &Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    let Some(bias) = &layer.bias else {
        return layer.forward(x);
    };
    let (weight, bias) = (layer.weight.val(), bias.val());
    if [x.dtype(), weight.dtype(), bias.dtype()] != [DType::F32; 3] {
        return layer.forward(x);
    }
    if is::<B, Autodiff<Flex>>() {
        return same(autodiff_linear(same(x), same(weight), same(bias)));
    }
    if is::<B, Flex>() {
        let y = forward(
            &float(same::<B, Flex, 2>(x)).to_contiguous(),
            &float(same::<B, Flex, 2>(weight)).to_contiguous(),
            &float(same::<B, Flex, 1>(bias)).to_contiguous(),
        );
        return same(Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(y)));
    }
    layer.forward(x)
}

/// The linear layer on the training backend as one recorded operation.
fn autodiff_linear(
    x: Tensor<Autodiff<Flex>, 2>,
    weight: Tensor<Autodiff<Flex>, 2>,
    bias: Tensor<Autodiff<Flex>, 1>,
) -> Tensor<Autodiff<Flex>, 2> {
    #[derive(Debug)]
    struct LinearOp;

    impl Backward<Flex, 3> for LinearOp {
        /// The input (for the weight's gradient) and the weight (for the input's).
        type State = (FlexTensor, FlexTensor);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [node_x, node_weight, node_bias] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
            let (x, weight) = ops.state;
            if let Some(node) = node_x {
                grads.register::<Flex>(node.id, input_gradient(&weight, &grad));
            }
            if let Some(node) = node_weight {
                grads.register::<Flex>(node.id, weight_gradient(&x, &grad));
            }
            if let Some(node) = node_bias {
                grads.register::<Flex>(node.id, bias_gradient(&grad));
            }
        }
    }

    let (x, weight, bias) = (float(x), float(weight), float(bias));
    let (xp, wp, bp) = (
        x.primitive.to_contiguous(),
        weight.primitive.to_contiguous(),
        bias.primitive.to_contiguous(),
    );
    let y = forward(&xp, &wp, &bp);
    let y = match LinearOp
        .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone(), bias.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((xp, wp), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// `[rows, in]` and `[in, out]` of a contiguous input and weight.
fn sizes(x: &FlexTensor, weight: &FlexTensor) -> (usize, usize, usize) {
    let (xs, ws) = (x.layout().shape(), weight.layout().shape());
    assert!(
        xs.num_dims() == 2 && ws.num_dims() == 2 && xs[1] == ws[0],
        "linear of {xs:?} by {ws:?}"
    );
    (xs[0], ws[0], ws[1])
}

/// `x W + b`: every row starts as the bias, then the product is added to it.
fn forward(x: &FlexTensor, weight: &FlexTensor, bias: &FlexTensor) -> FlexTensor {
    let (rows, inputs, outputs) = sizes(x, weight);
    let bias = bias.storage::<f32>();
    assert_eq!(
        bias.len(),
        outputs,
        "a bias of {} for {outputs} outputs",
        bias.len()
    );
    let mut y = Vec::with_capacity(rows * outputs);
    for _ in 0..rows {
        y.extend_from_slice(bias);
    }
    product(
        rows,
        outputs,
        inputs,
        Out::rows(&mut y, outputs).adding(),
        View::rows(x.storage::<f32>(), inputs),
        View::rows(weight.storage::<f32>(), outputs),
        Threads::Pool,
    );
    tensor(y, [rows, outputs])
}

/// `dy Wᵀ`.
fn input_gradient(weight: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let (inputs, outputs) = {
        let ws = weight.layout().shape();
        (ws[0], ws[1])
    };
    let rows = grad.layout().shape()[0];
    // SAFETY: the product writes all rows x inputs elements.
    let dx = unsafe {
        fresh(rows * inputs, |dx| {
            product(
                rows,
                inputs,
                outputs,
                Out::fresh(dx, inputs),
                View::rows(grad.storage::<f32>(), outputs),
                View::rows(weight.storage::<f32>(), outputs).transposed(),
                Threads::Pool,
            )
        })
    };
    tensor(dx, [rows, inputs])
}

/// `xᵀ dy`.
fn weight_gradient(x: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let (rows, inputs) = {
        let xs = x.layout().shape();
        (xs[0], xs[1])
    };
    let outputs = grad.layout().shape()[1];
    // SAFETY: the product writes all inputs x outputs elements.
    let dw = unsafe {
        fresh(inputs * outputs, |dw| {
            product(
                inputs,
                outputs,
                rows,
                Out::fresh(dw, outputs),
                View::rows(x.storage::<f32>(), inputs).transposed(),
                View::rows(grad.storage::<f32>(), outputs),
                Threads::Pool,
            )
        })
    };
    tensor(dw, [inputs, outputs])
}

/// The column sums of `dy`, row after row.
fn bias_gradient(grad: &FlexTensor) -> FlexTensor {
    let outputs = grad.layout().shape()[1];
    let mut db = vec![0.0f32; outputs];
    for row in grad.storage::<f32>().chunks_exact(outputs) {
        for (d, &g) in db.iter_mut().zip(row) {
            *d += g;
        }
    }
    tensor(db, [outputs])
}

#[cfg(test)]
mod tests {
    use super::super::cpu::testing::close;
    use super::*;
    use burn::nn::LinearConfig;

    fn values(rows: usize, cols: usize, salt: u64) -> TensorData {
        super::super::cpu::testing::values(rows, cols, salt, 1.0, 0.0)
    }

    #[test]
    fn forward_and_gradients_are_burns_linear_up_to_rounding() {
        // Large enough for the pool (300 x 200 x 150 multiply-adds), and a small one.
        for (rows, inputs, outputs) in [(300, 150, 200), (5, 3, 7)] {
            let device = Default::default();
            let layer = LinearConfig::new(inputs, outputs).init::<Autodiff<Flex>>(&device);
            let x = Tensor::<Autodiff<Flex>, 2>::from_data(values(rows, inputs, 3), &device)
                .require_grad();
            let weights = Tensor::<Autodiff<Flex>, 2>::from_data(values(rows, outputs, 4), &device);
            let ours = linear(&layer, x.clone());
            let burns = layer.forward(x.clone());
            close(ours.to_data(), burns.to_data(), 1e-5, "forward");
            let g_ours = (ours * weights.clone()).sum().backward();
            let g_burns = (burns * weights).sum().backward();
            close(
                x.grad(&g_ours).unwrap().into_data(),
                x.grad(&g_burns).unwrap().into_data(),
                1e-5,
                "input gradient",
            );
            close(
                layer.weight.grad(&g_ours).unwrap().into_data(),
                layer.weight.grad(&g_burns).unwrap().into_data(),
                1e-5,
                "weight gradient",
            );
            let bias = layer.bias.as_ref().unwrap();
            close(
                bias.grad(&g_ours).unwrap().into_data(),
                bias.grad(&g_burns).unwrap().into_data(),
                1e-5,
                "bias gradient",
            );

            let plain = LinearConfig::new(inputs, outputs).init::<Flex>(&device);
            let x = Tensor::<Flex, 2>::from_data(values(rows, inputs, 5), &device);
            close(
                linear(&plain, x.clone()).into_data(),
                plain.forward(x).into_data(),
                1e-5,
                "forward without autodiff",
            );
        }
    }

    #[test]
    fn a_strided_input_is_read_as_its_elements() {
        let device = Default::default();
        let layer = LinearConfig::new(6, 4).init::<Flex>(&device);
        let x = Tensor::<Flex, 2>::from_data(values(6, 9, 1), &device).transpose();
        close(
            linear(&layer, x.clone()).into_data(),
            layer.forward(x).into_data(),
            1e-5,
            "transposed input",
        );
    }
}
