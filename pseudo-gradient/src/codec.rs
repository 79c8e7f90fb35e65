//! The gradient payload: a header (magic, encoding, parameter count) followed by the values, either
//! dense little-endian f32 or chunked top-k. Decoding checks the header against the task's model
//! before reading a value, and reads the payload in place (borrowed slices, no intermediate copies)
//! straight into the dense output.
//!
//! Top-k layout (8-bit values), after the header: chunk size (u32 LE) and k (u32 LE), then for each
//! chunk of `chunk` parameters (the last may be shorter, and keeps min(k, its length) entries): the
//! scale (f32 LE), the kept positions within the chunk (u16 LE each), and the values quantized to i8
//! (value = q / 127 * scale).
//!
//! Packed top-k layout (1 to 7 bits a value), after the header: chunk size (u32 LE), k (u32 LE) and
//! the value bits b (u8), then for each chunk: its scale as bfloat16 (u16 LE), then one bit stream
//! (least significant bit first) of the kept positions in increasing order, each in
//! `index_bits(chunk)` bits (12 for chunks of 4096), followed by the kept values, each a sign bit
//! (1: negative) and b - 1 magnitude bits m, padded with zero bits to a whole byte. A value is
//! `scale * (m + 1) / 2^(b-1)`: with one bit every kept value is +-scale (the mean kept magnitude),
//! with more the scale is the largest kept magnitude. Positions out of order, repeated or past the
//! chunk, and padding bits that are not zero, are refused: a payload has one reading.
//!
//! `compress` is the one definition of what a miner serves: the payload is the task's encoding of the
//! dense pseudo-gradient plus the error-feedback residual, and the next residual is what the payload
//! left out. Miners call it to make their payload; validators call it to check, byte for byte, that a
//! served payload is what the committed dense gradient and residual produce.
//!
//! One file on purpose: the byte layouts, their encoder and their strict decoder belong together;
//! a change to one is a change to the others.

const MAGIC: &[u8; 4] = b"SNG1";
const HEADER_LEN: usize = 4 + 1 + 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Encoding {
    DenseF32 = 0,
    TopK = 1,
    PackedTopK = 2,
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("not a gradient payload (bad magic, or {0} bytes is shorter than the header)")]
    NotAGradient(usize),
    #[error("unknown gradient encoding {0}")]
    UnknownEncoding(u8),
    #[error("gradient has {found} parameters, the task's model has {expected}")]
    WrongShape { expected: usize, found: u64 },
    #[error("gradient payload is {found} bytes, {expected} expected for its header")]
    WrongLength { expected: usize, found: usize },
    #[error("top-k layout is invalid: {0}")]
    BadLayout(String),
    #[error("not the task's gradient layout: {0}")]
    OtherLayout(String),
}

/// The one encoding a task's gradients use (its `[compression]` section): a validator decodes
/// exactly this layout and refuses any other, so a miner cannot choose a denser or sparser form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    DenseF32,
    TopK { chunk: usize, k: usize },
    PackedTopK { chunk: usize, k: usize, bits: u8 },
}

impl Layout {
    /// The layout of a task's `[compression]`: `top_k = 0` sends dense f32, 8 value bits the top-k
    /// layout, fewer the packed one.
    pub fn of_task(chunk: usize, top_k: usize, value_bits: u32) -> Self {
        match (top_k, value_bits) {
            (0, _) => Layout::DenseF32,
            (k, 8) => Layout::TopK { chunk, k },
            (k, bits) => Layout::PackedTopK {
                chunk,
                k,
                bits: bits as u8,
            },
        }
    }

    /// Exact bytes of a payload for `n` parameters.
    pub fn payload_len(&self, n: usize) -> usize {
        match *self {
            Layout::DenseF32 => HEADER_LEN + 4 * n,
            Layout::TopK { chunk, k } => top_k_len(n, chunk, k),
            Layout::PackedTopK { chunk, k, bits } => packed_len(n, chunk, k, bits),
        }
    }

    /// How many times smaller than dense f32 a payload for `n` parameters is.
    pub fn ratio(&self, n: usize) -> f64 {
        Layout::DenseF32.payload_len(n) as f64 / self.payload_len(n) as f64
    }

    /// Encodes `values` in this layout: the payload and the dense vector it decodes to.
    pub fn encode(&self, values: &[f32]) -> (Vec<u8>, Vec<f32>) {
        match *self {
            Layout::DenseF32 => (encode_dense(values), values.to_vec()),
            Layout::TopK { chunk, k } => encode_top_k(values, chunk, k),
            Layout::PackedTopK { chunk, k, bits } => encode_packed(values, chunk, k, bits),
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Layout::DenseF32 => write!(f, "dense f32"),
            Layout::TopK { chunk, k } => write!(f, "top-{k} of {chunk}, 8 bits"),
            Layout::PackedTopK { chunk, k, bits } => {
                write!(
                    f,
                    "top-{k} of {chunk}, {bits} bit{}",
                    if bits == 1 { "" } else { "s" }
                )
            }
        }
    }
}

