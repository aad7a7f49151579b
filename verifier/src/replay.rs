//! The replay check (DESIGN §5): what every peer runs on every artifact before
//! forwarding it. Rules run in a fixed order and the first failure is reported
//! with the rule and, where it applies, the position.

use std::collections::HashMap;

use poi_artifact::{Artifact, ChainId, DecodeError, FinishReason, PreparedKey, PublicKey, SignatureError};
use poi_chain_spec::ChainSpec;
use thiserror::Error;

use crate::bounds::{at_most, positive};
use crate::dense_history::DenseHistory;
use crate::sampler::Sampler;
use crate::seeding::{Requesters, SeedingClass};
use crate::surprisal::Surprisal;

const MAX_TOTAL_PROBABILITY: f64 = 1.01;

/// `libm::exp(-h)` for every half `h >= 0`, indexed by its bits: the
/// sub-distribution rule needs k exponentials per position, and a lookup
/// (index by a non-positive log-prob's magnitude bits) keeps the replay
/// check's speed.
fn exp_of_negated_half() -> &'static [f64] {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=0x7FFFu16).map(|magnitude| libm::exp(-poi_artifact::f16::from_bits(magnitude).to_f64())).collect()
    })
}

/// A structural rule broken at one position.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum StructureRule {
    #[error("token id {token} is outside the vocabulary of {vocab}")]
    TokenOutOfVocabulary { token: u32, vocab: u32 },
    #[error("token id {token} is listed twice")]
    DuplicateCandidate { token: u32 },
    #[error("log-prob {logprob} of token {token} is not finite and <= 0")]
    BadLogprob { token: u32, logprob: f32 },
    #[error("the candidates' probabilities sum to {total:.4}, over 1.01: not a sub-distribution")]
    NotASubDistribution { total: f64 },
    #[error("candidate {slot} is out of sampler order")]
    Unordered { slot: usize },
    #[error("token {token} (eos or a stop token) chosen before the last position: generation ends there")]
    EarlyStop { token: u32 },
    #[error("finish reason is eos but the last token is {token}, not the eos token {eos}")]
    MissingEos { token: u32, eos: u32 },
    #[error("finish reason is stop but the last token {token} is not one of the request's stop tokens")]
    MissingStop { token: u32 },
    #[error("finish reason is max_tokens after {generated} tokens, but the request allows {max_tokens}")]
    StoppedEarly { generated: usize, max_tokens: u32 },
    #[error("finish reason is max_tokens but the last token {token} ends the generation by itself (eos or stop)")]
    UnclaimedStop { token: u32 },
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
    #[error("the prompt is empty: the model has nothing to condition the first token on")]
    EmptyPrompt,
    #[error(
        "prompt and generation are {found} tokens, over the model's context of {limit}: the full check cannot run"
    )]
    ExceedsContext { found: usize, limit: u32 },
    #[error("stop token {token} is outside the vocabulary of {vocab}")]
    StopTokenOutOfVocabulary { token: u32, vocab: u32 },
    #[error("the chain admits only requester-bound artifacts; this one is {class}")]
    SeedingRequired { class: SeedingClass },
    #[error("prompt token {index} is {token}, outside the vocabulary of {vocab}")]
    PromptOutOfVocabulary { index: usize, token: u32, vocab: u32 },
    #[error("position {position}: {rule}")]
    Structure { position: usize, rule: StructureRule },
    #[error("position {position}: seeded sampling chooses candidate {expected}, the artifact logs {logged}")]
    ReplayMismatch { position: usize, expected: usize, logged: usize },
    #[error("position {position}: chosen token {token} is outside the sampler's kept set")]
    ChosenNotSampleable { position: usize, token: u32 },
    #[error("position {position}: chosen token {token} has probability 0 under the logged distribution")]
    ZeroProbabilityChoice { position: usize, token: u32 },
    #[error(
        "surprisal z = {z:.3} is not within the threshold {threshold}: tokens unlikely under the logged distributions"
    )]
    Surprisal { z: f64, threshold: f64 },
}

impl ReplayError {
    /// The first failing position, where the rule is about one.
    pub fn position(&self) -> Option<usize> {
        match self {
            Self::Structure { position, .. }
            | Self::ReplayMismatch { position, .. }
            | Self::ChosenNotSampleable { position, .. }
            | Self::ZeroProbabilityChoice { position, .. } => Some(*position),
            _ => None,
        }
    }
}

