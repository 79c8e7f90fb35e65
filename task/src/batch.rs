//! Batches: what a model reads (token sequences or table rows) and where each example was cut.

use burn::prelude::*;

/// One training or evaluation batch of `rows` examples.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub inputs: Inputs,
    /// Token sequences: the next token of each input position, `rows * seq` long, row-major.
    /// Tables: the class of each row.
    pub targets: Vec<i32>,
    pub rows: usize,
}

/// What a model reads.
#[derive(Clone, Debug, PartialEq)]
pub enum Inputs {
    /// Token ids, `rows * seq`, row-major; `inputs[i]` predicts `targets[i]`.
    Tokens(Vec<i32>),
    /// Standardized features, `rows * width`, row-major.
    Features(Vec<f32>),
}

impl Batch {
    /// The batches' examples, in order, as one batch (all of one kind, as a task's batches are).
    pub fn concat(batches: &[Batch]) -> Batch {
        let mut targets = Vec::new();
        let mut rows = 0;
        let mut inputs = match batches.first().map(|b| &b.inputs) {
            Some(Inputs::Features(_)) => Inputs::Features(Vec::new()),
            _ => Inputs::Tokens(Vec::new()),
        };
        for b in batches {
            match (&mut inputs, &b.inputs) {
                (Inputs::Tokens(all), Inputs::Tokens(t)) => all.extend_from_slice(t),
                (Inputs::Features(all), Inputs::Features(f)) => all.extend_from_slice(f),
                _ => panic!("batches of one task hold one kind of input"),
            }
            targets.extend_from_slice(&b.targets);
            rows += b.rows;
        }
        Batch {
            inputs,
            targets,
            rows,
        }
    }

    /// The batch cut into at most `parts` consecutive runs of rows, as equal as rows allow (the
    /// first ones one row longer), none empty.
    pub fn split(&self, parts: usize) -> Vec<Batch> {
        let parts = parts.clamp(1, self.rows.max(1));
        let mut out = Vec::with_capacity(parts);
        let mut row = 0;
        for i in 0..parts {
            let rows = self.rows / parts + usize::from(i < self.rows % parts);
            let (a, b) = (row, row + rows);
            let inputs = match &self.inputs {
                Inputs::Tokens(t) => Inputs::Tokens(self.rows_of(t, a, b)),
                Inputs::Features(f) => Inputs::Features(self.rows_of(f, a, b)),
            };
            out.push(Batch {
                inputs,
                targets: self.rows_of(&self.targets, a, b),
                rows,
            });
            row = b;
        }
        out
    }

    /// Rows `a..b` of a row-major vector holding this batch's rows.
    fn rows_of<T: Clone>(&self, values: &[T], a: usize, b: usize) -> Vec<T> {
        let width = values.len() / self.rows.max(1);
        values[a * width..b * width].to_vec()
    }

    /// The token ids of a batch of sequences.
    pub fn tokens(&self) -> Option<&[i32]> {
        match &self.inputs {
            Inputs::Tokens(t) => Some(t),
            Inputs::Features(_) => None,
        }
    }

    /// Inputs and targets [rows, seq] of a batch of token sequences.
    pub fn token_tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let tokens = self.tokens().expect("a language model reads token batches");
        let shape = [self.rows, self.targets.len() / self.rows];
        (
            Tensor::from_data(TensorData::new(tokens.to_vec(), shape), device),
            Tensor::from_data(TensorData::new(self.targets.clone(), shape), device),
        )
    }

    /// Features [rows, width] and classes [rows] of a batch of table rows.
    pub fn feature_tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
        let Inputs::Features(values) = &self.inputs else {
            panic!("a classifier reads table rows")
        };
        let shape = [self.rows, values.len() / self.rows];
        (
            Tensor::from_data(TensorData::new(values.clone(), shape), device),
            Tensor::from_data(TensorData::new(self.targets.clone(), [self.rows]), device),
        )
    }
}

/// Where an example is cut: `example_len` items (tokens or rows) of page `page` from `offset` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub page: u64,
    pub offset: usize,
}

/// Appends a sequence of `seq + 1` tokens as inputs (all but the last) and targets (all but the first).
pub(crate) fn push_sequence<T: Copy + Into<i32>>(
    tokens: &[T],
    inputs: &mut Vec<i32>,
    targets: &mut Vec<i32>,
) {
    let seq = tokens.len() - 1;
    inputs.extend(tokens[..seq].iter().map(|&t| t.into()));
    targets.extend(tokens[1..].iter().map(|&t| t.into()));
}
