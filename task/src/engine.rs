//! The training and evaluation engine: builds the task's model on any burn backend, trains H inner
//! AdamW steps from a checkpoint on assigned pages, and measures losses of a parameter vector on
//! batches. Models are created, loaded and read as flat vectors (see `params`), so checkpoints and
//! pseudo-gradients are backend-independent.

use crate::architecture::TaskModel;
use crate::assignment::{AssignmentError, WindowAssignment, assign_pages};
use crate::checkpoint::Checkpoint;
use crate::corpus::MarkovCorpus;
use crate::groups::{NoGroupFits, ParamGroup, ParamGroups};
use crate::params::{ParamLayout, read_params, write_params, write_params_trainable};
use crate::rng::{SeededRng, salt};
use crate::spec::TaskSpec;
use crate::table::TableCorpus;
use crate::text::TextCorpus;
use burn::module::{ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{
    AdamW, AdamWConfig, GradientsParams, Optimizer, grad_clipping::GradientClippingConfig,
};
use burn::prelude::*;
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;

/// The CPU backend for evaluation and replays: burn's flex, whose results are bit-reproducible
/// across processes and thread counts.
pub type CpuBackend = burn::backend::Flex;
/// The CPU backend for training.
pub type CpuTrainBackend = burn::backend::Autodiff<CpuBackend>;

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

/// Examples per forward pass when evaluating.
const EVAL_ROWS: usize = 128;

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
        if parts == 1 {
            return vec![self.clone()];
        }
        let per_row = self.targets.len() / self.rows;
        let mut out = Vec::with_capacity(parts);
        let mut row = 0;
        for i in 0..parts {
            let rows = self.rows / parts + usize::from(i < self.rows % parts);
            let (a, b) = (row, row + rows);
            let inputs = match &self.inputs {
                Inputs::Tokens(t) => {
                    let w = t.len() / self.rows;
                    Inputs::Tokens(t[a * w..b * w].to_vec())
                }
                Inputs::Features(f) => {
                    let w = f.len() / self.rows;
                    Inputs::Features(f[a * w..b * w].to_vec())
                }
            };
            out.push(Batch {
                inputs,
                targets: self.targets[a * per_row..b * per_row].to_vec(),
                rows,
            });
            row = b;
        }
        out
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

/// What H inner steps produced.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    pub end: Vec<f32>,
    pub losses: Vec<f32>,
}

impl TrainOutcome {
    /// The pseudo-gradient start - end (DiLoCo's outer gradient).
    pub fn pseudo_gradient(&self, start: &[f32]) -> Vec<f32> {
        start.iter().zip(&self.end).map(|(s, e)| s - e).collect()
    }

    /// `pseudo_gradient`, written over the trained parameters (one whole-model vector less).
    pub fn into_pseudo_gradient(self, start: &[f32]) -> Vec<f32> {
        let mut delta = self.end;
        for (d, s) in delta.iter_mut().zip(start) {
            *d = s - *d;
        }
        delta
    }
}

/// A model and its inner optimizer. Each call to `train_from` loads a new starting point into the
/// same parameters (keeping their ids), so the optimizer's moments carry over from one call to the
/// next; miners and validators make a fresh trainer every window (`TaskEngine::train_window`), so
/// that a window's training is a function of its inputs alone.
pub struct Trainer<B: AutodiffBackend> {
    model: Option<TaskModel<B>>,
    optimizer: OptimizerAdaptor<AdamW, TaskModel<B>, B>,
    device: B::Device,
    num_params: usize,
    warmup_steps: usize,
    /// The parameters this trainer updates; the rest of the model is frozen.
    trainable: std::ops::Range<usize>,
    /// Parts a step's batch is cut into: `STEP_SHARDS` on the CPU backend (whose bits every
    /// validator must reproduce), 1 elsewhere (a GPU gains nothing by parts; its results are
    /// compared with a tolerance anyway).
    parts: usize,
    /// Whether a step's parts run on threads of their own (the CPU backend on several cores).
    parallel: bool,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// Whether a step's parts may run on threads of their own (by default: on the CPU backend with
    /// more than one core). The results are the same bits either way.
    pub fn with_threads(mut self, parallel: bool) -> Self {
        self.parallel = parallel;
        self
    }

