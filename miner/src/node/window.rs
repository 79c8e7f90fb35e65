//! A miner's window: train the assigned pages from the checkpoint, compress the pseudo-gradient
//! with the error-feedback residual, sign the commitment to all of it and keep what it names for
//! validators.

use super::{
    Miner, MinerError, Progress, ProgressHook, ServedGradient, StateDir, TrainReport, Trained,
};
use crate::residual::{self, Residual};
use chain_client::Chain;
use pseudo_gradient::codec;
use std::sync::Arc;
use std::time::Instant;
use subnet_proto::commitment;
use task::segment::TrainState;
use task::{Checkpoint, Digest, TrainOutcome};

/// Reports each inner step: to the progress hook when there is one, else four times a window at
/// info level; every step at debug level.
struct StepLog {
    window: u64,
    uid: u16,
    steps: usize,
    tokens_per_step: usize,
    started: Instant,
    hook: Option<ProgressHook>,
}

impl StepLog {
    fn step(&self, step: usize, loss: f32) {
        let (window, uid, steps) = (self.window, self.uid, self.steps);
        let done = step + 1;
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        let tokens_per_s = (done * self.tokens_per_step) as f64 / elapsed;
        if let Some(hook) = &self.hook {
            hook(&Progress {
                window,
                step: done,
                steps,
                loss,
                tokens_per_s,
            });
        } else if done.is_multiple_of(steps.div_ceil(4).max(1)) || done == steps {
            tracing::info!(window, step = done, steps, loss, tokens_per_s, "training");
            return;
        }
        tracing::debug!(window, uid, step = done, steps, loss, "inner step");
    }
}

impl<C: Chain> Miner<C> {
    /// Trains the window on this miner's assigned pages from the current checkpoint and makes the
    /// signed pseudo-gradient available to validators.
    #[tracing::instrument(skip(self), fields(hotkey = %self.hotkey().short()))]
    pub async fn train_window(
        &self,
        window: u64,
        window_seed: u64,
    ) -> Result<TrainReport, MinerError> {
        let checkpoint = self.checkpoint().ok_or(MinerError::NoCheckpoint)?;
        let metagraph = self.chain().metagraph(self.netuid()).await?;
        let uid = self.own_uid(&metagraph)?;
        let group = self
            .engine()
            .group(window_seed, uid, self.group_capacity())?
            .clone();
        let started = Instant::now();
        let (outcome, segments) = self
            .train_on_device(&checkpoint, (window, window_seed, uid), group.range.clone())
            .await?;
        let seconds = started.elapsed().as_secs_f64();
        let (first_loss, last_loss) = (
            outcome.losses.first().copied().unwrap_or(f32::NAN),
            outcome.losses.last().copied().unwrap_or(f32::NAN),
        );
        let delta = outcome.into_pseudo_gradient(&checkpoint.params);
        let trained = Trained {
            delta: &delta,
            range: group.range.clone(),
            segments: &segments,
            backend: self.inner.device.backend(),
        };
        let served = self.commit_trained(window, checkpoint.digest, trained);
        let report = TrainReport {
            window,
            uid,
            group: group.index,
            pages: self.engine().spec().shards.pages_per_miner,
            first_loss,
            last_loss,
            tokens: self.engine().spec().tokens_per_miner_window(),
            seconds,
            payload_bytes: served.payload.len(),
        };
        self.publish(window, served);
        self.log_trained(&report);
        Ok(report)
    }

    /// The window `who` = (window, window seed, uid) trained from `start` (its parameters and
    /// carried optimizer state) on this miner's device, off the async runtime: the outcome and the
    /// state at the end of each segment.
    async fn train_on_device(
        &self,
        start: &Checkpoint,
        who: (u64, u64, u16),
        trainable: std::ops::Range<usize>,
    ) -> Result<(TrainOutcome, Vec<TrainState>), MinerError> {
        let engine = self.engine().clone();
        let (window, _, uid) = who;
        let spec = engine.spec();
        let steps = StepLog {
            window,
            uid,
            steps: spec.training.inner_steps,
            tokens_per_step: spec.training.batch_size * spec.targets_per_example(),
            started: Instant::now(),
            hook: self.inner.on_progress.clone(),
        };
        let device = self.inner.device;
        let start = start.clone();
        let trained = tokio::task::spawn_blocking(move || {
            let mut segments = Vec::new();
            device
                .train_window_in_segments(
                    &engine,
                    &start.params,
                    start.inner.as_ref(),
                    who,
                    trainable,
                    |step, loss| steps.step(step, loss),
                    |state| segments.push(state),
                )
                .map(|outcome| (outcome, segments))
        })
        .await
        .map_err(|e| MinerError::Training(e.to_string()))??;
        Ok(trained)
    }

    fn log_trained(&self, report: &TrainReport) {
        self.inner
            .metrics
            .window_trained(report.window, report.tokens_per_second());
        tracing::info!(
            window = report.window,
            uid = report.uid,
            loss = report.last_loss,
            first_loss = report.first_loss,
            tokens_per_s = report.tokens_per_second() as u64,
            "trained window"
        );
    }

