//! The training and evaluation engine: builds the task's model on any burn backend, trains H inner
//! AdamW steps from a checkpoint on assigned pages, and measures losses of a parameter vector on
//! batches. Models are created, loaded and read as flat vectors (see `params`), so checkpoints and
//! pseudo-gradients are backend-independent.
//!
//! `data` holds where a window's examples come from (pages, slots, spans and batches); this file
//! holds the engine itself, training and evaluation.

mod data;
#[cfg(test)]
pub(crate) mod tests;

use crate::architecture::{ModelSpec, TaskModel};
use crate::assignment::AssignmentError;
use crate::batch::Batch;
use crate::checkpoint::{Checkpoint, InnerState};
use crate::corpus::MarkovCorpus;
use crate::groups::{NoGroupFits, ParamGroup, ParamGroups};
use crate::params::{ParamLayout, read_params, write_params};
use crate::rng::{SeededRng, salt};
use crate::segment::TrainState;
use crate::spec::TaskSpec;
use crate::table::TableCorpus;
use crate::text::TextCorpus;
use crate::trainer::{CpuBackend, TrainOutcome, Trainer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use std::sync::Arc;

/// Examples per forward pass when evaluating.
const EVAL_ROWS: usize = 128;

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
    genesis_digest: std::sync::OnceLock<crate::Digest>,
    /// Where a validator using this engine measures losses and re-executes training (the CPU
    /// unless `on` says otherwise): see `Device::losses`.
    device: crate::Device,
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
            (None, None, Some(table)) => Corpus::Table(table.corpus(d.training_items())),
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
            device: crate::Device::Cpu,
        }
    }

    /// The same task, evaluating and re-executing training on `device`.
    pub fn on(mut self, device: crate::Device) -> Self {
        self.device = device;
        self
    }

    /// The device this engine's evaluations run on.
    pub fn device(&self) -> crate::Device {
        self.device
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

    /// The inner optimizer state the window after `window`'s starts from, where the task carries
    /// one (None otherwise): the end state of `window` trained from `checkpoint` (and its carried
    /// state) on public batches drawn from the window's seed (`inner_state_batches`). A pure
    /// function of public inputs, always on the CPU backend, so that every validator, miner and
    /// replay derives the same bits; no miner's work enters it.
    pub fn next_inner(
        &self,
        checkpoint: &Checkpoint,
        (window, window_seed): (u64, u64),
    ) -> Option<InnerState> {
        if !self.spec.training.carry_moments {
            return None;
        }
        let batches = self.inner_state_batches(window_seed);
        let mut end = None;
        self.trainer::<crate::CpuTrainBackend>(&Default::default())
            .carrying(checkpoint.inner.clone())
            .train_in_segments(
                &checkpoint.params,
                &batches,
                self.spec.inner_lr(window),
                0,
                |_, _| {},
                |state| end = Some(state),
            );
        let end = end.expect("a window has a segment");
        let before = checkpoint.inner.as_ref().map_or(0, |c| c.steps);
        Some(InnerState {
            steps: before + end.step as u64,
            first: end.first_moment,
            second: end.second_moment,
        })
    }

    /// The digest of `genesis()`, computed once.
    pub fn genesis_digest(&self) -> crate::Digest {
        *self.genesis_digest.get_or_init(|| self.genesis().digest)
    }

    /// A language-model task's model at `params`, to generate from on the CPU; None for a task
    /// whose model does not predict tokens.
    pub fn generator(&self, params: &[f32]) -> Option<crate::generate::Generator> {
        let ModelSpec::Transformer(spec) = &self.spec.model else {
            return None;
        };
        match self.model::<CpuBackend>(&Default::default(), params) {
            TaskModel::Transformer(model) => Some(crate::generate::Generator::new(
                model,
                spec.seq_len,
                spec.vocab,
            )),
            TaskModel::Mlp(_) => None,
        }
    }

    fn model<B: Backend>(&self, device: &B::Device, params: &[f32]) -> TaskModel<B> {
        assert_eq!(
            params.len(),
            self.layout.total,
            "parameter vector does not match the task's model"
        );
        write_params(TaskModel::new(&self.spec.model, device), params)
    }

    /// A miner's whole window: `inner_steps` AdamW steps from `start` on the training batches of
    /// `uid`'s pages, at the window's inner learning rate, updating only the parameters in
    /// `trainable` (its group; the rest stays frozen and the pseudo-gradient is zero there). The
    /// optimizer starts from `carried` (the checkpoint's inner state, where the task carries one)
    /// or fresh. A pure function of its arguments, so a validator can re-execute any miner's window
    /// and compare.
    #[allow(clippy::too_many_arguments)]
    pub fn train_window<B: AutodiffBackend>(
        &self,
        device: &B::Device,
        start: &[f32],
        carried: Option<&Arc<InnerState>>,
        window: u64,
        window_seed: u64,
        uid: u16,
        trainable: std::ops::Range<usize>,
        on_step: impl FnMut(usize, f32),
    ) -> Result<TrainOutcome, AssignmentError> {
        self.train_window_in_segments::<B>(
            device,
            start,
            carried,
            (window, window_seed, uid),
            trainable,
            on_step,
            |_| {},
        )
    }

    /// `train_window`, handing `on_segment` the training state at the end of each of the task's
    /// segments (`TrainingSpec::segments`), in order: the states a miner commits to.
    #[allow(clippy::too_many_arguments)]
    pub fn train_window_in_segments<B: AutodiffBackend>(
        &self,
        device: &B::Device,
        start: &[f32],
        carried: Option<&Arc<InnerState>>,
        (window, window_seed, uid): (u64, u64, u16),
        trainable: std::ops::Range<usize>,
        on_step: impl FnMut(usize, f32),
        on_segment: impl FnMut(TrainState),
    ) -> Result<TrainOutcome, AssignmentError> {
        let assignment = self.assignment(window, window_seed, uid)?;
        let batches = self.training_batches(&assignment, window_seed);
        let mut trainer = self
            .trainer::<B>(device)
            .with_trainable(trainable)
            .carrying(carried.cloned());
        Ok(trainer.train_in_segments(
            start,
            &batches,
            self.spec.inner_lr(window),
            self.spec.training.segment_steps,
            on_step,
            on_segment,
        ))
    }

    /// Segment `segment` of `uid`'s window re-executed on the engine's device from the training
    /// state `from` (the state the miner committed to at the segment's start, or the window's start
    /// state) over the window's checkpoint `base`: the state at the segment's end.
    pub fn reexecute_segment(
        &self,
        base: &Checkpoint,
        who: (u64, u64, u16),
        segment: usize,
        from: &TrainState,
    ) -> Result<TrainState, AssignmentError> {
        crate::device::on_backend!(self.device, _I, T, device => {
            self.reexecute_segment_on::<T>(&device, base, who, segment, from)
        })
    }

    fn reexecute_segment_on<B: AutodiffBackend>(
        &self,
        device: &B::Device,
        base: &Checkpoint,
        (window, window_seed, uid): (u64, u64, u16),
        segment: usize,
        from: &TrainState,
    ) -> Result<TrainState, AssignmentError> {
        let steps = self.spec.training.segments()[segment].clone();
        assert_eq!(
            from.step, steps.start,
            "a segment starts where the one before ended"
        );
        let assignment = self.assignment(window, window_seed, uid)?;
        let batches = self.training_batches(&assignment, window_seed);
        Ok(self
            .trainer::<B>(device)
            .carrying(base.inner.clone())
            .resume(
                &base.params,
                from,
                &batches[steps],
                self.spec.inner_lr(window),
            ))
    }

    /// A trainer on `device` whose optimizer state is fresh.
    pub fn trainer<B: AutodiffBackend>(&self, device: &B::Device) -> Trainer<B> {
        Trainer::new(
            &self.spec.model,
            &self.spec.training,
            self.layout.total,
            device,
        )
    }

    /// H inner AdamW steps from `start` on `batches` (one batch per step) with a fresh optimizer at
    /// `window`'s inner learning rate. `on_step(step, loss)` is called after each step, for
    /// progress.
    pub fn train<B: AutodiffBackend>(
        &self,
        device: &B::Device,
        start: &[f32],
        window: u64,
        batches: &[Batch],
        on_step: impl FnMut(usize, f32),
    ) -> TrainOutcome {
        self.trainer::<B>(device)
            .train_from(start, batches, self.spec.inner_lr(window), on_step)
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
