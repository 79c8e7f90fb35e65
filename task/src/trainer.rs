//! A model and its inner AdamW optimizer: H steps from a starting point, each step's gradients
//! computed in parts on the CPU backend and merged in a fixed order.

use crate::architecture::{ModelSpec, TaskModel, as_one_of_several};
use crate::batch::Batch;
use crate::params::{read_params, write_params_trainable};
use crate::spec::TrainingSpec;
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
        }
    }

    /// Only the parameters in `trainable` train (a miner's group); the rest stays frozen.
    pub fn with_trainable(mut self, trainable: std::ops::Range<usize>) -> Self {
        self.trainable = trainable;
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
    fn gradients(&mut self, model: &TaskModel<B>, batch: &Batch) -> (f32, GradientsParams) {
        if self.parts == 1 || batch.rows < 2 {
            return part_gradients(model, batch, &self.device);
        }
        let parts = batch.split(self.parts);
        let results: Vec<(f32, GradientsParams)> = if self.parallel {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TaskEngine;
    use crate::engine::tests::tiny_spec;

    /// Two validators re-execute windows at once in one process: trainings running together
    /// finish, each with the bits it has alone. (With the parts on rayon's pool a localnet hung
    /// after 15 windows: a worker waiting inside burn took up another training's part while
    /// holding its graph's lock.)
    #[test]
    fn trainings_at_once_in_one_process_finish_with_the_bits_of_each_alone() {
        // Matrices large enough for burn to spread its products over rayon's threads.
        let spec = crate::TaskSpec::from_toml_str(include_str!("../../tasks/localnet-lm.toml"))
            .expect("the localnet task parses");
        let engine = std::sync::Arc::new(TaskEngine::new(spec));
        let train = |engine: &TaskEngine, uid: u16| {
            let start = engine.genesis();
            let assignment = engine.assignment(0, 5, uid).unwrap();
            let batches = &engine.training_batches(&assignment, 5)[..4];
            engine
                .trainer::<CpuTrainBackend>(&Default::default())
                .with_threads(true)
                .train_from(&start.params, batches, 1e-3, |_, _| {})
                .end
        };
        let (done, finished) = std::sync::mpsc::channel();
        for uid in 0..3u16 {
            let (engine, done) = (engine.clone(), done.clone());
            std::thread::spawn(move || {
                let ends: Vec<Vec<f32>> = (0..3).map(|_| train(&engine, uid)).collect();
                done.send((uid, ends)).unwrap();
            });
        }
        for _ in 0..3 {
            let (uid, ends) = finished
                .recv_timeout(std::time::Duration::from_secs(300))
                .expect("trainings running together finish");
            let alone = train(&engine, uid);
            assert!(
                ends.iter().all(|end| *end == alone),
                "uid {uid}: bits changed"
            );
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
}