/// What a passing artifact showed.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayReport {
    pub positions: usize,
    /// Who fixed the run seed; only seeded artifacts are replayed.
    pub seeding: SeedingClass,
    pub surprisal: Surprisal,
    /// The artifact's evidence for the per-miner test (`miner_test`): for
    /// miner-seeded and unseeded artifacts only, since a requester-bound
    /// artifact's tokens are the seed's, which replay has just shown.
    pub evidence: Option<f64>,
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
    history: DenseHistory,
    requesters: Requesters,
    /// Miners' keys, decompressed once; cleared when full, so it stays
    /// bounded whatever keys peers send.
    miners: HashMap<PublicKey, PreparedKey>,
    /// The per-miner test's tilt (the chain's unless an experiment sets it).
    tilt: f64,
}

const MAX_CACHED_MINERS: usize = 4096;

impl ReplayChecker {
    pub fn new(spec: ChainSpec) -> Self {
        let chain_id = spec.chain_id();
        let vocab = spec.model.vocab_size as usize;
        let (listed_at, history) = (vec![0; vocab], DenseHistory::new(vocab));
        let requesters = Requesters::new(&spec);
        let (sampler, miners) = (Sampler::new(), HashMap::new());
        let tilt = spec.miner_test.tilt;
        Self { spec, chain_id, sampler, scored: Vec::new(), listed_at, stamp: 0, history, requesters, miners, tilt }
    }

    /// Computes the per-miner test's evidence at another tilt than the
    /// chain's: for experiments that choose the tilt; a node never does.
    pub fn with_evidence_tilt(mut self, tilt: f64) -> Self {
        self.tilt = tilt;
        self
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
        let miner = self.miner_key(&body.miner).map_err(ReplayError::Signature)?;
        artifact.verify_signature_with(&miner).map_err(ReplayError::Signature)?;
        let seeding = self.requesters.class_of(artifact, &self.chain_id).map_err(ReplayError::RequestBinding)?;
        if !seeding.admitted(self.spec.seeding.policy) {
            return Err(ReplayError::SeedingRequired { class: seeding });
        }
        self.check_limits(artifact)?;
        self.check_structure(artifact)?;
        let report = self.replay(artifact, seeding)?;
        let threshold = self.spec.thresholds.max_surprisal_z;
        let z = report.z();
        if !at_most(z, threshold) {
            return Err(ReplayError::Surprisal { z, threshold });
        }
        Ok(report)
    }

    fn miner_key(&mut self, miner: &PublicKey) -> Result<PreparedKey, SignatureError> {
        if let Some(key) = self.miners.get(miner) {
            return Ok(*key);
        }
        let key = miner.prepare()?;
        if self.miners.len() >= MAX_CACHED_MINERS {
            self.miners.clear();
        }
        self.miners.insert(*miner, key);
        Ok(key)
    }

    fn check_limits(&self, artifact: &Artifact) -> Result<(), ReplayError> {
        let limits = &self.spec.limits;
        let request = &artifact.body.request;
        let prompt = &request.prompt_tokens;
        let generated = artifact.body.generation.len();
        if prompt.is_empty() {
            return Err(ReplayError::EmptyPrompt);
        }
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
        // What the full check feeds the model; refused here so that no
        // admitted artifact is one the full check cannot run.
        let context = self.spec.model.context_length;
        if prompt.len() + generated > context as usize {
            return Err(ReplayError::ExceedsContext { found: prompt.len() + generated, limit: context });
        }
        let vocab = self.spec.model.vocab_size;
        if let Some((index, &token)) = prompt.iter().enumerate().find(|(_, &t)| t >= vocab) {
            return Err(ReplayError::PromptOutOfVocabulary { index, token, vocab });
        }
        if let Some(&token) = request.stop_token_ids.iter().find(|&&t| t >= vocab) {
            return Err(ReplayError::StopTokenOutOfVocabulary { token, vocab });
        }
        Ok(())
    }

