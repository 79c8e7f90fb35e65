//! A pseudo-gradient as a validator holds it through a window: the nonzero entries of a
//! whole-model vector, in index order. A top-k payload decodes to a few percent of the model, so a
//! validator's memory grows with what miners send rather than with the model times the miners.
//!
//! Every figure computed here has the bits the dense vector gives (norms, cosines, the clipped
//! aggregate): the dense sums run over the same entries in the same order, and the entries left
//! out are zeros, whose terms add exactly nothing to a finite sum. The vectors must be finite
//! (validators refuse non-finite payloads before they get here).

/// The nonzero entries of a vector of `len` values: their values, and their indices as the gaps
/// between them (two bytes each where a gap is under 65,535, which at a payload's density is every
/// one), so that an entry takes six bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sparse {
    len: usize,
    /// For each entry, the number of zeros before it since the entry before (from the vector's
    /// start for the first): one u16, or `ESCAPE` then the gap's low and high halves.
    gaps: Vec<u16>,
    values: Vec<f32>,
}

/// Marks a gap written in the two u16 after it.
const ESCAPE: u16 = u16::MAX;

impl Sparse {
    /// The nonzero entries of `dense` (negative zeros are zeros).
    pub fn from_dense(dense: &[f32]) -> Sparse {
        Sparse::scattered(dense, dense.len(), 0)
    }

    /// `values` placed at `offset..offset + values.len()` of a vector of `len` (zero elsewhere).
    pub fn scattered(values: &[f32], len: usize, offset: usize) -> Sparse {
        assert!(offset + values.len() <= len, "values past the vector's end");
        assert!(
            u32::try_from(len).is_ok(),
            "a model of more than 2^32 parameters"
        );
        let mut out = Sparse {
            len,
            gaps: Vec::new(),
            values: Vec::new(),
        };
        let mut next = 0;
        for (i, &x) in values.iter().enumerate() {
            if x != 0.0 {
                let at = offset + i;
                out.push_gap(at - next);
                out.values.push(x);
                next = at + 1;
            }
        }
        out.gaps.shrink_to_fit();
        out.values.shrink_to_fit();
        out
    }

    fn push_gap(&mut self, gap: usize) {
        match u16::try_from(gap) {
            Ok(g) if g != ESCAPE => self.gaps.push(g),
            _ => {
                self.gaps.push(ESCAPE);
                self.gaps.push(gap as u16);
                self.gaps.push((gap >> 16) as u16);
            }
        }
    }

    /// The length of the whole vector.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the whole vector has no entries at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of nonzero entries.
    pub fn nonzeros(&self) -> usize {
        self.values.len()
    }

