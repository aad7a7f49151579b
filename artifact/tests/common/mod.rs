#![allow(dead_code)]

use poi_artifact::{
    f16, Artifact, ArtifactBody, Candidate, FinishReason, Generation, Hash32, Keypair, Request, SamplingParams,
    Verdict, Vote, VoteBody, VoteFigures,
};

pub fn miner() -> Keypair {
    Keypair::from_secret([7; 32])
}

pub fn validator() -> Keypair {
    Keypair::from_secret([9; 32])
}

pub fn chain_id() -> Hash32 {
    Hash32([0xc4; 32])
}

/// A small deterministic artifact: 3 positions, k = 4.
pub fn sample_body() -> ArtifactBody {
    let positions: Vec<(Vec<Candidate>, u8)> = (0..3u32)
        .map(|i| {
            let candidates = (0..4u32)
                .map(|j| Candidate { token: 1000 * i + 17 * j + 3, logprob: f16::from_f32(-0.5 - j as f32) })
                .collect();
            (candidates, (i % 4) as u8)
        })
        .collect();
    ArtifactBody {
        chain_id: chain_id(),
        miner: miner().public(),
        request: Request {
            request_uuid: *b"0123456789abcdef",
            user_seed: Some(42),
            prompt_tokens: vec![1, 9690, 198, 2, 5],
            max_tokens: 3,
            stop_token_ids: vec![2, 49151],
            binding: None,
        },
        sampling: SamplingParams::SEED_DEFAULTS,
        generation: Generation::new(4, &positions).unwrap(),
        finish_reason: FinishReason::MaxTokens,
        created_at_ms: 1_764_000_000_000,
    }
}

pub fn sample_artifact() -> Artifact {
    sample_body().sign(&miner())
}

pub fn sample_vote() -> Vote {
    let artifact = sample_artifact();
    let validator = validator();
    VoteBody {
        chain_id: chain_id(),
        artifact_id: artifact.id(),
        validator: validator.public(),
        selection_proof: validator.vrf().prove(&artifact.id()),
        verdict: Verdict::Accept,
        figures: VoteFigures {
            distance: 0.0012,
            match_ratio: 0.995,
            surprisal_z: -0.3,
            profile_id: "gguf-native-cpu/v2".into(),
            reason: String::new(),
        },
        created_at_ms: 1_764_000_000_500,
    }
    .sign(&validator)
}
