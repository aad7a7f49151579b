//! A simulated miner: synthetic next-token distributions, sampled with sampler
//! v1 exactly as a real miner does, so honest and fraudulent artifacts can be
//! built without a model. Tests, the replay and network benchmarks and the
//! devnet's load use it; nothing on a validator's path does.

use crate::Sampler;
use poi_artifact::{
    candidate_order, logged_half, Artifact, ArtifactBody, Candidate, FinishReason, Generation, History, Keypair,
    Request,
};
use poi_chain_spec::ChainSpec;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn miner() -> Keypair {
    Keypair::from_secret([11; 32])
}

/// A position's top candidates: distinct ids and log-probs of a plausible
/// next-token distribution (a few likely tokens, a long tail beyond the list).
pub fn synthetic_candidates(rng: &mut StdRng, k: usize, vocab: u32) -> Vec<(u32, f64)> {
    let spread = rng.gen_range(0.3..2.5);
    let mut logit = 0.0;
    let logits: Vec<f64> = (0..k)
        .map(|_| {
            logit -= spread * -(1.0 - rng.gen::<f64>()).ln();
            logit
        })
        .collect();
    let tail = (logits[k - 1] - 1.0).exp() * 200.0;
    let norm = (logits.iter().map(|l| l.exp()).sum::<f64>() + tail).ln();
    let ids = rand::seq::index::sample(rng, vocab as usize, k);
    ids.iter().zip(&logits).map(|(id, l)| (id as u32, l - norm)).collect()
}

/// How the chosen token is picked.
pub enum Chooser {
    /// Sampler v1 with the run seed, bound by the devnet requester: an
    /// honest miner.
    Seeded,
    /// Sampled from the logged distribution with private randomness: honest,
    /// but nothing to replay (unseeded).
    HonestUnseeded,
    /// Another model chose: every logged candidate's log-prob perturbed by
    /// Gaussian noise of this size, then sampled with the chain's parameters.
    OtherModel(f64),
    /// As `OtherModel`, but only among the logged distribution's kept
    /// candidates: the hardest case for the surprisal test, since a token
    /// outside the kept set is rejected outright.
    OtherModelInKept(f64),
    /// Always the most likely kept candidate, without a seed: tokens more
    /// likely than an honest miner's draws, which banks credit against a
    /// sequential test that sums evidence from the start.
    MostLikely,
}

pub struct Built {
    pub artifact: Artifact,
    pub bytes: Vec<u8>,
}