    fn check_structure(&mut self, artifact: &Artifact) -> Result<(), ReplayError> {
        let vocab = self.spec.model.vocab_size;
        let eos = self.spec.model.eos_token_id;
        let request = &artifact.body.request;
        let ends = |token: u32| token == eos || request.stop_token_ids.contains(&token);
        let generation = &artifact.body.generation;
        let exp_table = exp_of_negated_half();
        let last = generation.len() - 1;
        for (position, view) in generation.positions().enumerate() {
            let fail = |rule| Err(ReplayError::Structure { position, rule });
            let stamp = self.next_stamp();
            let mut total_probability = 0.0;
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
                // Finite and <= 0 (checked above): the magnitude bits index it.
                total_probability += exp_table[usize::from(candidate.logprob.to_bits() & 0x7FFF)];
            }
            // DESIGN §4: the margin covers half rounding of up to k values.
            if !at_most(total_probability, MAX_TOTAL_PROBABILITY) {
                return fail(StructureRule::NotASubDistribution { total: total_probability });
            }
            if position != last && ends(view.chosen_token()) {
                return fail(StructureRule::EarlyStop { token: view.chosen_token() });
            }
        }
        self.check_finish(artifact, &ends)
    }

    /// The stop rules (DESIGN §3): a generation ends at eos, at a stop token,
    /// or after exactly `max_tokens`; the finish reason must say which, so a
    /// miner cannot cut an output short where it likes.
    fn check_finish(&self, artifact: &Artifact, ends: &dyn Fn(u32) -> bool) -> Result<(), ReplayError> {
        let (request, generation) = (&artifact.body.request, &artifact.body.generation);
        let generated = generation.len();
        if generated > request.max_tokens as usize {
            return Err(ReplayError::TooLong { what: "generation", found: generated, limit: request.max_tokens });
        }
        let last = generated - 1;
        let token = generation.position(last).chosen_token();
        let eos = self.spec.model.eos_token_id;
        let rule = match artifact.body.finish_reason {
            FinishReason::Eos if token != eos => StructureRule::MissingEos { token, eos },
            FinishReason::Stop if !request.stop_token_ids.contains(&token) => StructureRule::MissingStop { token },
            FinishReason::MaxTokens if ends(token) => StructureRule::UnclaimedStop { token },
            FinishReason::MaxTokens if generated != request.max_tokens as usize => {
                StructureRule::StoppedEarly { generated, max_tokens: request.max_tokens }
            }
            _ => return Ok(()),
        };
        Err(ReplayError::Structure { position: last, rule })
    }

    /// Order, sampler replay and surprisal in one pass over the positions.
    fn replay(&mut self, artifact: &Artifact, seeding: SeedingClass) -> Result<ReplayReport, ReplayError> {
        let body = &artifact.body;
        let params = &self.spec.sampling;
        let run_seed = body.request.run_seed();
        self.history.reset(&body.request.prompt_tokens);
        let mut surprisal = Surprisal::default();
        let tilt = (seeding != SeedingClass::RequesterBound).then_some(self.tilt);
        let mut evidence = 0.0;
        for (position, view) in body.generation.positions().enumerate() {
            self.scored.clear();
            self.scored.extend(
                view.candidates()
                    .enumerate()
                    .map(|(slot, c)| (self.history.penalised(c.token, c.logprob.to_f64(), params), c.token, slot)),
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
            // Its integer weight is still 1 (DESIGN §4 step 6), but a token
            // of probability 0 is no draw from the logged distribution.
            if !positive(chosen.probability) {
                return Err(ReplayError::ZeroProbabilityChoice { position, token: view.chosen_token() });
            }
            if let Some(seed) = &run_seed {
                let expected = crate::sampler::pick(kept, seed, position as u32)
                    .expect("the kept set holds the chosen candidate, so it is not empty");
                if expected != logged {
                    return Err(ReplayError::ReplayMismatch { position, expected, logged });
                }
            }
            surprisal.add(kept, chosen.probability);
            if let Some(tilt) = tilt {
                evidence += crate::miner_test::position_evidence(kept, chosen.probability, tilt);
            }
            self.history.push(view.chosen_token());
        }
        let evidence = tilt.map(|_| evidence);
        Ok(ReplayReport { positions: body.generation.len(), seeding, surprisal, evidence })
    }
}
