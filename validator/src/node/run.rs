//! A window in order: start, gather, the window's steps (`crate::window::score`), weights and
//! fraud reports on chain, the record, and what carries over to the next window.

use super::inputs::LiveInputs;
use super::*;
use crate::window::{Carried, Gathered, Scored, Setting};

impl<C: Chain> Validator<C> {
    /// Scores `window` (closed on chain): follow the lead's checkpoint, start the window (eval
    /// batches, the checkpoint's losses, the reference training), gather the committed work, run
    /// the window's steps (measure, audit, check assignments, score contributions, decide,
    /// aggregate), put weights and fraud reports on chain, record.
    #[tracing::instrument(skip(self), fields(hotkey = %self.hotkey().short()))]
    pub async fn run_window(
        &self,
        window: u64,
        window_seed: u64,
    ) -> Result<WindowOutcome, ValidatorError> {
        let mut timings = window::Laps::new();
        let fetched_before = self
            .inner
            .fetched
            .load(std::sync::atomic::Ordering::Relaxed);
        let metagraph = self.chain().metagraph(self.netuid()).await?;
        let adopted = self.follow_lead(window, &metagraph).await;
        let mut ctx = self.start_window(window, window_seed, &metagraph).await?;
        timings.lap("reference");
        let fetched = self.gather(&ctx).await;
        timings.lap("gather");
        let (gathered, commitments, rejections) = split(fetched);
        let averages_before = self.averages();
        let scored = self
            .score(&mut ctx, gathered, averages_before.clone())
            .await??;
        timings.include(&scored.timings);
        self.carry_over(&ctx, &scored);
        let version = self.engine().spec().task.version;
        let (reveals, weights_set, weights_committed) = self
            .put_weights(window, &scored.decisions, version, &metagraph)
            .await;
        let fraud_reports = self.report_frauds(window, ctx.frauds(&scored)).await;
        timings.lap("chain");
        let weights = (&weights_set, weights_committed);
        self.record(&ctx, &scored, (&commitments, averages_before), weights)?;
        timings.lap("record");
        tracing::info!(window, seconds = ?timings.0, "window scored");

        let start = &ctx.start;
        let outcome = WindowOutcome {
            window,
            eval_seed: start.setting.eval_seed,
            base_loss: start.base.iter().map(|&l| l as f64).sum::<f64>()
                / start.base.len().max(1) as f64,
            reference_norm: scored.evidence.reference_norm,
            checkpoint_before: start.setting.checkpoint.digest,
            checkpoint_after: scored.step.next.digest,
            results: ctx.results(&scored, rejections),
            aggregated: scored.step.aggregated.clone(),
            weights_set,
            weights_committed,
            reveals,
            fraud_reports,
            adopted,
            timings: timings.0,
            bytes_fetched: self
                .inner
                .fetched
                .load(std::sync::atomic::Ordering::Relaxed)
                - fetched_before,
        };
        self.close_window(ctx, scored, commitments)?;
        Ok(outcome)
    }

    /// The window's start: its checkpoint, the miners, the eval batches drawn by the validator's
    /// secret seed and the checkpoint's losses on them, and the validator's own training of the
    /// window (`window::start`).
    async fn start_window(
        &self,
        window: u64,
        window_seed: u64,
        metagraph: &Metagraph,
    ) -> Result<WindowContext, ValidatorError> {
        let me = self.own_uid(metagraph)?;
        let (checkpoint, _) = self.checkpoint();
        let (collected, bans, ledger, residual) = {
            let state = self.state();
            (
                state.collected.get(&window).cloned().unwrap_or_default(),
                state.bans.clone(),
                state.ledger.clone(),
                state.reference_residual.clone(),
            )
        };
        let (unresolved_before, earlier) = {
            let state = self.state();
            let earlier = state
                .audit_commitments
                .iter()
                .map(|(uid, c)| (*uid, (c.clone(), state.audit_subjects.get(uid).cloned())))
                .collect();
            (state.unresolved.clone(), earlier)
        };
        let setting = Setting {
            window,
            window_seed,
            eval_seed: self.eval_seed(window, window_seed),
            assigned_uids: metagraph.uid_slots(),
            params: self.engine().spec().scoring.params(),
            checkpoint,
            bans,
            evaluator: self.engine().device().backend(),
        };
        let engine = self.engine().clone();
        let start = blocking(move || window::start(&engine, setting, residual)).await?;
        Ok(WindowContext {
            start: Arc::new(start),
            miners: metagraph
                .neurons
                .iter()
                .filter(|n| n.uid != me)
                .cloned()
                .collect(),
            collected,
            ledger,
            unresolved_before,
            earlier,
        })
    }

