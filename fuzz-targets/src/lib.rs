//! The fuzz targets' bodies. Each takes arbitrary bytes, hands them to a decoder that reads what a
//! stranger controls (a request, a peer's answer, a file a user points the binary at) and checks what
//! must hold for every input: no panic, no allocation out of proportion to the input, and the
//! decoder's own rules (what decodes re-encodes to the same thing, a signature covers every field, a
//! refused input changes nothing). Each returns whether the decoder accepted the input, so that the
//! tests can tell the seeds reach the accepting paths.
//!
//! `fuzz/` runs them coverage-guided with cargo-fuzz (`bash fuzz/run.sh`); `tests/replay.rs` runs the
//! seeds, every input a fuzzer ever crashed on, and a fixed mutation sweep of the seeds through them
//! on the stable toolchain, in CI.

pub mod seeds;

use prost::Message;
use pseudo_gradient::codec;
use std::sync::OnceLock;
use subnet_proto::{auth, checkpoints, commitment, limits, pb};
use subxt_signer::sr25519::{Keypair, dev};

/// A target: the input, and whether the decoder accepted it.
pub type Target = fn(&[u8]) -> bool;

/// Every target by name; `fuzz/fuzz_targets/<name>.rs` runs the function of the same name.
pub const TARGETS: &[(&str, Target)] = &[
    ("requests", requests),
    ("responses", responses),
    ("gradient_payload", gradient_payload),
    ("gradient_roundtrip", gradient_roundtrip),
    ("checkpoint", checkpoint),
    ("segment_state", segment_state),
    ("task_toml", task_toml),
    ("replay_log", replay_log),
    ("data_dir", data_dir),
    ("keyfile", keyfile),
    ("yuma_input", yuma_input),
    ("timelock_commit", timelock_commit),
];

/// The server that fuzzed requests are addressed to.
pub const RECEIVER: [u8; 32] = [7; 32];
/// The one corpus file fuzzed text tasks may name.
pub const TEXT_CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tasks/data/gpl-3.0.txt");
/// The task digest fuzzed checkpoints must name.
pub const TASK_DIGEST: [u8; 32] = [5; 32];

/// A signing key for the targets that check what a signature covers (alice, derived once).
fn signer() -> &'static Keypair {
    static KEY: OnceLock<Keypair> = OnceLock::new();
    KEY.get_or_init(dev::alice)
}

/// A request a miner or validator server decodes: the first byte picks the message, the rest is its
/// protobuf encoding. Servers refuse a body over `MAX_REQUEST_BYTES` before decoding it. Whatever
/// decodes, once signed for the receiver, verifies as its signer and nobody else, not for another
/// receiver, and its nonce is accepted once.
pub fn requests(data: &[u8]) -> bool {
    let Some((&kind, body)) = data.split_first() else {
        return false;
    };
    if body.len() > limits::MAX_REQUEST_BYTES {
        return false;
    }
    match kind % 5 {
        0 => request::<pb::InfoRequest>(body),
        1 => request::<pb::CommitmentRequest>(body),
        2 => request::<pb::GradientRequest>(body),
        3 => request::<pb::LatestCheckpointRequest>(body),
        _ => request::<pb::CheckpointRequest>(body),
    }
}

/// Whether the request verified as received (its signature, receiver and timestamp).
fn request<M: auth::Authenticated + Default>(body: &[u8]) -> bool {
    let Ok(decoded) = M::decode(body) else {
        return false;
    };
    // As received: stale, unsigned, forged or for another server; whichever, never a panic.
    let accepted = auth::verify_signature(&decoded, &RECEIVER).is_ok();
    let signed = auth::sign(decoded, signer(), &RECEIVER);
    let verified = auth::verify_signature(&signed, &RECEIVER).expect("a signed request verifies");
    assert_eq!(verified.hotkey, signer().public_key().0);
    assert!(auth::verify_signature(&signed, &[8; 32]).is_err());
    let nonces = auth::NonceCache::default();
    assert!(verified.fresh(&nonces).is_ok());
    assert!(verified.fresh(&nonces).is_err(), "a nonce is accepted once");
    accepted
}

