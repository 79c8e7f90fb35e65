//! The packed top-k layout (1 to 7 bits a value, positions in as few bits as the chunk needs): see
//! the codec's layout notes. Decoding is strict: positions increase, padding bits are zero, and
//! the scale is a finite, non-negative bfloat16.

use super::{CodecError, Encoding, HEADER_LEN, header, top_positions};

/// Bits of a position within a chunk of `chunk` values (at least one).
pub fn index_bits(chunk: usize) -> u32 {
    (usize::BITS - (chunk.max(2) - 1).leading_zeros()).max(1)
}

/// Bytes of one chunk of `len` values in the packed layout.
pub(super) fn packed_chunk_len(len: usize, chunk: usize, k: usize, bits: u8) -> usize {
    let keep = k.min(len);
    2 + (keep * (index_bits(chunk) as usize + bits as usize)).div_ceil(8)
}

/// Bytes of a packed top-k payload for `n` parameters.
pub fn packed_len(n: usize, chunk: usize, k: usize, bits: u8) -> usize {
    let full = n / chunk;
    let rest = n % chunk;
    HEADER_LEN
        + 9
        + full * packed_chunk_len(chunk, chunk, k, bits)
        + if rest > 0 {
            packed_chunk_len(rest, chunk, k, bits)
        } else {
            0
        }
}

/// The bfloat16 nearest `x` (ties to even), saturating at the largest finite value; for finite,
/// non-negative scales.
pub(super) fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = ((bits as u64 + 0x7FFF + ((bits >> 16) & 1) as u64) >> 16) as u16;
    if f32::from_bits((rounded as u32) << 16).is_finite() {
        rounded
    } else {
        0x7F7F
    }
}

pub(super) fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Appends values of up to 32 bits to a byte vector, least significant bit first.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    filled: u32,
}

impl BitWriter<'_> {
    fn put(&mut self, value: u32, bits: u32) {
        self.acc |= (value as u64) << self.filled;
        self.filled += bits;
        while self.filled >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.filled -= 8;
        }
    }

    /// Pads with zero bits to a whole byte.
    fn finish(self) {
        if self.filled > 0 {
            self.out.push(self.acc as u8);
        }
    }
}

/// Reads what `BitWriter` wrote.
struct BitReader<'a> {
    bytes: &'a [u8],
    at: usize,
    acc: u64,
    filled: u32,
}

impl BitReader<'_> {
    fn get(&mut self, bits: u32) -> u32 {
        while self.filled < bits {
            self.acc |= (self.bytes[self.at] as u64) << self.filled;
            self.at += 1;
            self.filled += 8;
        }
        let value = (self.acc & ((1u64 << bits) - 1)) as u32;
        self.acc >>= bits;
        self.filled -= bits;
        value
    }

    /// Whether the bits left before the end of the stream are all zero.
    fn padding_is_zero(&self) -> bool {
        self.acc == 0 && self.at == self.bytes.len()
    }
}

/// Keeps the `k` largest-magnitude values of each `chunk`-sized chunk (ties to the lower position)
/// at `bits` bits each, positions packed (see the module's layout). Returns the payload and the dense
/// vector it decodes to, which error feedback subtracts.
pub fn encode_packed(values: &[f32], chunk: usize, k: usize, bits: u8) -> (Vec<u8>, Vec<f32>) {
    assert!(
        (2..=1 << 16).contains(&chunk) && k > 0 && (1..=7).contains(&bits),
        "chunk must be in 2..=65536, k positive and bits in 1..=7"
    );
    let n = values.len();
    let mut out = header(
        Encoding::PackedTopK,
        n,
        packed_len(n, chunk, k, bits) - HEADER_LEN,
    );
    out.extend_from_slice(&(chunk as u32).to_le_bytes());
    out.extend_from_slice(&(k as u32).to_le_bytes());
    out.push(bits);
    let index_bits = index_bits(chunk);
    let levels = 1u32 << (bits - 1);
    let mut decoded = vec![0f32; n];
    let mut kept: Vec<u16> = Vec::with_capacity(chunk);
    for (c, block) in values.chunks(chunk).enumerate() {
        top_positions(block, k, &mut kept);
        let magnitudes = kept.iter().map(|&i| block[i as usize].abs());
        let raw = if bits == 1 {
            (magnitudes.map(f64::from).sum::<f64>() / kept.len() as f64) as f32
        } else {
            magnitudes.fold(0f32, f32::max)
        };
        let scale_bits = to_bf16(raw);
        let scale = from_bf16(scale_bits);
        out.extend_from_slice(&scale_bits.to_le_bytes());
        let mut writer = BitWriter {
            out: &mut out,
            acc: 0,
            filled: 0,
        };
        for &i in &kept {
            writer.put(i as u32, index_bits);
        }
        for &i in &kept {
            let x = block[i as usize];
            let m = if scale > 0.0 {
                ((x.abs() / scale * levels as f32).round() as i64 - 1).clamp(0, levels as i64 - 1)
                    as u32
            } else {
                0
            };
            let negative = x < 0.0;
            writer.put(m << 1 | negative as u32, bits as u32);
            let magnitude = scale * (m + 1) as f32 / levels as f32;
            decoded[c * chunk + i as usize] = if negative { -magnitude } else { magnitude };
        }
        writer.finish();
    }
    (out, decoded)
}

