//! Misbehaving miners, for the tests and the localnet showcase: each mode is what a miner who has
//! read the validators' code might serve instead of its assigned work. None is reachable from
//! `miner run`; the localnet and the tests drive them through `act` (while the window is open) and
//! `after_close` (once it has closed, when every miner's work of the window is served).
//!
//! Where a mode needs other miners' work it reads what they serve (`peers`), and only what the
//! protocol lets a caller with a validator permit fetch: a window's artefacts once it has closed.
//!
//! One file on purpose: every misbehaving mode in one place, so a reader sees all that the tests
//! attack with, and that `miner run` reaches none of it.

use crate::{Miner, MinerError, ServedGradient};
use chain_client::Chain;
use pseudo_gradient::codec;
use std::fmt;
use std::str::FromStr;
use subnet_proto::{commitment, pb};
use task::rng::SeededRng;
use task::segment::TrainState;
use task::{Batch, Checkpoint, CpuTrainBackend, Digest, TaskEngine};

/// Extra scale of the amplified modes: far past the norm bound, and just under it.
const AMPLIFIED: f32 = 2.5;
const SCALED: f32 = 1.3;
const SHRUNK: f32 = 0.6;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Adversary {
    /// Gaussian noise of an honest gradient's norm.
    Random,
    /// NaN everywhere.
    Nan,
    /// Commits to the victim's previous window, then after the close serves the victim's payload of
    /// this window under a fresh commitment.
    Copier,
    /// The victim's gradient of the previous window (the newest one it can see before committing)
    /// plus noise, so that its cosine stays below the duplicate threshold.
    NoisyCopier,
    /// Trains honestly, but on another uid's pages.
    FreeRider,
    /// Always a window late: trains each window honestly, but serves the previous window's
    /// gradient under the current window's commitment.
    Stale,
    /// Trains honestly and serves 2.5 times its gradient (committing its honest dense gradient).
    Amplified,
    /// Trains honestly and serves 1.3 times its gradient: under the norm bound.
    Scaled,
    /// Trains honestly and serves 0.6 times its gradient: a shorter step scores higher in
    /// leave-one-out wherever its own direction overshoots.
    Shrunk,
    /// Trains a third of its steps and says it trained them all.
    Lazy,
    /// Registers and never serves an axon.
    Silent,
    /// Trains its pages, then as many steps again on held-out pages.
    Heldout,
    /// Trains honestly, commits its own dense gradient and residual, but serves the codec of half
    /// its gradient plus half the mean of the other miners' gradients of the previous window (none
    /// in its first window: half its gradient).
    Mixer,
    /// Trains honestly and serves 2.5 times its gradient, claiming the extra came in as its
    /// error-feedback residual.
    ResidualForger,
    /// One training run over the pages of two identities, served by both (this identity and its
    /// partner, the next Sybil of the localnet).
    Sybil,
    /// One training run over the pages of two identities, split between them: the lower uid serves
    /// the even chunks of the compression layout and the higher the odd ones, so the two payloads
    /// have disjoint supports (cosine 0: not near-duplicates) and each parameter's aggregate takes
    /// one of them whole.
    Splitter,
    /// Trains a third of its steps, and answers an audit with the commitment and then nothing.
    Staller,
    /// An honest miner that drops off the network after serving its first window's payload: its
    /// first window's audits go unanswered until its next window, when it is back and serves them.
    Dropout,
    /// Commits honestly in odd windows only. After each even window has closed it signs a
    /// commitment for it that nobody collected, whose dense gradient is a push on a few chosen
    /// parameters (its payload and residuals the codec's own, from its last real residual), and in
    /// the next window claims that commitment's residual: the push reaches the model as if error
    /// feedback had carried it.
    Launderer,
    /// On a task in parameter groups: after seeing each window's seed, declares the group capacity
    /// that gives it the model's last group (any group, 0, when the rotation gives it that one;
    /// the smallest group's size otherwise) and trains that group honestly.
    GroupPicker,
    /// Trains honestly in segments, says its window was trained on a GPU (`cuda:0`, so that audits
    /// allow the backend tolerance), and pushes eight chosen parameters of its last segment's end
    /// by 2% of that segment's movement: its dense gradient, payload and residuals are those of
    /// the pushed end.
    Pusher,
    /// Trains none of its pages: serves the window's public training, the one every validator runs
    /// for the optimizer state the next checkpoint carries (`TaskEngine::next_inner`), whose pages
    /// and batches anyone draws from the window seed.
    PublicTrainer,
}

