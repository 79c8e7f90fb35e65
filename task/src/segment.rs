//! A window's training cut into segments: the training state (parameters and the inner AdamW's
//! moments) every few inner steps, in canonical bytes with a digest. A miner commits the digest
//! of each segment's end; an audit re-executes a segment from the state the miner serves for its
//! start and compares the end, so that an audit costs a segment rather than a whole window.
//!
//! The bytes: magic, the inner steps taken, the trainable range (start, end), then that range's
//! parameters and, once a step was taken, its first and second moments, all little-endian f32.
//! Frozen parameters (outside the range) are the window's checkpoint's and are not repeated.

use pseudo_gradient::Digest;

const MAGIC: &[u8; 8] = b"SNSEG001";
const HEADER_LEN: usize = 8 + 3 * 8;

/// The training state after `step` inner steps of a window, over its trainable range.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    pub step: usize,
    pub range: std::ops::Range<usize>,
    pub params: Vec<f32>,
    /// AdamW's first and second moments of the range (empty before the first step: a fresh
    /// optimizer has none).
    pub first_moment: Vec<f32>,
    pub second_moment: Vec<f32>,
}

/// Bytes that are not a training state of the expected shape.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("not a training state (bad magic or {0} bytes is too short)")]
    NotAState(usize),
    #[error("training state after step {found}, expected after step {expected}")]
    WrongStep { expected: usize, found: u64 },
    #[error("training state over parameters {found:?}, expected {expected:?}")]
    WrongRange {
        expected: std::ops::Range<usize>,
        found: std::ops::Range<u64>,
    },
    #[error("training state is {found} bytes, expected {expected}")]
    WrongLength { expected: usize, found: usize },
    #[error("training state value {index} is {value}: a state holds finite numbers only")]
    NonFinite { index: usize, value: String },
}

impl TrainState {
    /// The state before a window's first step: the checkpoint's `range`, no moments.
    pub fn fresh(checkpoint: &[f32], range: std::ops::Range<usize>) -> Self {
        TrainState {
            step: 0,
            params: checkpoint[range.clone()].to_vec(),
            range,
            first_moment: Vec::new(),
            second_moment: Vec::new(),
        }
    }

    /// The state a window trained from `checkpoint` starts in over `range`: the checkpoint's
    /// parameters, and its carried optimizer moments where it has them (`fresh` otherwise).
    pub fn window_start(checkpoint: &crate::Checkpoint, range: std::ops::Range<usize>) -> Self {
        Self::starting(&checkpoint.params, checkpoint.inner.as_deref(), range)
    }

    /// The state a window starts in over `range` from the parameters `params` and the carried
    /// optimizer state `inner` (`fresh` without one).
    pub fn starting(
        params: &[f32],
        inner: Option<&crate::InnerState>,
        range: std::ops::Range<usize>,
    ) -> Self {
        let mut state = Self::fresh(params, range.clone());
        if let Some(inner) = inner {
            state.first_moment = inner.first[range.clone()].to_vec();
            state.second_moment = inner.second[range].to_vec();
        }
        state
    }

    /// Length of the canonical bytes of a state after `step` steps over `len` parameters.
    pub fn encoded_len(step: usize, len: usize) -> usize {
        let vectors = if step == 0 { 1 } else { 3 };
        HEADER_LEN + 4 * vectors * len
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::encoded_len(self.step, self.params.len()));
        out.extend_from_slice(MAGIC);
        for n in [self.step, self.range.start, self.range.end] {
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
        for v in [&self.params, &self.first_moment, &self.second_moment] {
            out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        }
        out
    }

    /// The digest of the canonical bytes: what a commitment names for a segment's end.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.to_bytes())
    }

    /// Decodes the state after `step` steps over `range`, strictly: the header must say exactly
    /// that, the length must be exact, and every value finite.
    pub fn from_bytes(
        bytes: &[u8],
        step: usize,
        range: std::ops::Range<usize>,
    ) -> Result<Self, SegmentError> {
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err(SegmentError::NotAState(bytes.len()));
        }
        let word = |i: usize| {
            let at = 8 + 8 * i;
            u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
        };
        if word(0) != step as u64 {
            return Err(SegmentError::WrongStep {
                expected: step,
                found: word(0),
            });
        }
        if (word(1), word(2)) != (range.start as u64, range.end as u64) {
            return Err(SegmentError::WrongRange {
                expected: range,
                found: word(1)..word(2),
            });
        }
        let len = range.len();
        let expected = Self::encoded_len(step, len);
        if bytes.len() != expected {
            return Err(SegmentError::WrongLength {
                expected,
                found: bytes.len(),
            });
        }
        let mut values = Vec::with_capacity((bytes.len() - HEADER_LEN) / 4);
        for (index, chunk) in bytes[HEADER_LEN..].chunks_exact(4).enumerate() {
            let value = f32::from_le_bytes(chunk.try_into().expect("4 bytes"));
            if !value.is_finite() {
                return Err(SegmentError::NonFinite {
                    index,
                    value: value.to_string(),
                });
            }
            values.push(value);
        }
        let mut second_moment = values.split_off(len.min(values.len()));
        let first_moment = if second_moment.is_empty() {
            Vec::new()
        } else {
            let rest = second_moment.split_off(len);
            std::mem::replace(&mut second_moment, rest)
        };
        Ok(TrainState {
            step,
            range,
            params: values,
            first_moment,
            second_moment,
        })
    }

    /// The whole model's parameters: `base` (the window's checkpoint) with this state's range.
    pub fn whole(&self, base: &[f32]) -> Vec<f32> {
        let mut params = base.to_vec();
        params[self.range.clone()].copy_from_slice(&self.params);
        params
    }
}

