//! A subnet's epoch pipeline on runtimes with dynamic tempo, and the drand round a timelocked
//! weight commit made now must target there.
//!
//! From spec 423 subtensor numbers epochs with a stored counter, and later runtimes let an owner
//! change the tempo (360 to 50,400 blocks) or trigger an epoch: `(block + netuid + 1) / (tempo + 1)`
//! then predicts nothing. What is stored at the head (`LastEpochBlock`, `PendingEpochAt`,
//! `SubnetEpochIndex`, `Tempo`, `BlocksSinceLastStep`) does: stepping it block by block as the
//! chain's coinbase does finds the first block whose reveal pass opens the commit. This is the
//! prediction bittensor-drand 2.0's `get_encrypted_commit_v2` makes, checked against that package
//! on recorded states (`tests/data/reveal_rounds.json`).

use crate::tlock::quicknet;

/// The longest tempo an owner may set; a subnet this many blocks past its last step runs its epoch
/// whatever its tempo says.
pub const MAX_TEMPO: u64 = 50_400;

/// Blocks past the first reveal block whose drand pulse a commit targets: a pulse reaches the chain
/// a little after it is published, and the chain retries a commit every block of its reveal epoch.
pub const INGEST_MARGIN_BLOCKS: u64 = 3;

/// The epoch pipeline of one subnet as stored at block `head`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochPipeline {
    /// The block at which the subnet's last epoch ran.
    pub last_epoch_block: u64,
    /// The block of an owner-triggered epoch still to run (0: none).
    pub pending_epoch_at: u64,
    /// The subnet's epoch counter.
    pub epoch_index: u64,
    /// Blocks between epochs (0: the subnet runs none).
    pub tempo: u16,
    pub blocks_since_last_step: u64,
    /// The block these were read at.
    pub head: u64,
}

/// Why no reveal block can be predicted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("subnet tempo is 0: it runs no epochs, so a timelocked commit is never revealed")]
    NoEpochs,
    #[error("no epoch {epochs} epochs ahead within {blocks} blocks of block {head}")]
    TooFar { epochs: u64, blocks: u64, head: u64 },
}

impl EpochPipeline {
    /// Whether the coinbase runs the subnet's epoch at `block`, given the pipeline before it.
    fn runs_epoch_at(&self, block: u64) -> bool {
        let due = block.saturating_sub(self.last_epoch_block) >= u64::from(self.tempo);
        let triggered = self.pending_epoch_at > 0 && block >= self.pending_epoch_at;
        self.tempo > 0 && (due || triggered || self.blocks_since_last_step > MAX_TEMPO)
    }

    /// The epoch a commit or reveal at `block` belongs to: the reveal pass runs before the
    /// coinbase in a block's step, and counts an epoch that runs in the same block as begun.
    fn epoch_seen_at(&self, block: u64) -> u64 {
        self.epoch_index + u64::from(self.runs_epoch_at(block))
    }

    /// The pipeline after the coinbase of `block`.
    fn after(mut self, block: u64) -> Self {
        self.head = block;
        self.blocks_since_last_step += 1;
        if self.runs_epoch_at(block) {
            self.last_epoch_block = block;
            self.pending_epoch_at = 0;
            self.epoch_index += 1;
            self.blocks_since_last_step = 0;
        }
        self
    }

    /// The first block whose reveal pass opens a commit included in the block after the head:
    /// the first block of epoch `commit epoch + reveal_period_epochs`.
    pub fn first_reveal_block(&self, reveal_period_epochs: u64) -> Result<u64, ScheduleError> {
        if self.tempo == 0 {
            return Err(ScheduleError::NoEpochs);
        }
        let included = self.head + 1;
        let target = self.epoch_seen_at(included) + reveal_period_epochs;
        let budget = (reveal_period_epochs + 1) * MAX_TEMPO;
        let mut pipeline = *self;
        for block in included..=included + budget {
            if pipeline.epoch_seen_at(block) == target {
                return Ok(block);
            }
            pipeline = pipeline.after(block);
        }
        Err(ScheduleError::TooFar {
            epochs: reveal_period_epochs,
            blocks: budget,
            head: self.head,
        })
    }

