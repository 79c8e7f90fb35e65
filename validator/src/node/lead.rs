//! Following the lead validator's checkpoint, and moving to the next one.

use super::*;

impl<C: Chain> Validator<C> {
    /// With several validators, the lead's checkpoint (most stake) is the one miners trained
    /// `window` from. A validator that is not the lead takes it, after recomputing it from the
    /// gradients it gathered itself in the window before; it refuses a checkpoint whose recipe gives
    /// another one, and takes it unverified (logged) when it did not gather every gradient the recipe
    /// names.
    pub(super) async fn follow_lead(&self, window: u64, metagraph: &Metagraph) -> Option<Adoption> {
        let lead = *metagraph.validators_by_stake().first()?;
        if lead.hotkey == self.hotkey() {
            return None;
        }
        lead.axon?;
        match self.adopt(window, lead).await {
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
    async fn adopt(&self, window: u64, lead: &Neuron) -> Result<Option<Adoption>, String> {
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
        let recomputed = self.recompute_lead(window, recipe.as_ref(), &digest);
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
            Some(Recomputation::Missing(_)) | None => {
                let engine = self.engine();
                let bytes = client.download(&digest.0, latest.len).await?;
                let checkpoint = Checkpoint::from_bytes(
                    &bytes,
                    &engine.digest(),
                    engine.num_params(),
                    Some(&digest),
                )
                .map_err(|e| e.to_string())?;
                (checkpoint, None, false)
            }
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

    /// The lead's checkpoint of `window` made again here from its recipe, when this validator
    /// scored the window before it from the checkpoint the recipe starts at.
    fn recompute_lead(
        &self,
        window: u64,
        recipe: Option<&Recipe>,
        digest: &Digest,
    ) -> Option<Recomputation> {
        let state = self.state();
        match (&state.scored, recipe) {
            (Some(s), Some(r)) if s.window + 1 == window && s.checkpoint.digest == r.previous => {
                Some(recompute(
                    self.engine(),
                    &s.checkpoint,
                    &s.momentum,
                    r,
                    &s.gathered,
                    digest,
                ))
            }
            _ => None,
        }
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
    }))
}