/// What a peer answers: the first byte picks the message, the rest is its encoding. A commitment
/// that verifies against what it claims stops verifying when its window changes, and its payload
/// check accepts exactly the bytes of its digest and length; an announcement that verifies under
/// alice's key stops verifying when its window changes; chunks and miner info decode or are refused.
pub fn responses(data: &[u8]) -> bool {
    let Some((&kind, body)) = data.split_first() else {
        return false;
    };
    if body.len() > limits::MAX_MESSAGE_BYTES {
        return false;
    }
    match kind % 5 {
        0 => pb::Commitment::decode(body).is_ok_and(|c| commitment_answer(&c, body)),
        1 => pb::LatestCheckpointResponse::decode(body).is_ok_and(|latest| {
            let validator = signer().public_key().0;
            let signed = checkpoints::verify_announcement(&latest, &validator).is_ok();
            if signed {
                let moved = pb::LatestCheckpointResponse {
                    window: latest.window ^ 1,
                    ..latest
                };
                assert!(checkpoints::verify_announcement(&moved, &validator).is_err());
            }
            signed
        }),
        2 => match pb::GradientChunk::decode(body) {
            Ok(pb::GradientChunk {
                part: Some(pb::gradient_chunk::Part::Commitment(c)),
            }) => commitment_answer(&c, body),
            Ok(_) => true,
            Err(_) => false,
        },
        3 => pb::InfoResponse::decode(body).is_ok(),
        _ => pb::CheckpointChunk::decode(body).is_ok(),
    }
}

/// Whether the commitment verified against the claims it makes.
fn commitment_answer(c: &pb::Commitment, payload: &[u8]) -> bool {
    let field = |name: &str, bytes: &[u8]| subnet_proto::bytes32(name, bytes).unwrap_or([3; 32]);
    let hotkey = field("hotkey", &c.hotkey);
    let task = field("task_digest", &c.task_digest);
    let checkpoint = field("checkpoint_digest", &c.checkpoint_digest);
    let expected = |window| commitment::Expected {
        hotkey: &hotkey,
        window,
        task_digest: &task,
        checkpoint_digest: &checkpoint,
        payload_len: c.payload_len,
        segments: c.segment_digests.len(),
    };
    let verified = commitment::verify_commitment(c, &expected(c.window)).is_ok();
    if verified {
        let moved = pb::Commitment {
            window: c.window ^ 1,
            ..c.clone()
        };
        assert_eq!(
            commitment::verify_commitment(&moved, &expected(moved.window)),
            Err(commitment::CommitmentError::BadSignature)
        );
    }
    let accepted = commitment::verify_payload(c, payload).is_ok();
    let matches = payload.len() as u64 == c.payload_len
        && subnet_proto::digest(payload).as_slice() == c.payload_digest.as_slice();
    assert_eq!(accepted, matches);
    verified
}

