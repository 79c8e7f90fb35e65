//! Following the lead validator's checkpoint, and moving to the next one.

use super::*;

/// Decoded gradients of a window with their commitments, by uid.
type Gradients = BTreeMap<u16, (SignedCommitment, pseudo_gradient::Sparse)>;

impl<C: Chain> Validator<C> {
    /// With several validators, the lead's checkpoint (most stake) is the one miners trained
    /// `window` from. A validator that is not the lead takes it, after recomputing it from the
    /// gradients it gathered itself in the window before, and from the payloads of the other
    /// commitments the recipe names, fetched from their miners (each commitment signed by its
    /// miner); it keeps its own checkpoint when the recipe gives another one or a payload it names
    /// cannot be fetched. Only a validator that did not score the window before (it has just
    /// started) takes the lead's checkpoint unverified (logged).
    pub(super) async fn follow_lead(&self, window: u64, metagraph: &Metagraph) -> Option<Adoption> {
        let lead = *metagraph.validators_by_stake().first()?;
        if lead.hotkey == self.hotkey() {
            return None;
        }
        lead.axon?;
        match self.adopt(window, lead, metagraph).await {
            Ok(adoption) => {
                if let Some(a) = &adoption {
                    tracing::info!(window, lead = a.lead, checkpoint = %hex::encode(&a.digest.0[..4]), verified = a.verified, "adopted the lead's checkpoint");
                }
                adoption
            }
            Err(e) => {
                tracing::warn!(window, lead = lead.uid, error = %e, "keeping this validator's own checkpoint");
                None
            }
        }
    }

    /// Takes `lead`'s checkpoint of `window`: recomputed here from its recipe when this validator
    /// can, downloaded and checked by digest when it cannot; None when it already holds it.
    async fn adopt(
        &self,
        window: u64,
        lead: &Neuron,
        metagraph: &Metagraph,
    ) -> Result<Option<Adoption>, String> {
        let addr = lead.axon.ok_or("the lead serves no axon")?;
        let mut client = CheckpointClient::connect(addr, self.keypair(), lead.hotkey.0).await?;
        let latest = client.latest().await?;
        let digest = Digest(subnet_proto::bytes32("digest", &latest.digest)?);
        if latest.window != window {
            return Err(format!(
                "the lead's checkpoint is for window {}, not {window}",
                latest.window
            ));
        }
        let (own, own_window) = self.checkpoint();
        if own.digest == digest && own_window == window {
            return Ok(None);
        }
        let recipe = recipe_of(&latest)?;
        let mut fetched = BTreeMap::new();
        let mut recomputed = self.recompute_lead(window, recipe.as_ref(), &digest, &fetched);
        if let (Some(Recomputation::Missing(_)), Some(recipe)) = (&recomputed, &recipe) {
            fetched = self.fetch_recipe(window - 1, recipe, metagraph).await?;
            recomputed = self.recompute_lead(window, Some(recipe), &digest, &fetched);
        }
        let (checkpoint, momentum, verified) = match recomputed {
            Some(Recomputation::Confirmed(checkpoint, momentum)) => {
                (checkpoint, Some(momentum), true)
            }
            Some(Recomputation::Differs { recomputed }) => {
                return Err(format!(
                    "its recipe gives checkpoint {}, not the {} it serves: not adopted",
                    recomputed, digest
                ));
            }
            Some(Recomputation::Missing(uid)) => {
                return Err(format!(
                    "its recipe names uid {uid}'s gradient, which could not be fetched: not adopted"
                ));
            }
            None => (
                self.download(&mut client, &digest, latest.len).await?,
                None,
                false,
            ),
        };
        if let Some(momentum) = momentum {
            self.state_mut().momentum = momentum;
        }
        self.advance(window, checkpoint, None);
        Ok(Some(Adoption {
            lead: lead.uid,
            digest,
            verified,
        }))
    }

    /// The checkpoint `digest` downloaded from the lead and checked against its digest.
    async fn download(
        &self,
        client: &mut CheckpointClient<'_>,
        digest: &Digest,
        len: u64,
    ) -> Result<Checkpoint, String> {
        let engine = self.engine();
        let bytes = client.download(&digest.0, len).await?;
        Checkpoint::from_bytes(&bytes, &engine.digest(), engine.num_params(), Some(digest))
            .map_err(|e| e.to_string())
    }

    /// The lead's checkpoint of `window` made again here from its recipe, when this validator
    /// scored the window before it from the checkpoint the recipe starts at: from the gradients it
    /// gathered, and `fetched` for those it did not.
    fn recompute_lead(
        &self,
        window: u64,
        recipe: Option<&Recipe>,
        digest: &Digest,
        fetched: &Gradients,
    ) -> Option<Recomputation> {
        let state = self.state();
        match (&state.scored, recipe) {
            (Some(s), Some(r)) if s.window + 1 == window && s.checkpoint.digest == r.previous => {
                let mut gathered = s.gathered.clone();
                for (uid, g) in fetched {
                    gathered.entry(*uid).or_insert_with(|| g.clone());
                }
                Some(recompute(
                    self.engine(),
                    (&s.checkpoint, &s.momentum),
                    s.next_inner.clone(),
                    r,
                    &gathered,
                    digest,
                ))
            }
            _ => None,
        }
    }