impl Adversary {
    /// Whether the mode pairs up with the next identity of the same mode.
    pub fn pairs(self) -> bool {
        matches!(self, Adversary::Sybil | Adversary::Splitter)
    }
}

impl Adversary {
    pub const ALL: [Adversary; 22] = [
        Adversary::Random,
        Adversary::Nan,
        Adversary::Copier,
        Adversary::NoisyCopier,
        Adversary::FreeRider,
        Adversary::Stale,
        Adversary::Amplified,
        Adversary::Scaled,
        Adversary::Shrunk,
        Adversary::Lazy,
        Adversary::Silent,
        Adversary::Heldout,
        Adversary::Mixer,
        Adversary::ResidualForger,
        Adversary::Sybil,
        Adversary::Splitter,
        Adversary::Staller,
        Adversary::Dropout,
        Adversary::Launderer,
        Adversary::GroupPicker,
        Adversary::Pusher,
        Adversary::PublicTrainer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Adversary::Random => "random",
            Adversary::Nan => "nan",
            Adversary::Copier => "copier",
            Adversary::NoisyCopier => "noisy-copier",
            Adversary::FreeRider => "free-rider",
            Adversary::Stale => "stale",
            Adversary::Amplified => "amplified",
            Adversary::Scaled => "scaled",
            Adversary::Shrunk => "shrunk",
            Adversary::Lazy => "lazy",
            Adversary::Silent => "silent",
            Adversary::Heldout => "heldout",
            Adversary::Mixer => "mixer",
            Adversary::ResidualForger => "residual-forger",
            Adversary::Sybil => "sybil",
            Adversary::Splitter => "splitter",
            Adversary::Staller => "staller",
            Adversary::Dropout => "dropout",
            Adversary::Launderer => "launderer",
            Adversary::GroupPicker => "group-picker",
            Adversary::Pusher => "pusher",
            Adversary::PublicTrainer => "public-trainer",
        }
    }

    /// Whether the mode serves an axon at all.
    pub fn serves(self) -> bool {
        self != Adversary::Silent
    }
}

impl fmt::Display for Adversary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Adversary {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Adversary::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Adversary::ALL.iter().map(|a| a.name()).collect();
                format!("unknown adversary `{s}`: one of {}", names.join(", "))
            })
    }
}

/// The other miners of the process, as an attacker with a validator permit sees them over gRPC.
pub struct Peers<'a, C> {
    /// Every other miner, by uid.
    pub miners: Vec<(u16, &'a Miner<C>)>,
    /// The uid whose work copying modes take (the first honest miner).
    pub victim: u16,
    /// The partner's uid, for the modes that pair up (`Adversary::pairs`).
    pub partner: Option<u16>,
    /// What the adversary keeps from one window to the next (`Stale`'s late gradient).
    pub stash: &'a std::sync::Mutex<Option<Vec<f32>>>,
}

impl<C: Chain> Peers<'_, C> {
    fn served(&self, uid: u16, window: u64) -> Option<std::sync::Arc<ServedGradient>> {
        self.miners
            .iter()
            .find(|(u, _)| *u == uid)
            .and_then(|(_, m)| m.gradient(window))
    }
}

fn decoded(engine: &TaskEngine, served: &ServedGradient) -> Option<Vec<f32>> {
    codec::decode(&served.payload, engine.num_params()).ok()
}

fn scaled(values: &[f32], factor: f32) -> Vec<f32> {
    values.iter().map(|v| v * factor).collect()
}

