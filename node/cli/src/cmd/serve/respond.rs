//! OpenAI's response bodies from what the engine generated: the text, and
//! `logprobs` whose candidates are exactly the artifact's logged ones (same
//! tokens, same half-precision values, same order), for every position,
//! including a final end-of-sequence or stop token.

use poi_artifact::{Candidate, FinishReason};
use poi_model::tokenizer::Tokenizer;
use serde_json::{json, Map, Value};

use super::api::Endpoint;

/// The answer so far: tokens with their logged candidates, and how much of
/// the text has been streamed.
pub struct Transcript<'t> {
    tokenizer: &'t Tokenizer,
    endpoint: Endpoint,
    top_logprobs: Option<usize>,
    /// Tokens that end a generation without being part of its text.
    enders: Vec<u32>,
    tokens: Vec<u32>,
    logprobs: Vec<Value>,
    streamed: usize,
}

impl<'t> Transcript<'t> {
    pub fn new(tokenizer: &'t Tokenizer, endpoint: Endpoint, top_logprobs: Option<usize>, stops: &[u32]) -> Self {
        let mut enders = stops.to_vec();
        enders.push(tokenizer.eos());
        Self { tokenizer, endpoint, top_logprobs, enders, tokens: Vec::new(), logprobs: Vec::new(), streamed: 0 }
    }

    /// Adds one generated position.
    pub fn push(&mut self, candidates: &[Candidate], chosen: u8) {
        let chosen = candidates[usize::from(chosen)];
        self.tokens.push(chosen.token);
        if let Some(top) = self.top_logprobs {
            let mut entry = self.entry(chosen);
            entry["top_logprobs"] = candidates[..top].iter().map(|&c| self.entry(c)).collect();
            self.logprobs.push(entry);
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    fn entry(&self, candidate: Candidate) -> Value {
        let bytes = self.tokenizer.token_bytes(candidate.token).unwrap_or_default();
        json!({
            "token": String::from_utf8_lossy(&bytes),
            "logprob": candidate.logprob.to_f64(),
            "bytes": bytes,
        })
    }

    /// The answer's text: every token but a final eos or stop token.
    pub fn text(&self) -> String {
        let tokens = match self.tokens.split_last() {
            Some((last, rest)) if self.enders.contains(last) => rest,
            _ => &self.tokens[..],
        };
        self.tokenizer.decode(tokens).unwrap_or_default()
    }

    /// Text not yet streamed. A token that ends inside a UTF-8 character is
    /// held back until the character is whole (or the answer ends).
    pub fn unstreamed(&mut self, finished: bool) -> String {
        let text = self.text();
        if !finished && text.ends_with(char::REPLACEMENT_CHARACTER) {
            return String::new();
        }
        let delta = text.get(self.streamed..).unwrap_or_default().to_string();
        self.streamed = text.len();
        delta
    }

    /// The logprobs of positions `from..`, in the endpoint's format.
    pub fn logprobs(&self, from: usize) -> Value {
        if self.top_logprobs.is_none() {
            return Value::Null;
        }
        let entries = &self.logprobs[from.min(self.logprobs.len())..];
        match self.endpoint {
            Endpoint::Chat => json!({ "content": entries }),
            // The legacy form: parallel arrays, top candidates as token → value maps.
            Endpoint::Completions => {
                let mut offset = self.tokenizer.decode(&self.tokens[..from]).map_or(0, |t| t.len());
                let mut text_offset = Vec::with_capacity(entries.len());
                for entry in entries {
                    text_offset.push(offset);
                    offset += entry["bytes"].as_array().map_or(0, Vec::len);
                }
                let tops: Vec<Value> = entries
                    .iter()
                    .map(|e| {
                        let map: Map<String, Value> = e["top_logprobs"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|t| (t["token"].as_str().unwrap_or_default().to_string(), t["logprob"].clone()))
                            .collect();
                        Value::Object(map)
                    })
                    .collect();
                json!({
                    "tokens": entries.iter().map(|e| e["token"].clone()).collect::<Vec<_>>(),
                    "token_logprobs": entries.iter().map(|e| e["logprob"].clone()).collect::<Vec<_>>(),
                    "top_logprobs": tops,
                    "text_offset": text_offset,
                })
            }
        }
    }
}

/// OpenAI's finish reasons: the eos token and stop tokens are both "stop".
pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Eos | FinishReason::Stop => "stop",
        FinishReason::MaxTokens => "length",
    }
}

pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}
