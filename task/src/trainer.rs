//! A model and its inner AdamW optimizer: H steps from a starting point, each step's gradients
//! computed in parts on the CPU backend and merged in a fixed order.

use crate::architecture::{ModelSpec, TaskModel, as_one_of_several};
use crate::batch::Batch;
use crate::checkpoint::InnerState;
use crate::params::{read_params, write_params_trainable};
use crate::segment::TrainState;
use crate::spec::TrainingSpec;
use burn::module::{ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{
    AdamW, AdamWConfig, GradientsParams, Optimizer, grad_clipping::GradientClippingConfig,
};
use burn::prelude::*;
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use std::sync::Arc;

/// The CPU backend for evaluation and replays: burn's flex, whose results are bit-reproducible
/// across processes and thread counts.
pub type CpuBackend = burn::backend::Flex;
/// The CPU backend for training.
pub type CpuTrainBackend = burn::backend::Autodiff<CpuBackend>;

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

/// A model and its inner optimizer. Miners and validators make a fresh trainer for every window
/// (`TaskEngine::train_window`), so that a window's training is a function of its inputs alone.
/// (A trainer used for several `train_from` calls loads each starting point into the same
/// parameters and keeps its optimizer's moments between them; only experiments do that.)
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
    /// The threads that compute every part but the first, started at the first step that needs
    /// them and kept until the trainer is dropped.
    helpers: Vec<Helper>,
    /// Noise added to every trained parameter after each step, relative to its value, drawn from
    /// a seeded generator: a stand-in for another card's rounding (`with_step_noise`).
    step_noise: Option<(f64, crate::rng::SeededRng)>,
    /// The inner optimizer's state the window starts from where the task carries it (None: fresh).
    /// Its step count is the optimizer's steps before the window: the bias correction and the
    /// warm-up count from there, while a training state's `step` stays the window's inner step.
    carried: Option<Arc<InnerState>>,
}

