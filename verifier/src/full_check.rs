//! The full check's comparison (DESIGN §5): the miner's logged lists against
//! the validator's own lists for the same tokens. Running the model that
//! produces the validator's lists is `poi_model::full_check`.
//!
//! Under a bit-exact profile the validator's penalised top-K, rounded to half
//! and ordered as §4 step 3 orders it, is exactly what an honest miner logged:
//! any omitted, added, reordered or altered candidate rejects, and so does a
//! chosen token that is not sampler v1's pick from the validator's list. A
//! miner who edits a list to steer the seeded pick is caught by construction,
//! at any position and any length. `distance2` and the match ratio are still
//! computed: they decide only under a profile that is not bit-exact, and are
//! the operator's view of how far an engine is.

use poi_artifact::{Artifact, Candidate, History};
use poi_chain_spec::{NumericsProfile, Thresholds};
use serde::Serialize;
use thiserror::Error;

use crate::bounds::{at_least, at_most};
use crate::distance::{distance2, position_distance, TopLogprobs};
use crate::sampler::Sampler;
use crate::topk::{logged_candidates, TopCandidate};

/// How the logged list at one position differs from the validator's.
#[derive(Clone, Debug, PartialEq, Serialize, Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Difference {
    #[error("the model ranks token {token} at {rank}, the artifact does not list it")]
    Omitted { token: u32, rank: usize },
    #[error("the artifact lists token {token} (slot {slot}), which is not in the model's top {k}")]
    Added { token: u32, slot: usize, k: usize },
    #[error("token {token} is logged as {logged}, the model gives {model}")]
    Altered { token: u32, logged: f32, model: f32 },
    #[error("slot {slot} holds token {logged}, the model's order puts {expected} there")]
    Reordered { slot: usize, logged: u32, expected: u32 },
    #[error("the chosen token is {logged}, sampler v1's pick from the model's list is {expected}")]
    NotTheSeededPick { logged: u32, expected: u32 },
}

/// The first position where the artifact is not what the model gives.
#[derive(Clone, Debug, PartialEq, Serialize, Error)]
#[error("position {position}: {difference}")]
pub struct Mismatch {
    pub position: usize,
    pub difference: Difference,
}

/// One generated position, for reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PositionDetail {
    pub position: usize,
    pub chosen: u32,
    /// The logged list is exactly the validator's (ids, half values, order).
    pub exact: bool,
    /// This position's summand of `distance2` (before smoothing).
    pub distance: f64,
    /// Logged candidates that are also in the validator's top k.
    pub matches: usize,
    /// Where the chosen token ranks in the validator's top k (0 = first).
    pub validator_rank: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FullCheckReport {
    /// The validator's profile with its version (`NumericsProfile::label`).
    pub profile_id: String,
    pub bit_exact: bool,
    pub distance2: f64,
    pub match_ratio: f64,
    pub accepted: bool,
    /// Why not, when not accepted.
    pub reason: Option<String>,
    /// The first difference, whatever the profile (informational where the
    /// profile is not bit-exact).
    pub mismatch: Option<Mismatch>,
    pub positions: Vec<PositionDetail>,
}

/// The miner's logged candidates per position, as `distance2` takes them.
pub fn logged_top(artifact: &Artifact) -> Vec<TopLogprobs<u32>> {
    artifact
        .body
        .generation
        .positions()
        .map(|p| TopLogprobs {
            chosen: p.chosen_token(),
            entries: p.candidates().map(|c| (c.token, f64::from(c.logprob.to_f32()))).collect(),
        })
        .collect()
}