/// Trains `batches` from `start` at the window's inner rate: the pseudo-gradient.
fn train(engine: &TaskEngine, start: &Checkpoint, batches: &[Batch], window: u64) -> Vec<f32> {
    engine
        .trainer::<CpuTrainBackend>(&Default::default())
        .carrying(start.inner.clone())
        .train_from(
            &start.params,
            batches,
            engine.spec().inner_lr(window),
            |_, _| {},
        )
        .pseudo_gradient(&start.params)
}

/// Signs and publishes a payload with whatever claims the attacker chooses (`segments`: the
/// training states it commits to, its own or `Miner::claimed_segments`).
fn publish_claims(
    miner: &Miner<impl Chain>,
    window: u64,
    checkpoint: Digest,
    payload: Vec<u8>,
    (dense, segments): (&[f32], &[TrainState]),
    residual_in: (&[f32], u64),
    residual_out: &[f32],
) {
    let engine = miner.engine();
    let segments: Vec<Vec<u8>> = segments.iter().map(TrainState::to_bytes).collect();
    let dense = codec::encode_dense(dense);
    let residual = codec::encode_dense(residual_in.0);
    let commitment = commitment::commit(
        miner.keypair(),
        &commitment::Claims {
            window,
            task_digest: engine.digest(),
            checkpoint_digest: checkpoint.0,
            payload_digest: subnet_proto::digest(&payload),
            payload_len: payload.len() as u64,
            dense_digest: subnet_proto::digest(&dense),
            residual_in_digest: subnet_proto::digest(&residual),
            residual_window: residual_in.1,
            residual_out_digest: subnet_proto::digest(&codec::encode_dense(residual_out)),
            group_capacity: miner.group_capacity(),
            segments: segments.iter().map(|b| subnet_proto::digest(b)).collect(),
            backend: task::device::cpu_backend().into(),
        },
    );
    miner.publish(
        window,
        ServedGradient {
            commitment,
            payload: std::sync::Arc::new(payload),
            dense: std::sync::Arc::new(dense),
            residual_in: std::sync::Arc::new(residual),
            segments: segments
                .into_iter()
                .map(|b| crate::node::KeptState::Held(std::sync::Arc::new(b)))
                .collect(),
        },
    );
}

/// Publishes `values` as if they were its dense gradient, compressed from an empty residual (what
/// the attacker serves when it has no honest chain to follow).
fn publish_as_dense(miner: &Miner<impl Chain>, window: u64, checkpoint: Digest, values: &[f32]) {
    let c = &miner.engine().spec().compression;
    let zero = vec![0.0; values.len()];
    let out = codec::compress(values, &zero, c.layout(), c.error_feedback as f32);
    publish_claims(
        miner,
        window,
        checkpoint,
        out.payload,
        (values, &miner.claimed_segments(checkpoint, values)),
        (&zero, 0),
        &out.residual_out,
    );
}

/// Gaussian noise of L2 norm `norm`, drawn from `seed`.
fn noise(n: usize, norm: f64, seed: &[u64]) -> Vec<f32> {
    let mut rng = SeededRng::derived(seed);
    let raw: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    scaled(
        &raw,
        (norm / pseudo_gradient::aggregate::l2_norm(&raw)) as f32,
    )
}

