//! Where a window's examples come from: the page assignment, random spans of pages, the slots each
//! window holds back, the batches cut at spans, and the held-out and reference pages.

use super::{Corpus, TaskEngine};
use crate::assignment::{AssignmentError, WindowAssignment, assign_pages};
use crate::batch::{Batch, Inputs, Span, push_sequence};
use crate::rng::{SeededRng, salt};
use crate::trainer::TrainOutcome;
use burn::tensor::backend::AutodiffBackend;

impl TaskEngine {
    pub fn assignment(
        &self,
        window: u64,
        window_seed: u64,
        uid: u16,
    ) -> Result<WindowAssignment, AssignmentError> {
        assign_pages(
            window,
            window_seed,
            uid,
            self.spec.shards.pages_per_miner,
            self.spec.data.train_pages,
        )
    }

    /// `count` batches of `batch_size` sequences cut at random offsets from random pages of `pages`.
    pub fn page_batches(
        &self,
        pages: &[u64],
        seed: u64,
        count: usize,
        batch_size: usize,
    ) -> Vec<Batch> {
        self.page_spans(pages, seed, count, batch_size)
            .iter()
            .map(|spans| self.batch(spans))
            .collect()
    }

    /// Where `page_batches` cuts its sequences: per batch, (page, offset) of each sequence.
    pub fn page_spans(
        &self,
        pages: &[u64],
        seed: u64,
        count: usize,
        batch_size: usize,
    ) -> Vec<Vec<Span>> {
        assert!(!pages.is_empty(), "no pages to draw batches from");
        let starts = (self.spec.data.page_len + 1 - self.example_len) as u64;
        draw_spans(seed, count, batch_size, |rng| {
            let page = pages[rng.below(pages.len() as u64) as usize];
            let offset = rng.below(starts) as usize;
            Span { page, offset }
        })
    }

    /// The batch of the examples at `spans`.
    pub fn batch(&self, spans: &[Span]) -> Batch {
        let page_len = self.spec.data.page_len;
        let (mut tokens, mut features) = (Vec::new(), Vec::new());
        let mut targets = Vec::with_capacity(spans.len() * self.example_len);
        for span in spans {
            let end = span.offset + self.example_len;
            match &self.corpus {
                Corpus::Markov(c) => {
                    let bytes = c.page(span.page, end);
                    push_sequence(&bytes[span.offset..], &mut tokens, &mut targets);
                }
                Corpus::Text(c) => {
                    let ids = c.page(span.page, page_len, end);
                    push_sequence(&ids[span.offset..], &mut tokens, &mut targets);
                }
                Corpus::Table(c) => {
                    let (row, class) = c.row(span.page as usize * page_len + span.offset);
                    features.extend_from_slice(row);
                    targets.push(class);
                }
            }
        }
        let inputs = match self.corpus {
            Corpus::Table(_) => Inputs::Features(features),
            Corpus::Markov(_) | Corpus::Text(_) => Inputs::Tokens(tokens),
        };
        Batch {
            inputs,
            targets,
            rows: spans.len(),
        }
    }

    /// Slots of a page: the page cut into back-to-back examples (sequences of `seq_len + 1`
    /// tokens, or single table rows).
    fn slots_per_page(&self) -> usize {
        self.spec.data.page_len / self.example_len
    }

    /// Whether slot `slot` of `page` is held back from training in the window of `window_seed`.
    /// Slots pair up (2k, 2k + 1) and a coin per pair holds back one of the two (an unpaired last
    /// slot is always held back), so that a validator can compare a gradient on each sequence its
    /// miner trained on with the neighbouring sequence it did not.
    pub fn held_back(&self, window_seed: u64, page: u64, slot: usize) -> bool {
        if slot ^ 1 >= self.slots_per_page() {
            return true;
        }
        let coin =
            crate::rng::derive_seed(&[window_seed, salt::HELD_BACK_SLOTS, page, (slot / 2) as u64]);
        (slot & 1) as u64 == coin & 1
    }

    /// The held-back partner of each training span (the other slot of its pair).
    pub fn held_back_partners(&self, spans: &[Span]) -> Vec<Span> {
        let stride = self.example_len;
        spans
            .iter()
            .map(|s| Span {
                page: s.page,
                offset: ((s.offset / stride) ^ 1) * stride,
            })
            .collect()
    }

    /// Slots of `page` on one side of the window's split.
    fn slots(&self, window_seed: u64, page: u64, held_back: bool) -> Vec<usize> {
        (0..self.slots_per_page())
            .filter(|&slot| self.held_back(window_seed, page, slot) == held_back)
            .collect()
    }