/// A window's payload and the residual it leaves for the next window.
#[derive(Clone, Debug, PartialEq)]
pub struct Compressed {
    pub payload: Vec<u8>,
    pub residual_out: Vec<f32>,
}

/// Compresses `dense + feedback * residual_in` into `layout`; the residual that comes out is
/// `dense + feedback * residual_in - decode(payload)` (zero for dense payloads). Deterministic: the
/// same inputs give the same bytes on every machine.
pub fn compress(dense: &[f32], residual_in: &[f32], layout: Layout, feedback: f32) -> Compressed {
    compress_range(dense, residual_in, layout, feedback, 0..dense.len())
}

/// `compress` for a miner that trained one parameter group: the payload encodes only the values in
/// `range` of `dense + feedback * residual_in`, and the residual that comes out is that sum less
/// what the payload sends there (outside `range` it is the sum itself, kept for a later window).
pub fn compress_range(
    dense: &[f32],
    residual_in: &[f32],
    layout: Layout,
    feedback: f32,
    range: std::ops::Range<usize>,
) -> Compressed {
    assert_eq!(
        dense.len(),
        residual_in.len(),
        "residual of another length than the gradient"
    );
    assert!(range.end <= dense.len(), "range outside the gradient");
    let mut accumulated: Vec<f32> = dense
        .iter()
        .zip(residual_in)
        .map(|(d, r)| d + feedback * r)
        .collect();
    let (payload, sent) = layout.encode(&accumulated[range.clone()]);
    for (a, s) in accumulated[range].iter_mut().zip(&sent) {
        *a -= s;
    }
    Compressed {
        payload,
        residual_out: accumulated,
    }
}

/// Decodes a payload that must be in `layout` for a model of `n` parameters: another encoding, chunk
/// size or k is refused before any value is read.
pub fn decode_as(bytes: &[u8], n: usize, layout: Layout) -> Result<Vec<f32>, CodecError> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return Err(CodecError::NotAGradient(bytes.len()));
    }
    let (encoding, params) = match layout {
        Layout::DenseF32 => (Encoding::DenseF32, None),
        Layout::TopK { chunk, k } => (Encoding::TopK, Some((chunk, k))),
        Layout::PackedTopK { chunk, k, .. } => (Encoding::PackedTopK, Some((chunk, k))),
    };
    if bytes[4] != encoding as u8 {
        return Err(CodecError::OtherLayout(format!(
            "encoding {} where the task sends encoding {}",
            bytes[4], encoding as u8
        )));
    }
    if let Some((chunk, k)) = params {
        let field = |at: usize| {
            bytes
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        };
        let found = (field(HEADER_LEN), field(HEADER_LEN + 4));
        if found != (Some(chunk), Some(k)) {
            return Err(CodecError::OtherLayout(format!(
                "chunk and k {found:?} where the task sends chunk {chunk}, k {k}"
            )));
        }
    }
    if let Layout::PackedTopK { bits, .. } = layout {
        let found = bytes.get(HEADER_LEN + 8).copied();
        if found != Some(bits) {
            return Err(CodecError::OtherLayout(format!(
                "{found:?} value bits where the task sends {bits}"
            )));
        }
    }
    decode(bytes, n)
}

fn header(encoding: Encoding, n: usize, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + capacity);
    out.extend_from_slice(MAGIC);
    out.push(encoding as u8);
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out
}