    /// H inner steps from `start` at learning rate `lr` (rising linearly over the task's
    /// `warmup_steps` first), one batch per step; `on_step(step, loss)` after each.
    pub fn train_from(
        &mut self,
        start: &[f32],
        batches: &[Batch],
        lr: f64,
        mut on_step: impl FnMut(usize, f32),
    ) -> TrainOutcome {
        assert_eq!(
            start.len(),
            self.num_params,
            "parameter vector does not match the task's model"
        );
        let mut model = write_params_trainable(
            self.model.take().expect("a trainer always holds its model"),
            start,
            self.trainable.clone(),
        );
        let mut losses = Vec::with_capacity(batches.len());
        for (step, batch) in batches.iter().enumerate() {
            let (value, grads) = self.gradients(&model, batch);
            let warm = if step < self.warmup_steps {
                (step + 1) as f64 / (self.warmup_steps + 1) as f64
            } else {
                1.0
            };
            model = self.optimizer.step(lr * warm, model, grads);
            losses.push(value);
            on_step(step, value);
        }
        let (_, end) = read_params(&model);
        self.model = Some(model);
        TrainOutcome { end, losses }
    }

    /// The mean loss of `model` on `batch` and its gradients: the batch is cut into `self.parts`
    /// parts, each part's gradients are computed apart (on threads of their own where the backend
    /// is the CPU's) and they are averaged, weighted by rows, in the parts' order. The bits depend
    /// on the batch alone, not on the threads that computed them.
    fn gradients(&self, model: &TaskModel<B>, batch: &Batch) -> (f32, GradientsParams) {
        let parts = batch.split(self.parts);
        if parts.len() == 1 {
            return part_gradients(model, batch, &self.device);
        }
        let results: Vec<(f32, GradientsParams)> = if self.parallel {
            std::thread::scope(|scope| {
                let others: Vec<_> = parts[1..]
                    .iter()
                    .map(|part| {
                        // A fork has a graph of its own: threads sharing one deadlock in burn.
                        let fork = model.clone().fork(&self.device);
                        let device = self.device.clone();
                        scope.spawn(move || part_gradients(&fork, part, &device))
                    })
                    .collect();
                let first = part_gradients(model, &parts[0], &self.device);
                std::iter::once(first)
                    .chain(others.into_iter().map(|h| {
                        h.join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    }))
                    .collect()
            })
        } else {
            parts
                .iter()
                .map(|part| part_gradients(model, part, &self.device))
                .collect()
        };
        let weights: Vec<f64> = parts
            .iter()
            .map(|p| p.rows as f64 / batch.rows as f64)
            .collect();
        let loss = results
            .iter()
            .zip(&weights)
            .map(|((l, _), w)| *l as f64 * w)
            .sum::<f64>() as f32;
        let mut merge = MergeGradients {
            parts: results.into_iter().map(|(_, g)| g).collect(),
            weights,
            merged: GradientsParams::new(),
        };
        model.visit(&mut merge);
        (loss, merge.merged)
    }
}

/// Parts each step's batch is cut into for its gradients on the CPU backend (see
/// `Trainer::gradients`). Part of what a window's training computes there: changing it changes
/// every trained bit.
pub const STEP_SHARDS: usize = 2;

/// The mean loss of `model` on `batch` and its gradients.
fn part_gradients<B: AutodiffBackend>(
    model: &TaskModel<B>,
    batch: &Batch,
    device: &B::Device,
) -> (f32, GradientsParams) {
    let loss = model.loss(batch, device);
    let value = loss.clone().into_scalar().elem::<f32>();
    (value, GradientsParams::from_grads(loss.backward(), model))
}

/// Sums each parameter's gradients over the parts, each times its weight, in the parts' order.
struct MergeGradients {
    parts: Vec<GradientsParams>,
    weights: Vec<f64>,
    merged: GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for MergeGradients {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let mut sum: Option<Tensor<B::InnerBackend, D>> = None;
        for (grads, &w) in self.parts.iter_mut().zip(&self.weights) {
            if let Some(g) = grads.remove::<B::InnerBackend, D>(param.id) {
                let g = g.mul_scalar(w);
                sum = Some(match sum {
                    Some(s) => s + g,
                    None => g,
                });
            }
        }
        if let Some(sum) = sum {
            self.merged.register::<B::InnerBackend, D>(param.id, sum);
        }
    }
}

/// Appends a sequence of `seq + 1` tokens as inputs (all but the last) and targets (all but the first).
fn push_sequence<T: Copy + Into<i32>>(tokens: &[T], inputs: &mut Vec<i32>, targets: &mut Vec<i32>) {
    let seq = tokens.len() - 1;
    inputs.extend(tokens[..seq].iter().map(|&t| t.into()));
    targets.extend(tokens[1..].iter().map(|&t| t.into()));
}

