//! A multilayer perceptron classifier for tables: standardized features in, class logits out,
//! ReLU between linear layers, trained on cross-entropy.

use super::{Architecture, DataShape};
use crate::batch::Batch;
use crate::problems::Problems;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, relu};
use serde::{Deserialize, Serialize};

/// `architecture = "mlp"`: `inputs` features, hidden layers of the given widths, `classes` outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpSpec {
    pub inputs: usize,
    pub hidden: Vec<usize>,
    pub classes: usize,
    /// Standard deviation of the normal initialization of the weight matrices.
    pub init_std: f64,
    pub init_seed: u64,
}

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    layers: Vec<Linear<B>>,
}

impl<B: Backend> Mlp<B> {
    /// Class logits [rows, classes] of features [rows, inputs].
    pub fn forward(&self, mut x: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }
}

impl MlpSpec {
    /// Layer widths from the inputs to the classes.
    fn widths(&self) -> Vec<usize> {
        std::iter::once(self.inputs)
            .chain(self.hidden.iter().copied())
            .chain(std::iter::once(self.classes))
            .collect()
    }
}

impl Architecture for MlpSpec {
    type Model<B: Backend> = Mlp<B>;

    fn check(&self, data: &DataShape, p: &mut Problems) {
        match *data {
            DataShape::Table {
                features,
                classes,
                page_len,
            } => {
                p.check(
                    page_len >= 2,
                    "data.page_len",
                    format!(
                        "= {page_len} must hold two rows: each pair of a page's rows has one trained and one held back"
                    ),
                );
                p.check(
                    self.inputs == features,
                    "model.inputs",
                    format!("= {} but the table has {features} features", self.inputs),
                );
                p.check(
                    self.classes == classes,
                    "model.classes",
                    format!("= {} but the table has {classes} classes", self.classes),
                );
            }
            DataShape::Tokens { .. } => p.check(
                false,
                "model.architecture",
                "= \"mlp\" needs a table ([data.table]), not token data".into(),
            ),
        }
        p.check(
            self.hidden.iter().all(|&h| h > 0),
            "model.hidden",
            format!("= {:?}: every layer needs a positive width", self.hidden),
        );
        p.check(
            self.init_std > 0.0 && self.init_std.is_finite(),
            "model.init_std",
            format!("= {} must be positive", self.init_std),
        );
    }

    fn example_len(&self) -> usize {
        1
    }

    fn summary(&self) -> String {
        let widths: Vec<String> = self.widths().iter().map(|w| w.to_string()).collect();
        format!("mlp: {} (ReLU)", widths.join(" -> "))
    }

    fn init(&self) -> (f64, u64) {
        (self.init_std, self.init_seed)
    }

    fn build<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        Mlp {
            layers: self
                .widths()
                .windows(2)
                .map(|w| LinearConfig::new(w[0], w[1]).init(device))
                .collect(),
        }
    }

    fn loss<B: Backend>(model: &Mlp<B>, batch: &Batch, device: &B::Device) -> Tensor<B, 1> {
        Self::row_losses(model, batch, device).mean()
    }

    fn row_losses<B: Backend>(model: &Mlp<B>, batch: &Batch, device: &B::Device) -> Tensor<B, 1> {
        let (features, classes) = batch.feature_tensors::<B>(device);
        let [rows] = classes.dims();
        log_softmax(model.forward(features), 1)
            .gather(1, classes.reshape([rows, 1]))
            .reshape([rows])
            .neg()
    }
}