    /// The nonzero entries, (index, value) in index order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, f32)> + '_ {
        let mut gaps = self.gaps.iter().copied();
        let mut next = 0usize;
        self.values.iter().map(move |&x| {
            let mut gap = gaps.next().expect("a gap per entry") as usize;
            if gap == ESCAPE as usize {
                let low = gaps.next().expect("an escaped gap's low half") as usize;
                let high = gaps.next().expect("an escaped gap's high half") as usize;
                gap = low | high << 16;
            }
            let at = next + gap;
            next = at + 1;
            (at, x)
        })
    }

    pub fn to_dense(&self) -> Vec<f32> {
        let mut dense = vec![0.0; self.len];
        for (i, x) in self.iter() {
            dense[i] = x;
        }
        dense
    }

    /// The L2 norm (`aggregate::l2_norm` of the dense vector, bit for bit).
    pub fn norm(&self) -> f64 {
        // Folded from +0 (an empty `sum` of floats is -0, a dense vector of zeros sums to +0).
        self.values
            .iter()
            .fold(0f64, |sum, &x| sum + (x as f64) * (x as f64))
            .sqrt()
    }

    /// The dot product with `other`, summed in f64 over the entries both hold, in index order.
    pub fn dot(&self, other: &Sparse) -> f64 {
        assert_eq!(self.len, other.len, "dot of vectors of different lengths");
        let (mut sum, mut b) = (0f64, other.iter().peekable());
        for (i, x) in self.iter() {
            while b.next_if(|&(j, _)| j < i).is_some() {}
            if let Some(&(j, y)) = b.peek()
                && j == i
            {
                sum += x as f64 * y as f64;
            }
        }
        sum
    }

    /// The dot product with the dense vector `dense`, summed in f64 over this vector's entries in
    /// index order.
    pub fn dot_dense(&self, dense: &[f32]) -> f64 {
        assert_eq!(self.len, dense.len(), "dot of vectors of different lengths");
        self.iter()
            .fold(0f64, |sum, (i, x)| sum + x as f64 * dense[i] as f64)
    }

    /// The cosine similarity with `other` (0 when either is zero), with the bits of the same
    /// cosine over the dense vectors.
    pub fn cosine(&self, other: &Sparse) -> f64 {
        assert_eq!(
            self.len, other.len,
            "cosine of vectors of different lengths"
        );
        let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
        let (mut a, mut b) = (self.iter().peekable(), other.iter().peekable());
        loop {
            match (a.peek().copied(), b.peek().copied()) {
                (Some((i, x)), Some((j, y))) if i == j => {
                    let (x, y) = (x as f64, y as f64);
                    ab += x * y;
                    aa += x * x;
                    bb += y * y;
                    a.next();
                    b.next();
                }
                (Some((i, _)), Some((j, y))) if j < i => {
                    bb += (y as f64) * (y as f64);
                    b.next();
                }
                (Some((_, x)), _) => {
                    aa += (x as f64) * (x as f64);
                    a.next();
                }
                (None, Some((_, y))) => {
                    bb += (y as f64) * (y as f64);
                    b.next();
                }
                (None, None) => break,
            }
        }
        if aa == 0.0 || bb == 0.0 {
            0.0
        } else {
            ab / (aa.sqrt() * bb.sqrt())
        }
    }

    /// Bytes the entries take in memory.
    pub fn heap_bytes(&self) -> usize {
        self.gaps.capacity() * 2 + self.values.capacity() * 4
    }
}

/// Each parameter's step from its clipped sum and the number of deltas that carry it: the sum
/// over `count^(1 - agreement)`, so 0 is the mean over the carriers (bit for bit the division by
/// the count) and larger values let a parameter that several deltas carry step further. 0 where
/// none carries it.
pub fn per_parameter(sum: Vec<f64>, carriers: &[u32], agreement: f64) -> Vec<f32> {
    sum.into_iter()
        .zip(carriers)
        .map(|(s, &c)| match c {
            0 => 0.0,
            c if agreement == 0.0 => (s / c as f64) as f32,
            c => (s / (c as f64).powf(1.0 - agreement)) as f32,
        })
        .collect()
}