    /// Compresses `window`'s pseudo-gradient `delta` (trained from the checkpoint `checkpoint`) with
    /// the error-feedback residual carried into the window, signs the commitment to all of it and
    /// keeps the residual that comes out for the next window (and on disk, with a residual file).
    /// For work not trained here: the segment states it commits to are `claimed_segments`.
    pub fn commit_work(&self, window: u64, checkpoint: Digest, delta: &[f32]) -> ServedGradient {
        let segments = self.claimed_segments(checkpoint, delta);
        let trained = Trained {
            delta,
            range: 0..delta.len(),
            segments: &segments,
            backend: task::device::cpu_backend().into(),
        };
        self.commit_trained(window, checkpoint, trained)
    }

    /// `claimed_segments` of `delta` from `checkpoint` (from zeros when the miner does not hold it).
    pub fn claimed_segments(&self, checkpoint: Digest, delta: &[f32]) -> Vec<TrainState> {
        let start = self
            .checkpoint()
            .filter(|c| c.digest == checkpoint)
            .map_or_else(|| vec![0.0; delta.len()], |c| c.params.to_vec());
        super::claimed_segments(self.engine(), &start, delta, 0..delta.len())
    }

    /// `commit_work` for a window trained here: the payload encodes only the trained parameter
    /// group (`codec::compress_range`), the residual keeps what the other groups carry for later
    /// windows, and the commitment names the segment states the training went through.
    pub fn commit_trained(
        &self,
        window: u64,
        checkpoint: Digest,
        trained: Trained,
    ) -> ServedGradient {
        let Trained {
            delta,
            range,
            segments,
            backend,
        } = trained;
        let engine = self.engine();
        let mut residual = self.inner.residual.lock().expect("residual lock");
        let (residual_in, source_window) =
            self.residual_into(residual.as_ref(), window, checkpoint, delta.len());
        let compressed = engine
            .spec()
            .compression
            .compress(delta, &residual_in, range);
        let segment_bytes: Vec<Vec<u8>> = segments.iter().map(TrainState::to_bytes).collect();
        let dense = codec::encode_dense(delta);
        let residual_in_bytes = codec::encode_dense(&residual_in);
        let commitment = commitment::commit(
            self.inner.member.keypair(),
            &commitment::Claims {
                window,
                task_digest: engine.digest(),
                checkpoint_digest: checkpoint.0,
                payload_digest: subnet_proto::digest(&compressed.payload),
                payload_len: compressed.payload.len() as u64,
                dense_digest: subnet_proto::digest(&dense),
                residual_in_digest: subnet_proto::digest(&residual_in_bytes),
                residual_window: source_window,
                residual_out_digest: subnet_proto::digest(&codec::encode_dense(
                    &compressed.residual_out,
                )),
                group_capacity: self.group_capacity(),
                segments: segment_bytes
                    .iter()
                    .map(|b| subnet_proto::digest(b))
                    .collect(),
                backend,
            },
        );
        *residual = Some(self.keep_residual(Residual {
            window,
            source_window,
            before: residual_in,
            after: compressed.residual_out,
        }));
        ServedGradient {
            commitment,
            payload: Arc::new(compressed.payload),
            dense: Arc::new(dense),
            residual_in: Arc::new(residual_in_bytes),
            segments: segment_bytes
                .into_iter()
                .enumerate()
                .map(|(i, b)| StateDir::keep(self.inner.state_dir.as_ref(), window, i, b))
                .collect(),
        }
    }

    /// The residual carried into `window` from `held` and the window it came from, or zero (and
    /// window 0) when none carries on. When the global model did not move since the window the
    /// residual came from, nothing that window sent was applied: carrying the residual on would
    /// only pile up mass that the next payloads then send too large, so the error feedback starts
    /// over from zero instead.
    fn residual_into(
        &self,
        held: Option<&Residual>,
        window: u64,
        checkpoint: Digest,
        len: usize,
    ) -> (Vec<f32>, u64) {
        let stalled = |source: u64| {
            source != window
                && self
                    .gradient(source)
                    .is_some_and(|g| g.commitment.checkpoint_digest == checkpoint.0)
        };
        held.and_then(|r| r.carried_into(window))
            .filter(|(r, source)| r.len() == len && !stalled(*source))
            .map(|(r, source)| (r.to_vec(), source))
            .unwrap_or_else(|| (vec![0.0; len], 0))
    }

    /// Writes `next` to the residual file, if the miner keeps one, and returns it.
    fn keep_residual(&self, next: Residual) -> Residual {
        if let Some(path) = &self.inner.residual_file
            && let Err(e) = residual::save(path, &self.engine().digest(), &next)
        {
            // A stale file would restart this miner from a residual its commitments no longer
            // continue, which validators treat as fraud; an empty residual is always accepted.
            let removed = std::fs::remove_file(path);
            tracing::warn!(window = next.window, path = %path.display(), error = %e, removed = removed.is_ok(), "cannot save the compression residual; the file is removed so that a restart starts from an empty residual");
        }
        next
    }
}