/// A thread of a trainer's own that runs the jobs it is sent, in turn. Threads outside rayon's
/// pool, not rayon's: a rayon worker waiting inside burn (for a matrix product's tasks) may take
/// up another training's part while it holds its graph's lock, and two trainings in one process
/// (two validators re-executing windows) then wait on each other for ever (a localnet hung so
/// after 15 windows). A thread kept for the window, not one spawned per step: each new thread
/// starts with an empty allocator heap (tiny-lm trained 3% slower so: 4,331 against 4,455
/// tokens/s).
struct Helper {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl Helper {
    fn start() -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name("trainer-part".into())
            .spawn(move || {
                for job in queue {
                    job();
                }
            })
            .expect("the system starts a thread");
        Helper { jobs }
    }
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A trainer on `device` for a model of `model` (`num_params` parameters) with a fresh AdamW
    /// configured by `training`; every parameter trains.
    pub fn new(
        model: &ModelSpec,
        training: &TrainingSpec,
        num_params: usize,
        device: &B::Device,
    ) -> Self {
        let t = training;
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
            model: Some(TaskModel::new(model, device)),
            optimizer,
            device: device.clone(),
            num_params,
            warmup_steps: t.warmup_steps,
            trainable: 0..num_params,
            parts: if on_cpu { STEP_SHARDS } else { 1 },
            parallel: on_cpu && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1),
            helpers: Vec::new(),
            step_noise: None,
            carried: None,
        }
    }

    /// The window starts from `inner` (a checkpoint's carried optimizer state) where given, from a
    /// fresh AdamW otherwise.
    pub fn carrying(mut self, inner: Option<Arc<InnerState>>) -> Self {
        self.carried = inner;
        self
    }

    /// The optimizer's steps before the window.
    fn steps_before(&self) -> usize {
        self.carried.as_ref().map_or(0, |c| c.steps as usize)
    }

    /// Only the parameters in `trainable` train (a miner's group); the rest stays frozen.
    pub fn with_trainable(mut self, trainable: std::ops::Range<usize>) -> Self {
        self.trainable = trainable;
        self
    }

    /// After every step, each trained parameter p becomes p (1 + relative z), z standard normal
    /// drawn from `seed`: training as an unknown card's rounding might perturb it, for measuring
    /// how far honest training drifts from a re-execution. Never used to train for real.
    pub fn with_step_noise(mut self, relative: f64, seed: u64) -> Self {
        self.step_noise = Some((
            relative,
            crate::rng::SeededRng::derived(&[seed, 0x4E4F_4953]),
        ));
        self
    }

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
        on_step: impl FnMut(usize, f32),
    ) -> TrainOutcome {
        self.train_in_segments(start, batches, lr, 0, on_step, |_| {})
    }

    /// `train_from`, with the training state handed to `on_segment` after the last step of every
    /// segment of `segment_steps` steps (0: one segment, the whole window): what a miner commits
    /// to and an audit re-executes a segment of (`resume`).
    pub fn train_in_segments(
        &mut self,
        start: &[f32],
        batches: &[Batch],
        lr: f64,
        segment_steps: usize,
        mut on_step: impl FnMut(usize, f32),
        mut on_segment: impl FnMut(TrainState),
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
        if let Some(inner) = self.carried.clone() {
            let from = TrainState::starting(start, Some(&inner), self.trainable.clone());
            self.load_moments(&model, &from);
        }
        let mut losses = Vec::with_capacity(batches.len());
        for segment in crate::segment::segments(batches.len(), segment_steps) {
            let first = segment.start;
            model = self.steps(model, &batches[segment], first, lr, &mut |step, loss| {
                losses.push(loss);
                on_step(step, loss);
            });
            on_segment(self.state(&model));
        }
        let (_, end) = read_params(&model);
        self.model = Some(model);
        TrainOutcome { end, losses }
    }

    /// A segment re-executed: the steps `batches` (the first of them inner step `from.step` of its
    /// window) from the training state `from` over the window's checkpoint `base`, at the window's
    /// rate `lr`. Returns the state after them. On the CPU backend the bits are those of the same
    /// steps inside an uninterrupted window.
    pub fn resume(
        &mut self,
        base: &[f32],
        from: &TrainState,
        batches: &[Batch],
        lr: f64,
    ) -> TrainState {
        self.trainable = from.range.clone();
        let model = write_params_trainable(
            self.model.take().expect("a trainer always holds its model"),
            &from.whole(base),
            from.range.clone(),
        );
        self.load_moments(&model, from);
        let model = self.steps(model, batches, from.step, lr, &mut |_, _| {});
        let state = self.state(&model);
        self.model = Some(model);
        state
    }

    /// Steps `model` through `batches`, the first being inner step `first` of the window (the
    /// warm-up reads it).
    fn steps(
        &mut self,
        mut model: TaskModel<B>,
        batches: &[Batch],
        first: usize,
        lr: f64,
        on_step: &mut dyn FnMut(usize, f32),
    ) -> TaskModel<B> {
        for (i, batch) in batches.iter().enumerate() {
            let step = first + i;
            let (value, grads) = self.gradients(&model, batch);
            let taken = self.steps_before() + step;
            let warm = if taken < self.warmup_steps {
                (taken + 1) as f64 / (self.warmup_steps + 1) as f64
            } else {
                1.0
            };
            model = self.optimizer.step(lr * warm, model, grads);
            if let Some((relative, rng)) = &mut self.step_noise {
                let (_, mut params) = read_params(&model);
                for p in &mut params[self.trainable.clone()] {
                    *p *= 1.0 + (*relative * rng.normal()) as f32;
                }
                model = write_params_trainable(model, &params, self.trainable.clone());
            }
            on_step(step, value);
        }
        model
    }

    /// The training state of `model` and this trainer's optimizer over the trainable range.
    fn state(&self, model: &TaskModel<B>) -> TrainState {
        let mut reader = MomentReader {
            records: self.optimizer.to_record(),
            trainable: self.trainable.clone(),
            offset: 0,
            step: None,
            first: Vec::new(),
            second: Vec::new(),
        };
        model.visit(&mut reader);
        let (_, params) = read_params(model);
        TrainState {
            step: reader.step.map_or(0, |taken| taken - self.steps_before()),
            params: params[self.trainable.clone()].to_vec(),
            range: self.trainable.clone(),
            first_moment: reader.first,
            second_moment: reader.second,
        }
    }

    /// Replaces the optimizer's moments with `state`'s (none for a fresh optimizer's state before
    /// the first step).
    fn load_moments(&mut self, model: &TaskModel<B>, state: &TrainState) {
        let mut records = self.optimizer.to_record();
        records.clear();
        if !state.first_moment.is_empty() {
            let mut writer = MomentWriter::<B> {
                records,
                state,
                time: self.steps_before() + state.step,
                device: self.device.clone(),
                offset: 0,
            };
            model.visit(&mut writer);
            records = writer.records;
        }
        self.optimizer = self.optimizer.clone().load_record(records);
    }

    /// The mean loss of `model` on `batch` and its gradients: the batch is cut into `self.parts`
    /// parts, each part's gradients are computed apart (on threads of their own where the backend
    /// is the CPU's) and they are averaged, weighted by rows, in the parts' order. The bits depend
    /// on the batch alone, not on the threads that computed them.
    fn gradients(&mut self, model: &TaskModel<B>, batch: &Batch) -> (f32, GradientsParams) {
        if self.parts == 1 || batch.rows < 2 {
            return part_gradients(model, batch, &self.device);
        }
        let parts = batch.split(self.parts);
        let results: Vec<(f32, GradientsParams)> = if self.parallel {
            self.parallel_gradients(model, &parts)
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

impl<B: AutodiffBackend> Trainer<B> {
    /// Each part's loss and gradients, in the parts' order: the first on this thread, the others
    /// on the trainer's helper threads.
    fn parallel_gradients(
        &mut self,
        model: &TaskModel<B>,
        parts: &[Batch],
    ) -> Vec<(f32, GradientsParams)> {
        while self.helpers.len() < parts.len() - 1 {
            self.helpers.push(Helper::start());
        }
        let (done, results) = std::sync::mpsc::channel();
        for (i, (part, helper)) in parts[1..].iter().zip(&self.helpers).enumerate() {
            // A fork has a graph of its own: threads sharing one deadlock in burn.
            let fork = model.clone().fork(&self.device);
            let (part, device, done) = (part.clone(), self.device.clone(), done.clone());
            // A panic comes back to the caller with its own message.
            let job = move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    as_one_of_several(|| part_gradients(&fork, &part, &device))
                }));
                let _ = done.send((i + 1, result));
            };
            helper
                .jobs
                .send(Box::new(job))
                .expect("a trainer's part thread lives as long as the trainer");
        }
        drop(done);
        let first = as_one_of_several(|| part_gradients(model, &parts[0], &self.device));
        let mut all = vec![(0, first)];
        for (i, result) in results.iter() {
            match result {
                Ok(part) => all.push((i, part)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        assert_eq!(
            all.len(),
            parts.len(),
            "a part's thread ended without an answer"
        );
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, r)| r).collect()
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

type AdamWRecords<B> =
    <OptimizerAdaptor<AdamW, TaskModel<B>, B> as Optimizer<TaskModel<B>, B>>::Record;

/// Reads the optimizer's moments of the trainable tensors, in visit order.
struct MomentReader<B: AutodiffBackend> {
    records: AdamWRecords<B>,
    trainable: std::ops::Range<usize>,
    offset: usize,
    step: Option<usize>,
    first: Vec<f32>,
    second: Vec<f32>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for MomentReader<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let n = param.val().shape().num_elements();
        let inside = self.trainable.start <= self.offset && self.offset + n <= self.trainable.end;
        self.offset += n;
        if !inside {
            return;
        }
        let Some(record) = self.records.get(&param.id) else {
            return;
        };
        let momentum = record.clone().into_state::<D>().momentum;
        let time = *self.step.get_or_insert(momentum.time);
        assert_eq!(time, momentum.time, "every trainable tensor steps together");
        let values = |t: Tensor<B::InnerBackend, D>| {
            t.into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("moments are f32")
        };
        self.first.extend(values(momentum.moment_1));
        self.second.extend(values(momentum.moment_2));
    }
}

/// Writes a training state's moments into the optimizer's records of the trainable tensors.
struct MomentWriter<'a, B: AutodiffBackend> {
    records: AdamWRecords<B>,
    state: &'a TrainState,
    /// The optimizer's steps taken: the bias correction reads them.
    time: usize,
    device: B::Device,
    offset: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for MomentWriter<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let shape = param.val().shape();
        let n = shape.num_elements();
        let (range, at) = (&self.state.range, self.offset);
        self.offset += n;
        if at < range.start || at + n > range.end {
            return;
        }
        let within = at - range.start..at - range.start + n;
        let tensor = |values: &[f32]| {
            Tensor::<B::InnerBackend, D>::from_data(
                TensorData::new(values[within.clone()].to_vec(), shape.clone()),
                &self.device,
            )
        };
        let momentum = burn::optim::AdaptiveMomentumState {
            time: self.time,
            moment_1: tensor(&self.state.first_moment),
            moment_2: tensor(&self.state.second_moment),
            max_moment_2: None,
        };
        let record = burn::optim::record::AdaptorRecord::from_state::<D>(burn::optim::AdamWState {
            momentum,
        });
        self.records.insert(param.id, record);
    }
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

#[cfg(test)]
mod tests;