pub(super) fn decode_packed(body: &[u8], n: usize, total: usize) -> Result<Vec<f32>, CodecError> {
    let shape = PackedShape::read(body, n, total)?;
    let mut out = vec![0f32; n];
    let mut at = 9;
    let mut positions: Vec<usize> = Vec::with_capacity(shape.k.min(shape.chunk));
    for (c, dense) in out.chunks_mut(shape.chunk).enumerate() {
        let len = packed_chunk_len(dense.len(), shape.chunk, shape.k, shape.bits);
        shape.decode_chunk(c, &body[at..at + len], dense, &mut positions)?;
        at += len;
    }
    Ok(out)
}

/// A packed payload's chunk size, k and value bits, read from its body and checked against its
/// length.
struct PackedShape {
    chunk: usize,
    k: usize,
    bits: u8,
}

impl PackedShape {
    fn read(body: &[u8], n: usize, total: usize) -> Result<Self, CodecError> {
        if body.len() < 9 {
            return Err(CodecError::BadLayout(
                "missing chunk size, k and value bits".into(),
            ));
        }
        let chunk = u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) as usize;
        let k = u32::from_le_bytes(body[4..8].try_into().expect("4 bytes")) as usize;
        let bits = body[8];
        if !(2..=1 << 16).contains(&chunk) || k == 0 || !(1..=7).contains(&bits) {
            return Err(CodecError::BadLayout(format!(
                "chunk {chunk} must be in 2..=65536, k {k} positive and value bits {bits} in 1..=7"
            )));
        }
        let expected = packed_len(n, chunk, k, bits);
        if total != expected {
            return Err(CodecError::WrongLength {
                expected,
                found: total,
            });
        }
        Ok(Self { chunk, k, bits })
    }

    /// Decodes chunk `c` from its bytes into `dense`; `positions` is scratch.
    fn decode_chunk(
        &self,
        c: usize,
        bytes: &[u8],
        dense: &mut [f32],
        positions: &mut Vec<usize>,
    ) -> Result<(), CodecError> {
        let levels = 1u32 << (self.bits - 1);
        let scale = from_bf16(u16::from_le_bytes([bytes[0], bytes[1]]));
        if !scale.is_finite() || scale.is_sign_negative() {
            return Err(CodecError::BadLayout(format!(
                "chunk {c} has scale {scale}"
            )));
        }
        let mut reader = BitReader {
            bytes: &bytes[2..],
            at: 0,
            acc: 0,
            filled: 0,
        };
        positions.clear();
        for _ in 0..self.k.min(dense.len()) {
            let i = reader.get(index_bits(self.chunk)) as usize;
            if i >= dense.len() || positions.last().is_some_and(|&p| p >= i) {
                return Err(CodecError::BadLayout(format!(
                    "chunk {c} names position {i} after {:?} (positions increase and stay below {})",
                    positions.last(),
                    dense.len()
                )));
            }
            positions.push(i);
        }
        for &i in positions.iter() {
            let code = reader.get(self.bits as u32);
            let magnitude = scale * ((code >> 1) + 1) as f32 / levels as f32;
            dense[i] = if code & 1 == 1 { -magnitude } else { magnitude };
        }
        if !reader.padding_is_zero() {
            return Err(CodecError::BadLayout(format!(
                "chunk {c} has padding bits that are not zero"
            )));
        }
        Ok(())
    }
}
