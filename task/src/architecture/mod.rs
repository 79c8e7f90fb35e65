//! Model architectures. An architecture is one module with one implementation of [`Architecture`]:
//! the serde struct of its `[model]` table (which implements the trait), the burn module it builds,
//! and that module's loss on a batch. To add one, write the module, then give it a variant in
//! [`ModelSpec`] (its `architecture = "..."` name) and in [`TaskModel`], and
//! an arm in each match below.

pub mod attention;
mod cpu;
pub mod gelu;
pub mod linear;
pub mod mlp;
pub mod norm;
pub mod transformer;

pub(crate) use cpu::as_one_of_several;

use crate::batch::Batch;
use crate::problems::Problems;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use mlp::MlpSpec;
pub use transformer::TransformerSpec;

/// The `[model]` table: `architecture = "..."` picks one of the registered architectures (see
/// this module), the other keys are that architecture's own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "architecture", rename_all = "snake_case")]
pub enum ModelSpec {
    Transformer(TransformerSpec),
    Mlp(MlpSpec),
}

impl ModelSpec {
    /// The transformer's table, for tasks that use one (tests shrink it).
    pub fn transformer_mut(&mut self) -> Option<&mut TransformerSpec> {
        match self {
            ModelSpec::Transformer(t) => Some(t),
            _ => None,
        }
    }
}

/// What a task's data look like, for an architecture to check its `[model]` table against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataShape {
    /// Pages of tokens: bytes, or token ids below `vocab` (`None` when the corpus could not be
    /// read: its own problem is reported under `data`).
    Tokens {
        bytes: bool,
        vocab: Option<usize>,
        page_len: usize,
    },
    /// Pages of table rows.
    Table {
        features: usize,
        classes: usize,
        page_len: usize,
    },
}

/// A model family a task can train. Implemented by the architecture's `[model]` table.
pub trait Architecture {
    /// The burn module this table describes.
    type Model<B: Backend>: Module<B>;

    /// Adds every problem of the table (keys `model.*`, or `data.*` where the data do not fit the
    /// model) to `problems`.
    fn check(&self, data: &DataShape, problems: &mut Problems);

    /// How many consecutive items of a page one training example spans: `seq_len + 1` tokens for
    /// a language model (inputs and shifted targets), one row for a classifier.
    fn example_len(&self) -> usize;

    /// One line for `subnet task check`.
    fn summary(&self) -> String;

    /// Standard deviation of the normal initialization of weight matrices and embeddings, and the
    /// seed it is drawn from (the genesis checkpoint).
    fn init(&self) -> (f64, u64);

    /// A model of this shape; its values are replaced by a checkpoint's before use.
    fn build<B: Backend>(&self, device: &B::Device) -> Self::Model<B>;

    /// Mean loss of `model` on `batch`, in nats.
    fn loss<B: Backend>(model: &Self::Model<B>, batch: &Batch, device: &B::Device) -> Tensor<B, 1>;

    /// Loss of `model` on each example of `batch` (`[rows]`, nats): evaluation runs many small
    /// batches as one forward pass and splits the result.
    fn row_losses<B: Backend>(
        model: &Self::Model<B>,
        batch: &Batch,
        device: &B::Device,
    ) -> Tensor<B, 1>;
}

/// The model of any registered architecture, as one burn module (so one optimizer type serves all).
/// A process holds one or two models, so the size of the largest variant costs nothing (and burn's
/// `Module` derive does not see through a `Box`).
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum TaskModel<B: Backend> {
    Transformer(transformer::ByteTransformer<B>),
    Mlp(mlp::Mlp<B>),
}

impl<B: Backend> TaskModel<B> {
    pub fn new(spec: &ModelSpec, device: &B::Device) -> Self {
        match spec {
            ModelSpec::Transformer(s) => TaskModel::Transformer(s.build(device)),
            ModelSpec::Mlp(s) => TaskModel::Mlp(s.build(device)),
        }
    }

    pub fn loss(&self, batch: &Batch, device: &B::Device) -> Tensor<B, 1> {
        match self {
            TaskModel::Transformer(m) => transformer::TransformerSpec::loss(m, batch, device),
            TaskModel::Mlp(m) => mlp::MlpSpec::loss(m, batch, device),
        }
    }

    pub fn row_losses(&self, batch: &Batch, device: &B::Device) -> Tensor<B, 1> {
        match self {
            TaskModel::Transformer(m) => transformer::TransformerSpec::row_losses(m, batch, device),
            TaskModel::Mlp(m) => mlp::MlpSpec::row_losses(m, batch, device),
        }
    }
}

impl ModelSpec {
    fn architecture(&self) -> &dyn ArchitectureInfo {
        match self {
            ModelSpec::Transformer(s) => s,
            ModelSpec::Mlp(s) => s,
        }
    }

    pub fn check(&self, data: &DataShape, problems: &mut Problems) {
        self.architecture().check(data, problems)
    }

    pub fn example_len(&self) -> usize {
        self.architecture().example_len()
    }

    pub fn summary(&self) -> String {
        self.architecture().summary()
    }

    pub fn init(&self) -> (f64, u64) {
        self.architecture().init()
    }
}

/// The backend-independent part of [`Architecture`], object safe.
trait ArchitectureInfo {
    fn check(&self, data: &DataShape, problems: &mut Problems);
    fn example_len(&self) -> usize;
    fn summary(&self) -> String;
    fn init(&self) -> (f64, u64);
}

impl<A: Architecture> ArchitectureInfo for A {
    fn check(&self, data: &DataShape, problems: &mut Problems) {
        Architecture::check(self, data, problems)
    }
    fn example_len(&self) -> usize {
        Architecture::example_len(self)
    }
    fn summary(&self) -> String {
        Architecture::summary(self)
    }
    fn init(&self) -> (f64, u64) {
        Architecture::init(self)
    }
}
