//! The sampler's history (DESIGN §4 step 2) as arrays over the vocabulary,
//! for the replay check's hot loop: one array lookup per candidate instead of
//! a hash lookup. Same answers as `poi_artifact::History` (tested).

use poi_artifact::{penalise, SamplingParams};

pub struct DenseHistory {
    /// Per token id, the sequence stamp at which it joined the history, so
    /// nothing is cleared between artifacts.
    seen_at: Vec<u32>,
    /// Generated occurrences, valid where `seen_at` is the current stamp.
    counts: Vec<u32>,
    stamp: u32,
}

impl DenseHistory {
    pub fn new(vocab_size: usize) -> Self {
        Self { seen_at: vec![0; vocab_size], counts: vec![0; vocab_size], stamp: 0 }
    }

    /// Starts a sequence whose history is `prompt`.
    pub fn reset(&mut self, prompt: &[u32]) {
        if self.stamp == u32::MAX {
            self.seen_at.fill(0);
            self.stamp = 0;
        }
        self.stamp += 1;
        for &token in prompt {
            self.join(token);
        }
    }

    fn join(&mut self, token: u32) -> Option<&mut u32> {
        let at = token as usize;
        let seen = self.seen_at.get_mut(at)?;
        if *seen != self.stamp {
            *seen = self.stamp;
            self.counts[at] = 0;
        }
        Some(&mut self.counts[at])
    }

    pub fn push(&mut self, token: u32) {
        if let Some(count) = self.join(token) {
            *count += 1;
        }
    }

    /// Step 2: the penalised score of a raw log-prob.
    pub fn penalised(&self, token: u32, logprob: f64, params: &SamplingParams) -> f64 {
        let at = token as usize;
        let count = (self.seen_at.get(at) == Some(&self.stamp)).then(|| self.counts[at]);
        penalise(logprob, count, params)
    }
}

#[cfg(test)]
mod tests {
    use poi_artifact::History;

    use super::*;

    #[test]
    fn scores_as_the_hash_history_does_across_sequences() {
        let params = SamplingParams { frequency_penalty: 0.3, presence_penalty: 0.2, ..SamplingParams::SEED_DEFAULTS };
        let mut dense = DenseHistory::new(64);
        let mut state = 99u64;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32 % 64
        };
        for _ in 0..20 {
            let prompt: Vec<u32> = (0..next() % 8).map(|_| next()).collect();
            let mut hashed = History::new(&prompt);
            dense.reset(&prompt);
            for _ in 0..30 {
                for token in 0..64 {
                    let expected = hashed.penalised(token, -1.5, &params);
                    assert_eq!(dense.penalised(token, -1.5, &params).to_bits(), expected.to_bits());
                }
                let token = next();
                hashed.push(token);
                dense.push(token);
            }
        }
    }
}
