//! Sampler v1 (DESIGN §4, normative). One implementation serves the miner's
//! generator and the replay check, so what is sampled is exactly what is
//! replayed.

use poi_artifact::{candidate_order, History, SamplingParams};
use sha2::{Digest, Sha256};

const DRAW_DOMAIN: &[u8] = b"poi/sampler/v1";
const TWO_POW_32: f64 = 4_294_967_296.0;

/// Step 7: the position's 64-bit draw.
pub fn draw(run_seed: &[u8; 32], position: u32) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(DRAW_DOMAIN);
    hasher.update(run_seed);
    hasher.update(position.to_le_bytes());
    let digest = hasher.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// One kept candidate of the final distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Kept {
    /// Index into the candidates as the caller listed them.
    pub index: usize,
    /// Probability after top-p / min-p renormalisation (step 5).
    pub probability: f64,
}

/// Reusable scratch space, so the hot replay loop does not allocate.
#[derive(Debug, Default)]
pub struct Sampler {
    order: Vec<(f64, u32, usize)>,
    probabilities: Vec<f64>,
    kept: Vec<Kept>,
}

impl Sampler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Steps 2–5: the distribution the sampler draws from, in sampler order
    /// (highest penalised score first). With temperature 0 it is the single
    /// best candidate with probability 1.
    pub fn distribution(
        &mut self,
        candidates: impl Iterator<Item = (u32, f64)>,
        history: &History,
        params: &SamplingParams,
    ) -> &[Kept] {
        self.order.clear();
        self.order.extend(
            candidates
                .enumerate()
                .map(|(index, (token, logprob))| (history.penalised(token, logprob, params), token, index)),
        );
        self.order.sort_by(|a, b| candidate_order((a.0, a.1), (b.0, b.1)));
        self.kept_from_order(params)
    }

    /// As `distribution`, for candidates already scored (step 2) and sorted
    /// (step 3) as `(score, token, index)`: the replay check has them so after
    /// verifying the logged order.
    pub fn distribution_of_ordered(&mut self, ordered: &[(f64, u32, usize)], params: &SamplingParams) -> &[Kept] {
        self.order.clear();
        self.order.extend_from_slice(ordered);
        self.kept_from_order(params)
    }

    fn kept_from_order(&mut self, params: &SamplingParams) -> &[Kept] {
        self.order.truncate(params.top_k as usize);
        self.kept.clear();
        let Some(&(best, _, best_index)) = self.order.first() else { return &self.kept };
        if params.temperature == 0.0 {
            self.kept.push(Kept { index: best_index, probability: 1.0 });
            return &self.kept;
        }

        self.probabilities.clear();
        self.probabilities.extend(self.order.iter().map(|&(x, _, _)| (x - best) / params.temperature));
        crate::exp::exp_in_place(&mut self.probabilities);
        let total: f64 = self.probabilities.iter().sum();
        self.probabilities.iter_mut().for_each(|w| *w /= total);

        // top-p: the shortest prefix whose running sum reaches P.
        let mut running = 0.0;
        let mut prefix = self.probabilities.len();
        for (j, &p) in self.probabilities.iter().enumerate() {
            running += p;
            if running >= params.top_p {
                prefix = j + 1;
                break;
            }
        }
        // min-p, relative to the most likely candidate.
        let floor = params.min_p * self.probabilities[0];
        let mut kept_total = 0.0;
        for j in 0..prefix {
            let p = self.probabilities[j];
            if p >= floor {
                kept_total += p;
                self.kept.push(Kept { index: self.order[j].2, probability: p });
            }
        }
        self.kept.iter_mut().for_each(|k| k.probability /= kept_total);
        &self.kept
    }

    /// Steps 2–8: the index (into the candidates as listed) that sampler v1
    /// chooses at `position`.
    pub fn choose(
        &mut self,
        candidates: impl Iterator<Item = (u32, f64)>,
        history: &History,
        params: &SamplingParams,
        run_seed: &[u8; 32],
        position: u32,
    ) -> Option<usize> {
        pick(self.distribution(candidates, history, params), run_seed, position)
    }
}

/// Steps 7–8 for a distribution of steps 2–5: the seeded choice at `position`.
/// A single kept candidate needs no draw.
pub fn pick(kept: &[Kept], run_seed: &[u8; 32], position: u32) -> Option<usize> {
    match kept {
        [] => None,
        [only] => Some(only.index),
        _ => choose_from(kept, draw(run_seed, position)),
    }
}

/// Steps 6 and 8: integer weights and the pick for a given draw.
pub fn choose_from(kept: &[Kept], draw: u64) -> Option<usize> {
    let weight = |k: &Kept| ((k.probability * TWO_POW_32).floor() as u64).max(1);
    let total: u64 = kept.iter().map(weight).sum();
    let target = ((u128::from(draw) * u128::from(total)) >> 64) as u64;
    let mut running = 0u64;
    kept.iter().find_map(|k| {
        running += weight(k);
        (running > target).then_some(k.index)
    })
}