    /// Runs the window's steps on a blocking thread over the live inputs.
    /// The commitments and subjects of the earlier windows audited (unresolved before, or traced
    /// from a residual) join `ctx.earlier`.
    async fn score(
        &self,
        ctx: &mut WindowContext,
        gathered: Vec<Gathered>,
        averages: Averages,
    ) -> Result<Result<Scored, StoreError>, ValidatorError> {
        let mut inputs = LiveInputs {
            validator: self.clone(),
            runtime: tokio::runtime::Handle::current(),
            window: ctx.window(),
            miners: ctx.miners.clone(),
            collected: ctx.collected.clone(),
            ledger: ctx.ledger.clone(),
            zero_residual: zero_residual_digest(self.engine().num_params()),
            earlier: ctx.earlier.clone(),
        };
        let (engine, start) = (self.engine().clone(), ctx.start.clone());
        let momentum = self.state().momentum.clone();
        let unresolved = ctx.unresolved_before.clone();
        let (scored, earlier) = blocking(move || {
            let carried = Carried {
                averages: &averages,
                momentum: &momentum,
                unresolved: &unresolved,
            };
            let scored = window::score(&engine, &start, gathered, &mut inputs, carried);
            (scored, inputs.earlier)
        })
        .await?;
        ctx.earlier = earlier;
        Ok(scored)
    }

    /// What carries over to the next window: moving averages, bans, the residual ledger and the
    /// audits still to complete.
    fn carry_over(&self, ctx: &WindowContext, scored: &Scored) {
        let mut state = self.state_mut();
        let (window, params) = (ctx.window(), &ctx.start.setting.params);
        state.averages = averages_after(&scored.decisions);
        state.bans = bans_after(&ctx.start.setting.bans, &scored.decisions, window, params);
        for (uid, c) in &ctx.collected {
            if let Some(n) = ctx.miners.iter().find(|n| n.uid == *uid) {
                state.ledger.record(*uid, &n.hotkey.to_string(), &c.claims);
            }
        }
        for finding in scored.audits.iter().filter(|f| !f.incomplete) {
            let uid = finding.record.uid;
            if let Some(n) = ctx.miners.iter().find(|n| n.uid == uid) {
                state.audited_hotkeys.insert(uid, n.hotkey.to_string());
            }
        }
        // The audits still unresolved, with the commitment each names and what it needs to run
        // again.
        let (mut commitments, mut subjects) = (BTreeMap::new(), BTreeMap::new());
        for (uid, pending) in &scored.unresolved {
            let (commitment, subject) = if pending.window == window {
                let subject = scored.gradients.get(uid).map(|g| window::Subject {
                    window,
                    window_seed: ctx.start.setting.window_seed,
                    checkpoint: Arc::new(ctx.start.setting.checkpoint.clone()),
                    gradient: g.clone(),
                });
                (ctx.collected.get(uid).cloned(), subject)
            } else {
                let earlier = ctx.earlier.get(uid).cloned();
                (earlier.clone().map(|e| e.0), earlier.and_then(|e| e.1))
            };
            if let Some(c) = commitment {
                commitments.insert(*uid, c);
            }
            if let Some(s) = subject {
                subjects.insert(*uid, s);
            }
        }
        state.unresolved = scored.unresolved.clone();
        state.audit_commitments = commitments;
        state.audit_subjects = subjects;
    }

