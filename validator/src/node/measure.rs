//! Gathering the window's gradients and measuring what each adds on the eval batches.

use super::*;

impl<C: Chain> Validator<C> {
    /// Each gathered gradient's norm, residual chain and loss on its own (clipped to the window's
    /// clip norm, at the evaluation step).
    pub(super) async fn measure(
        &self,
        ctx: &WindowContext,
        fetched: Vec<(Neuron, Result<Fetched, Rejection>)>,
    ) -> Result<Work, ValidatorError> {
        let engine = self.engine();
        let zero = zero_residual_digest(engine.num_params());
        let mut work = Work::default();
        for (neuron, outcome) in fetched {
            let hotkey = neuron.hotkey.to_string();
            let mut miner = MinerEvidence {
                uid: neuron.uid,
                hotkey: hotkey.clone(),
                refused: None,
                norm: 0.0,
                after: Vec::new(),
                assignment: None,
                fraud: None,
                banned_until: ctx
                    .bans
                    .get(&neuron.uid)
                    .filter(|(h, _)| *h == hotkey)
                    .map(|(_, until)| *until),
                audited_clean: false,
                without: Vec::new(),
                group: 0,
            };
            match outcome {
                Ok(f) => {
                    miner.fraud = ctx.ledger.check(neuron.uid, &hotkey, &f.commitment, &zero);
                    miner.norm = l2_norm(&f.values);
                    miner.group = f.group.index;
                    work.gradients.insert(neuron.uid, f);
                }
                Err(rejection) => {
                    tracing::info!(uid = neuron.uid, reason = %rejection, "gradient refused");
                    miner.refused = Some(rejection.reason());
                    work.rejections.insert(neuron.uid, rejection);
                }
            }
            work.evidence.push(miner);
        }
        work.clips = scoring::decide::group_clip_norms(
            &work.evidence,
            l2_norm(&ctx.reference.sent),
            &ctx.reference.group_norms,
        );
        for m in work.evidence.iter_mut() {
            let Some(g) = work.gradients.get(&m.uid) else {
                continue;
            };
            let clip = work.clips[m.group];
            tracing::info!(uid = m.uid, norm_ratio = m.norm / clip, "gradient measured");
            let (engine, params, batches, values) = (
                engine.clone(),
                ctx.checkpoint.params.clone(),
                ctx.batches.clone(),
                g.values.clone(),
            );
            let after =
                blocking(move || evaluate::losses_after(&engine, &params, &values, clip, &batches))
                    .await?;
            if after.iter().all(|l| l.is_finite()) {
                m.after = after;
            } else {
                work.gradients.remove(&m.uid);
                m.refused = Some(Rejection::NonFiniteLoss.reason());
                work.rejections.insert(m.uid, Rejection::NonFiniteLoss);
            }
        }
        Ok(work)
    }

    /// Audits the miners due this window, runs the assignment check on the rest that pass every
    /// earlier gate (against the validator's own training as the control), and audits at once any
    /// miner that fails it: only the audit decides.
    pub(super) async fn check_work(
        &self,
        ctx: &WindowContext,
        work: &mut Work,
    ) -> Result<(), ValidatorError> {
        let due = self.due_audits(ctx.window, &ctx.miners, &work.gradients);
        let found = self.audit(ctx, &work.gradients, &due).await?;
        apply_audits(&mut work.evidence, &found);
        work.audits.extend(found);

        let (window, params) = (ctx.window, &ctx.params);
        let mut suspects = Vec::new();
        for m in work.evidence.iter_mut() {
            let clip = work.clips.get(m.group).copied().unwrap_or(0.0);
            let gate = screen(m, window, &ctx.base, clip, params);
            if !matches!(gate, Some(Verdict::WrongPages { .. })) {
                continue;
            }
            let uid = m.uid;
            let fetched = &work.gradients[&uid];
            // The control is the validator's training over the same group as the miner's.
            let control = if self.engine().groups().is_whole() {
                ctx.reference.sent.clone()
            } else {
                Arc::new(task::groups::masked(
                    &ctx.reference.sent,
                    &fetched.group.range,
                ))
            };
            let (engine, start, gradient) = (
                self.engine().clone(),
                ctx.checkpoint.params.clone(),
                fetched.values.clone(),
            );
            let (window_seed, eval_seed) = (ctx.window_seed, ctx.eval_seed);
            let assignment = blocking(move || {
                evaluate::assignment_evidence(
                    &engine,
                    &start,
                    &gradient,
                    &control,
                    clip,
                    window,
                    window_seed,
                    eval_seed,
                    uid,
                )
            })
            .await?;
            m.assignment = assignment.filter(|a| {
                [
                    &a.control_own,
                    &a.after_own,
                    &a.control_held_back,
                    &a.after_held_back,
                    &a.base_held_back,
                ]
                .iter()
                .all(|v| v.iter().all(|l| l.is_finite()))
            });
            if matches!(
                screen(m, window, &ctx.base, clip, params),
                Some(Verdict::WrongPages { .. })
            ) {
                suspects.push(uid);
            }
        }
        if !suspects.is_empty() {
            tracing::info!(
                window,
                ?suspects,
                "auditing the miners that failed the assignment check"
            );
            let found = self.audit(ctx, &work.gradients, &suspects).await?;
            apply_audits(&mut work.evidence, &found);
            work.audits.extend(found);
        }
        Ok(())
    }

