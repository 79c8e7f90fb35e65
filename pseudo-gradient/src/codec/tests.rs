use super::packed::{from_bf16, packed_chunk_len, to_bf16};
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

#[test]
fn top_k_keeps_the_largest_per_chunk_and_decodes_what_encode_reports() {
    // Two full chunks of 4 and a tail of 2, k = 2.
    let v = [0.1f32, -0.9, 0.3, 0.05, 2.0, 0.0, -1.0, 0.5, 0.2, -0.1];
    let (bytes, decoded) = encode_top_k(&v, 4, 2);
    assert_eq!(bytes.len(), top_k_len(10, 4, 2));
    assert_eq!(decode(&bytes, 10).unwrap(), decoded);
    let kept: Vec<usize> = decoded
        .iter()
        .enumerate()
        .filter(|(_, x)| **x != 0.0)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(kept, vec![1, 2, 4, 6, 8, 9]);
    // The largest of each chunk is exact; the others are within half a quantization step.
    assert_eq!(decoded[1], -0.9);
    assert_eq!(decoded[4], 2.0);
    assert!((decoded[2] - 0.3).abs() <= 0.9 / 127.0 / 2.0 + 1e-7);
}

#[test]
fn only_the_tasks_layout_decodes() {
    let v = [1.0f32, -2.0, 3.0, 0.5, 0.25];
    let task = Layout::TopK { chunk: 4, k: 2 };
    let (bytes, decoded) = encode_top_k(&v, 4, 2);
    assert_eq!(bytes.len(), task.payload_len(5));
    assert_eq!(decode_as(&bytes, 5, task).unwrap(), decoded);
    // A denser top-k, a different chunk, or dense f32 all decode in general but not as the task's.
    for other in [
        encode_top_k(&v, 4, 3).0,
        encode_top_k(&v, 2, 2).0,
        encode_dense(&v),
    ] {
        assert!(
            matches!(decode_as(&other, 5, task), Err(CodecError::OtherLayout(_))),
            "{:?}",
            decode_as(&other, 5, task)
        );
        assert!(decode(&other, 5).is_ok());
    }
    assert!(matches!(
        decode_as(&bytes, 5, Layout::DenseF32),
        Err(CodecError::OtherLayout(_))
    ));
}

#[test]
fn compress_leaves_exactly_what_it_did_not_send() {
    let dense = [0.5f32, -0.1, 0.02, 0.3, -0.7, 0.05];
    let residual = [0.1f32, 0.2, -0.3, 0.0, 0.01, 0.4];
    let layout = Layout::TopK { chunk: 3, k: 1 };
    let out = compress(&dense, &residual, layout, 1.0);
    let sent = decode_as(&out.payload, 6, layout).unwrap();
    for i in 0..6 {
        let accumulated = dense[i] + residual[i];
        assert_eq!(out.residual_out[i], accumulated - sent[i], "position {i}");
    }
    // The same inputs give the same bytes: a validator can recompute the payload.
    assert_eq!(compress(&dense, &residual, layout, 1.0), out);
    // Dense payloads carry everything and leave nothing.
    let dense_out = compress(&dense, &residual, Layout::DenseF32, 1.0);
    assert!(dense_out.residual_out.iter().all(|&r| r == 0.0));
}

#[test]
fn a_group_payload_encodes_its_range_and_the_residual_keeps_the_rest() {
    let dense = [0.0f32, 0.0, 0.02, 0.3, -0.7, 0.0];
    let residual = [0.1f32, 0.2, -0.3, 0.0, 0.01, 0.4];
    let layout = Layout::TopK { chunk: 3, k: 1 };
    let out = compress_range(&dense, &residual, layout, 0.5, 2..5);
    assert_eq!(out.payload.len(), layout.payload_len(3));
    let sent = decode_as(&out.payload, 3, layout).unwrap();
    for i in 0..6 {
        let accumulated = dense[i] + 0.5 * residual[i];
        let sent = if (2..5).contains(&i) {
            sent[i - 2]
        } else {
            0.0
        };
        assert_eq!(out.residual_out[i], accumulated - sent, "position {i}");
    }
    // The whole range is `compress`.
    assert_eq!(
        compress_range(&dense, &residual, layout, 0.5, 0..6),
        compress(&dense, &residual, layout, 0.5)
    );
}

#[test]
fn malformed_top_k_payloads_are_refused() {
    let (mut bytes, _) = encode_top_k(&[1.0, 2.0, 3.0, 4.0], 4, 2);
    assert!(matches!(
        decode(&bytes[..bytes.len() - 1], 4),
        Err(CodecError::WrongLength { .. })
    ));
    // Position 9 in a chunk of 4.
    let pos = HEADER_LEN + 8 + 4;
    bytes[pos] = 9;
    assert!(matches!(decode(&bytes, 4), Err(CodecError::BadLayout(_))));
    let (mut bytes, _) = encode_top_k(&[1.0, 2.0, 3.0, 4.0], 4, 2);
    bytes[HEADER_LEN + 8..HEADER_LEN + 12].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(matches!(decode(&bytes, 4), Err(CodecError::BadLayout(_))));
}

/// Deterministic pseudo-random values with a few large ones, as a pseudo-gradient has.
fn gradient_like(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            (u * u * u * 8.0) as f32
        })
        .collect()
}