/// Where a task's examples come from.
#[derive(Clone, Debug)]
pub enum Corpus {
    Markov(MarkovCorpus),
    Text(TextCorpus),
    Table(TableCorpus),
}

/// A task, ready to train and evaluate.
#[derive(Clone, Debug)]
pub struct TaskEngine {
    spec: TaskSpec,
    digest: [u8; 32],
    corpus: Corpus,
    layout: ParamLayout,
    groups: ParamGroups,
    /// Items of a page per example (see `Architecture::example_len`).
    example_len: usize,
    genesis_digest: std::sync::OnceLock<[u8; 32]>,
}

impl TaskEngine {
    pub fn new(spec: TaskSpec) -> Self {
        let d = &spec.data;
        let corpus = match (&d.markov, &d.text, &d.table) {
            (Some(markov), _, _) => Corpus::Markov(MarkovCorpus::new(markov.clone())),
            (None, Some(text), _) => Corpus::Text(
                text.corpus()
                    .expect("a validated task spec's corpus file loads"),
            ),
            (None, None, Some(table)) => {
                Corpus::Table(TableCorpus::load(table, d.training_items()))
            }
            (None, None, None) => panic!("a validated task spec has a corpus"),
        };
        let model = TaskModel::<CpuBackend>::new(&spec.model, &Default::default());
        let (layout, _) = read_params(&model);
        let groups = ParamGroups::balanced(&layout, spec.shards.groups);
        Self {
            groups,
            digest: spec.digest(),
            example_len: spec.model.example_len(),
            spec,
            corpus,
            layout,
            genesis_digest: std::sync::OnceLock::new(),
        }
    }

    pub fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    pub fn corpus(&self) -> &Corpus {
        &self.corpus
    }

    /// The synthetic corpus, when the task uses one (it knows its entropy rate).
    pub fn markov(&self) -> Option<&MarkovCorpus> {
        match &self.corpus {
            Corpus::Markov(c) => Some(c),
            _ => None,
        }
    }

    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// The model's parameter groups (one, the whole model, unless the task asks for more).
    pub fn groups(&self) -> &ParamGroups {
        &self.groups
    }

    /// The parameter group `uid` trains in the window with `window_seed` when it holds at most
    /// `capacity` parameters (0: any).
    pub fn group(
        &self,
        window_seed: u64,
        uid: u16,
        capacity: u64,
    ) -> Result<&ParamGroup, NoGroupFits> {
        self.groups.assigned(window_seed, uid, capacity)
    }

    pub fn num_params(&self) -> usize {
        self.layout.total
    }

    /// The first global checkpoint, a pure function of the spec: LayerNorm scales 1, biases and
    /// LayerNorm shifts 0, everything else normal(0, init_std), drawn parameter by parameter from
    /// (init_seed, parameter index).
    pub fn genesis(&self) -> Checkpoint {
        let (std, init_seed) = self.spec.model.init();
        let mut params = Vec::with_capacity(self.layout.total);
        for (i, entry) in self.layout.entries.iter().enumerate() {
            let leaf = entry.name.rsplit('.').next().unwrap_or("");
            let mut rng = SeededRng::derived(&[init_seed, salt::INIT, i as u64]);
            params.extend((0..entry.len).map(|_| match leaf {
                "gamma" => 1.0,
                "beta" | "bias" => 0.0,
                _ => (std * rng.normal()) as f32,
            }));
        }
        Checkpoint::new(self.digest, params)
    }

    /// The digest of `genesis()`, computed once.
    pub fn genesis_digest(&self) -> [u8; 32] {
        *self.genesis_digest.get_or_init(|| self.genesis().digest)
    }

    pub fn assignment(
        &self,
        window: u64,
        window_seed: u64,
        uid: u16,
    ) -> Result<WindowAssignment, AssignmentError> {
        assign_pages(
            window,
            window_seed,
            uid,
            self.spec.shards.pages_per_miner,
            self.spec.data.train_pages,
        )
    }

    /// `count` batches of `batch_size` sequences cut at random offsets from random pages of `pages`.
    pub fn page_batches(
        &self,
        pages: &[u64],
        seed: u64,
        count: usize,
        batch_size: usize,
    ) -> Vec<Batch> {
        self.page_spans(pages, seed, count, batch_size)
            .iter()
            .map(|spans| self.batch(spans))
            .collect()
    }