    /// The window's evidence, with what each candidate adds to the aggregate of all of them at the
    /// aggregate's own step, and the candidates' similarities.
    pub(super) async fn contributions(
        &self,
        ctx: &WindowContext,
        work: &Work,
    ) -> Result<WindowEvidence, ValidatorError> {
        let mut evidence = WindowEvidence {
            window: ctx.window,
            base: ctx.base.clone(),
            reference_norm: l2_norm(&ctx.reference.sent),
            reference_group_norms: ctx.reference.group_norms.clone(),
            reference_group_gains: ctx.reference.group_gains.clone(),
            miners: work.evidence.clone(),
            similarities: Vec::new(),
            aggregate: Vec::new(),
        };
        let uids = candidates(&evidence, &ctx.params);
        let values: Vec<Vec<f32>> = uids
            .iter()
            .map(|u| work.gradients[u].values.clone())
            .collect();
        evidence.similarities = pairwise_similarity(
            &uids
                .iter()
                .zip(&values)
                .map(|(u, v)| (*u, v.as_slice()))
                .collect::<Vec<_>>(),
        );
        let caps: Vec<f64> = uids
            .iter()
            .map(|u| work.clips[work.gradients[u].group.index])
            .collect();
        let (engine, params, batches) = (
            self.engine().clone(),
            ctx.checkpoint.params.clone(),
            ctx.batches.clone(),
        );
        let (aggregate, without) = blocking(move || {
            let refs: Vec<&[f32]> = values.iter().map(Vec::as_slice).collect();
            evaluate::leave_one_out(&engine, &params, &refs, &caps, &batches)
        })
        .await?;
        evidence.aggregate = aggregate;
        for (uid, losses) in uids.iter().zip(without) {
            if let Some(m) = evidence.miners.iter_mut().find(|m| m.uid == *uid) {
                m.without = losses;
            }
        }
        Ok(evidence)
    }

    /// Fetches the payload of every miner's collected commitment, `MAX_CONCURRENT_FETCHES` at a time
    /// (results in the miners' order).
    pub(super) async fn gather(
        &self,
        ctx: &WindowContext,
    ) -> Vec<(Neuron, Result<Fetched, Rejection>)> {
        let gatherer = self.gatherer();
        let (window, checkpoint, collected) = (ctx.window, &ctx.checkpoint.digest, &ctx.collected);
        let window_seed = ctx.window_seed;
        let fetches = ctx.miners.iter().map(|neuron| {
            let gatherer = &gatherer;
            async move {
                let fetched = async {
                    let commitment = collected.get(&neuron.uid).ok_or(Rejection::NotCommitted)?;
                    if commitment.checkpoint_digest.as_slice() != checkpoint {
                        return Err(Rejection::Commitment(
                            subnet_proto::commitment::CommitmentError::WrongCheckpoint {
                                expected: hex::encode(checkpoint),
                                found: hex::encode(&commitment.checkpoint_digest),
                            },
                        ));
                    }
                    let group = gatherer.group_of(window_seed, neuron.uid, commitment)?;
                    let payload = gatherer
                        .part(neuron, window, pb::GradientPart::Payload, commitment)
                        .await?;
                    let values = gatherer.decode(&payload, &group.range)?;
                    Ok(Fetched {
                        commitment: commitment.clone(),
                        payload,
                        values,
                        group,
                    })
                }
                .await;
                (neuron.clone(), fetched)
            }
        });
        futures::StreamExt::collect(futures::StreamExt::buffered(
            futures::stream::iter(fetches),
            MAX_CONCURRENT_FETCHES,
        ))
        .await
    }
}
