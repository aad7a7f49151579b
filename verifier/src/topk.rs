//! DESIGN §4 step 1: the top `K` tokens of the whole vocabulary by penalised
//! score. Only tokens in the history are penalised, so one pass keeps the best
//! `K` unpenalised tokens in a small heap and the history's tokens are scored
//! on their own; the union holds the answer.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use poi_artifact::{candidate_order, logged_half, Candidate, History, SamplingParams};

/// A candidate with its raw (unpenalised) log-prob as the model computed it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopCandidate {
    pub token: u32,
    pub logprob: f32,
}

/// Step 1's logging: raw log-probs rounded to half, listed in the order step 3
/// gives the rounded values (rounding can swap near-ties). What an honest
/// miner logs, and so what the full check requires under a bit-exact profile.
pub fn logged_candidates(top: &[TopCandidate], history: &History, params: &SamplingParams) -> Vec<Candidate> {
    let mut logged: Vec<Candidate> =
        top.iter().map(|c| Candidate { token: c.token, logprob: logged_half(f64::from(c.logprob)) }).collect();
    let score = |c: &Candidate| history.penalised(c.token, f64::from(c.logprob.to_f32()), params);
    logged.sort_by(|a, b| candidate_order((score(a), a.token), (score(b), b.token)));
    logged
}

/// Heap key: greater is better (higher score, then lower token id).
#[derive(Clone, Copy, PartialEq)]
struct Ranked(f64, u32);

impl Eq for Ranked {}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        candidate_order((other.0, other.1), (self.0, self.1))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Tracks which vocabulary ids are in the history, for one sequence.
pub struct PenalisedTopK {
    k: usize,
    in_history: Vec<bool>,
    members: Vec<u32>,
    heap: BinaryHeap<Reverse<Ranked>>,
}

impl PenalisedTopK {
    pub fn new(vocab_size: usize, k: usize, prompt: &[u32]) -> Self {
        let mut selector = Self {
            k,
            in_history: vec![false; vocab_size],
            members: Vec::new(),
            heap: BinaryHeap::with_capacity(k + 1),
        };
        prompt.iter().for_each(|&t| selector.note(t));
        selector
    }

    /// Adds a token to the history (prompt or generated).
    pub fn note(&mut self, token: u32) {
        if let Some(flag) = self.in_history.get_mut(token as usize) {
            if !*flag {
                *flag = true;
                self.members.push(token);
            }
        }
    }

    /// The best `k` of `logprobs` (one row over the vocabulary), best first.
    pub fn select(&mut self, logprobs: &[f32], history: &History, params: &SamplingParams) -> Vec<TopCandidate> {
        self.heap.clear();
        for (token, &logprob) in logprobs.iter().enumerate() {
            if self.in_history[token] {
                continue;
            }
            let ranked = Ranked(f64::from(logprob), token as u32);
            if self.heap.len() < self.k {
                self.heap.push(Reverse(ranked));
            } else if self.heap.peek().is_some_and(|Reverse(worst)| ranked > *worst) {
                self.heap.pop();
                self.heap.push(Reverse(ranked));
            }
        }
        let mut ranked: Vec<Ranked> = self.heap.drain().map(|Reverse(r)| r).collect();
        ranked.extend(self.members.iter().filter_map(|&token| {
            let logprob = *logprobs.get(token as usize)?;
            Some(Ranked(history.penalised(token, f64::from(logprob), params), token))
        }));
        ranked.sort_by(|a, b| b.cmp(a));
        ranked.truncate(self.k);
        ranked.into_iter().map(|Ranked(_, token)| TopCandidate { token, logprob: logprobs[token as usize] }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: score everything, sort, truncate.
    fn brute_force(logprobs: &[f32], history: &History, params: &SamplingParams, k: usize) -> Vec<u32> {
        let mut all: Vec<(f64, u32)> = logprobs
            .iter()
            .enumerate()
            .map(|(t, &l)| (history.penalised(t as u32, f64::from(l), params), t as u32))
            .collect();
        all.sort_by(|&a, &b| candidate_order(a, b));
        all.into_iter().take(k).map(|(_, t)| t).collect()
    }

    #[test]
    fn matches_brute_force_with_penalties_and_ties() {
        let params = SamplingParams { frequency_penalty: 0.3, presence_penalty: 0.2, ..SamplingParams::SEED_DEFAULTS };
        let mut state = 12345u64;
        for round in 0..50 {
            let vocab = 300;
            let logprobs: Vec<f32> = (0..vocab)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    // Few distinct values, so ties are common.
                    -(((state >> 33) % 40) as f32) / 8.0
                })
                .collect();
            let prompt: Vec<u32> = (0..round).map(|i| (i * 7 % vocab) as u32).collect();
            let generated: Vec<u32> = (0..round / 2).map(|i| (i * 13 % vocab) as u32).collect();
            let history = History::with_generated(&prompt, &generated);
            let mut selector = PenalisedTopK::new(vocab, 20, &prompt);
            generated.iter().for_each(|&t| selector.note(t));
            let fast: Vec<u32> = selector.select(&logprobs, &history, &params).iter().map(|c| c.token).collect();
            assert_eq!(fast, brute_force(&logprobs, &history, &params, 20), "round {round}");
        }
    }
}