    /// The spans of the batches a miner trains on in a window (see `training_batches`): sequences
    /// from the training slots of its pages.
    pub fn training_spans(
        &self,
        assignment: &WindowAssignment,
        window_seed: u64,
    ) -> Vec<Vec<Span>> {
        let seed =
            crate::rng::derive_seed(&[window_seed, salt::TRAIN_BATCHES, assignment.uid as u64]);
        let t = &self.spec.training;
        self.slot_spans(
            &assignment.pages,
            window_seed,
            false,
            seed,
            t.inner_steps,
            t.batch_size,
        )
    }

    /// `count` batches of `batch_size` sequences from random slots of `pages` on one side of the
    /// window's split (pages with no slot on that side are skipped).
    pub fn slot_spans(
        &self,
        pages: &[u64],
        window_seed: u64,
        held_back: bool,
        seed: u64,
        count: usize,
        batch_size: usize,
    ) -> Vec<Vec<Span>> {
        let stride = self.example_len;
        let slots: Vec<(u64, Vec<usize>)> = pages
            .iter()
            .map(|&page| (page, self.slots(window_seed, page, held_back)))
            .filter(|(_, slots)| !slots.is_empty())
            .collect();
        assert!(!slots.is_empty(), "no slots to draw batches from");
        draw_spans(seed, count, batch_size, |rng| {
            let (page, page_slots) = &slots[rng.below(slots.len() as u64) as usize];
            let slot = page_slots[rng.below(page_slots.len() as u64) as usize];
            Span {
                page: *page,
                offset: slot * stride,
            }
        })
    }

    /// The batches a miner trains on in a window: derived from (window seed, uid), so a validator can
    /// re-execute them.
    pub fn training_batches(&self, assignment: &WindowAssignment, window_seed: u64) -> Vec<Batch> {
        self.training_spans(assignment, window_seed)
            .iter()
            .map(|spans| self.batch(spans))
            .collect()
    }

    /// Held-out batches for a validator's own seed; pages come from the held-out split only.
    pub fn heldout_batches(&self, seed: u64, count: usize) -> Vec<Batch> {
        let data = &self.spec.data;
        let mut rng = SeededRng::derived(&[seed, salt::EVAL_BATCHES]);
        let pages: Vec<u64> = (0..count * 4)
            .map(|_| data.train_pages + rng.below(data.heldout_pages))
            .collect();
        self.page_batches(
            &pages,
            rng.next_u64(),
            count,
            self.spec.scoring.eval_batch_size,
        )
    }

    /// Training pages that no miner trains in the window of `window_seed`: positions of the window's
    /// permutation past those of the first `assigned_uids` uids, drawn by `seed`. Empty when the
    /// miners take the whole training split.
    pub fn unassigned_pages(
        &self,
        window_seed: u64,
        assigned_uids: u64,
        seed: u64,
        count: usize,
    ) -> Vec<u64> {
        let train = self.spec.data.train_pages;
        let first_free = assigned_uids.saturating_mul(self.spec.shards.pages_per_miner as u64);
        if first_free >= train {
            return Vec::new();
        }
        let key = crate::rng::derive_seed(&[window_seed, salt::ASSIGNMENT]);
        let mut rng = SeededRng::derived(&[seed, salt::UNASSIGNED]);
        (0..count)
            .map(|_| {
                crate::assignment::permute(first_free + rng.below(train - first_free), train, key)
            })
            .collect()
    }

    /// The training pages the public training that carries the inner optimizer's state across
    /// windows runs on (`next_inner`): a miner's share of pages, drawn from the window's seed alone
    /// so that every node draws the same.
    fn inner_state_pages(&self, window_seed: u64) -> Vec<u64> {
        let mut rng = SeededRng::derived(&[window_seed, salt::INNER_STATE]);
        let train = self.spec.data.train_pages;
        (0..self.spec.shards.pages_per_miner)
            .map(|_| rng.below(train))
            .collect()
    }

    /// The batches of the window's public training (`next_inner`): `inner_state_pages`, in
    /// batches drawn from the window's seed.
    pub fn inner_state_batches(&self, window_seed: u64) -> Vec<Batch> {
        let pages = self.inner_state_pages(window_seed);
        self.reference_batches(&pages, window_seed, window_seed)
    }

    /// Pages of the synthetic corpus beyond both splits, drawn by `seed`: text nobody has seen,
    /// straight from the generator. Empty for other corpora.
    pub fn fresh_pages(&self, seed: u64, count: usize) -> Vec<u64> {
        if self.markov().is_none() {
            return Vec::new();
        }
        let data = &self.spec.data;
        let first = data.train_pages + data.heldout_pages;
        let mut rng = SeededRng::derived(&[seed, salt::FRESH]);
        (0..count).map(|_| first + rng.below(1 << 40)).collect()
    }