/// A gradient payload as a validator decodes it: two bytes give the model's size, three the task's
/// layout (dense, top-k or packed top-k), the rest is the payload. A payload that decodes has one value per parameter, and one
/// byte fewer or more is refused.
pub fn gradient_payload(data: &[u8]) -> bool {
    if data.len() < 5 {
        return false;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize;
    let field = u16::from_le_bytes([data[3], data[4]]) as usize;
    let layout = match data[2] {
        0..128 => codec::Layout::DenseF32,
        k @ 128..192 => codec::Layout::TopK {
            chunk: 1 + field,
            k: (k - 127) as usize,
        },
        k => codec::Layout::PackedTopK {
            chunk: 2 + (field >> 3),
            k: (k - 191) as usize,
            bits: 1 + (field & 7) as u8 % 7,
        },
    };
    let payload = &data[5..];
    let Ok(values) = codec::decode_as(payload, n, layout) else {
        return false;
    };
    assert_eq!(values.len(), n);
    assert_eq!(payload.len(), layout.payload_len(n));
    assert!(codec::decode_as(&payload[..payload.len() - 1], n, layout).is_err());
    let mut longer = payload.to_vec();
    longer.push(0);
    assert!(codec::decode_as(&longer, n, layout).is_err());
    true
}

/// A miner's pseudo-gradient and residual (pairs of f32 from the input, non-finite ones dropped)
/// through `compress` in a layout the first bytes choose: the payload has the layout's exact length,
/// decodes to what the encoder says it sent, the residual holds what was left out, and encoding is
/// deterministic.
pub fn gradient_roundtrip(data: &[u8]) -> bool {
    if data.len() < 4 {
        return false;
    }
    let field = u16::from_le_bytes([data[1], data[2]]) as usize;
    let layout = match data[0] {
        0..64 => codec::Layout::DenseF32,
        k @ 64..160 => codec::Layout::TopK {
            chunk: 1 + field % 4096,
            k: 1 + (k as usize - 64) % 64,
        },
        k => codec::Layout::PackedTopK {
            chunk: 2 + field % 4095,
            k: 1 + (k as usize - 160) % 32,
            bits: 1 + (field >> 12) as u8 % 7,
        },
    };
    let feedback = data[3] as f32 / 255.0;
    let floats: Vec<f32> = data[4..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .map(|x| {
            if x.is_finite() {
                x.clamp(-1e30, 1e30)
            } else {
                0.0
            }
        })
        .collect();
    let n = floats.len() / 2;
    let (dense, residual) = floats[..2 * n].split_at(n);
    let out = codec::compress(dense, residual, layout, feedback);
    assert_eq!(out.payload.len(), layout.payload_len(n));
    let sent = codec::decode_as(&out.payload, n, layout).expect("what compress makes decodes");
    for i in 0..n {
        let accumulated = dense[i] + feedback * residual[i];
        assert_eq!(
            (accumulated - sent[i]).to_bits(),
            out.residual_out[i].to_bits(),
            "the residual is exactly what the payload left out, at {i}"
        );
    }
    assert_eq!(codec::compress(dense, residual, layout, feedback), out);
    true
}

/// A checkpoint a miner downloads or a validator reads back: the model's size follows from the
/// input's length (and whether it carries an inner optimizer state). One that decodes has finite
/// parameters, finite moments with non-negative second ones after at least one step, re-encodes
/// to the same bytes, and is refused under any digest but its own.
pub fn checkpoint(data: &[u8]) -> bool {
    let params = if data.starts_with(b"SNCKPT02") {
        data.len().saturating_sub(56) / 12
    } else {
        data.len().saturating_sub(48) / 4
    };
    let Ok(c) = task::Checkpoint::from_bytes(data, &TASK_DIGEST, params, None) else {
        return false;
    };
    assert!(c.params.iter().all(|p| p.is_finite()));
    if let Some(inner) = &c.inner {
        assert!(inner.steps > 0);
        assert!(inner.first.iter().all(|m| m.is_finite()));
        assert!(inner.second.iter().all(|v| v.is_finite() && *v >= 0.0));
    }
    assert_eq!(c.to_bytes(), data);
    let digest = task::Checkpoint::digest_of(data);
    assert!(task::Checkpoint::from_bytes(data, &TASK_DIGEST, params, Some(&digest)).is_ok());
    let mut other = digest;
    other.0[0] ^= 1;
    assert!(task::Checkpoint::from_bytes(data, &TASK_DIGEST, params, Some(&other)).is_err());
    true
}

/// A segment's training state an audit reads: the step and range it expects are taken from the
/// input's own header. One that decodes has finite values, re-encodes to the same bytes, and is
/// refused as the state of any other step.
pub fn segment_state(data: &[u8]) -> bool {
    let word = |i: usize| {
        data.get(8 + 8 * i..16 + 8 * i)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let (step, start, end) = (word(0) as usize, word(1) as usize, word(2) as usize);
    if start > end || end - start > data.len() {
        return false;
    }
    let Ok(state) = task::segment::TrainState::from_bytes(data, step, start..end) else {
        return false;
    };
    assert!(state.params.iter().all(|p| p.is_finite()));
    assert_eq!(state.to_bytes(), data);
    assert!(task::segment::TrainState::from_bytes(data, step ^ 1, start..end).is_err());
    true
}

/// A task file. A task that validates has a canonical text that validates again into the same task
/// digest, and everything derived from it is computed without a panic.
pub fn task_toml(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    // A text task reads the file it names: fuzzed tasks may only name the shipped one (a path to
    // /dev/zero is the user's own choice, not a decoder's flaw).
    let Ok(raw) = toml::from_str::<task::TaskSpec>(text) else {
        return false;
    };
    if raw.data.text.is_some_and(|t| t.path != TEXT_CORPUS) {
        return false;
    }
    let Ok(spec) = task::TaskSpec::from_toml_str(text) else {
        return false;
    };
    let canonical = spec.canonical_toml();
    let again = task::TaskSpec::from_toml_str(&canonical)
        .unwrap_or_else(|e| panic!("the canonical form of a valid task is refused: {e}"));
    assert_eq!(again.digest(), spec.digest());
    let _ = spec.scoring.params();
    let _ = spec.tokens_per_miner_window();
    let _ = spec.inner_lr(0);
    let _ = spec.inner_lr(u64::MAX);
    true
}

/// The `[scoring]` section of the localnet task, whose validators wrote the replay-log seeds: records
/// written before a rule joined `ScoringParams` take it from there.
fn localnet_scoring() -> &'static toml::Table {
    static SCORING: OnceLock<toml::Table> = OnceLock::new();
    SCORING.get_or_init(|| {
        let task: toml::Table = include_str!("../../tasks/localnet-lm.toml")
            .parse()
            .expect("the localnet task is TOML");
        task["scoring"]
            .as_table()
            .expect("a [scoring] section")
            .clone()
    })
}

/// A replay log: records up to the first torn or corrupt frame, or an error. The valid prefix on its
/// own parses to the same records.
pub fn replay_log(data: &[u8]) -> bool {
    let scoring = Some(localnet_scoring());
    let Ok((records, good)) = validator::store::parse_log(data, scoring) else {
        return false;
    };
    assert!(good as usize <= data.len());
    let (again, again_good) = validator::store::parse_log(&data[..good as usize], scoring)
        .expect("a valid prefix parses");
    assert_eq!(again.len(), records.len());
    assert_eq!(again_good, good);
    !records.is_empty()
}

/// A validator's data directory: the input is split at `0xFF` bytes into `task.toml`, `state.json`,
/// `reveals.json`, `commitments.json` and `replay.log`. Reading never writes; the writer's open cuts only a torn tail, so
/// every record a reader saw is still there.
pub fn data_dir(data: &[u8]) -> bool {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = dir.path().join("replay.log");
    let mut parts = data.splitn(5, |&b| b == 0xFF);
    for name in [
        "task.toml",
        "state.json",
        "reveals.json",
        "commitments.json",
        "replay.log",
    ] {
        if let Some(part) = parts.next() {
            std::fs::write(dir.path().join(name), part).expect("write a part");
        }
    }
    let Ok((reader, task)) = validator::DataDir::open_existing(dir.path()) else {
        return false;
    };
    let state = reader.load_state();
    let reveals = reader.load_reveals();
    let _ = reader.load_commitments();
    let before = std::fs::read(&log).ok();
    let seen = reader.records();
    assert_eq!(std::fs::read(&log).ok(), before, "a reader wrote the log");
    if let (Ok((records, _)), Ok(writer)) = (&seen, validator::DataDir::open(dir.path(), &task)) {
        let (after, torn) = writer.records().expect("a repaired log reads");
        assert_eq!(torn, 0);
        assert_eq!(after.len(), records.len());
    }
    matches!(state, Ok(Some(_)))
        && matches!(reveals, Ok(Some(_)))
        && seen.is_ok_and(|(r, _)| !r.is_empty())
}

/// A keyfile's text: a keypair whose public key is the one the file states, or a refusal.
pub fn keyfile(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let path = std::path::Path::new("fuzzed-keyfile");
    chain_client::wallet::parse_keyfile(path, text).is_ok()
}

/// `subnet yuma`'s JSON input: a refusal, or one output per epoch with a value per uid and no more
/// emission handed out than the epoch had (fixed-point rounding aside).
pub fn yuma_input(data: &[u8]) -> bool {
    let Ok(input) = serde_json::from_slice::<scoring::simulate::SimulationInput>(data) else {
        return false;
    };
    // The JSON's size bounds the work, except for the number of epochs times uids.
    if input.epochs.len().saturating_mul(input.stake.len().max(1)) > 4096 {
        return false;
    }
    let Ok(output) = scoring::simulate::simulate(&input) else {
        return false;
    };
    let n = input.stake.len();
    assert_eq!(output.epochs.len(), input.epochs.len());
    for (spec, epoch) in input.epochs.iter().zip(&output.epochs) {
        assert_eq!(epoch.emission.len(), n);
        assert_eq!(epoch.incentive.len(), n);
        let paid: u128 = epoch.emission.iter().map(|&e| e as u128).sum();
        assert!(
            paid <= spec.emission as u128 + n as u128,
            "paid {paid} of an emission of {}",
            spec.emission
        );
    }
    true
}

/// A timelocked weight commit as the chain opens it in its reveal epoch: weights for the committer,
/// or the reason the chain would log; never a panic, whatever the ciphertext claims.
pub fn timelock_commit(data: &[u8]) -> bool {
    static PULSE: OnceLock<[u8; 48]> = OnceLock::new();
    let pulse = PULSE.get_or_init(|| {
        chain_client::tlock::Beacon::from_bytes(&[1; 32])
            .expect("a scalar below the group order")
            .sign(1000)
    });
    let committer = chain_client::types::AccountId(signer().public_key().0);
    chain_client::tlock::open_weights(data, pulse, &committer).is_ok()
}