pub fn encode_dense(values: &[f32]) -> Vec<u8> {
    let mut out = header(Encoding::DenseF32, values.len(), 4 * values.len());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Bytes of a top-k payload for `n` parameters.
pub fn top_k_len(n: usize, chunk: usize, k: usize) -> usize {
    let full = n / chunk;
    let rest = n % chunk;
    let per_chunk = |len: usize| 4 + 3 * k.min(len);
    HEADER_LEN + 8 + full * per_chunk(chunk) + if rest > 0 { per_chunk(rest) } else { 0 }
}

/// Keeps the `k` largest-magnitude values of each `chunk`-sized chunk (ties to the lower position),
/// quantized to i8 against the chunk's largest kept magnitude. Returns the payload and the dense
/// vector it decodes to, which error feedback subtracts.
pub fn encode_top_k(values: &[f32], chunk: usize, k: usize) -> (Vec<u8>, Vec<f32>) {
    assert!(
        chunk > 0 && chunk <= 1 << 16 && k > 0,
        "chunk must be in 1..=65536 and k positive"
    );
    let mut out = header(
        Encoding::TopK,
        values.len(),
        top_k_len(values.len(), chunk, k) - HEADER_LEN,
    );
    out.extend_from_slice(&(chunk as u32).to_le_bytes());
    out.extend_from_slice(&(k as u32).to_le_bytes());
    let mut decoded = vec![0f32; values.len()];
    let mut kept: Vec<u16> = Vec::with_capacity(chunk);
    for (c, block) in values.chunks(chunk).enumerate() {
        top_positions(block, k, &mut kept);
        let scale = kept
            .iter()
            .map(|&i| block[i as usize].abs())
            .fold(0f32, f32::max);
        out.extend_from_slice(&scale.to_le_bytes());
        for &i in kept.iter() {
            out.extend_from_slice(&i.to_le_bytes());
        }
        for &i in kept.iter() {
            let q = if scale > 0.0 {
                (block[i as usize] / scale * 127.0)
                    .round()
                    .clamp(-127.0, 127.0) as i8
            } else {
                0
            };
            out.push(q as u8);
            decoded[c * chunk + i as usize] = q as f32 / 127.0 * scale;
        }
    }
    (out, decoded)
}

/// Decodes a payload for a model of `expected_len` parameters. Dense values may be non-finite:
/// callers decide what a NaN means.
pub fn decode(bytes: &[u8], expected_len: usize) -> Result<Vec<f32>, CodecError> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return Err(CodecError::NotAGradient(bytes.len()));
    }
    let n = u64::from_le_bytes(bytes[5..13].try_into().expect("8 bytes"));
    if n != expected_len as u64 {
        return Err(CodecError::WrongShape {
            expected: expected_len,
            found: n,
        });
    }
    let body = &bytes[HEADER_LEN..];
    match bytes[4] {
        0 => {
            if body.len() != 4 * expected_len {
                return Err(CodecError::WrongLength {
                    expected: HEADER_LEN + 4 * expected_len,
                    found: bytes.len(),
                });
            }
            Ok(body
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect())
        }
        1 => decode_top_k(body, expected_len, bytes.len()),
        2 => decode_packed(body, expected_len, bytes.len()),
        other => Err(CodecError::UnknownEncoding(other)),
    }
}

fn decode_top_k(body: &[u8], n: usize, total: usize) -> Result<Vec<f32>, CodecError> {
    if body.len() < 8 {
        return Err(CodecError::BadLayout("missing chunk size and k".into()));
    }
    let chunk = u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) as usize;
    let k = u32::from_le_bytes(body[4..8].try_into().expect("4 bytes")) as usize;
    if chunk == 0 || chunk > 1 << 16 || k == 0 {
        return Err(CodecError::BadLayout(format!(
            "chunk {chunk} must be in 1..=65536 and k {k} positive"
        )));
    }
    let expected = top_k_len(n, chunk, k);
    if total != expected {
        return Err(CodecError::WrongLength {
            expected,
            found: total,
        });
    }
    let mut out = vec![0f32; n];
    let mut at = 8;
    for (c, dense) in out.chunks_mut(chunk).enumerate() {
        let keep = k.min(dense.len());
        let scale = f32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes"));
        if !scale.is_finite() || scale < 0.0 {
            return Err(CodecError::BadLayout(format!(
                "chunk {c} has scale {scale}"
            )));
        }
        let positions = &body[at + 4..at + 4 + 2 * keep];
        let quantized = &body[at + 4 + 2 * keep..at + 4 + 3 * keep];
        for (p, &q) in positions.chunks_exact(2).zip(quantized) {
            let i = u16::from_le_bytes([p[0], p[1]]) as usize;
            let slot = dense.get_mut(i).ok_or_else(|| {
                CodecError::BadLayout(format!("chunk {c} names position {i} of {}", keep.max(1)))
            })?;
            *slot = q as i8 as f32 / 127.0 * scale;
        }
        at += 4 + 3 * keep;
    }
    Ok(out)
}

/// Positions (sorted) of the `k` largest-magnitude values of `block`, ties to the lower position.
fn top_positions(block: &[f32], k: usize, order: &mut Vec<u16>) {
    let keep = k.min(block.len());
    order.clear();
    order.extend(0..block.len() as u16);
    order.select_nth_unstable_by(keep - 1, |&a, &b| {
        block[b as usize]
            .abs()
            .total_cmp(&block[a as usize].abs())
            .then(a.cmp(&b))
    });
    order.truncate(keep);
    order.sort_unstable();
}

mod packed;

use packed::decode_packed;
pub use packed::{encode_packed, index_bits, packed_len};

#[cfg(test)]
mod tests;