    /// The batches a validator scores a window's gradients on, drawn by its secret `seed` so that no
    /// miner can prepare for them: in turn from the held-out split, from training pages no miner is
    /// assigned this window and, for the synthetic corpus, from fresh text.
    pub fn eval_batches(
        &self,
        window_seed: u64,
        assigned_uids: u64,
        seed: u64,
        count: usize,
    ) -> Vec<Batch> {
        let data = &self.spec.data;
        let draws = count * 4;
        let mut rng = SeededRng::derived(&[seed, salt::EVAL_BATCHES]);
        let heldout: Vec<u64> = (0..draws)
            .map(|_| data.train_pages + rng.below(data.heldout_pages))
            .collect();
        let sources = [
            heldout,
            self.unassigned_pages(window_seed, assigned_uids, rng.next_u64(), draws),
            self.fresh_pages(rng.next_u64(), draws),
        ];
        let sources: Vec<&Vec<u64>> = sources.iter().filter(|s| !s.is_empty()).collect();
        let pages: Vec<u64> = (0..draws)
            .map(|i| sources[i % sources.len()][i / sources.len()])
            .collect();
        self.page_batches(
            &pages,
            rng.next_u64(),
            count,
            self.spec.scoring.eval_batch_size,
        )
    }

    /// Pages for a validator's own training of a window (its reference for the norm of honest work
    /// and its assignment-check control), drawn by its secret `seed` from pages no miner trains:
    /// unassigned training pages, else fresh text, else held-out pages.
    pub fn reference_pages(&self, window_seed: u64, assigned_uids: u64, seed: u64) -> Vec<u64> {
        let count = self.spec.shards.pages_per_miner;
        let unassigned = self.unassigned_pages(window_seed, assigned_uids, seed, count);
        if !unassigned.is_empty() {
            return unassigned;
        }
        let fresh = self.fresh_pages(seed, count);
        if !fresh.is_empty() {
            return fresh;
        }
        let data = &self.spec.data;
        let mut rng = SeededRng::derived(&[seed, salt::UNASSIGNED]);
        (0..count)
            .map(|_| data.train_pages + rng.below(data.heldout_pages))
            .collect()
    }

    /// The batches of a window's training on `pages` that no miner was assigned (the validator's
    /// reference, the public training of the carried state), drawn by `seed`: a miner's count of
    /// steps and batch size.
    pub fn reference_batches(&self, pages: &[u64], window_seed: u64, seed: u64) -> Vec<Batch> {
        let t = &self.spec.training;
        self.slot_spans(pages, window_seed, false, seed, t.inner_steps, t.batch_size)
            .iter()
            .map(|spans| self.batch(spans))
            .collect()
    }

    /// The validator's own training of the window: what a miner assigned `pages` would do (from
    /// the same start, `carried` included), with batches drawn by `seed`.
    #[allow(clippy::too_many_arguments)]
    pub fn train_reference<B: AutodiffBackend>(
        &self,
        device: &B::Device,
        start: &[f32],
        carried: Option<&std::sync::Arc<crate::InnerState>>,
        window: u64,
        window_seed: u64,
        pages: &[u64],
        seed: u64,
    ) -> TrainOutcome {
        let batches = self.reference_batches(pages, window_seed, seed);
        self.trainer::<B>(device)
            .carrying(carried.cloned())
            .train_from(start, &batches, self.spec.inner_lr(window), |_, _| {})
    }

    /// The assignment check's batches for `assignment`: up to `count` batches of distinct sequences
    /// the miner trained on, chosen and ordered by the validator's secret `seed`, and for each the
    /// batch of their held-back neighbours (same pages, adjacent slots). Each trained sequence is
    /// used at most once, so that the batches are independent samples of the miner's pages.
    pub fn assignment_check_batches(
        &self,
        assignment: &WindowAssignment,
        window_seed: u64,
        seed: u64,
        count: usize,
    ) -> (Vec<Batch>, Vec<Batch>) {
        let mut trained: Vec<Span> = self
            .training_spans(assignment, window_seed)
            .into_iter()
            .flatten()
            .collect();
        trained.sort_by_key(|s| (s.page, s.offset));
        trained.dedup();
        let mut rng = SeededRng::derived(&[seed, salt::ASSIGNMENT_CHECK, assignment.uid as u64]);
        for i in (1..trained.len()).rev() {
            trained.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let size = self.spec.training.batch_size;
        let own: Vec<Vec<Span>> = trained
            .chunks_exact(size)
            .take(count)
            .map(<[Span]>::to_vec)
            .collect();
        let held_back = own
            .iter()
            .map(|spans| self.batch(&self.held_back_partners(spans)))
            .collect();
        (own.iter().map(|s| self.batch(s)).collect(), held_back)
    }
}

/// `count` batches of `batch_size` spans, each drawn by `draw` in turn from one generator seeded
/// by `seed`.
fn draw_spans(
    seed: u64,
    count: usize,
    batch_size: usize,
    mut draw: impl FnMut(&mut SeededRng) -> Span,
) -> Vec<Vec<Span>> {
    let mut rng = SeededRng::new(seed);
    (0..count)
        .map(|_| (0..batch_size).map(|_| draw(&mut rng)).collect())
        .collect()
}