/// What the adversary does while `window` is open, in place of `Miner::train_window`.
pub async fn act<C: Chain>(
    miner: &Miner<C>,
    adversary: Adversary,
    peers: &Peers<'_, C>,
    window: u64,
    window_seed: u64,
) -> Result<(), MinerError> {
    if adversary == Adversary::Silent {
        return Ok(());
    }
    if adversary == Adversary::Dropout {
        // Back on the network: it answers every window it kept.
        miner.stall_artefacts(None);
        miner.train_window(window, window_seed).await?;
        let mut first = peers.stash.lock().expect("stash lock");
        if first.is_none() {
            *first = Some(Vec::new());
            miner.stall_artefacts(Some(window));
        }
        return Ok(());
    }
    let turn = Turn {
        checkpoint: miner.checkpoint().ok_or(MinerError::NoCheckpoint)?,
        uid: miner.uid().await?,
        engine: miner.engine().clone(),
        miner,
        peers,
        window,
        window_seed,
    };
    match adversary {
        Adversary::Silent => Ok(()),
        Adversary::Nan => turn.nan(),
        Adversary::Random => turn.random(),
        Adversary::Copier | Adversary::NoisyCopier => turn.copy(adversary),
        Adversary::FreeRider => turn.free_ride(),
        Adversary::PublicTrainer => turn.public_training(),
        Adversary::Stale => turn.stale(),
        Adversary::Amplified | Adversary::Scaled | Adversary::Shrunk | Adversary::Mixer => {
            turn.tamper(adversary)
        }
        Adversary::ResidualForger => turn.forge_residual(),
        Adversary::Lazy => turn.lazy(),
        Adversary::Staller => {
            miner.stall_artefacts(Some(window));
            turn.lazy()
        }
        Adversary::Dropout => Ok(()),
        Adversary::Launderer => turn.launder(),
        Adversary::GroupPicker => turn.pick_group(),
        Adversary::Pusher => turn.push(),
        Adversary::Heldout => turn.heldout(),
        Adversary::Sybil | Adversary::Splitter => turn.pair_up(adversary),
    }
}

/// One adversary's window: who it is, what it starts from, and the others it may read.
struct Turn<'a, C> {
    miner: &'a Miner<C>,
    peers: &'a Peers<'a, C>,
    window: u64,
    window_seed: u64,
    uid: u16,
    engine: std::sync::Arc<TaskEngine>,
    checkpoint: task::Checkpoint,
}

