//! Valid inputs for each target, made by the encoders the subnet itself uses, so that fuzzing starts
//! from what real peers send (signed requests are signed when made, so they are fresh). `cargo run
//! -p fuzz-targets --example write_seeds DIR` writes them under `DIR/<target>/`; `fuzz/seeds/` holds
//! the seeds taken from a real validator's data directory.

use crate::{RECEIVER, TASK_DIGEST, TEXT_CORPUS, signer};
use prost::Message as _;
use pseudo_gradient::codec;
use subnet_proto::{auth, checkpoints, commitment, pb};

/// The substrate development phrase (alice's), for a keyfile seed.
const DEV_PHRASE: &str = "bottom drive obey lake curtain smoke basket hold race lonely fit walk";

/// (target, input) pairs.
pub fn generated() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    out.extend(requests().into_iter().map(|s| ("requests", s)));
    out.extend(responses().into_iter().map(|s| ("responses", s)));
    out.extend(gradients());
    out.push(("checkpoint", checkpoint()));
    out.push(("checkpoint", checkpoint_carrying()));
    out.push(("segment_state", segment_state(0)));
    out.push(("segment_state", segment_state(6)));
    for task in [
        include_str!("../../tasks/tiny-lm.toml"),
        include_str!("../../tasks/localnet-lm.toml"),
        include_str!("../../tasks/text-lm.toml"),
        include_str!("../../tasks/wine-quality.toml"),
    ] {
        let task = task.replace("\"data/gpl-3.0.txt\"", &format!("{TEXT_CORPUS:?}"));
        out.push(("task_toml", task.into_bytes()));
    }
    out.push(("keyfile", keyfile()));
    out.push(("yuma_input", YUMA.as_bytes().to_vec()));
    out.push(("timelock_commit", timelock_commit()));
    out
}

fn requests() -> Vec<Vec<u8>> {
    fn signed<M: auth::Authenticated>(kind: u8, request: M) -> Vec<u8> {
        let mut bytes = vec![kind];
        bytes.extend(auth::sign(request, signer(), &RECEIVER).encode_to_vec());
        bytes
    }
    vec![
        signed(0, pb::InfoRequest::default()),
        signed(
            1,
            pb::CommitmentRequest {
                auth: None,
                window: 3,
                task_digest: TASK_DIGEST.to_vec(),
            },
        ),
        signed(
            2,
            pb::GradientRequest {
                auth: None,
                window: 3,
                task_digest: TASK_DIGEST.to_vec(),
                part: pb::GradientPart::Dense as i32,
                segment: 0,
            },
        ),
        signed(3, pb::LatestCheckpointRequest::default()),
        signed(
            4,
            pb::CheckpointRequest {
                auth: None,
                digest: vec![9; 32],
            },
        ),
    ]
}

fn signed_commitment() -> pb::Commitment {
    let payload = codec::encode_dense(&[0.5, -0.25, 1.0]);
    commitment::commit(
        signer(),
        &commitment::Claims {
            window: 3,
            task_digest: TASK_DIGEST,
            checkpoint_digest: [4; 32],
            payload_digest: subnet_proto::digest(&payload),
            payload_len: payload.len() as u64,
            dense_digest: [6; 32],
            residual_in_digest: [0; 32],
            residual_window: 0,
            residual_out_digest: [0; 32],
            group_capacity: 0,
            segments: vec![[7; 32]],
            backend: "cpu:x86_64/0123abcd".into(),
        },
    )
}

fn responses() -> Vec<Vec<u8>> {
    let tagged = |kind: u8, body: Vec<u8>| [vec![kind], body].concat();
    let c = signed_commitment();
    let announcement = checkpoints::sign_announcement(
        pb::LatestCheckpointResponse {
            digest: vec![4; 32],
            window: 3,
            len: 60,
            previous_digest: vec![2; 32],
            aggregated: vec![pb::AggregatedGradient {
                uid: 1,
                commitment: Some(c.clone()),
                clip_norm: 0.0,
            }],
            clip_norm: 1.5,
            step_scale: 0.5,
            signature: Vec::new(),
        },
        signer(),
    );
    vec![
        tagged(0, c.encode_to_vec()),
        tagged(1, announcement.encode_to_vec()),
        tagged(
            2,
            pb::GradientChunk {
                part: Some(pb::gradient_chunk::Part::Commitment(c)),
            }
            .encode_to_vec(),
        ),
        tagged(
            3,
            pb::InfoResponse {
                hotkey: signer().public_key().0.to_vec(),
                task_digest: TASK_DIGEST.to_vec(),
                checkpoint_digest: vec![4; 32],
                window: 3,
                backend: "flex".into(),
                software_version: "0.1.0".into(),
            }
            .encode_to_vec(),
        ),
        tagged(
            4,
            pb::CheckpointChunk {
                data: vec![1, 2, 3].into(),
            }
            .encode_to_vec(),
        ),
    ]
}

