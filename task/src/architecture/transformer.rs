//! The byte-level decoder-only transformer: token and learned position embeddings, pre-LayerNorm
//! blocks of causal self-attention and a GELU MLP, a final LayerNorm and an untied output head.
//!
//! `check` is a list of one-line rules on the model's shape against the data's, over 60 lines.

use super::attention::causal_attention;
use super::gelu::gelu;
use super::linear::linear;
use super::norm::{layer_norm, layer_norm_of};
use super::{Architecture, DataShape};
use crate::batch::Batch;
use crate::problems::Problems;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

/// `architecture = "transformer"`: a byte- or token-level decoder-only transformer (pre-LayerNorm,
/// learned positions, GELU MLP, untied head).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerSpec {
    pub vocab: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub mlp_ratio: usize,
    pub seq_len: usize,
    /// Standard deviation of the normal initialization of weight matrices and embeddings.
    pub init_std: f64,
    pub init_seed: u64,
}

impl Architecture for TransformerSpec {
    type Model<B: Backend> = ByteTransformer<B>;

    fn check(&self, data: &DataShape, p: &mut Problems) {
        match *data {
            DataShape::Tokens {
                bytes,
                vocab,
                page_len,
            } => {
                if bytes {
                    p.check(
                        self.vocab == 256,
                        "model.vocab",
                        format!("= {} but the data are bytes: use 256", self.vocab),
                    );
                } else if let Some(needed) = vocab {
                    p.check(
                        self.vocab >= needed,
                        "model.vocab",
                        format!(
                            "= {} but data.text holds token {}: use at least {needed}",
                            self.vocab,
                            needed - 1
                        ),
                    );
                }
                p.check(
                    page_len >= 2 * (self.seq_len + 1),
                    "data.page_len",
                    format!(
                        "= {page_len} must hold two sequences of model.seq_len + 1 = {} tokens (at least {}): each pair of a page's sequences has one trained and one held back",
                        self.seq_len + 1,
                        2 * (self.seq_len + 1)
                    ),
                );
            }
            DataShape::Table { .. } => p.check(
                false,
                "model.architecture",
                "= \"transformer\" needs token data ([data.markov] or [data.text]), not a table"
                    .into(),
            ),
        }
        p.check(self.d_model > 0, "model.d_model", "must be positive".into());
        p.check(
            self.n_layers > 0,
            "model.n_layers",
            "must be positive".into(),
        );
        p.check(self.n_heads > 0, "model.n_heads", "must be positive".into());
        p.check(
            self.n_heads == 0 || self.d_model.is_multiple_of(self.n_heads),
            "model.n_heads",
            format!(
                "= {} does not divide model.d_model = {}",
                self.n_heads, self.d_model
            ),
        );
        p.check(
            self.mlp_ratio > 0,
            "model.mlp_ratio",
            "must be positive".into(),
        );
        p.check(self.seq_len > 0, "model.seq_len", "must be positive".into());
        p.check(
            self.init_std > 0.0 && self.init_std.is_finite(),
            "model.init_std",
            format!("= {} must be positive", self.init_std),
        );
    }

    fn example_len(&self) -> usize {
        self.seq_len + 1
    }

    fn summary(&self) -> String {
        format!(
            "transformer: {} layers, d_model {}, {} heads, sequence {}, vocab {}",
            self.n_layers, self.d_model, self.n_heads, self.seq_len, self.vocab
        )
    }

    fn init(&self) -> (f64, u64) {
        (self.init_std, self.init_seed)
    }

    fn build<B: Backend>(&self, device: &B::Device) -> ByteTransformer<B> {
        ByteTransformer::new(self, device)
    }

    fn loss<B: Backend>(
        model: &ByteTransformer<B>,
        batch: &Batch,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let (inputs, targets) = batch.token_tensors::<B>(device);
        model.loss(inputs, targets)
    }

    fn row_losses<B: Backend>(
        model: &ByteTransformer<B>,
        batch: &Batch,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let (inputs, targets) = batch.token_tensors::<B>(device);
        model.row_losses(inputs, targets)
    }
}

