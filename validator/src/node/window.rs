//! A window in order: start, the steps, carrying scores over, aggregation, the record.

use super::*;

impl<C: Chain> Validator<C> {
    /// Scores `window` (closed on chain), in the protocol's steps: follow the lead's checkpoint,
    /// measure the window's start and train the reference, gather the committed work, measure each
    /// gradient, check the work (audits, residual chains, assignment), score what each adds,
    /// decide, put weights and fraud reports on chain, aggregate, record.
    #[tracing::instrument(skip(self), fields(hotkey = %self.hotkey().short()))]
    pub async fn run_window(
        &self,
        window: u64,
        window_seed: u64,
    ) -> Result<WindowOutcome, ValidatorError> {
        let mut timings = Timings::default();
        let metagraph = self.chain().metagraph(self.netuid()).await?;
        let adopted = self.follow_lead(window, &metagraph).await;
        let ctx = self.start_window(window, window_seed, &metagraph).await?;
        timings.lap("reference");
        let fetched = self.gather(&ctx).await;
        timings.lap("gather");
        let mut work = self.measure(&ctx, fetched).await?;
        timings.lap("usefulness");
        self.check_work(&ctx, &mut work).await?;
        timings.lap("audits and assignment");
        let evidence = self.contributions(&ctx, &work).await?;
        timings.lap("contribution");
        let averages_before = self.averages();
        let decisions = decide(&evidence, &ctx.params, &averages_before);
        self.carry_over(&ctx, &work, &decisions);
        let version = self.engine().spec().task.version;
        let (reveals, weights_set, weights_committed) =
            self.put_weights(window, &decisions, version).await;
        let fraud_reports = self.report_frauds(window, work.frauds(&ctx)).await;
        timings.lap("chain");
        let step = self.aggregate(&ctx, &work, &decisions);
        self.record(
            &ctx,
            &work,
            &evidence,
            &step,
            averages_before,
            (&weights_set, weights_committed),
        )?;
        timings.lap("aggregate and record");
        tracing::info!(window, seconds = ?timings.0, "window scored");

        let outcome = WindowOutcome {
            window,
            eval_seed: ctx.eval_seed,
            base_loss: ctx.base.iter().map(|&l| l as f64).sum::<f64>()
                / ctx.base.len().max(1) as f64,
            reference_norm: evidence.reference_norm,
            checkpoint_before: ctx.checkpoint.digest,
            checkpoint_after: step.next.digest,
            results: work.results(&ctx, decisions),
            aggregated: step.aggregated.clone(),
            weights_set,
            weights_committed,
            reveals,
            fraud_reports,
            adopted,
            timings: timings.0,
        };
        self.close_window(ctx, work, step)?;
        Ok(outcome)
    }

    /// The window's starting point: its checkpoint, the miners, the eval batches drawn by the
    /// validator's secret seed and the checkpoint's losses on them, and the validator's own
    /// training of the window.
    pub(super) async fn start_window(
        &self,
        window: u64,
        window_seed: u64,
        metagraph: &Metagraph,
    ) -> Result<WindowContext, ValidatorError> {
        let me = self.own_uid(metagraph)?;
        let engine = self.engine().clone();
        let (checkpoint, _) = self.checkpoint();
        let eval_seed = self.eval_seed(window, window_seed);
        let assigned_uids = metagraph.uid_slots();
        let residual_in = self.state().reference_residual.clone();
        let (batches, base, reference) = {
            let (engine, params, residual) = (
                engine.clone(),
                checkpoint.params.clone(),
                residual_in.clone(),
            );
            blocking(move || {
                let batches =
                    evaluate::eval_batches(&engine, window_seed, assigned_uids, eval_seed);
                let base = evaluate::losses(&engine, &params, &batches);
                let dense = evaluate::reference(
                    &engine,
                    &params,
                    window,
                    window_seed,
                    assigned_uids,
                    eval_seed,
                );
                let (sent, residual_out) = evaluate::reference_payload(&engine, &dense, &residual);
                let group_norms = evaluate::group_norms(&engine, &sent);
                let group_gains = evaluate::group_gains(&engine, &params, &sent, &base, &batches);
                (
                    Arc::new(batches),
                    base,
                    Reference {
                        dense,
                        sent: Arc::new(sent),
                        residual_in: residual,
                        residual_out,
                        group_norms,
                        group_gains,
                    },
                )
            })
            .await?
        };
        let (collected, bans, ledger) = {
            let state = self.state();
            (
                state.collected.get(&window).cloned().unwrap_or_default(),
                state.bans.clone(),
                state.ledger.clone(),
            )
        };
        Ok(WindowContext {
            window,
            window_seed,
            eval_seed,
            assigned_uids,
            params: engine.spec().scoring.params(),
            checkpoint,
            miners: metagraph
                .neurons
                .iter()
                .filter(|n| n.uid != me)
                .cloned()
                .collect(),
            collected,
            bans,
            ledger,
            batches,
            base,
            reference,
        })
    }