    /// The payloads of the recipe's commitments of `window` that this validator did not gather,
    /// fetched from their miners: each commitment signed by its miner for the recipe's starting
    /// checkpoint, each payload exactly what it names.
    async fn fetch_recipe(
        &self,
        window: u64,
        recipe: &Recipe,
        metagraph: &Metagraph,
    ) -> Result<Gradients, String> {
        let held: Vec<u16> = self.state().scored.as_ref().map_or(Vec::new(), |s| {
            s.gathered
                .iter()
                .filter(|(u, (c, _))| {
                    recipe
                        .aggregated
                        .iter()
                        .any(|(ru, rc)| ru == *u && rc.same_claims(c))
                })
                .map(|(u, _)| *u)
                .collect()
        });
        let gatherer = self.gatherer();
        let blocks = self.engine().spec().window.blocks;
        let hash = self
            .chain()
            .block_hash(window * blocks)
            .await
            .map_err(|e| format!("cannot read window {window}'s seed: {e}"))?;
        let window_seed = chain_client::window_seed(&hash);
        let mut fetched = Gradients::new();
        for (uid, c) in recipe.aggregated.iter().filter(|(u, _)| !held.contains(u)) {
            let failed = |e: String| format!("uid {uid}'s gradient of the recipe: {e}");
            let neuron = metagraph
                .by_uid(*uid)
                .ok_or_else(|| failed("not registered".into()))?;
            gatherer
                .verify(&c.to_wire(), neuron, window, &recipe.previous.0)
                .map_err(|e| failed(e.to_string()))?;
            let group = gatherer
                .group_of(window_seed, *uid, c)
                .map_err(|e| failed(e.to_string()))?;
            let payload = gatherer
                .part(neuron, window, pb::GradientPart::Payload, c)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let values = gatherer
                .decode(&payload, &group.range)
                .map_err(|e| failed(e.to_string()))?;
            fetched.insert(*uid, (c.clone(), values));
        }
        tracing::info!(
            window,
            fetched = fetched.len(),
            "fetched the recipe's gradients this validator had not gathered"
        );
        Ok(fetched)
    }

    /// Makes `checkpoint` the global model from `window` on; `recipe` says how it was made here.
    pub fn advance(&self, window: u64, checkpoint: Checkpoint, recipe: Option<Recipe>) {
        let mut state = self.state_mut();
        state.recent.insert(window, checkpoint.clone());
        while state.recent.len() > KEPT_CHECKPOINTS {
            state.recent.pop_first();
        }
        state.checkpoint = checkpoint;
        state.checkpoint_window = window;
        state.recipe = recipe;
    }
}

/// The recipe a lead announced with its checkpoint, if it announced one.
pub(super) fn recipe_of(latest: &pb::LatestCheckpointResponse) -> Result<Option<Recipe>, String> {
    if latest.previous_digest.is_empty() {
        return Ok(None);
    }
    let mut aggregated = Vec::with_capacity(latest.aggregated.len());
    let mut clip_norms = Vec::with_capacity(latest.aggregated.len());
    for a in &latest.aggregated {
        let uid = u16::try_from(a.uid).map_err(|_| format!("uid {} in the recipe", a.uid))?;
        let c = a
            .commitment
            .as_ref()
            .ok_or_else(|| format!("uid {uid} in the recipe has no commitment"))?;
        let c =
            SignedCommitment::from_wire(c).map_err(|e| format!("uid {uid} in the recipe: {e}"))?;
        aggregated.push((uid, c));
        clip_norms.push(if a.clip_norm > 0.0 {
            a.clip_norm
        } else {
            latest.clip_norm
        });
    }
    Ok(Some(Recipe {
        previous: Digest(subnet_proto::bytes32(
            "previous digest",
            &latest.previous_digest,
        )?),
        aggregated,
        clip_norm: latest.clip_norm,
        clip_norms,
        scale: match latest.step_scale {
            0.0 => 1.0,
            s if s > 0.0 && s <= 4.0 => s,
            s => return Err(format!("step scale {s} in the recipe is not in (0, 4]")),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recipe's fraction of the outer rate: 0 (an announcement from before it was named) is the
    /// whole rate, one in (0, 4] is taken as announced, anything else is refused.
    #[test]
    fn the_recipe_names_the_fraction_of_the_outer_rate() {
        let announced = |step_scale: f64| {
            recipe_of(&pb::LatestCheckpointResponse {
                digest: vec![5; 32],
                window: 7,
                len: 10,
                previous_digest: vec![4; 32],
                aggregated: Vec::new(),
                clip_norm: 0.5,
                step_scale,
                signature: Vec::new(),
            })
        };
        assert_eq!(announced(0.0).unwrap().unwrap().scale, 1.0);
        assert_eq!(announced(0.25).unwrap().unwrap().scale, 0.25);
        for wrong in [-0.5, 4.5, f64::NAN, f64::INFINITY] {
            let refused = announced(wrong).unwrap_err();
            assert!(refused.contains("step scale"), "{refused}");
        }
    }
}
