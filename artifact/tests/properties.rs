//! Decoders never panic, whatever the bytes; whatever decodes re-encodes to the
//! same bytes (canonical); random well-formed artifacts round trip.

mod common;

use poi_artifact::{f16, Artifact, ArtifactBody, Candidate, FinishReason, Generation, Request, Vote};
use proptest::prelude::*;

const LIMIT: usize = 1 << 20;

fn arb_body() -> impl Strategy<Value = ArtifactBody> {
    let k = 1u16..=8;
    (k, 1usize..=12, prop::collection::vec(any::<u32>(), 0..16), any::<Option<u64>>(), any::<[u8; 16]>())
        .prop_flat_map(|(k, n, prompt, seed, uuid)| {
            // Canonical halves: +0 or a negative finite value.
            let cells = prop::collection::vec((any::<u32>(), 0u16..0x7C00), usize::from(k) * n);
            let chosen = prop::collection::vec(0..k as u8, n);
            (Just(k), cells, chosen, Just(prompt), Just(seed), Just(uuid), 0u8..3, any::<u64>())
        })
        .prop_map(|(k, cells, chosen, prompt_tokens, user_seed, request_uuid, finish, created_at_ms)| {
            let positions: Vec<(Vec<Candidate>, u8)> = cells
                .chunks(usize::from(k))
                .zip(chosen)
                .map(|(chunk, c)| {
                    (
                        chunk
                            .iter()
                            .map(|&(token, bits)| Candidate {
                                token,
                                logprob: f16::from_bits(if bits == 0 { 0 } else { 0x8000 | bits }),
                            })
                            .collect(),
                        c,
                    )
                })
                .collect();
            let mut body = common::sample_body();
            body.request = Request::new(request_uuid, user_seed, prompt_tokens, positions.len() as u32);
            body.request.stop_token_ids = vec![created_at_ms as u32; (created_at_ms % 4) as usize];
            body.generation = Generation::new(k, &positions).unwrap();
            body.finish_reason = [FinishReason::Eos, FinishReason::MaxTokens, FinishReason::Stop][finish as usize];
            body.created_at_ms = created_at_ms;
            body
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn artifact_decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Artifact::decode(&bytes, LIMIT);
        let mut versioned = bytes;
        versioned.insert(0, 1);
        let _ = Artifact::decode(&versioned, LIMIT);
    }

    #[test]
    fn vote_decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Vote::decode(&bytes);
    }

    #[test]
    fn mutated_artifacts_decode_canonically_or_fail(index in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = common::sample_artifact().encode();
        let at = index.index(bytes.len());
        bytes[at] = byte;
        if let Ok(artifact) = Artifact::decode(&bytes, LIMIT) {
            prop_assert_eq!(artifact.encode(), bytes);
        }
    }

    #[test]
    fn mutated_votes_decode_canonically_or_fail(index in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = common::sample_vote().encode();
        let at = index.index(bytes.len());
        bytes[at] = byte;
        if let Ok(vote) = Vote::decode(&bytes) {
            prop_assert_eq!(vote.encode(), bytes);
        }
    }

    #[test]
    fn random_artifacts_round_trip(body in arb_body()) {
        let artifact = body.sign(&common::miner());
        let bytes = artifact.encode();
        let decoded = Artifact::decode(&bytes, LIMIT).unwrap();
        prop_assert_eq!(decoded.encode(), bytes);
        prop_assert_eq!(decoded.id(), artifact.id());
        prop_assert!(decoded.verify_signature().is_ok());
        // NaN and infinite log-probs have no JSON form; every finite half does, exactly.
        if decoded.body.generation.positions().all(|p| p.logprobs.iter().all(|l| l.is_finite())) {
            let back = Artifact::from_json_str(&decoded.to_json_string()).unwrap();
            prop_assert_eq!(back.encode(), artifact.encode());
        }
    }
}
