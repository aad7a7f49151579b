//! Seeded generation (the miner's side of DESIGN §4) and the teacher-forced
//! pass that the full check and proofs share.

use poi_artifact::{
    ArtifactBody, Candidate, DecodeError, FinishReason, Generation, History, PublicKey, Request, SamplingParams,
};
use poi_chain_spec::ChainSpec;

use crate::{Llama, ModelError, PenalisedTopK, TopCandidate};
use poi_verifier::sampler::{choose_from, draw, Sampler};
pub use poi_verifier::topk::logged_candidates;

/// Tokens per forward call in teacher-forced prefill: long inputs go through
/// the KV cache chunk by chunk, bounding the attention matrix.
pub const PREFILL_CHUNK: usize = 512;

/// What the generator produced: per position the logged candidates (sampler
/// order) and the chosen index, ready for `Generation::new`.
#[derive(Clone, Debug)]
pub struct Generated {
    pub positions: Vec<(Vec<Candidate>, u8)>,
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
}

impl Generated {
    /// The unsigned artifact body for this generation on `spec`'s chain.
    pub fn body(
        &self,
        spec: &ChainSpec,
        miner: PublicKey,
        request: Request,
        created_at_ms: u64,
    ) -> Result<ArtifactBody, DecodeError> {
        Ok(ArtifactBody {
            chain_id: spec.chain_id(),
            miner,
            request,
            sampling: spec.sampling,
            generation: Generation::new(spec.logged_k, &self.positions)?,
            finish_reason: self.finish_reason,
            created_at_ms,
        })
    }
}

/// When a generation ends besides the eos token: what the request says.
#[derive(Clone, Copy, Debug)]
pub struct StopRules<'a> {
    pub max_tokens: usize,
    pub tokens: &'a [u32],
}

impl<'a> StopRules<'a> {
    pub fn of(request: &'a Request) -> Self {
        Self { max_tokens: request.max_tokens as usize, tokens: &request.stop_token_ids }
    }
}

/// Where each position's 64-bit draw comes from.
pub enum Draws<'a> {
    /// DESIGN §4 step 7 from the run seed: replayable.
    Seeded([u8; 32]),
    /// Any other source (an unseeded artifact): only the surprisal test applies.
    External(&'a mut dyn FnMut() -> u64),
}

/// Where a generator's next-token log-probs come from: the pinned model with
/// its KV cache, or another engine (the experiment's llama.cpp miner).
pub trait NextLogprobs {
    /// The log-softmax row after `prompt`.
    fn start(&mut self, prompt: &[u32]) -> Result<Vec<f32>, ModelError>;
    /// The row after one more token.
    fn advance(&mut self, token: u32) -> Result<Vec<f32>, ModelError>;
}

struct Cached<'a> {
    model: &'a Llama,
    cache: crate::KvCache,
}

impl NextLogprobs for Cached<'_> {
    fn start(&mut self, prompt: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.model.forward(prompt, &mut self.cache, prompt.len() - 1)
    }

    fn advance(&mut self, token: u32) -> Result<Vec<f32>, ModelError> {
        self.model.forward(&[token], &mut self.cache, 0)
    }
}

/// Generates after `prompt` with the KV cache, sampling with sampler v1 from
/// exactly the logged values, under the request's stop rules: after the eos
/// token, after a stop token, or after `max_tokens` (capped so that prompt and
/// generation fit the model's context, as the replay check requires).
/// `on_token` sees each chosen token as it comes (progress, streaming).
pub fn generate(
    model: &Llama,
    prompt: &[u32],
    params: &SamplingParams,
    k: u16,
    stop: &StopRules<'_>,
    draws: Draws<'_>,
    on_token: impl FnMut(u32),
) -> Result<Generated, ModelError> {
    let mut source = Cached { model, cache: model.new_cache() };
    generate_from(&mut source, model.config(), prompt, params, k, stop, draws, on_token)
}

/// `generate` on log-probs from any `source` over the model `config`
/// describes: the same top-k, logging and sampler.
#[allow(clippy::too_many_arguments)]
pub fn generate_from(
    source: &mut dyn NextLogprobs,
    config: &crate::LlamaConfig,
    prompt: &[u32],
    params: &SamplingParams,
    k: u16,
    stop: &StopRules<'_>,
    draws: Draws<'_>,
    mut on_token: impl FnMut(u32),
) -> Result<Generated, ModelError> {
    let mut sequence = Sequence::new(config, prompt, *params, k, stop, draws)?;
    let mut logprobs = source.start(prompt)?;
    while !sequence.is_done() {
        let token = sequence.pick(&logprobs)?;
        on_token(token);
        if !sequence.is_done() {
            logprobs = source.advance(token)?;
        }
    }
    Ok(sequence.finish())
}

/// One generation's sampling state: given each next-token log-softmax row in
/// turn, it logs the candidates, picks with sampler v1 and applies the stop
/// rules. The model side (one sequence with its cache, or a batch of them)
/// is the caller's.
pub struct Sequence<'a> {
    history: History,
    selector: PenalisedTopK,
    sampler: Sampler,
    draws: Draws<'a>,
    params: SamplingParams,
    max_tokens: usize,
    stop_tokens: Vec<u32>,
    eos: u32,
    out: Generated,
    done: bool,
}