    /// What carries over to the next window: moving averages, bans, the residual ledger and the
    /// audits still to complete.
    pub(super) fn carry_over(&self, ctx: &WindowContext, work: &Work, decisions: &[MinerDecision]) {
        let mut state = self.state_mut();
        state.averages = averages_after(decisions);
        state.bans = bans_after(&ctx.bans, decisions, ctx.window, &ctx.params);
        for (uid, c) in &ctx.collected {
            if let Some(n) = ctx.miners.iter().find(|n| n.uid == *uid) {
                state.ledger.record(*uid, &n.hotkey.to_string(), c);
            }
        }
        for finding in &work.audits {
            let uid = finding.record.uid;
            match ctx.miners.iter().find(|n| n.uid == uid) {
                Some(n) if finding.incomplete => {
                    state.pending_audits.insert(uid, n.hotkey.to_string());
                }
                Some(n) => {
                    state.pending_audits.remove(&uid);
                    state.audited_hotkeys.insert(uid, n.hotkey.to_string());
                }
                None => {
                    state.pending_audits.remove(&uid);
                }
            }
        }
    }

    /// The next checkpoint: the earners (at most `aggregate_top`, none if fewer than
    /// `aggregate_min`) clipped to the clip norm and summed in uid order, with the outer step.
    pub(super) fn aggregate(
        &self,
        ctx: &WindowContext,
        work: &Work,
        decisions: &[MinerDecision],
    ) -> Step {
        let scoring = &self.engine().spec().scoring;
        let aggregated = aggregation_order(decisions, scoring.aggregate_top, scoring.aggregate_min);
        let momentum_before = self.state().momentum.clone();
        let deltas: Vec<&[f32]> = aggregated
            .iter()
            .map(|u| work.gradients[u].values.as_slice())
            .collect();
        let caps: Vec<f64> = aggregated
            .iter()
            .map(|u| work.clips[work.gradients[u].group.index])
            .collect();
        let (next, momentum_after) = next_checkpoint(
            self.engine(),
            &ctx.checkpoint,
            &momentum_before,
            &deltas,
            &caps,
        );
        Step {
            aggregated,
            caps,
            next,
            momentum_before,
            momentum_after,
        }
    }

    /// Appends the window to the replay log, after the blobs it names.
    pub(super) fn record(
        &self,
        ctx: &WindowContext,
        work: &Work,
        evidence: &WindowEvidence,
        step: &Step,
        averages_before: Averages,
        (weights_set, committed): (&WeightsSet, bool),
    ) -> Result<(), ValidatorError> {
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let mut gradients = Vec::new();
        for (uid, g) in &work.gradients {
            store.put_blob(&g.payload)?;
            gradients.push(GradientRecord {
                uid: *uid,
                payload_digest: Digest(
                    subnet_proto::bytes32("payload digest", &g.commitment.payload_digest)
                        .expect("a gathered commitment's digests are 32 bytes"),
                ),
                commitment_signature: hex::encode(&g.commitment.signature),
                residual_out_digest: Digest(
                    subnet_proto::bytes32("residual digest", &g.commitment.residual_out_digest)
                        .expect("a gathered commitment's digests are 32 bytes"),
                ),
                group_capacity: g.commitment.group_capacity,
            });
        }
        let reference = store.put_blob(&codec::encode_dense(&ctx.reference.dense))?;
        store.put_blob(&ctx.checkpoint.to_bytes())?;
        store.put_blob(&step.next.to_bytes())?;
        let (uids, values, error) = match weights_set {
            Ok((u, v)) => (u.clone(), v.clone(), None),
            Err(e) => (Vec::new(), Vec::new(), Some(e.clone())),
        };
        store.append_record(&WindowRecord {
            window: ctx.window,
            window_seed: ctx.window_seed,
            eval_seed: ctx.eval_seed,
            assigned_uids: ctx.assigned_uids,
            reference: Digest(reference),
            reference_residual: store_vector(store, &ctx.reference.residual_in)?,
            task_digest: Digest(self.engine().digest()),
            checkpoint_before: Digest(ctx.checkpoint.digest),
            checkpoint_after: Digest(step.next.digest),
            momentum_before: store_vector(store, &step.momentum_before)?,
            momentum_after: store_vector(store, &step.momentum_after)?,
            scoring: ctx.params.clone(),
            evidence: evidence.clone(),
            gradients,
            averages_before,
            bans_before: ctx.bans.clone(),
            audits: work.audits.iter().map(|f| f.record.clone()).collect(),
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
    pub(super) fn close_window(
        &self,
        ctx: WindowContext,
        work: Work,
        step: Step,
    ) -> Result<(), ValidatorError> {
        let recipe = Recipe {
            previous: ctx.checkpoint.digest,
            aggregated: step
                .aggregated
                .iter()
                .map(|u| (*u, work.gradients[u].commitment.clone()))
                .collect(),
            clip_norm: work.clips[0],
            clip_norms: step.caps.clone(),
        };
        {
            let mut state = self.state_mut();
            // As a miner does, the reference's error feedback starts over when the model did not
            // move.
            state.reference_residual = if step.next.digest == ctx.checkpoint.digest {
                Vec::new()
            } else {
                ctx.reference.residual_out
            };
            state.momentum = step.momentum_after;
            state.collected.remove(&ctx.window);
            state.scored = Some(Scored {
                window: ctx.window,
                checkpoint: ctx.checkpoint,
                momentum: step.momentum_before,
                gathered: work
                    .gradients
                    .into_iter()
                    .map(|(u, f)| (u, (f.commitment, f.values)))
                    .collect(),
            });
        }
        self.advance(ctx.window + 1, step.next, Some(recipe));
        self.save_state()
    }
}