pub fn body_with(spec: &ChainSpec, n: usize, seed: u64, chooser: Chooser) -> ArtifactBody {
    let mut rng = StdRng::seed_from_u64(seed);
    let params = spec.sampling;
    let k = usize::from(spec.logged_k);
    let prompt: Vec<u32> = (0..16).map(|_| rng.gen_range(3..spec.model.vocab_size)).collect();
    let user_seed = match chooser {
        Chooser::Seeded => Some(rng.gen()),
        _ => None,
    };
    let mut request = Request::new(rng.gen(), user_seed, prompt.clone(), n as u32);
    if user_seed.is_some() {
        // Honest traffic: the devnet's requester fixed the seed.
        request.bind(&spec.chain_id(), &poi_chain_spec::devnet_requester());
    }
    let run_seed = request.run_seed();
    let mut history = History::new(&prompt);
    let mut sampler = Sampler::new();
    let mut positions = Vec::with_capacity(n);
    for position in 0..n {
        let raw = synthetic_candidates(&mut rng, k, spec.model.vocab_size);
        let mut candidates: Vec<Candidate> =
            raw.iter().map(|&(token, l)| Candidate { token, logprob: logged_half(l) }).collect();
        // Never the eos token mid-sequence.
        for c in &mut candidates {
            if c.token == spec.model.eos_token_id {
                c.token = spec.model.vocab_size - 1 - c.token;
            }
        }
        let score = |c: &Candidate| (history.penalised(c.token, c.logprob.to_f64(), &params), c.token);
        candidates.sort_by(|a, b| candidate_order(score(a), score(b)));
        let listed = || candidates.iter().map(|c| (c.token, c.logprob.to_f64()));
        let chosen = match chooser {
            Chooser::Seeded => {
                sampler.choose(listed(), &history, &params, run_seed.as_ref().unwrap(), position as u32).unwrap()
            }
            Chooser::HonestUnseeded => {
                let kept = sampler.distribution(listed(), &history, &params).to_vec();
                crate::choose_from(&kept, rng.gen()).unwrap()
            }
            Chooser::OtherModel(noise) => {
                let perturbed: Vec<(u32, f64)> =
                    listed().map(|(t, l)| (t, l + noise * standard_normal(&mut rng))).collect();
                let kept = sampler.distribution(perturbed.into_iter(), &history, &params).to_vec();
                crate::choose_from(&kept, rng.gen()).unwrap()
            }
            Chooser::OtherModelInKept(noise) => {
                let mut kept = sampler.distribution(listed(), &history, &params).to_vec();
                kept.iter_mut().for_each(|k| k.probability *= (noise * standard_normal(&mut rng)).exp());
                let total: f64 = kept.iter().map(|k| k.probability).sum();
                kept.iter_mut().for_each(|k| k.probability /= total);
                crate::choose_from(&kept, rng.gen()).unwrap()
            }
            Chooser::MostLikely => sampler.distribution(listed(), &history, &params)[0].index,
        };
        history.push(candidates[chosen].token);
        positions.push((candidates, chosen as u8));
    }
    ArtifactBody {
        chain_id: spec.chain_id(),
        miner: miner().public(),
        request,
        sampling: params,
        generation: Generation::new(spec.logged_k, &positions).unwrap(),
        finish_reason: FinishReason::MaxTokens,
        created_at_ms: 1_764_000_000_000 + seed,
    }
}

pub fn build(spec: &ChainSpec, n: usize, seed: u64, chooser: Chooser) -> Built {
    let artifact = body_with(spec, n, seed, chooser).sign(&miner());
    let bytes = artifact.encode();
    Built { artifact, bytes }
}

/// `build` stamped with another creation time: fixtures carry a fixed one
/// so that their bytes are reproducible, which a node's admission window
/// (a wall-clock rule) refuses once it is old.
pub fn build_at(spec: &ChainSpec, n: usize, seed: u64, chooser: Chooser, created_at_ms: u64) -> Built {
    let mut body = body_with(spec, n, seed, chooser);
    body.created_at_ms = created_at_ms;
    let artifact = body.sign(&miner());
    let bytes = artifact.encode();
    Built { artifact, bytes }
}

/// `build`'s canonical bytes with the last (signature) byte flipped: well
/// formed, but the miner's signature no longer verifies.
pub fn forged(spec: &ChainSpec, n: usize, seed: u64) -> Vec<u8> {
    let mut bytes = build(spec, n, seed, Chooser::Seeded).bytes;
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    bytes
}

fn standard_normal(rng: &mut StdRng) -> f64 {
    let (u, v): (f64, f64) = (1.0 - rng.gen::<f64>(), rng.gen());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// A vote by `validator` on `artifact` under the chain's profile, with its
/// VRF proof and clean figures: what an honest validator signs, for tests
/// and benchmarks that need many.
pub fn vote(
    spec: &ChainSpec,
    validator: &Keypair,
    artifact: &poi_artifact::ArtifactId,
    verdict: poi_artifact::Verdict,
    created_at_ms: u64,
) -> poi_artifact::Vote {
    poi_artifact::VoteBody {
        chain_id: spec.chain_id(),
        artifact_id: *artifact,
        validator: validator.public(),
        selection_proof: validator.vrf().prove(artifact),
        verdict,
        figures: poi_artifact::VoteFigures {
            distance: 0.0,
            match_ratio: 1.0,
            surprisal_z: 0.0,
            profile_id: spec.numerics.label(),
            reason: String::new(),
        },
        created_at_ms,
    }
    .sign(validator)
}