    /// Where `page_batches` cuts its sequences: per batch, (page, offset) of each sequence.
    pub fn page_spans(
        &self,
        pages: &[u64],
        seed: u64,
        count: usize,
        batch_size: usize,
    ) -> Vec<Vec<Span>> {
        assert!(!pages.is_empty(), "no pages to draw batches from");
        let starts = (self.spec.data.page_len + 1 - self.example_len) as u64;
        let mut rng = SeededRng::new(seed);
        (0..count)
            .map(|_| {
                (0..batch_size)
                    .map(|_| {
                        let page = pages[rng.below(pages.len() as u64) as usize];
                        let offset = rng.below(starts) as usize;
                        Span { page, offset }
                    })
                    .collect()
            })
            .collect()
    }

    /// The batch of the examples at `spans`.
    pub fn batch(&self, spans: &[Span]) -> Batch {
        let page_len = self.spec.data.page_len;
        let (mut tokens, mut features) = (Vec::new(), Vec::new());
        let mut targets = Vec::with_capacity(spans.len() * self.example_len);
        for span in spans {
            let end = span.offset + self.example_len;
            match &self.corpus {
                Corpus::Markov(c) => {
                    let bytes = c.page(span.page, end);
                    push_sequence(&bytes[span.offset..], &mut tokens, &mut targets);
                }
                Corpus::Text(c) => {
                    let ids = c.page(span.page, page_len, end);
                    push_sequence(&ids[span.offset..], &mut tokens, &mut targets);
                }
                Corpus::Table(c) => {
                    let (row, class) = c.row(span.page as usize * page_len + span.offset);
                    features.extend_from_slice(row);
                    targets.push(class);
                }
            }
        }
        let inputs = match self.corpus {
            Corpus::Table(_) => Inputs::Features(features),
            Corpus::Markov(_) | Corpus::Text(_) => Inputs::Tokens(tokens),
        };
        Batch {
            inputs,
            targets,
            rows: spans.len(),
        }
    }

    /// Slots of a page: the page cut into back-to-back examples (sequences of `seq_len + 1`
    /// tokens, or single table rows).
    fn slots_per_page(&self) -> usize {
        self.spec.data.page_len / self.example_len
    }

    /// Whether slot `slot` of `page` is held back from training in the window of `window_seed`.
    /// Slots pair up (2k, 2k + 1) and a coin per pair holds back one of the two (an unpaired last
    /// slot is always held back), so that a validator can compare a gradient on each sequence its
    /// miner trained on with the neighbouring sequence it did not.
    pub fn held_back(&self, window_seed: u64, page: u64, slot: usize) -> bool {
        if slot ^ 1 >= self.slots_per_page() {
            return true;
        }
        let coin =
            crate::rng::derive_seed(&[window_seed, salt::HELD_BACK_SLOTS, page, (slot / 2) as u64]);
        (slot & 1) as u64 == coin & 1
    }

    /// The held-back partner of each training span (the other slot of its pair).
    pub fn held_back_partners(&self, spans: &[Span]) -> Vec<Span> {
        let stride = self.example_len;
        spans
            .iter()
            .map(|s| Span {
                page: s.page,
                offset: ((s.offset / stride) ^ 1) * stride,
            })
            .collect()
    }

    /// Slots of `page` on one side of the window's split.
    fn slots(&self, window_seed: u64, page: u64, held_back: bool) -> Vec<usize> {
        (0..self.slots_per_page())
            .filter(|&slot| self.held_back(window_seed, page, slot) == held_back)
            .collect()
    }

    /// The spans of the batches a miner trains on in a window (see `training_batches`): sequences
    /// from the training slots of its pages.
    pub fn training_spans(
        &self,
        assignment: &WindowAssignment,
        window_seed: u64,
    ) -> Vec<Vec<Span>> {
        let seed =
            crate::rng::derive_seed(&[window_seed, salt::TRAIN_BATCHES, assignment.uid as u64]);
        let t = &self.spec.training;
        self.slot_spans(
            &assignment.pages,
            window_seed,
            false,
            seed,
            t.inner_steps,
            t.batch_size,
        )
    }