    /// Appends the window to the replay log, after the blobs it names.
    fn record(
        &self,
        ctx: &WindowContext,
        scored: &Scored,
        (commitments, averages_before): (&BTreeMap<u16, SignedCommitment>, Averages),
        (weights_set, committed): (&WeightsSet, bool),
    ) -> Result<(), ValidatorError> {
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let gradients = gradient_records(store, scored, commitments)?;
        let (start, step) = (&ctx.start, &scored.step);
        let reference = store.put_blob(&codec::encode_dense(&start.reference.dense))?;
        store.put_blob(&start.setting.checkpoint.to_bytes())?;
        store.put_blob(&step.next.to_bytes())?;
        let (uids, values, error) = match weights_set {
            Ok((u, v)) => (u.clone(), v.clone(), None),
            Err(e) => (Vec::new(), Vec::new(), Some(e.clone())),
        };
        let s = &start.setting;
        store.append_record(&WindowRecord {
            window: s.window,
            window_seed: s.window_seed,
            eval_seed: s.eval_seed,
            assigned_uids: s.assigned_uids,
            reference: Digest(reference),
            reference_residual: store_vector(store, &start.reference.residual_in)?,
            task_digest: Digest(self.engine().digest()),
            checkpoint_before: s.checkpoint.digest,
            checkpoint_after: step.next.digest,
            momentum_before: store_vector(store, &step.momentum_before)?,
            momentum_after: store_vector(store, &step.momentum_after)?,
            scoring: s.params.clone(),
            evaluator: s.evaluator.clone(),
            evidence: scored.evidence.clone(),
            gradients,
            averages_before,
            bans_before: s.bans.clone(),
            unresolved_before: ctx.unresolved_before.clone(),
            unseen_sources: scored.unseen.clone(),
            audits: scored.audits.iter().map(|f| f.record.clone()).collect(),
            aggregated: step.aggregated.clone(),
            weights: WeightsRecord {
                uids,
                values,
                error,
                committed,
            },
        })?;
        Ok(())
    }

    /// Makes the window's next checkpoint current, keeps what the next window's lead check needs,
    /// and saves the state.
    fn close_window(
        &self,
        ctx: WindowContext,
        scored: Scored,
        mut commitments: BTreeMap<u16, SignedCommitment>,
    ) -> Result<(), ValidatorError> {
        let step = scored.step;
        let start = &ctx.start;
        let recipe = Recipe {
            previous: start.setting.checkpoint.digest,
            aggregated: step
                .aggregated
                .iter()
                .map(|u| (*u, commitments[u].clone()))
                .collect(),
            clip_norm: scored.clips[0],
            clip_norms: step.caps.clone(),
            scale: step.scale,
        };
        {
            let mut state = self.state_mut();
            // As a miner does, the reference's error feedback starts over when the model did not
            // move.
            state.reference_residual = if step.next.digest == start.setting.checkpoint.digest {
                Vec::new()
            } else {
                start.reference.residual_out.clone()
            };
            state.momentum = step.momentum_after;
            state.collected.remove(&ctx.window());
            state.scored = Some(LastWindow {
                window: ctx.window(),
                checkpoint: start.setting.checkpoint.clone(),
                momentum: step.momentum_before,
                next_inner: start.next_inner.clone(),
                gathered: scored
                    .gradients
                    .into_iter()
                    .filter_map(|(u, g)| Some((u, (commitments.remove(&u)?, g.values))))
                    .collect(),
            });
        }
        self.advance(ctx.window() + 1, step.next, Some(recipe));
        self.save_state()
    }
}

/// Gather's results as the window's steps take them, with the commitments and the typed
/// rejections kept at the gRPC edge.
fn split(
    fetched: Vec<(Neuron, Result<Fetched, Rejection>)>,
) -> (
    Vec<Gathered>,
    BTreeMap<u16, SignedCommitment>,
    BTreeMap<u16, Rejection>,
) {
    let (mut gathered, mut commitments, mut rejections) =
        (Vec::new(), BTreeMap::new(), BTreeMap::new());
    for (neuron, outcome) in fetched {
        let outcome = match outcome {
            Ok(f) => {
                commitments.insert(neuron.uid, f.commitment);
                Ok(f.gradient)
            }
            Err(rejection) => {
                tracing::info!(uid = neuron.uid, reason = %rejection, "gradient refused");
                let reason = rejection.reason();
                rejections.insert(neuron.uid, rejection);
                Err(reason.into())
            }
        };
        gathered.push(Gathered {
            uid: neuron.uid,
            hotkey: neuron.hotkey.to_string(),
            outcome,
        });
    }
    (gathered, commitments, rejections)
}

/// The records of the window's evaluated gradients, their payloads kept in `store`.
fn gradient_records(
    store: &DataDir,
    scored: &Scored,
    commitments: &BTreeMap<u16, SignedCommitment>,
) -> Result<Vec<GradientRecord>, ValidatorError> {
    let mut gradients = Vec::new();
    for (uid, g) in &scored.gradients {
        let c = &commitments[uid];
        gradients.push(GradientRecord {
            uid: *uid,
            payload_digest: g.payload.stored_in(store)?,
            commitment_signature: hex::encode(c.signature),
            residual_out_digest: g.residual_out,
            group_capacity: c.claims.group_capacity,
            backend: g.backend.clone(),
        });
    }
    Ok(gradients)
}