    /// The drand round a commit made now targets: the one published when the chain produces the
    /// block `INGEST_MARGIN_BLOCKS` past the first reveal block, at `block_secs` a block from
    /// `now_unix` (seconds, fractional).
    pub fn reveal_round(
        &self,
        reveal_period_epochs: u64,
        block_secs: f64,
        now_unix: f64,
    ) -> Result<u64, ScheduleError> {
        let target = self.first_reveal_block(reveal_period_epochs)? + INGEST_MARGIN_BLOCKS;
        let secs = target.saturating_sub(self.head) as f64 * block_secs;
        let since_genesis = now_unix + secs - quicknet::GENESIS_UNIX as f64;
        let round = (since_genesis / quicknet::PERIOD_SECS as f64).floor();
        // A float-to-int cast saturates: a clock before genesis gives round 0, raised to 1.
        Ok((round as u64).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(last: u64, pending: u64, tempo: u16, head: u64) -> EpochPipeline {
        EpochPipeline {
            last_epoch_block: last,
            pending_epoch_at: pending,
            epoch_index: 50,
            tempo,
            blocks_since_last_step: head - last,
            head,
        }
    }

    /// States recorded with bittensor-drand 2.0.0 and its answers (`make_reveal_rounds.py`).
    #[derive(serde::Deserialize)]
    struct Recorded {
        name: String,
        now_unix: f64,
        last_epoch_block: u64,
        pending_epoch_at: u64,
        subnet_epoch_index: u64,
        tempo: u16,
        blocks_since_last_step: u64,
        current_block: u64,
        reveal_period_epochs: u64,
        block_time: f64,
        reveal_round: u64,
    }

    #[test]
    fn the_round_is_the_one_get_encrypted_commit_v2_targets() {
        #[derive(serde::Deserialize)]
        struct File {
            cases: Vec<Recorded>,
        }
        let file: File =
            serde_json::from_str(include_str!("../tests/data/reveal_rounds.json")).unwrap();
        assert!(file.cases.len() >= 30);
        for c in file.cases {
            let p = EpochPipeline {
                last_epoch_block: c.last_epoch_block,
                pending_epoch_at: c.pending_epoch_at,
                epoch_index: c.subnet_epoch_index,
                tempo: c.tempo,
                blocks_since_last_step: c.blocks_since_last_step,
                head: c.current_block,
            };
            let round = p.reveal_round(c.reveal_period_epochs, c.block_time, c.now_unix);
            assert_eq!(round, Ok(c.reveal_round), "{} at {}", c.name, c.now_unix);
        }
    }

    #[test]
    fn mid_epoch_the_reveal_epoch_starts_where_the_tempo_says() {
        let p = pipeline(1000, 0, 360, 1100);
        assert_eq!(p.first_reveal_block(1), Ok(1360));
        assert_eq!(p.first_reveal_block(2), Ok(1720));
    }

    #[test]
    fn a_triggered_epoch_moves_the_schedule_forward() {
        // The owner's epoch runs at 1200 and restarts the tempo there.
        let p = pipeline(1000, 1200, 360, 1100);
        assert_eq!(p.first_reveal_block(1), Ok(1200));
        assert_eq!(p.first_reveal_block(2), Ok(1560));
    }

    #[test]
    fn a_commit_landing_on_an_epoch_block_belongs_to_the_new_epoch() {
        let p = pipeline(1000, 0, 360, 1359);
        assert_eq!(p.first_reveal_block(1), Ok(1720));
    }

    #[test]
    fn a_subnet_without_epochs_is_refused() {
        let p = pipeline(1000, 0, 0, 1100);
        assert_eq!(p.first_reveal_block(1), Err(ScheduleError::NoEpochs));
        assert!(p.reveal_round(1, 12.0, 1.8e9).is_err());
    }

    #[test]
    fn the_round_is_published_three_blocks_into_the_reveal_epoch() {
        let p = pipeline(1000, 0, 360, 1100);
        let now = quicknet::GENESIS_UNIX as f64 + 3000.0;
        // Block 1363 is 263 blocks of 12 s away.
        assert_eq!(p.reveal_round(1, 12.0, now), Ok((3000 + 263 * 12) / 3));
        assert_eq!(p.reveal_round(1, 12.0, 0.0), Ok(1));
    }
}
