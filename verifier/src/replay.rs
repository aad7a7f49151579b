//! The replay check (DESIGN §5): what every peer runs on every artifact before
//! forwarding it. Rules run in a fixed order and the first failure is reported
//! with the rule and, where it applies, the position.

use poi_artifact::{Artifact, ChainId, DecodeError, FinishReason, History, SignatureError};
use poi_chain_spec::ChainSpec;
use thiserror::Error;

use crate::sampler::Sampler;
use crate::surprisal::Surprisal;

/// A structural rule broken at one position.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum StructureRule {
    #[error("token id {token} is outside the vocabulary of {vocab}")]
    TokenOutOfVocabulary { token: u32, vocab: u32 },
    #[error("token id {token} is listed twice")]
    DuplicateCandidate { token: u32 },
    #[error("log-prob {logprob} of token {token} is not finite and <= 0")]
    BadLogprob { token: u32, logprob: f32 },
    #[error("candidate {slot} is out of sampler order")]
    Unordered { slot: usize },
    #[error("end-of-sequence token chosen before the last position")]
    EarlyEos,
    #[error("finish reason is eos but the last token is {token}, not the eos token {eos}")]
    MissingEos { token: u32, eos: u32 },
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum ReplayError {
    #[error("cannot decode artifact: {0}")]
    Decode(#[from] DecodeError),
    #[error("artifact is for chain {found}, this node runs chain {expected}")]
    WrongChain { expected: ChainId, found: ChainId },
    #[error("sampling parameters differ from the chain spec's")]
    WrongSampling,
    #[error("artifact logs k = {found} candidates, the chain spec says {expected}")]
    WrongK { expected: u16, found: u16 },
    #[error("bad miner signature: {0}")]
    Signature(SignatureError),
    #[error("bad request binding: {0}")]
    RequestBinding(SignatureError),
    #[error("{what} has {found} tokens, the limit is {limit}")]
    TooLong { what: &'static str, found: usize, limit: u32 },
    #[error("prompt token {index} is {token}, outside the vocabulary of {vocab}")]
    PromptOutOfVocabulary { index: usize, token: u32, vocab: u32 },
    #[error("position {position}: {rule}")]
    Structure { position: usize, rule: StructureRule },
    #[error("position {position}: seeded sampling chooses candidate {expected}, the artifact logs {logged}")]
    ReplayMismatch { position: usize, expected: usize, logged: usize },
    #[error("position {position}: chosen token {token} is outside the sampler's kept set")]
    ChosenNotSampleable { position: usize, token: u32 },
    #[error("surprisal z = {z:.3} exceeds the threshold {threshold}: tokens unlikely under the logged distributions")]
    Surprisal { z: f64, threshold: f64 },
}

impl ReplayError {
    /// The first failing position, where the rule is about one.
    pub fn position(&self) -> Option<usize> {
        match self {
            Self::Structure { position, .. }
            | Self::ReplayMismatch { position, .. }
            | Self::ChosenNotSampleable { position, .. } => Some(*position),
            _ => None,
        }
    }
}

/// What a passing artifact showed.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayReport {
    pub positions: usize,
    /// Replayed against its run seed (false: surprisal test only).
    pub seeded: bool,
    /// Seeded, but no requester binding: the miner could have picked the uuid.
    pub miner_seeded: bool,
    pub surprisal: Surprisal,
}

impl ReplayReport {
    pub fn z(&self) -> f64 {
        self.surprisal.z()
    }
}

/// Holds the chain's constants and scratch space; one per thread.
pub struct ReplayChecker {
    spec: ChainSpec,
    chain_id: ChainId,
    sampler: Sampler,
    scored: Vec<(f64, u32, usize)>,
    /// Per vocabulary id, the last position stamp it was listed at: finds
    /// duplicate candidates in O(k) without clearing between positions.
    listed_at: Vec<u32>,
    stamp: u32,
}

impl ReplayChecker {
    pub fn new(spec: ChainSpec) -> Self {
        let chain_id = spec.chain_id();
        let listed_at = vec![0; spec.model.vocab_size as usize];
        Self { spec, chain_id, sampler: Sampler::new(), scored: Vec::new(), listed_at, stamp: 0 }
    }

    fn next_stamp(&mut self) -> u32 {
        if self.stamp == u32::MAX {
            self.listed_at.fill(0);
            self.stamp = 0;
        }
        self.stamp += 1;
        self.stamp
    }

    pub fn spec(&self) -> &ChainSpec {
        &self.spec
    }

    pub fn chain_id(&self) -> ChainId {
        self.chain_id
    }

    /// Decodes within the chain's size limit, then checks.
    pub fn check_bytes(&mut self, bytes: &[u8]) -> Result<(Artifact, ReplayReport), ReplayError> {
        let artifact = Artifact::decode(bytes, self.spec.limits.max_artifact_bytes as usize)?;
        let report = self.check(&artifact)?;
        Ok((artifact, report))
    }

    pub fn check(&mut self, artifact: &Artifact) -> Result<ReplayReport, ReplayError> {
        let body = &artifact.body;
        let spec = &self.spec;
        if body.chain_id != self.chain_id {
            return Err(ReplayError::WrongChain { expected: self.chain_id, found: body.chain_id });
        }
        if !body.sampling.bit_identical(&spec.sampling) {
            return Err(ReplayError::WrongSampling);
        }
        if body.generation.k() != spec.logged_k {
            return Err(ReplayError::WrongK { expected: spec.logged_k, found: body.generation.k() });
        }
        artifact.verify_signature().map_err(ReplayError::Signature)?;
        let bound = body.request.verify_binding(&self.chain_id).map_err(ReplayError::RequestBinding)?;
        self.check_limits(artifact)?;
        self.check_structure(artifact)?;
        let report = self.replay(artifact, bound)?;
        let threshold = self.spec.thresholds.max_surprisal_z;
        let z = report.z();
        if z > threshold {
            return Err(ReplayError::Surprisal { z, threshold });
        }
        Ok(report)
    }

    fn check_limits(&self, artifact: &Artifact) -> Result<(), ReplayError> {
        let limits = &self.spec.limits;
        let prompt = &artifact.body.request.prompt_tokens;
        let generated = artifact.body.generation.len();
        if prompt.len() > limits.max_prompt_tokens as usize {
            return Err(ReplayError::TooLong { what: "prompt", found: prompt.len(), limit: limits.max_prompt_tokens });
        }
        if generated > limits.max_generated_tokens as usize {
            return Err(ReplayError::TooLong {
                what: "generation",
                found: generated,
                limit: limits.max_generated_tokens,
            });
        }
        let vocab = self.spec.model.vocab_size;
        if let Some((index, &token)) = prompt.iter().enumerate().find(|(_, &t)| t >= vocab) {
            return Err(ReplayError::PromptOutOfVocabulary { index, token, vocab });
        }
        Ok(())
    }

    fn check_structure(&mut self, artifact: &Artifact) -> Result<(), ReplayError> {
        let vocab = self.spec.model.vocab_size;
        let eos = self.spec.model.eos_token_id;
        let generation = &artifact.body.generation;
        let last = generation.len() - 1;
        for (position, view) in generation.positions().enumerate() {
            let fail = |rule| Err(ReplayError::Structure { position, rule });
            let stamp = self.next_stamp();
            for candidate in view.candidates() {
                if candidate.token >= vocab {
                    return fail(StructureRule::TokenOutOfVocabulary { token: candidate.token, vocab });
                }
                let logprob = candidate.logprob.to_f32();
                if !(logprob.is_finite() && logprob <= 0.0) {
                    return fail(StructureRule::BadLogprob { token: candidate.token, logprob });
                }
                let listed = &mut self.listed_at[candidate.token as usize];
                if *listed == stamp {
                    return fail(StructureRule::DuplicateCandidate { token: candidate.token });
                }
                *listed = stamp;
            }
            if view.chosen_token() == eos && position != last {
                return fail(StructureRule::EarlyEos);
            }
        }
        if artifact.body.finish_reason == FinishReason::Eos {
            let token = generation.position(last).chosen_token();
            if token != eos {
                return Err(ReplayError::Structure { position: last, rule: StructureRule::MissingEos { token, eos } });
            }
        }
        Ok(())
    }

    /// Order, sampler replay and surprisal in one pass over the positions.
    fn replay(&mut self, artifact: &Artifact, bound: bool) -> Result<ReplayReport, ReplayError> {
        let body = &artifact.body;
        let params = &self.spec.sampling;
        let run_seed = body.request.run_seed();
        let mut history = History::new(&body.request.prompt_tokens);
        let mut surprisal = Surprisal::default();
        for (position, view) in body.generation.positions().enumerate() {
            self.scored.clear();
            self.scored.extend(
                view.candidates()
                    .enumerate()
                    .map(|(slot, c)| (history.penalised(c.token, c.logprob.to_f64(), params), c.token, slot)),
            );
            // The logged order must be the sampler's order (DESIGN §3), so the
            // scores need no sorting.
            if let Some(slot) = (1..self.scored.len()).find(|&s| {
                let (a, b) = (self.scored[s - 1], self.scored[s]);
                poi_artifact::candidate_order((a.0, a.1), (b.0, b.1)).is_gt()
            }) {
                return Err(ReplayError::Structure { position, rule: StructureRule::Unordered { slot } });
            }
            let logged = usize::from(view.chosen);
            let kept = self.sampler.distribution_of_ordered(&self.scored, params);
            let Some(chosen) = kept.iter().find(|k| k.index == logged) else {
                return Err(ReplayError::ChosenNotSampleable { position, token: view.chosen_token() });
            };
            if let Some(seed) = &run_seed {
                let expected = crate::sampler::pick(kept, seed, position as u32)
                    .expect("the kept set holds the chosen candidate, so it is not empty");
                if expected != logged {
                    return Err(ReplayError::ReplayMismatch { position, expected, logged });
                }
            }
            surprisal.add(kept, chosen.probability);
            history.push(view.chosen_token());
        }
        Ok(ReplayReport {
            positions: body.generation.len(),
            seeded: run_seed.is_some(),
            miner_seeded: run_seed.is_some() && !bound,
            surprisal,
        })
    }
}