fn gradients() -> Vec<(&'static str, Vec<u8>)> {
    let values: Vec<f32> = (0..40).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
    let n = (values.len() as u16).to_le_bytes();
    let dense = codec::encode_dense(&values);
    let (chunk, k) = (16usize, 3usize);
    let (top_k, _) = codec::encode_top_k(&values, chunk, k);
    let chunk_bytes = ((chunk - 1) as u16).to_le_bytes();
    let mut roundtrip = vec![64 + k as u8 - 1, chunk_bytes[0], chunk_bytes[1], 200];
    roundtrip.extend(values.iter().chain(&values).flat_map(|v| v.to_le_bytes()));
    // Packed: chunk 2 + (field >> 3) = 16, bits 1 + (field & 7) = 3, k = 3.
    let bits = 3u8;
    let (packed, _) = codec::encode_packed(&values, chunk, k, bits);
    let packed_field = (((chunk - 2) << 3) as u16 | (bits - 1) as u16).to_le_bytes();
    // Round trip: chunk 2 + field % 4095 = 16, bits 1 + (field >> 12) % 7 = 2, k = 3.
    let mut packed_roundtrip = vec![160 + k as u8 - 1];
    packed_roundtrip.extend((((chunk - 2) | 1 << 12) as u16).to_le_bytes());
    packed_roundtrip.push(255);
    packed_roundtrip.extend(values.iter().chain(&values).flat_map(|v| v.to_le_bytes()));
    let mut dense_roundtrip = vec![0, 0, 0, 128];
    dense_roundtrip.extend(values.iter().chain(&values).flat_map(|v| v.to_le_bytes()));
    vec![
        ("gradient_payload", [&n[..], &[0, 0, 0], &dense].concat()),
        (
            "gradient_payload",
            [&n[..], &[127 + k as u8], &chunk_bytes, &top_k].concat(),
        ),
        (
            "gradient_payload",
            [&n[..], &[191 + k as u8], &packed_field, &packed].concat(),
        ),
        ("gradient_roundtrip", roundtrip),
        ("gradient_roundtrip", packed_roundtrip),
        ("gradient_roundtrip", dense_roundtrip),
    ]
}

fn checkpoint() -> Vec<u8> {
    task::Checkpoint::new(TASK_DIGEST, vec![0.25, -1.0, 3.5, 0.0]).to_bytes()
}

/// A checkpoint of a task that carries the inner optimizer's state.
fn checkpoint_carrying() -> Vec<u8> {
    let inner = task::InnerState {
        steps: 30,
        first: vec![0.5, -0.25, 0.0, 1e-3],
        second: vec![1e-4, 0.0, 2.0, 1e-8],
    };
    task::Checkpoint::with_inner(TASK_DIGEST, vec![0.25, -1.0, 3.5, 0.0], Some(inner)).to_bytes()
}

fn segment_state(step: usize) -> Vec<u8> {
    let moments = |x: f32| if step == 0 { vec![] } else { vec![x; 3] };
    task::segment::TrainState {
        step,
        range: 1..4,
        params: vec![0.5, -2.0, 1.0],
        first_moment: moments(0.25),
        second_moment: moments(1e-3),
    }
    .to_bytes()
}

fn keyfile() -> Vec<u8> {
    let mnemonic =
        subxt_signer::bip39::Mnemonic::parse(DEV_PHRASE).expect("the development phrase parses");
    serde_json::to_vec(&chain_client::wallet::keyfile(&mnemonic)).expect("a keyfile serializes")
}

fn timelock_commit() -> Vec<u8> {
    let beacon = chain_client::tlock::Beacon::from_bytes(&[1; 32]).expect("a valid scalar");
    let target = chain_client::TimelockTarget {
        beacon_public_key: beacon.public_key(),
        reveal_round: 1000,
        commit_reveal_version: 4,
    };
    let committer = chain_client::types::AccountId(signer().public_key().0);
    chain_client::tlock::commit_weights(&target, &committer, &[0, 1, 2], &[65535, 100, 7], 1)
        .expect("a small commit encrypts")
}

/// Three uids, two epochs: a validator and two miners.
const YUMA: &str = r#"{
  "stake": [1000000000, 0, 0],
  "epochs": [
    {"block": 360, "emission": 1000000000, "weights": [[[1, 65535], [2, 30000]], [], []], "last_update": [350, 0, 0]},
    {"block": 720, "emission": 1000000000, "weights": [[[1, 20000], [2, 65535]], [], []], "last_update": [700, 0, 0]}
  ]
}"#;
