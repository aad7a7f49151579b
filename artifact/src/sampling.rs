//! Sampling parameters and the canonical candidate order of sampler v1
//! (DESIGN §4 steps 2–3). The order is part of the wire format (an artifact lists
//! its candidates in it), so it lives here; the verifier's sampler builds on it.

use std::cmp::Ordering;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// The chain's sampling parameters. An artifact carries them and they must equal
/// the chain spec's bit for bit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct SamplingParams {
    pub temperature: f64,
    pub top_k: u32,
    pub top_p: f64,
    pub min_p: f64,
    pub repetition_penalty: f64,
    pub presence_penalty: f64,
    pub frequency_penalty: f64,
}

impl SamplingParams {
    /// The seed document's defaults (Qwen2.5 experiments).
    pub const SEED_DEFAULTS: Self = Self {
        temperature: 0.6,
        top_k: 20,
        top_p: 0.8,
        min_p: 0.0,
        repetition_penalty: 1.2,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
    };

    /// Bitwise equality: `-0.0` and `0.0` differ here, as they do on the wire.
    pub fn bit_identical(&self, other: &Self) -> bool {
        let bits = |p: &Self| {
            [
                p.temperature.to_bits(),
                u64::from(p.top_k),
                p.top_p.to_bits(),
                p.min_p.to_bits(),
                p.repetition_penalty.to_bits(),
                p.presence_penalty.to_bits(),
                p.frequency_penalty.to_bits(),
            ]
        };
        bits(self) == bits(other)
    }
}

/// What the penalties of step 2 need to know: whether a token is in the
/// history `H` (a key of the map) and how often it was generated so far (the
/// value; 0 for prompt-only tokens). One map, so scoring costs one lookup.
#[derive(Clone, Debug, Default)]
pub struct History {
    generated: FxHashMap<u32, u32>,
}

impl History {
    pub fn new(prompt: &[u32]) -> Self {
        Self { generated: prompt.iter().map(|&token| (token, 0)).collect() }
    }

    /// A history of prompt plus already generated tokens, in order.
    pub fn with_generated(prompt: &[u32], generated: &[u32]) -> Self {
        let mut history = Self::new(prompt);
        generated.iter().for_each(|&t| history.push(t));
        history
    }

    pub fn push(&mut self, token: u32) {
        *self.generated.entry(token).or_default() += 1;
    }

    pub fn generated_count(&self, token: u32) -> u32 {
        self.generated.get(&token).copied().unwrap_or(0)
    }

    /// Step 2: the penalised score of a raw log-prob.
    pub fn penalised(&self, token: u32, logprob: f64, params: &SamplingParams) -> f64 {
        penalise(logprob, self.generated.get(&token).copied(), params)
    }
}

/// Step 2 for a token that is in the history with `count` generated
/// occurrences (`None`: not in the history at all).
pub fn penalise(logprob: f64, count: Option<u32>, params: &SamplingParams) -> f64 {
    let Some(count) = count else { return logprob };
    let mut x = logprob * params.repetition_penalty;
    x -= params.frequency_penalty * f64::from(count);
    if count > 0 {
        x -= params.presence_penalty;
    }
    x
}

/// Step 3: higher score first, ties broken by lower token id.
pub fn candidate_order(a: (f64, u32), b: (f64, u32)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}