impl<'a> Sequence<'a> {
    /// `max_tokens` is capped so that prompt and generation fit the model's
    /// context, as the replay check requires.
    pub fn new(
        config: &crate::LlamaConfig,
        prompt: &[u32],
        params: SamplingParams,
        k: u16,
        stop: &StopRules<'_>,
        draws: Draws<'a>,
    ) -> Result<Self, ModelError> {
        if prompt.is_empty() {
            return Err(ModelError::Metadata("an empty prompt has nothing to condition on".into()));
        }
        let room = config.context_length.saturating_sub(prompt.len());
        if room == 0 {
            return Err(ModelError::TooLong { what: "prompt", found: prompt.len(), limit: config.context_length - 1 });
        }
        Ok(Self {
            history: History::new(prompt),
            selector: PenalisedTopK::new(config.vocab_size, usize::from(k), prompt),
            sampler: Sampler::new(),
            draws,
            params,
            max_tokens: stop.max_tokens.min(room),
            stop_tokens: stop.tokens.to_vec(),
            eos: config.eos_token_id,
            out: Generated { positions: Vec::new(), tokens: Vec::new(), finish_reason: FinishReason::MaxTokens },
            done: stop.max_tokens == 0,
        })
    }

    /// Picks the next token from the log-softmax row that predicts it. After
    /// the pick that ends the generation, `is_done` holds and the caller must
    /// not run the model on the token.
    pub fn pick(&mut self, logprobs: &[f32]) -> Result<u32, ModelError> {
        if self.done {
            return Err(ModelError::Metadata("the generation has already ended".into()));
        }
        let position = self.out.tokens.len();
        let top = self.selector.select(logprobs, &self.history, &self.params);
        let logged = logged_candidates(&top, &self.history, &self.params);
        let kept = self.sampler.distribution(
            logged.iter().map(|c| (c.token, f64::from(c.logprob.to_f32()))),
            &self.history,
            &self.params,
        );
        let draw = match &mut self.draws {
            Draws::Seeded(seed) => draw(seed, position as u32),
            Draws::External(source) => source(),
        };
        let index = choose_from(kept, draw).ok_or_else(|| ModelError::Metadata("no candidate to sample".into()))?;
        let token = logged[index].token;
        self.out.positions.push((logged, index as u8));
        self.out.tokens.push(token);
        if token == self.eos {
            (self.out.finish_reason, self.done) = (FinishReason::Eos, true);
        } else if self.stop_tokens.contains(&token) {
            (self.out.finish_reason, self.done) = (FinishReason::Stop, true);
        } else if position + 1 == self.max_tokens {
            self.done = true;
        } else {
            self.history.push(token);
            self.selector.note(token);
        }
        Ok(token)
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// What has been generated so far: per position the logged candidates
    /// and the chosen index.
    pub fn generated(&self) -> &Generated {
        &self.out
    }

    pub fn finish(self) -> Generated {
        self.out
    }
}

/// Teacher-forced prefill of `prompt ++ generated`: calls `each(i, row)` with
/// the log-softmax row that predicts `generated[i]`, for every `i`, in order.
pub fn teacher_forced(
    model: &Llama,
    prompt: &[u32],
    generated: &[u32],
    mut each: impl FnMut(usize, &[f32]),
) -> Result<(), ModelError> {
    if prompt.is_empty() || generated.is_empty() {
        return Ok(());
    }
    // The last generated token predicts nothing that is checked.
    let input: Vec<u32> = prompt.iter().chain(&generated[..generated.len() - 1]).copied().collect();
    let first_prediction = prompt.len() - 1;
    let vocab = model.config().vocab_size;
    let mut cache = model.new_cache();
    let mut next = 0;
    for (c, chunk) in input.chunks(PREFILL_CHUNK).enumerate() {
        let start = c * PREFILL_CHUNK;
        let first_output = first_prediction.saturating_sub(start);
        let rows = model.forward(chunk, &mut cache, first_output)?;
        for row in rows.chunks_exact(vocab) {
            each(next, row);
            next += 1;
        }
    }
    Ok(())
}

/// Per generated position, the model's own penalised top-`k` (raw log-probs)
/// under teacher forcing: the validator's side of `distance2`, or the "proof"
/// a dishonest miner computes for tokens it generated elsewhere.
pub fn teacher_forced_top_k(
    model: &Llama,
    prompt: &[u32],
    generated: &[u32],
    params: &SamplingParams,
    k: u16,
) -> Result<Vec<Vec<TopCandidate>>, ModelError> {
    let mut history = History::new(prompt);
    let mut selector = PenalisedTopK::new(model.config().vocab_size, usize::from(k), prompt);
    let mut out = Vec::with_capacity(generated.len());
    teacher_forced(model, prompt, generated, |i, row| {
        out.push(selector.select(row, &history, params));
        history.push(generated[i]);
        selector.note(generated[i]);
    })?;
    Ok(out)
}

/// The pre-fill attack's "proof": keep `tokens` (generated by a cheaper
/// model), log the pinned model's top-k for them (`pinned_tops`, from
/// [`teacher_forced_top_k`]) as if it had generated them. A token outside the
/// pinned top-k cannot be proved; the attacker swaps it in for the last
/// candidate.
pub fn prefill_proof(
    pinned_tops: &[Vec<TopCandidate>],
    prompt: &[u32],
    tokens: &[u32],
    finish_reason: FinishReason,
    params: &SamplingParams,
) -> Generated {
    let mut history = History::new(prompt);
    let mut positions = Vec::with_capacity(pinned_tops.len());
    for (top, &token) in pinned_tops.iter().zip(tokens) {
        let mut candidates = logged_candidates(top, &history, params);
        let chosen = match candidates.iter().position(|c| c.token == token) {
            Some(index) => index,
            None => {
                let last = candidates.len() - 1;
                candidates[last].token = token;
                last
            }
        };
        positions.push((candidates, chosen as u8));
        history.push(token);
    }
    Generated { positions, tokens: tokens.to_vec(), finish_reason }
}
