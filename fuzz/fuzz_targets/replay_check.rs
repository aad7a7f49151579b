//! The replay check on validly signed artifacts with arbitrary candidates,
//! log-probs and choices (raw bytes would almost never get past the
//! signature): it never panics, and an artifact it passes replays exactly.
#![no_main]
use libfuzzer_sys::fuzz_target;
use poi_artifact::{f16, logged_half, ArtifactBody, Candidate, FinishReason, Generation, Keypair, Request};
use poi_chain_spec::ChainSpec;
use poi_verifier::replay::ReplayChecker;

fuzz_target!(|data: &[u8]| {
    let spec = ChainSpec::devnet();
    let k = usize::from(spec.logged_k);
    let Some((&flags, rest)) = data.split_first() else { return };
    let per_position = 1 + 4 * k;
    let positions: Vec<(Vec<Candidate>, u8)> = rest
        .chunks_exact(per_position)
        .take(64)
        .map(|chunk| {
            let mut candidates: Vec<Candidate> = chunk[1..]
                .chunks_exact(4)
                .enumerate()
                .map(|(i, c)| {
                    let (token, bits) = (u16::from_le_bytes([c[0], c[1]]), u16::from_le_bytes([c[2], c[3]]));
                    if flags & 4 == 0 {
                        Candidate { token: u32::from(token), logprob: f16::from_bits(bits) }
                    } else {
                        // Well-formed lists (distinct tokens, finite non-positive
                        // log-probs, in order) reach the sampler replay itself.
                        let logprob = logged_half(-f64::from(bits) / 4096.0);
                        Candidate { token: i as u32 * 97 + u32::from(token % 97), logprob }
                    }
                })
                .collect();
            if flags & 4 != 0 {
                candidates.sort_by(|a, b| b.logprob.total_cmp(&a.logprob).then(a.token.cmp(&b.token)));
            }
            (candidates, chunk[0] % spec.logged_k as u8)
        })
        .collect();
    let Ok(generation) = Generation::new(spec.logged_k, &positions) else { return };
    if generation.is_empty() {
        return;
    }
    let key = Keypair::from_secret([7; 32]);
    let max_tokens = generation.len() as u32;
    let body = ArtifactBody {
        chain_id: spec.chain_id(),
        miner: key.public(),
        request: Request::new([flags; 16], (flags & 1 == 1).then_some(u64::from(flags)), vec![1, 2, 3], max_tokens),
        sampling: spec.sampling,
        generation,
        finish_reason: if flags & 2 == 2 { FinishReason::Eos } else { FinishReason::MaxTokens },
        created_at_ms: 0,
    };
    let artifact = body.sign(&key);
    let mut checker = ReplayChecker::new(spec.clone());
    let first = checker.check(&artifact);
    // Deterministic: the same answer twice, with the checker's scratch
    // reused (compared as text: a NaN in an error is not equal to itself).
    assert_eq!(format!("{first:?}"), format!("{:?}", checker.check(&artifact)));
});
