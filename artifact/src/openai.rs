//! Import of an OpenAI-compatible chat completion with `logprobs` /
//! `top_logprobs` (as vLLM, llama.cpp or OpenAI return it) into an unseeded
//! artifact body. Tokens are mapped to ids by a [`TokenResolver`]: vLLM's
//! `token_id:N` strings need none, anything else needs the pinned model's
//! vocabulary (poi-model's resolver).
//!
//! Such a server does not log a run seed, so the result carries no user seed and
//! gets only the surprisal test, never the replay.

use serde::Deserialize;
use thiserror::Error;

use crate::artifact::{ArtifactBody, Candidate, FinishReason, Generation, Request};
use crate::crypto::{ChainId, PublicKey};
use crate::error::DecodeError;
use crate::sampling::{candidate_order, History, SamplingParams};

#[derive(Debug, Error)]
pub enum ImportError {
    #[error("response is not a chat completion: {0}")]
    Json(#[from] serde_json::Error),
    #[error("response has no choices")]
    NoChoices,
    #[error("choice has no logprobs.content (request logprobs=true and top_logprobs=k)")]
    NoLogprobs,
    #[error("no prompt token ids: pass them, or ask the server to return prompt_token_ids")]
    NoPromptTokens,
    #[error("position {position}: token {token:?} is not one token of the pinned vocabulary (and no usable bytes)")]
    UnknownToken { position: usize, token: String },
    #[error("position {position}: {found} top_logprobs, the chain logs k = {k}")]
    TooFewCandidates { position: usize, found: usize, k: u16 },
    #[error("position {position}: the same token id {token} appears twice among top_logprobs")]
    DuplicateCandidate { position: usize, token: u32 },
    #[error("position {position}: log-prob {value} is not finite and <= 0")]
    BadLogprob { position: usize, value: f64 },
    #[error("position {position}: chosen token {token} is not among the chain's top k candidates")]
    ChosenNotInCandidates { position: usize, token: u32 },
    #[error(transparent)]
    Structure(#[from] DecodeError),
}

/// Maps a token as the server printed it (its string, and OpenAI's `bytes`
/// field when the server sent one) to a vocabulary id.
pub trait TokenResolver {
    fn resolve(&self, token: &str, bytes: Option<&[u8]>) -> Option<u32>;
}

/// vLLM's `return_tokens_as_token_ids=true` form: `"token_id:1234"`.
pub struct TokenIdStrings;

impl TokenResolver for TokenIdStrings {
    fn resolve(&self, token: &str, _bytes: Option<&[u8]>) -> Option<u32> {
        token.strip_prefix("token_id:")?.parse().ok()
    }
}

#[derive(Deserialize)]
struct ChatCompletion {
    choices: Vec<Choice>,
    #[serde(default)]
    prompt_token_ids: Option<Vec<u32>>,
}

#[derive(Deserialize)]
struct Choice {
    logprobs: Option<ChoiceLogprobs>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceLogprobs {
    content: Option<Vec<TokenLogprob>>,
}

#[derive(Deserialize)]
struct TokenLogprob {
    token: String,
    #[serde(default)]
    bytes: Option<Vec<u8>>,
    #[serde(default)]
    top_logprobs: Vec<TopLogprob>,
}

#[derive(Deserialize)]
struct TopLogprob {
    token: String,
    logprob: f64,
    #[serde(default)]
    bytes: Option<Vec<u8>>,
}

/// Everything the response itself does not say.
pub struct ImportContext<'a> {
    pub chain_id: ChainId,
    pub sampling: SamplingParams,
    pub k: u16,
    /// Used when the response has no `prompt_token_ids`.
    pub prompt_tokens: Option<Vec<u32>>,
    pub request_uuid: [u8; 16],
    /// Who submits the imported artifact and signs it.
    pub submitter: PublicKey,
    pub created_at_ms: u64,
    pub resolver: &'a dyn TokenResolver,
}

/// Returns the unsigned body; the submitter signs it.
pub fn import_chat_completion(response: &str, ctx: &ImportContext<'_>) -> Result<ArtifactBody, ImportError> {
    let completion: ChatCompletion = serde_json::from_str(response)?;
    let choice = completion.choices.into_iter().next().ok_or(ImportError::NoChoices)?;
    let content = choice.logprobs.and_then(|l| l.content).ok_or(ImportError::NoLogprobs)?;
    let prompt_tokens =
        completion.prompt_token_ids.or_else(|| ctx.prompt_tokens.clone()).ok_or(ImportError::NoPromptTokens)?;
    let k = usize::from(ctx.k);
    let mut history = History::new(&prompt_tokens);
    let mut positions: Vec<(Vec<Candidate>, u8)> = Vec::with_capacity(content.len());
    for (position, entry) in content.iter().enumerate() {
        let resolve = |token: &str, bytes: &Option<Vec<u8>>| {
            ctx.resolver
                .resolve(token, bytes.as_deref())
                .ok_or_else(|| ImportError::UnknownToken { position, token: token.to_string() })
        };
        let chosen_token = resolve(&entry.token, &entry.bytes)?;
        let mut scored = Vec::with_capacity(entry.top_logprobs.len());
        for top in &entry.top_logprobs {
            if !(top.logprob.is_finite() && top.logprob <= 0.0) {
                return Err(ImportError::BadLogprob { position, value: top.logprob });
            }
            let token = resolve(&top.token, &top.bytes)?;
            if scored.iter().any(|(_, c): &(f64, Candidate)| c.token == token) {
                return Err(ImportError::DuplicateCandidate { position, token });
            }
            let logprob = crate::artifact::logged_half(top.logprob);
            let score = history.penalised(token, logprob.to_f64(), &ctx.sampling);
            scored.push((score, Candidate { token, logprob }));
        }
        if scored.len() < k {
            return Err(ImportError::TooFewCandidates { position, found: scored.len(), k: ctx.k });
        }
        scored.sort_by(|a, b| candidate_order((a.0, a.1.token), (b.0, b.1.token)));
        scored.truncate(k);
        let chosen = scored
            .iter()
            .position(|(_, c)| c.token == chosen_token)
            .ok_or(ImportError::ChosenNotInCandidates { position, token: chosen_token })?;
        positions.push((scored.into_iter().map(|(_, c)| c).collect(), chosen as u8));
        history.push(chosen_token);
    }
    // OpenAI's "stop" covers both the eos token and stop strings; only the
    // token budget is unambiguous. The server ended on its last token, so
    // that token is the request's stop rule as far as the artifact can say,
    // unless it occurs earlier (a stop string ending in a common token): then
    // the import claims only that the budget was what it generated.
    let tokens: Vec<u32> =
        positions.iter().map(|(candidates, chosen)| candidates[usize::from(*chosen)].token).collect();
    let mut request = Request::new(ctx.request_uuid, None, prompt_tokens, tokens.len() as u32);
    let finish_reason = match (choice.finish_reason.as_deref(), tokens.split_last()) {
        (Some("length"), _) | (_, None) => FinishReason::MaxTokens,
        (_, Some((last, earlier))) if earlier.contains(last) => FinishReason::MaxTokens,
        (_, Some((&last, _))) => {
            request.stop_token_ids.push(last);
            FinishReason::Stop
        }
    };
    Ok(ArtifactBody {
        chain_id: ctx.chain_id,
        miner: ctx.submitter,
        request,
        sampling: ctx.sampling,
        generation: Generation::new(ctx.k, &positions)?,
        finish_reason,
        created_at_ms: ctx.created_at_ms,
    })
}