/// The verdict on `artifact` given the validator's raw top-K at every
/// generated position (`validator[i]` predicts token `i`), computed under
/// `profile`.
pub fn compare(
    profile: &NumericsProfile,
    artifact: &Artifact,
    validator: &[Vec<TopCandidate>],
    thresholds: &Thresholds,
) -> FullCheckReport {
    let body = &artifact.body;
    let logged = logged_top(artifact);
    let mut history = History::new(&body.request.prompt_tokens);
    let mut sampler = Sampler::new();
    let run_seed = body.request.run_seed();
    let (mut first_list, mut first_pick) = (None, None);
    let mut exact = Vec::with_capacity(validator.len());
    for (position, (view, top)) in body.generation.positions().zip(validator).enumerate() {
        let expected = logged_candidates(top, &history, &body.sampling);
        let listed: Vec<Candidate> = view.candidates().collect();
        let list = list_difference(&listed, &expected);
        exact.push(list.is_none());
        if first_list.is_none() {
            first_list = list.map(|difference| Mismatch { position, difference });
        }
        if let (None, Some(seed)) = (&first_pick, &run_seed) {
            let candidates = expected.iter().map(|c| (c.token, c.logprob.to_f64()));
            let picked = sampler.choose(candidates, &history, &body.sampling, seed, position as u32);
            let picked = picked.map(|i| expected[i].token);
            if picked != Some(view.chosen_token()) {
                // No pick at all cannot happen for a non-empty list; u32::MAX
                // names "none" without a second variant.
                let expected = picked.unwrap_or(u32::MAX);
                let difference = Difference::NotTheSeededPick { logged: view.chosen_token(), expected };
                first_pick = Some(Mismatch { position, difference });
            }
        }
        history.push(view.chosen_token());
    }
    let mismatch = match (first_list, first_pick.clone()) {
        (Some(list), Some(pick)) => Some(if pick.position < list.position { pick } else { list }),
        (list, pick) => list.or(pick),
    };

    let validated: Vec<TopLogprobs<u32>> = validator
        .iter()
        .zip(&logged)
        .map(|(top, l)| TopLogprobs {
            chosen: l.chosen,
            entries: top.iter().map(|c| (c.token, f64::from(c.logprob))).collect(),
        })
        .collect();
    let (distance2, match_ratio) = distance2(&logged, &validated);
    let positions = logged
        .iter()
        .zip(&validated)
        .zip(exact)
        .enumerate()
        .map(|(position, ((l, v), exact))| {
            let (distance, matches) = position_distance(&l.entries, &v.entries);
            let validator_rank = v.entries.iter().position(|(t, _)| *t == l.chosen);
            PositionDetail { position, chosen: l.chosen, exact, distance, matches, validator_rank }
        })
        .collect();

    let reason = if validator.len() != logged.len() {
        Some(format!("the validator has {} positions for {} generated tokens", validator.len(), logged.len()))
    } else if profile.bit_exact {
        mismatch.as_ref().map(|m| format!("not what the pinned model gives at {m}"))
    } else {
        // A tolerance on values only: the token must still be the seeded pick.
        first_pick.map(|m| m.to_string()).or_else(|| rejection(distance2, match_ratio, thresholds))
    };
    FullCheckReport {
        profile_id: profile.label(),
        bit_exact: profile.bit_exact,
        distance2,
        match_ratio,
        accepted: reason.is_none(),
        reason,
        mismatch,
        positions,
    }
}

/// The first way `logged` differs from `expected`: membership first, then
/// values (an altered value explains a changed order), then order.
fn list_difference(logged: &[Candidate], expected: &[Candidate]) -> Option<Difference> {
    if let Some((rank, c)) = expected.iter().enumerate().find(|(_, e)| !logged.iter().any(|l| l.token == e.token)) {
        return Some(Difference::Omitted { token: c.token, rank });
    }
    if let Some((slot, c)) = logged.iter().enumerate().find(|(_, l)| !expected.iter().any(|e| e.token == l.token)) {
        return Some(Difference::Added { token: c.token, slot, k: expected.len() });
    }
    for l in logged {
        let model = expected.iter().find(|e| e.token == l.token).map(|e| e.logprob);
        if let Some(model) = model.filter(|m| m.to_bits() != l.logprob.to_bits()) {
            return Some(Difference::Altered { token: l.token, logged: l.logprob.to_f32(), model: model.to_f32() });
        }
    }
    let slot = logged.iter().zip(expected).position(|(l, e)| l.token != e.token)?;
    Some(Difference::Reordered { slot, logged: logged[slot].token, expected: expected[slot].token })
}

/// Why a profile that is not bit-exact rejects these figures under
/// `thresholds`, or `None` when they are within its tolerance; NaN rejects.
pub fn rejection(distance2: f64, match_ratio: f64, thresholds: &Thresholds) -> Option<String> {
    if distance2 < 0.0 {
        Some("nothing to compare".to_string())
    } else if !at_most(distance2, thresholds.max_distance2) {
        Some(format!("distance2 {distance2:.6} is not within {}", thresholds.max_distance2))
    } else if !at_least(match_ratio, thresholds.min_match_ratio) {
        Some(format!("match ratio {match_ratio:.4} is not at least {}", thresholds.min_match_ratio))
    } else {
        None
    }
}