impl<C: Chain> Turn<'_, C> {
    /// The training batches of `uid`'s pages this window.
    fn own_batches(&self, uid: u16) -> Result<Vec<Batch>, MinerError> {
        let assignment = self.engine.assignment(self.window, self.window_seed, uid)?;
        Ok(self.engine.training_batches(&assignment, self.window_seed))
    }

    /// The honest pseudo-gradient of this miner's window over the parameters `range`, and the
    /// training states at the end of its segments.
    fn honest_work(
        &self,
        range: std::ops::Range<usize>,
    ) -> Result<(Vec<f32>, Vec<TrainState>), MinerError> {
        let start = &self.checkpoint.params;
        let mut states = Vec::new();
        let outcome = self.engine.train_window_in_segments::<CpuTrainBackend>(
            &Default::default(),
            start,
            self.checkpoint.inner.as_ref(),
            (self.window, self.window_seed, self.uid),
            range,
            |_, _| {},
            |s| states.push(s),
        )?;
        Ok((outcome.pseudo_gradient(start), states))
    }

    /// The honest pseudo-gradient of this miner's window.
    fn honest(&self) -> Result<Vec<f32>, MinerError> {
        Ok(train(
            &self.engine,
            &self.checkpoint,
            &self.own_batches(self.uid)?,
            self.window,
        ))
    }

    /// An honest commitment whose payload carries a NaN.
    fn nan(&self) -> Result<(), MinerError> {
        let miner = self.miner;
        let window = self.window;
        let engine = self.engine.clone();
        let checkpoint = &self.checkpoint;
        // An honest payload whose values are NaN: in a top-k payload that is a chunk scale.
        let mut served = miner.commit_work(window, checkpoint.digest, &self.honest()?);
        let mut payload = served.payload.to_vec();
        if engine.spec().compression.top_k > 0 {
            // After the header (magic, encoding, count: 13 bytes), chunk size and k (8).
            payload[21..25].copy_from_slice(&f32::NAN.to_le_bytes());
        } else {
            payload[13..17].copy_from_slice(&f32::NAN.to_le_bytes());
        }
        let mut commitment = served.commitment.clone();
        commitment.payload_digest = subnet_proto::digest(&payload).to_vec();
        served.commitment = resign(miner, commitment);
        served.payload = std::sync::Arc::new(payload);
        miner.publish(window, served);
        Ok(())
    }

    /// Noise instead of work.
    fn random(&self) -> Result<(), MinerError> {
        let miner = self.miner;
        let window = self.window;
        let uid = self.uid;
        let checkpoint = &self.checkpoint;
        let n = self.engine.num_params();
        // Noise of an honest gradient's norm (it trains once to learn the norm).
        let norm = pseudo_gradient::aggregate::l2_norm(&self.honest()?);
        let values = noise(n, norm, &[window, uid as u64, 0x4E4F_4953]);
        publish_as_dense(miner, window, checkpoint.digest, &values);
        Ok(())
    }

    /// Another miner's last served gradient (with noise, for the noisy copier).
    fn copy(&self, adversary: Adversary) -> Result<(), MinerError> {
        let miner = self.miner;
        let peers = self.peers;
        let window = self.window;
        let uid = self.uid;
        let engine = self.engine.clone();
        let checkpoint = &self.checkpoint;
        let n = self.engine.num_params();
        let zero = vec![0.0; n];
        // Before the close only the victim's previous window can be seen.
        let seen = window
            .checked_sub(1)
            .and_then(|w| peers.served(peers.victim, w))
            .and_then(|s| decoded(&engine, &s))
            .unwrap_or_else(|| zero.clone());
        let values = if adversary == Adversary::NoisyCopier {
            let norm = 0.4 * pseudo_gradient::aggregate::l2_norm(&seen).max(1e-6);
            let noise = noise(n, norm, &[window, uid as u64, 0x434F_5059]);
            seen.iter().zip(&noise).map(|(s, z)| s + z).collect()
        } else {
            seen
        };
        publish_as_dense(miner, window, checkpoint.digest, &values);
        Ok(())
    }

    /// Work on another uid's pages.
    fn free_ride(&self) -> Result<(), MinerError> {
        let miner = self.miner;
        let window = self.window;
        let uid = self.uid;
        let engine = self.engine.clone();
        let checkpoint = &self.checkpoint;
        let other = uid.wrapping_add(97);
        let values = train(&engine, &self.checkpoint, &self.own_batches(other)?, window);
        let served = miner.commit_work(window, checkpoint.digest, &values);
        miner.publish(window, served);
        Ok(())
    }

    /// The window's public training (the same pages, batches and start as `TaskEngine::next_inner`)
    /// as its own work.
    fn public_training(&self) -> Result<(), MinerError> {
        let engine = &self.engine;
        let (window, seed) = (self.window, self.window_seed);
        let batches = engine.inner_state_batches(seed);
        let values = train(engine, &self.checkpoint, &batches, window);
        let served = self
            .miner
            .commit_work(window, self.checkpoint.digest, &values);
        self.miner.publish(window, served);
        Ok(())
    }

    /// Last window's work, held back one window.
    fn stale(&self) -> Result<(), MinerError> {
        let miner = self.miner;
        let peers = self.peers;
        let window = self.window;
        let checkpoint = &self.checkpoint;
        let fresh = self.honest()?;
        let late = peers.stash.lock().expect("stash lock").replace(fresh);
        if let Some(late) = late {
            let served = miner.commit_work(window, checkpoint.digest, &late);
            miner.publish(window, served);
        }
        Ok(())
    }

    /// Honest claims over a changed payload: scaled up, scaled, shrunk, or mixed with others' work.
    fn tamper(&self, adversary: Adversary) -> Result<(), MinerError> {
        let miner = self.miner;
        let peers = self.peers;
        let window = self.window;
        let engine = self.engine.clone();
        let checkpoint = &self.checkpoint;
        let n = self.engine.num_params();
        let zero = vec![0.0; n];
        let (dense, states) = self.honest_work(0..n)?;
        let trained = crate::Trained {
            delta: &dense,
            range: 0..n,
            segments: &states,
            backend: task::device::cpu_backend().into(),
        };
        let honest_work = miner.commit_trained(window, checkpoint.digest, trained);
        let mut sent = decoded(&engine, &honest_work).unwrap_or_else(|| zero.clone());
        match adversary {
            Adversary::Amplified => sent = scaled(&sent, AMPLIFIED),
            Adversary::Scaled => sent = scaled(&sent, SCALED),
            Adversary::Shrunk => sent = scaled(&sent, SHRUNK),
            _ => {
                let others: Vec<Vec<f32>> = window
                    .checked_sub(1)
                    .map(|w| {
                        peers
                            .miners
                            .iter()
                            .filter_map(|(u, _)| peers.served(*u, w))
                            .filter_map(|s| decoded(&engine, &s))
                            .collect()
                    })
                    .unwrap_or_default();
                // Half its own and half the others' mean, which is zero where there is nothing
                // to mix (its first window): it tampers with every payload it serves.
                for (i, s) in sent.iter_mut().enumerate() {
                    let sum: f32 = others.iter().map(|o| o[i]).sum();
                    *s = 0.5 * *s + 0.5 * sum / others.len().max(1) as f32;
                }
            }
        }
        // The payload changes; every claim stays the honest one.
        let c = &engine.spec().compression;
        let (payload, _) = c.layout().encode(&sent);
        let mut commitment = honest_work.commitment.clone();
        commitment.payload_digest = subnet_proto::digest(&payload).to_vec();
        commitment.payload_len = payload.len() as u64;
        let commitment = resign(miner, commitment);
        miner.publish(
            window,
            ServedGradient {
                commitment,
                payload: std::sync::Arc::new(payload),
                dense: honest_work.dense.clone(),
                residual_in: honest_work.residual_in.clone(),
                segments: honest_work.segments.clone(),
            },
        );
        Ok(())
    }

    /// An inflated incoming residual, claimed from the previous window.
    fn forge_residual(&self) -> Result<(), MinerError> {
        let miner = self.miner;
        let window = self.window;
        let engine = self.engine.clone();
        let checkpoint = &self.checkpoint;
        // payload = codec(dense + residual) holds for the forged residual 1.5 x dense, said to
        // come from the previous window.
        let (dense, states) = self.honest_work(0..self.engine.num_params())?;
        let forged = scaled(&dense, AMPLIFIED - 1.0);
        let c = &engine.spec().compression;
        let out = codec::compress(&dense, &forged, c.layout(), c.error_feedback as f32);
        publish_claims(
            miner,
            window,
            checkpoint.digest,
            out.payload,
            (&dense, &states),
            (&forged, window.saturating_sub(1)),
            &out.residual_out,
        );
        Ok(())
    }

    /// Honest segments, the last one's end pushed by 2% of its movement on eight parameters, under
    /// a GPU's name.
    fn push(&self) -> Result<(), MinerError> {
        let start = &self.checkpoint.params;
        let range = self
            .engine
            .group(self.window_seed, self.uid, self.miner.group_capacity())?
            .range
            .clone();
        let (_, mut states) = self.honest_work(range.clone())?;
        let before = match states.len().checked_sub(2) {
            Some(i) => states[i].params.clone(),
            None => start[range.clone()].to_vec(),
        };
        let Some(last) = states.last_mut() else {
            return Ok(());
        };
        let movement = pseudo_gradient::aggregate::l2_norm(
            &last
                .params
                .iter()
                .zip(&before)
                .map(|(e, s)| e - s)
                .collect::<Vec<f32>>(),
        );
        let n = last.params.len();
        for p in last.params.iter_mut().step_by((n / 8).max(1)).take(8) {
            *p -= (0.02 * movement / 8f64.sqrt()) as f32;
        }
        let end = last.whole(start);
        let delta: Vec<f32> = start.iter().zip(&end).map(|(s, e)| s - e).collect();
        let trained = crate::Trained {
            delta: &delta,
            range,
            segments: &states,
            backend: "cuda:0".into(),
        };
        let served = self
            .miner
            .commit_trained(self.window, self.checkpoint.digest, trained);
        self.miner.publish(self.window, served);
        Ok(())
    }

    /// A third of the training steps.
    fn lazy(&self) -> Result<(), MinerError> {
        let miner = self.miner;
        let window = self.window;
        let uid = self.uid;
        let engine = self.engine.clone();
        let checkpoint = &self.checkpoint;
        let batches = self.own_batches(uid)?;
        let values = train(
            &engine,
            &self.checkpoint,
            &batches[..batches.len().div_ceil(3)],
            window,
        );
        let served = miner.commit_work(window, checkpoint.digest, &values);
        miner.publish(window, served);
        Ok(())
    }

    /// In an odd window, honest work compressed with whatever residual its last (possibly
    /// fabricated) commitment left, claiming that commitment as the residual's source.
    fn launder(&self) -> Result<(), MinerError> {
        if self.window.is_multiple_of(2) {
            return Ok(());
        }
        let (dense, states) = self.honest_work(0..self.engine.num_params())?;
        let n = dense.len();
        let c = &self.engine.spec().compression;
        let kept = self.peers.stash.lock().expect("stash lock").take();
        let (residual, from) = match kept {
            Some(r) if r.len() == n => (r, self.window - 1),
            _ => (vec![0.0; n], 0),
        };
        let out = codec::compress(&dense, &residual, c.layout(), c.error_feedback as f32);
        publish_claims(
            self.miner,
            self.window,
            self.checkpoint.digest,
            out.payload,
            (&dense, &states),
            (&residual, from),
            &out.residual_out,
        );
        *self.peers.stash.lock().expect("stash lock") = Some(out.residual_out);
        Ok(())
    }

    /// Honest work on the group a capacity chosen after seeing the window seed gives it.
    fn pick_group(&self) -> Result<(), MinerError> {
        let groups = self.engine.groups().groups();
        let (Some(last), Some(smallest)) = (
            groups.iter().map(|g| g.index).max(),
            groups.iter().map(|g| g.len() as u64).min(),
        ) else {
            return Ok(());
        };
        let capacity = if self.engine.group(self.window_seed, self.uid, 0)?.index == last {
            0
        } else {
            smallest
        };
        let group = self.engine.group(self.window_seed, self.uid, capacity)?;
        let (dense, states) = self.honest_work(group.range.clone())?;
        let zero = vec![0.0; dense.len()];
        let out = self
            .engine
            .spec()
            .compression
            .compress(&dense, &zero, group.range.clone());
        publish_claims(
            self.miner,
            self.window,
            self.checkpoint.digest,
            out.payload,
            (&dense, &states),
            (&zero, 0),
            &out.residual_out,
        );
        // The same claims under the capacity it picked.
        let Some(served) = self.miner.gradient(self.window) else {
            return Ok(());
        };
        let mut commitment = served.commitment.clone();
        commitment.group_capacity = capacity;
        self.miner.publish(
            self.window,
            ServedGradient {
                commitment: resign(self.miner, commitment),
                payload: served.payload.clone(),
                dense: served.dense.clone(),
                residual_in: served.residual_in.clone(),
                segments: served.segments.clone(),
            },
        );
        Ok(())
    }

    /// Training on held-out pages too.
    fn heldout(&self) -> Result<(), MinerError> {
        let miner = self.miner;
        let window = self.window;
        let window_seed = self.window_seed;
        let uid = self.uid;
        let engine = self.engine.clone();
        let checkpoint = &self.checkpoint;
        let mut batches = self.own_batches(uid)?;
        let heldout = engine.heldout_batches(window_seed ^ uid as u64, batches.len());
        batches.extend(heldout);
        let values = train(&engine, &self.checkpoint, &batches, window);
        let served = miner.commit_work(window, checkpoint.digest, &values);
        miner.publish(window, served);
        Ok(())
    }

    /// One run over two identities' pages (Sybil), or half of it each (Splitter).
    fn pair_up(&self, adversary: Adversary) -> Result<(), MinerError> {
        let miner = self.miner;
        let peers = self.peers;
        let window = self.window;
        let uid = self.uid;
        let engine = self.engine.clone();
        let checkpoint = &self.checkpoint;
        // One run over both identities' pages: half the steps from each, interleaved. Both
        // identities compute the same run (lower uid's pages first), so they serve one gradient
        // (a Splitter serves its half of it).
        let partner = peers.partner.unwrap_or(uid);
        let (a, b) = (uid.min(partner), uid.max(partner));
        let (pa, pb) = (self.own_batches(a)?, self.own_batches(b)?);
        let steps = engine.spec().training.inner_steps;
        let batches: Vec<Batch> = (0..steps)
            .map(|i| {
                if i % 2 == 0 {
                    pa[i / 2].clone()
                } else {
                    pb[i / 2].clone()
                }
            })
            .collect();
        let mut values = train(&engine, &self.checkpoint, &batches, window);
        if adversary == Adversary::Splitter {
            let chunk = engine.spec().compression.chunk.max(1);
            let parity = usize::from(uid != a);
            for (i, v) in values.iter_mut().enumerate() {
                if (i / chunk) % 2 != parity {
                    *v = 0.0;
                }
            }
        }
        let served = miner.commit_work(window, checkpoint.digest, &values);
        miner.publish(window, served);
        Ok(())
    }
}