/// Per parameter, the sum of the clipped deltas (in f64, in the order given) and how many deltas
/// carry it; None for no deltas.
pub fn clipped_sums(deltas: &[&Sparse], caps: &[f64]) -> Option<(Vec<f64>, Vec<u32>)> {
    let len = deltas.first()?.len();
    let mut sum = vec![0f64; len];
    let mut carriers = vec![0u32; len];
    for (delta, &cap) in deltas.iter().zip(caps) {
        assert_eq!(delta.len(), len, "deltas of different lengths");
        let scale = crate::aggregate::clip_scale(delta.norm(), cap);
        for (i, x) in delta.iter() {
            sum[i] += scale * x as f64;
            carriers[i] += 1;
        }
    }
    Some((sum, carriers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{self, l2_norm};

    fn vectors() -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for density in [1, 3, 10] {
            let v: Vec<f32> = (0..257)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let x = ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
                    if (state >> 20).is_multiple_of(density) {
                        x
                    } else {
                        0.0
                    }
                })
                .collect();
            out.push(v);
        }
        out.push(vec![0.0; 257]);
        out
    }

    #[test]
    fn sparse_figures_have_the_dense_bits() {
        let dense = vectors();
        let sparse: Vec<Sparse> = dense.iter().map(|d| Sparse::from_dense(d)).collect();
        for (d, s) in dense.iter().zip(&sparse) {
            assert_eq!(s.to_dense(), *d);
            assert_eq!(s.norm().to_bits(), l2_norm(d).to_bits());
            for (e, t) in dense.iter().zip(&sparse) {
                let dense_cosine = scoring::checks::cosine(d, e);
                assert_eq!(s.cosine(t).to_bits(), dense_cosine.to_bits());
                let dot: f64 = d.iter().zip(e).map(|(&x, &y)| x as f64 * y as f64).sum();
                assert!((s.dot(t) - dot).abs() <= 1e-12 * (1.0 + dot.abs()), "dot");
                assert!(
                    (s.dot_dense(e) - dot).abs() <= 1e-12 * (1.0 + dot.abs()),
                    "dot"
                );
            }
        }
        let caps = [0.5, 100.0, 1.0, 2.0];
        let refs: Vec<&[f32]> = dense.iter().map(|d| d.as_slice()).collect();
        let srefs: Vec<&Sparse> = sparse.iter().collect();
        let a = aggregate::aggregate_clipped_each(&refs, &caps).unwrap();
        let (sum, carriers) = clipped_sums(&srefs, &caps).unwrap();
        let b = per_parameter(sum, &carriers, 0.0);
        assert_eq!(
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert!(clipped_sums(&[], &[]).is_none());
    }

    /// With agreement 0 each parameter takes the mean over its carriers; above 0 a parameter that
    /// `count` deltas carry steps `count^agreement` times that mean, and one that a single delta
    /// carries takes its value either way.
    #[test]
    fn agreement_grows_the_step_only_where_several_carry_a_parameter() {
        let sum = vec![4.0, 3.0, 0.0, -2.0];
        let carriers = [4, 1, 0, 2];
        assert_eq!(
            per_parameter(sum.clone(), &carriers, 0.0),
            [1.0, 3.0, 0.0, -1.0]
        );
        let grown = per_parameter(sum, &carriers, 0.5);
        let expected = [2.0, 3.0, 0.0, -2.0f64.sqrt()];
        for (g, e) in grown.iter().zip(expected) {
            assert!((*g as f64 - e).abs() < 1e-6, "{grown:?}");
        }
    }

    #[test]
    fn scattered_places_a_group_in_the_whole_model() {
        let s = Sparse::scattered(&[1.0, 0.0, -2.0], 10, 4);
        assert_eq!(s.len(), 10);
        assert_eq!(s.nonzeros(), 2);
        assert_eq!(
            s.to_dense(),
            vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -2.0, 0.0, 0.0, 0.0]
        );
    }

    /// Gaps of 65,535 and more take the escaped form and come back exact, at the start, between
    /// entries and after an offset; a payload's entries take six bytes each.
    #[test]
    fn long_gaps_round_trip_and_entries_take_six_bytes() {
        let mut dense = vec![0.0f32; 300_000];
        for at in [65_534, 65_535, 131_071, 131_072, 196_608, 299_999] {
            dense[at] = at as f32;
        }
        let s = Sparse::from_dense(&dense);
        assert_eq!(s.to_dense(), dense);
        assert_eq!(
            s.iter().map(|(i, _)| i).collect::<Vec<_>>(),
            [65_534, 65_535, 131_071, 131_072, 196_608, 299_999]
        );
        let shifted = Sparse::scattered(&dense[..200_000], 400_000, 70_000);
        let mut expected = vec![0.0f32; 400_000];
        expected[70_000..270_000].copy_from_slice(&dense[..200_000]);
        assert_eq!(shifted.to_dense(), expected);
        let payload: Vec<f32> = (0..80_000)
            .map(|i| if i % 8 == 3 { 1.0 + i as f32 } else { 0.0 })
            .collect();
        let held = Sparse::from_dense(&payload);
        assert_eq!(held.nonzeros(), 10_000);
        assert_eq!(held.heap_bytes(), 60_000);
    }
}