/// How far a segment's re-executed end `redone` is from the end the miner served: the parameters'
/// distance relative to the segment's movement, and each moment's relative to its size; the largest
/// of the three. Movement and size are the larger of the served end's and the re-execution's, so
/// the measure is finite (a state whose moments are zero where the re-execution's are not is 1
/// away).
pub fn segment_difference(start: &TrainState, end: &TrainState, redone: &TrainState) -> f64 {
    let distance = |a: &[f32], b: &[f32], origin: Option<&[f32]>| {
        let (mut diff, mut size_a, mut size_b) = (0f64, 0f64, 0f64);
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            let o = origin.map_or(0.0, |o| o[i] as f64);
            diff += (x as f64 - y as f64).powi(2);
            size_a += (x as f64 - o).powi(2);
            size_b += (y as f64 - o).powi(2);
        }
        if diff == 0.0 {
            0.0
        } else {
            (diff / size_a.max(size_b)).sqrt()
        }
    };
    let params = distance(&redone.params, &end.params, Some(&start.params));
    let first = distance(&redone.first_moment, &end.first_moment, None);
    let second = distance(&redone.second_moment, &end.second_moment, None);
    params.max(first).max(second)
}

/// The inner steps a window of `inner_steps` takes in each segment of at most `segment_steps`
/// (0: the whole window is one segment), as the step ranges in order.
pub fn segments(inner_steps: usize, segment_steps: usize) -> Vec<std::ops::Range<usize>> {
    let size = if segment_steps == 0 {
        inner_steps.max(1)
    } else {
        segment_steps
    };
    (0..inner_steps.div_ceil(size))
        .map(|i| i * size..((i + 1) * size).min(inner_steps))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: usize) -> TrainState {
        let moments = |x: f32| if step == 0 { vec![] } else { vec![x; 3] };
        TrainState {
            step,
            range: 2..5,
            params: vec![1.0, -2.0, 0.5],
            first_moment: moments(0.25),
            second_moment: moments(0.125),
        }
    }

    #[test]
    fn a_state_round_trips_and_strict_decoding_names_what_is_wrong() {
        for step in [0, 6] {
            let s = state(step);
            let bytes = s.to_bytes();
            assert_eq!(bytes.len(), TrainState::encoded_len(step, 3));
            assert_eq!(TrainState::from_bytes(&bytes, step, 2..5), Ok(s));
        }
        let bytes = state(6).to_bytes();
        assert!(matches!(
            TrainState::from_bytes(&bytes, 5, 2..5),
            Err(SegmentError::WrongStep { .. })
        ));
        assert!(matches!(
            TrainState::from_bytes(&bytes, 6, 2..6),
            Err(SegmentError::WrongRange { .. })
        ));
        assert!(matches!(
            TrainState::from_bytes(&bytes[..bytes.len() - 4], 6, 2..5),
            Err(SegmentError::WrongLength { .. })
        ));
        let mut nan = bytes.clone();
        let at = nan.len() - 4;
        nan[at..].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(
            TrainState::from_bytes(&nan, 6, 2..5),
            Err(SegmentError::NonFinite { index: 8, .. })
        ));
        assert_eq!(
            TrainState::from_bytes(b"short", 0, 0..0),
            Err(SegmentError::NotAState(5))
        );
    }

    #[test]
    fn segments_cover_the_window_in_order() {
        assert_eq!(segments(30, 0), vec![0..30]);
        assert_eq!(segments(30, 6).len(), 5);
        assert_eq!(segments(7, 3), vec![0..3, 3..6, 6..7]);
        assert_eq!(segments(0, 0), Vec::<std::ops::Range<usize>>::new());
    }
}