    /// `count` batches of `batch_size` sequences from random slots of `pages` on one side of the
    /// window's split (pages with no slot on that side are skipped).
    pub fn slot_spans(
        &self,
        pages: &[u64],
        window_seed: u64,
        held_back: bool,
        seed: u64,
        count: usize,
        batch_size: usize,
    ) -> Vec<Vec<Span>> {
        let stride = self.example_len;
        let slots: Vec<(u64, Vec<usize>)> = pages
            .iter()
            .map(|&page| (page, self.slots(window_seed, page, held_back)))
            .filter(|(_, slots)| !slots.is_empty())
            .collect();
        assert!(!slots.is_empty(), "no slots to draw batches from");
        let mut rng = SeededRng::new(seed);
        (0..count)
            .map(|_| {
                (0..batch_size)
                    .map(|_| {
                        let (page, page_slots) = &slots[rng.below(slots.len() as u64) as usize];
                        let slot = page_slots[rng.below(page_slots.len() as u64) as usize];
                        Span {
                            page: *page,
                            offset: slot * stride,
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// The batches a miner trains on in a window: derived from (window seed, uid), so a validator can
    /// re-execute them.
    pub fn training_batches(&self, assignment: &WindowAssignment, window_seed: u64) -> Vec<Batch> {
        self.training_spans(assignment, window_seed)
            .iter()
            .map(|spans| self.batch(spans))
            .collect()
    }

    /// Held-out batches for a validator's own seed; pages come from the held-out split only.
    pub fn heldout_batches(&self, seed: u64, count: usize) -> Vec<Batch> {
        let data = &self.spec.data;
        let mut rng = SeededRng::derived(&[seed, salt::EVAL_BATCHES]);
        let pages: Vec<u64> = (0..count * 4)
            .map(|_| data.train_pages + rng.below(data.heldout_pages))
            .collect();
        self.page_batches(
            &pages,
            rng.next_u64(),
            count,
            self.spec.scoring.eval_batch_size,
        )
    }

    /// Training pages that no miner trains in the window of `window_seed`: positions of the window's
    /// permutation past those of the first `assigned_uids` uids, drawn by `seed`. Empty when the
    /// miners take the whole training split.
    pub fn unassigned_pages(
        &self,
        window_seed: u64,
        assigned_uids: u64,
        seed: u64,
        count: usize,
    ) -> Vec<u64> {
        let train = self.spec.data.train_pages;
        let first_free = assigned_uids.saturating_mul(self.spec.shards.pages_per_miner as u64);
        if first_free >= train {
            return Vec::new();
        }
        let key = crate::rng::derive_seed(&[window_seed, salt::ASSIGNMENT]);
        let mut rng = SeededRng::derived(&[seed, salt::UNASSIGNED]);
        (0..count)
            .map(|_| {
                crate::assignment::permute(first_free + rng.below(train - first_free), train, key)
            })
            .collect()
    }

    /// Pages of the synthetic corpus beyond both splits, drawn by `seed`: text nobody has seen,
    /// straight from the generator. Empty for other corpora.
    pub fn fresh_pages(&self, seed: u64, count: usize) -> Vec<u64> {
        if self.markov().is_none() {
            return Vec::new();
        }
        let data = &self.spec.data;
        let first = data.train_pages + data.heldout_pages;
        let mut rng = SeededRng::derived(&[seed, salt::FRESH]);
        (0..count).map(|_| first + rng.below(1 << 40)).collect()
    }

    /// The batches a validator scores a window's gradients on, drawn by its secret `seed` so that no
    /// miner can prepare for them: in turn from the held-out split, from training pages no miner is
    /// assigned this window and, for the synthetic corpus, from fresh text.
    pub fn eval_batches(
        &self,
        window_seed: u64,
        assigned_uids: u64,
        seed: u64,
        count: usize,
    ) -> Vec<Batch> {
        let data = &self.spec.data;
        let draws = count * 4;
        let mut rng = SeededRng::derived(&[seed, salt::EVAL_BATCHES]);
        let heldout: Vec<u64> = (0..draws)
            .map(|_| data.train_pages + rng.below(data.heldout_pages))
            .collect();
        let sources = [
            heldout,
            self.unassigned_pages(window_seed, assigned_uids, rng.next_u64(), draws),
            self.fresh_pages(rng.next_u64(), draws),
        ];
        let sources: Vec<&Vec<u64>> = sources.iter().filter(|s| !s.is_empty()).collect();
        let pages: Vec<u64> = (0..draws)
            .map(|i| sources[i % sources.len()][i / sources.len()])
            .collect();
        self.page_batches(
            &pages,
            rng.next_u64(),
            count,
            self.spec.scoring.eval_batch_size,
        )
    }

    /// Pages for a validator's own training of a window (its reference for the norm of honest work
    /// and its assignment-check control), drawn by its secret `seed` from pages no miner trains:
    /// unassigned training pages, else fresh text, else held-out pages.
    pub fn reference_pages(&self, window_seed: u64, assigned_uids: u64, seed: u64) -> Vec<u64> {
        let count = self.spec.shards.pages_per_miner;
        let unassigned = self.unassigned_pages(window_seed, assigned_uids, seed, count);
        if !unassigned.is_empty() {
            return unassigned;
        }
        let fresh = self.fresh_pages(seed, count);
        if !fresh.is_empty() {
            return fresh;
        }
        let data = &self.spec.data;
        let mut rng = SeededRng::derived(&[seed, salt::UNASSIGNED]);
        (0..count)
            .map(|_| data.train_pages + rng.below(data.heldout_pages))
            .collect()
    }

    /// The validator's own training of the window: what a miner assigned `pages` would do, with
    /// batches drawn by `seed`.
    pub fn train_reference<B: AutodiffBackend>(
        &self,
        device: &B::Device,
        start: &[f32],
        window: u64,
        window_seed: u64,
        pages: &[u64],
        seed: u64,
    ) -> TrainOutcome {
        let t = &self.spec.training;
        let batches: Vec<Batch> = self
            .slot_spans(pages, window_seed, false, seed, t.inner_steps, t.batch_size)
            .iter()
            .map(|spans| self.batch(spans))
            .collect();
        self.trainer::<B>(device)
            .train_from(start, &batches, self.spec.inner_lr(window), |_, _| {})
    }

    /// The assignment check's batches for `assignment`: up to `count` batches of distinct sequences
    /// the miner trained on, chosen and ordered by the validator's secret `seed`, and for each the
    /// batch of their held-back neighbours (same pages, adjacent slots). Each trained sequence is
    /// used at most once, so that the batches are independent samples of the miner's pages.
    pub fn assignment_check_batches(
        &self,
        assignment: &WindowAssignment,
        window_seed: u64,
        seed: u64,
        count: usize,
    ) -> (Vec<Batch>, Vec<Batch>) {
        let mut trained: Vec<Span> = self
            .training_spans(assignment, window_seed)
            .into_iter()
            .flatten()
            .collect();
        trained.sort_by_key(|s| (s.page, s.offset));
        trained.dedup();
        let mut rng = SeededRng::derived(&[seed, salt::ASSIGNMENT_CHECK, assignment.uid as u64]);
        for i in (1..trained.len()).rev() {
            trained.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let size = self.spec.training.batch_size;
        let own: Vec<Vec<Span>> = trained
            .chunks_exact(size)
            .take(count)
            .map(<[Span]>::to_vec)
            .collect();
        let held_back = own
            .iter()
            .map(|spans| self.batch(&self.held_back_partners(spans)))
            .collect();
        (own.iter().map(|s| self.batch(s)).collect(), held_back)
    }

    fn model<B: Backend>(&self, device: &B::Device, params: &[f32]) -> TaskModel<B> {
        assert_eq!(
            params.len(),
            self.layout.total,
            "parameter vector does not match the task's model"
        );
        write_params(TaskModel::new(&self.spec.model, device), params)
    }

    /// A miner's whole window: `inner_steps` AdamW steps with a fresh optimizer from `start` on the
    /// training batches of `uid`'s pages, at the window's inner learning rate, updating only the
    /// parameters in `trainable` (its group; the rest stays frozen and the pseudo-gradient is zero
    /// there). A pure function of its arguments, so a validator can re-execute any miner's window
    /// and compare.
    #[allow(clippy::too_many_arguments)]
    pub fn train_window<B: AutodiffBackend>(
        &self,
        device: &B::Device,
        start: &[f32],
        window: u64,
        window_seed: u64,
        uid: u16,
        trainable: std::ops::Range<usize>,
        on_step: impl FnMut(usize, f32),
    ) -> Result<TrainOutcome, AssignmentError> {
        let assignment = self.assignment(window, window_seed, uid)?;
        let batches = self.training_batches(&assignment, window_seed);
        let mut trainer = self.trainer::<B>(device);
        trainer.trainable = trainable;
        Ok(trainer.train_from(start, &batches, self.spec.inner_lr(window), on_step))
    }

    /// A trainer on `device` whose optimizer state is fresh.
    pub fn trainer<B: AutodiffBackend>(&self, device: &B::Device) -> Trainer<B> {
        let t = &self.spec.training;
        let clipping =
            (t.grad_clip > 0.0).then_some(GradientClippingConfig::Norm(t.grad_clip as f32));
        let optimizer = AdamWConfig::new()
            .with_beta_1(t.beta1 as f32)
            .with_beta_2(t.beta2 as f32)
            .with_epsilon(t.epsilon as f32)
            .with_weight_decay(t.weight_decay as f32)
            .with_grad_clipping(clipping)
            .init();
        let on_cpu =
            std::any::TypeId::of::<B::InnerBackend>() == std::any::TypeId::of::<CpuBackend>();
        Trainer {
            model: Some(TaskModel::new(&self.spec.model, device)),
            optimizer,
            device: device.clone(),
            num_params: self.layout.total,
            warmup_steps: t.warmup_steps,
            trainable: 0..self.layout.total,
            parts: if on_cpu { STEP_SHARDS } else { 1 },
            parallel: on_cpu && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1),
        }
    }

    /// H inner AdamW steps from `start` on `batches` (one batch per step) with a fresh optimizer at
    /// the window-0 learning rate. `on_step(step, loss)` is called after each step, for progress.
    pub fn train<B: AutodiffBackend>(
        &self,
        device: &B::Device,
        start: &[f32],
        batches: &[Batch],
        on_step: impl FnMut(usize, f32),
    ) -> TrainOutcome {
        self.trainer::<B>(device)
            .train_from(start, batches, self.spec.training.lr, on_step)
    }

    /// Mean loss of `params` on each batch, in order. Consecutive batches run as one forward pass
    /// of up to `EVAL_ROWS` examples (small models are bound by per-call overhead), and each batch's
    /// mean is taken over its examples' losses in f64: the same batches give the same bits.
    pub fn losses<B: Backend>(
        &self,
        device: &B::Device,
        params: &[f32],
        batches: &[Batch],
    ) -> Vec<f32> {
        let model = self.model::<B>(device, params);
        let mut out = Vec::with_capacity(batches.len());
        let mut start = 0;
        while start < batches.len() {
            let mut end = start + 1;
            let mut rows = batches[start].rows;
            while end < batches.len() && rows + batches[end].rows <= EVAL_ROWS {
                rows += batches[end].rows;
                end += 1;
            }
            let merged = Batch::concat(&batches[start..end]);
            let row_losses = model
                .row_losses(&merged, device)
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("row losses are f32");
            let mut at = 0;
            for batch in &batches[start..end] {
                let rows = &row_losses[at..at + batch.rows];
                out.push((rows.iter().map(|&l| l as f64).sum::<f64>() / batch.rows as f64) as f32);
                at += batch.rows;
            }
            start = end;
        }
        out
    }

    /// The lowest mean loss any model can reach on this task's training sequences, known for the
    /// synthetic corpus only.
    pub fn loss_floor(&self) -> Option<f64> {
        self.markov()
            .map(|c| c.min_sequence_loss(self.example_len - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tiny_spec() -> TaskSpec {
        let mut spec =
            TaskSpec::from_toml_str(include_str!("../../tasks/localnet-lm.toml")).unwrap();
        let model = spec.model.transformer_mut().unwrap();
        model.d_model = 32;
        model.seq_len = 32;
        model.n_layers = 1;
        spec.training.batch_size = 8;
        spec.training.inner_steps = 12;
        spec.scoring.eval_batch_size = 8;
        spec
    }

    #[test]
    fn a_batch_splits_into_its_rows_in_order() {
        let engine = TaskEngine::new(tiny_spec());
        let assignment = engine.assignment(0, 3, 0).unwrap();
        let batch = engine.training_batches(&assignment, 3).remove(0);
        for parts in [1, 2, 3, 8, 20] {
            let split = batch.split(parts);
            assert_eq!(split.len(), parts.min(batch.rows));
            assert!(split.iter().all(|p| p.rows > 0));
            assert!(split.windows(2).all(|w| w[0].rows >= w[1].rows));
            assert_eq!(Batch::concat(&split), batch, "{parts} parts");
        }
    }

    #[test]
    fn a_step_in_parts_is_the_whole_batch_step_up_to_rounding() {
        let engine = TaskEngine::new(tiny_spec());
        let start = engine.genesis();
        let assignment = engine.assignment(0, 5, 0).unwrap();
        let batches = &engine.training_batches(&assignment, 5)[..2];
        let device = Default::default();
        let run = |parts: usize, parallel: bool| {
            let mut trainer = engine.trainer::<CpuTrainBackend>(&device);
            trainer.parts = parts;
            trainer.parallel = parallel;
            trainer.train_from(&start.params, batches, 1e-3, |_, _| {})
        };
        let whole = run(1, false);
        let threads = run(STEP_SHARDS, true);
        let in_turn = run(STEP_SHARDS, false);
        assert_eq!(threads.end, in_turn.end, "threads change no bit");
        assert_eq!(threads.losses, in_turn.losses);
        for (a, b) in whole.losses.iter().zip(&threads.losses) {
            assert!((a - b).abs() < 1e-5, "loss {a} against {b}");
        }
        let moved = |o: &TrainOutcome| o.pseudo_gradient(&start.params);
        let (a, b) = (moved(&whole), moved(&threads));
        // Adam divides by the gradients' size, so an entry whose gradient is near zero may round
        // either way: compare the whole moves.
        let norm =
            |v: &mut dyn Iterator<Item = f32>| v.map(|x| (x as f64).powi(2)).sum::<f64>().sqrt();
        let diff = norm(&mut a.iter().zip(&b).map(|(x, y)| x - y));
        let size = norm(&mut a.iter().copied());
        assert!(
            diff < 1e-2 * size,
            "parts moved the weights {diff} away (move {size})"
        );
    }

    #[test]
    fn parameters_round_trip_through_the_model() {
        let engine = TaskEngine::new(tiny_spec());
        let genesis = engine.genesis();
        let model = engine.model::<CpuBackend>(&Default::default(), &genesis.params);
        let (layout, values) = read_params(&model);
        assert_eq!(&layout, engine.layout());
        assert_eq!(values, *genesis.params);
        assert!(layout.entries.iter().any(|e| e.name.ends_with("gamma")));
    }

    #[test]
    fn training_lowers_loss_and_its_pseudo_gradient_is_useful_on_heldout_data() {
        let engine = TaskEngine::new(tiny_spec());
        let start = engine.genesis();
        let assignment = engine.assignment(0, 11, 0).unwrap();
        let batches = engine.training_batches(&assignment, 11);
        let device = Default::default();
        let outcome = engine.train::<CpuTrainBackend>(&device, &start.params, &batches, |_, _| {});
        assert!(outcome.losses.last().unwrap() < outcome.losses.first().unwrap());
        let delta = outcome.pseudo_gradient(&start.params);
        let heldout = engine.heldout_batches(5, 4);
        let before: f32 = engine
            .losses::<CpuBackend>(&device, &start.params, &heldout)
            .iter()
            .sum();
        let moved = crate::aggregate::outer_sgd_step(&start.params, &delta, 1.0);
        let after: f32 = engine
            .losses::<CpuBackend>(&device, &moved, &heldout)
            .iter()
            .sum();
        assert!(after < before, "held-out loss {before} -> {after}");
        // Evaluation is bit-for-bit reproducible on the CPU backend.
        assert_eq!(
            engine.losses::<CpuBackend>(&device, &moved, &heldout),
            engine.losses::<CpuBackend>(&device, &moved, &heldout)
        );
    }

    #[test]
    fn a_group_miner_moves_only_its_group_and_its_gradient_still_helps() {
        let mut spec = tiny_spec();
        spec.shards.groups = 3;
        let engine = TaskEngine::new(spec);
        assert_eq!(engine.groups().len(), 3);
        let start = engine.genesis();
        let device = Default::default();
        let heldout = engine.heldout_batches(5, 4);
        let before: f32 = engine
            .losses::<CpuBackend>(&device, &start.params, &heldout)
            .iter()
            .sum();
        for group in engine.groups().groups() {
            let outcome = engine
                .train_window::<CpuTrainBackend>(
                    &device,
                    &start.params,
                    0,
                    11,
                    0,
                    group.range.clone(),
                    |_, _| {},
                )
                .unwrap();
            let delta = outcome.pseudo_gradient(&start.params);
            let moved: Vec<usize> = (0..delta.len()).filter(|&i| delta[i] != 0.0).collect();
            assert!(!moved.is_empty(), "group {}", group.index);
            assert!(
                moved.iter().all(|i| group.range.contains(i)),
                "group {} moved a frozen parameter",
                group.index
            );
            let moved = crate::aggregate::outer_sgd_step(&start.params, &delta, 1.0);
            let after: f32 = engine
                .losses::<CpuBackend>(&device, &moved, &heldout)
                .iter()
                .sum();
            assert!(after < before, "group {}: {before} -> {after}", group.index);
        }
    }
}