#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    attn_norm: LayerNorm<B>,
    /// Query, key and value projections in one matrix: one matmul instead of three.
    qkv: Linear<B>,
    attn_out: Linear<B>,
    mlp_norm: LayerNorm<B>,
    mlp_up: Linear<B>,
    mlp_down: Linear<B>,
    n_heads: usize,
}

#[derive(Module, Debug)]
pub struct ByteTransformer<B: Backend> {
    token_embedding: Embedding<B>,
    position_embedding: Embedding<B>,
    blocks: Vec<Block<B>>,
    final_norm: LayerNorm<B>,
    head: Linear<B>,
}

impl<B: Backend> Block<B> {
    fn new(spec: &TransformerSpec, device: &B::Device) -> Self {
        let d = spec.d_model;
        Self {
            attn_norm: layer_norm_of(d, device),
            qkv: LinearConfig::new(d, 3 * d).init(device),
            attn_out: LinearConfig::new(d, d).init(device),
            mlp_norm: layer_norm_of(d, device),
            mlp_up: LinearConfig::new(d, spec.mlp_ratio * d).init(device),
            mlp_down: LinearConfig::new(spec.mlp_ratio * d, d).init(device),
            n_heads: spec.n_heads,
        }
    }

    /// `x` is [b * t, d]: the sequences' positions as the rows of one matrix, so that each linear
    /// layer is one matrix product and its weight gradient one product over all b * t rows (a
    /// [b, t, d] input makes burn multiply b matrices and sum b weight gradients).
    fn forward(&self, x: Tensor<B, 2>, b: usize) -> Tensor<B, 2> {
        let qkv = linear(&self.qkv, layer_norm(&self.attn_norm, x.clone()));
        let attended = causal_attention(qkv, b, self.n_heads);
        let x = x + linear(&self.attn_out, attended);
        let up = linear(&self.mlp_up, layer_norm(&self.mlp_norm, x.clone()));
        x + linear(&self.mlp_down, gelu(up))
    }
}

impl<B: Backend> ByteTransformer<B> {
    pub fn new(spec: &TransformerSpec, device: &B::Device) -> Self {
        Self {
            token_embedding: EmbeddingConfig::new(spec.vocab, spec.d_model).init(device),
            position_embedding: EmbeddingConfig::new(spec.seq_len, spec.d_model).init(device),
            blocks: (0..spec.n_layers)
                .map(|_| Block::new(spec, device))
                .collect(),
            final_norm: layer_norm_of(spec.d_model, device),
            head: LinearConfig::new(spec.d_model, spec.vocab).init(device),
        }
    }

    /// Logits [b, t, vocab] for tokens [b, t].
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let positions = Tensor::<B, 1, Int>::arange(0..t as i64, &device)
            .reshape([1, t])
            .repeat_dim(0, b);
        let embedded =
            self.token_embedding.forward(tokens) + self.position_embedding.forward(positions);
        let d = embedded.dims()[2];
        let mut x = embedded.reshape([b * t, d]);
        for block in &self.blocks {
            x = block.forward(x, b);
        }
        let logits = linear(&self.head, layer_norm(&self.final_norm, x));
        let vocab = logits.dims()[1];
        logits.reshape([b, t, vocab])
    }

    /// Mean next-byte cross-entropy in nats: `inputs` [b, t] predict `targets` [b, t].
    pub fn loss(&self, inputs: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        self.target_log_probs(inputs, targets).mean().neg()
    }

    /// Mean loss of each sequence: `[b]`.
    pub fn row_losses(
        &self,
        inputs: Tensor<B, 2, Int>,
        targets: Tensor<B, 2, Int>,
    ) -> Tensor<B, 1> {
        let [b, t] = inputs.dims();
        self.target_log_probs(inputs, targets)
            .reshape([b, t])
            .mean_dim(1)
            .reshape([b])
            .neg()
    }

    /// Log-probability of each target: `[b * t, 1]`.
    fn target_log_probs(
        &self,
        inputs: Tensor<B, 2, Int>,
        targets: Tensor<B, 2, Int>,
    ) -> Tensor<B, 2> {
        let [b, t] = inputs.dims();
        let logits = self.forward(inputs);
        let vocab = logits.dims()[2];
        log_softmax(logits.reshape([b * t, vocab]), 1).gather(1, targets.reshape([b * t, 1]))
    }
}