/// The launderer's commitment for an even window nobody collected: a push on eight parameters as
/// its dense gradient, compressed from its last real residual, leaving the residual it claims next.
fn fabricate<C: Chain>(miner: &Miner<C>, peers: &Peers<'_, C>, window: u64) {
    if !window.is_multiple_of(2) {
        return;
    }
    // The residual its last real commitment (of the window before) left.
    let (Some(checkpoint), Some(left)) = (
        miner.checkpoint(),
        peers.stash.lock().expect("stash lock").clone(),
    ) else {
        return;
    };
    let engine = miner.engine();
    let n = engine.num_params();
    let mut push = vec![0.0f32; n];
    for i in 0..8 {
        push[(i * 7919) % n] = 0.05;
    }
    let c = &engine.spec().compression;
    let out = codec::compress(&push, &left, c.layout(), c.error_feedback as f32);
    publish_claims(
        miner,
        window,
        checkpoint.digest,
        out.payload,
        (&push, &miner.claimed_segments(checkpoint.digest, &push)),
        (&left, window - 1),
        &out.residual_out,
    );
    *peers.stash.lock().expect("stash lock") = Some(out.residual_out);
}

/// What the adversary does once `window` has closed (every miner's work is served now).
pub fn after_close<C: Chain>(
    miner: &Miner<C>,
    adversary: Adversary,
    peers: &Peers<'_, C>,
    window: u64,
) {
    if adversary == Adversary::Launderer {
        fabricate(miner, peers, window);
        return;
    }
    if adversary != Adversary::Copier {
        return;
    }
    let Some(victim) = peers.served(peers.victim, window) else {
        return;
    };
    let Some(mine) = miner.gradient(window) else {
        return;
    };
    // The victim's payload and claims, under the copier's own (new) signature.
    let mut commitment = victim.commitment.clone();
    commitment.hotkey = mine.commitment.hotkey.clone();
    let commitment = resign(miner, commitment);
    miner.publish(
        window,
        ServedGradient {
            commitment,
            payload: victim.payload.clone(),
            dense: victim.dense.clone(),
            residual_in: victim.residual_in.clone(),
            segments: victim.segments.clone(),
        },
    );
}

/// Signs `c`'s claims again with the miner's key.
fn resign(miner: &Miner<impl Chain>, c: pb::Commitment) -> pb::Commitment {
    let digest32 = |b: &[u8]| <[u8; 32]>::try_from(b).unwrap_or([0; 32]);
    commitment::commit(
        miner.keypair(),
        &commitment::Claims {
            window: c.window,
            task_digest: digest32(&c.task_digest),
            checkpoint_digest: digest32(&c.checkpoint_digest),
            payload_digest: digest32(&c.payload_digest),
            payload_len: c.payload_len,
            dense_digest: digest32(&c.dense_digest),
            residual_in_digest: digest32(&c.residual_in_digest),
            residual_window: c.residual_window,
            residual_out_digest: digest32(&c.residual_out_digest),
            group_capacity: c.group_capacity,
            segments: c.segment_digests.iter().map(|d| digest32(d)).collect(),
            backend: c.backend,
        },
    )
}
