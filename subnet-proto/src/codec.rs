//! The gradient payload. A header (magic, encoding, parameter count) followed by the values. The
//! dense encoding is little-endian f32; decoding checks the length against the task's model before
//! reading a single value.

const MAGIC: &[u8; 4] = b"SNG1";
const HEADER_LEN: usize = 4 + 1 + 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Encoding {
    DenseF32 = 0,
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
}

pub fn encode_dense(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 4 * values.len());
    out.extend_from_slice(MAGIC);
    out.push(Encoding::DenseF32 as u8);
    out.extend_from_slice(&(values.len() as u64).to_le_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decodes a payload for a model of `expected_len` parameters. Values may be non-finite: callers
/// decide what a NaN means.
pub fn decode(bytes: &[u8], expected_len: usize) -> Result<Vec<f32>, CodecError> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return Err(CodecError::NotAGradient(bytes.len()));
    }
    let encoding = bytes[4];
    if encoding != Encoding::DenseF32 as u8 {
        return Err(CodecError::UnknownEncoding(encoding));
    }
    let n = u64::from_le_bytes(bytes[5..13].try_into().expect("8 bytes"));
    if n != expected_len as u64 {
        return Err(CodecError::WrongShape {
            expected: expected_len,
            found: n,
        });
    }
    let body = &bytes[HEADER_LEN..];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_round_trip_and_shape_checks() {
        let v = vec![0.5f32, -1.25, f32::NAN];
        let bytes = encode_dense(&v);
        let back = decode(&bytes, 3).unwrap();
        assert_eq!(back[..2], v[..2]);
        assert!(back[2].is_nan());
        assert_eq!(
            decode(&bytes, 4),
            Err(CodecError::WrongShape {
                expected: 4,
                found: 3
            })
        );
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1], 3),
            Err(CodecError::WrongLength { .. })
        ));
        assert_eq!(decode(b"nope", 3), Err(CodecError::NotAGradient(4)));
    }
}