#[test]
fn packed_top_k_round_trips_at_every_width_and_is_its_own_canonical_form() {
    for bits in 1..=7u8 {
        for (n, chunk, k) in [(10_000, 4096, 8), (777, 64, 5), (5, 4, 4), (3, 16, 8)] {
            let v = gradient_like(n, bits as u64 * 1000 + n as u64);
            let layout = Layout::PackedTopK { chunk, k, bits };
            let (bytes, decoded) = layout.encode(&v);
            assert_eq!(bytes.len(), layout.payload_len(n), "{layout} n {n}");
            let back = decode_as(&bytes, n, layout).unwrap();
            // Bit for bit what the encoder reported, and re-encoding it gives the same bytes.
            assert!(
                back.iter()
                    .zip(&decoded)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
            assert_eq!(layout.encode(&back).0, bytes, "{layout} n {n}");
            // Each chunk keeps min(k, len) values with the signs of the originals.
            for (block, original) in back.chunks(chunk).zip(v.chunks(chunk)) {
                let kept: Vec<usize> = (0..block.len()).filter(|&i| block[i] != 0.0).collect();
                assert_eq!(kept.len(), k.min(block.len()));
                for i in kept {
                    assert_eq!(block[i].signum(), original[i].signum());
                }
            }
        }
    }
}

#[test]
fn packed_values_are_within_half_a_level_of_the_kept_ones() {
    let v = gradient_like(4096, 7);
    for bits in 2..=7u8 {
        let (_, decoded) = encode_packed(&v, 4096, 64, bits);
        let largest = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        let level = largest / (1u32 << (bits - 1)) as f32;
        for (x, d) in v.iter().zip(&decoded) {
            if *d != 0.0 && x.abs() >= level {
                assert!(
                    (x - d).abs() <= level * 0.5 * 1.01,
                    "{bits} bits: {x} as {d}"
                );
            }
        }
    }
    // One bit: every kept value is the mean kept magnitude with its sign.
    let (_, decoded) = encode_packed(&v, 4096, 64, 1);
    let kept: Vec<f32> = decoded.iter().copied().filter(|d| *d != 0.0).collect();
    assert_eq!(kept.len(), 64);
    assert!(kept.iter().all(|d| d.abs() == kept[0].abs()));
}

#[test]
fn tiny_lm_at_eight_values_a_chunk_and_two_bits_is_over_a_thousand_times_smaller() {
    let n = 3_323_648;
    let layout = Layout::of_task(4096, 8, 2);
    assert_eq!(index_bits(4096), 12);
    // A chunk: a 2-byte scale and 8 x (12 + 2) bits = 14 bytes.
    assert_eq!(packed_chunk_len(4096, 4096, 8, 2), 16);
    assert!(layout.ratio(n) > 1000.0, "{}", layout.ratio(n));
}

#[test]
fn malformed_packed_payloads_are_refused() {
    let v = [0.5f32, -1.0, 0.25, 2.0, 0.0, -0.75];
    let layout = Layout::PackedTopK {
        chunk: 4,
        k: 2,
        bits: 3,
    };
    let (good, _) = layout.encode(&v);
    assert!(decode(&good, 6).is_ok());
    let refused = |bytes: &[u8]| decode(bytes, 6).unwrap_err();
    // One byte fewer or more.
    assert!(matches!(
        refused(&good[..good.len() - 1]),
        CodecError::WrongLength { .. }
    ));
    let mut longer = good.clone();
    longer.push(0);
    assert!(matches!(refused(&longer), CodecError::WrongLength { .. }));
    // Chunk 0's stream: positions 1 and 3 (2 bits each), then two 3-bit values, 10 bits in 2 bytes.
    let stream = HEADER_LEN + 9 + 2;
    let body = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        edit(&mut b);
        b
    };
    // Positions out of order (3 then 1) and repeated (3 then 3).
    let swapped = body(&|b| b[stream] = (b[stream] & !0b1111) | 0b0111);
    assert!(matches!(refused(&swapped), CodecError::BadLayout(_)));
    let repeated = body(&|b| b[stream] = (b[stream] & !0b1111) | 0b1111);
    assert!(matches!(refused(&repeated), CodecError::BadLayout(_)));
    // A padding bit set.
    let padded = body(&|b| b[stream + 1] |= 0x80);
    assert!(matches!(refused(&padded), CodecError::BadLayout(_)));
    // A negative or infinite scale.
    for scale in [0xBF80u16, 0x7F80] {
        let bad = body(&|b| b[stream - 2..stream].copy_from_slice(&scale.to_le_bytes()));
        assert!(
            matches!(refused(&bad), CodecError::BadLayout(_)),
            "{scale:x}"
        );
    }
    // Value bits outside 1..=7, and another width than the task's.
    let wide = body(&|b| b[HEADER_LEN + 8] = 8);
    assert!(matches!(refused(&wide), CodecError::BadLayout(_)));
    let (other, _) = Layout::PackedTopK {
        chunk: 4,
        k: 2,
        bits: 2,
    }
    .encode(&v);
    assert!(matches!(
        decode_as(&other, 6, layout),
        Err(CodecError::OtherLayout(_))
    ));
    // The tail chunk (2 values) keeps 2: a position past its end is refused.
    let tail = good.len() - 2;
    let past = body(&|b| b[tail] = (b[tail] & !0b11) | 0b10);
    assert!(
        matches!(refused(&past), CodecError::BadLayout(_)),
        "{:?}",
        decode(&past, 6)
    );
}

#[test]
fn bfloat16_scales_round_to_nearest_and_saturate() {
    assert_eq!(from_bf16(to_bf16(1.0)), 1.0);
    assert_eq!(from_bf16(to_bf16(0.0)), 0.0);
    let x = 0.123_456f32;
    assert!((from_bf16(to_bf16(x)) - x).abs() <= x / 256.0);
    assert!(from_bf16(to_bf16(f32::MAX)).is_finite());
}
