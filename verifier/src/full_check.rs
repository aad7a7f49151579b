//! The full distribution check's comparison (DESIGN §5): the miner's logged
//! top-k against the validator's own lists for the same tokens. Running the
//! model that produces the validator's lists is `poi_model::full_check`.

use poi_artifact::Artifact;
use poi_chain_spec::Thresholds;
use serde::Serialize;

use crate::distance::{distance2, position_distance, TopLogprobs};
use crate::topk::TopCandidate;

/// One generated position, for reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PositionDetail {
    pub position: usize,
    pub chosen: u32,
    /// This position's summand of `distance2` (before smoothing).
    pub distance: f64,
    /// Logged candidates that are also in the validator's top k.
    pub matches: usize,
    /// Where the chosen token ranks in the validator's top k (0 = first).
    pub validator_rank: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FullCheckReport {
    pub profile_id: String,
    pub distance2: f64,
    pub match_ratio: f64,
    pub accepted: bool,
    /// Why not, when not accepted.
    pub reason: Option<String>,
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

/// `distance2` and the verdict between logged positions and a validator's
/// top-k lists for the same tokens.
pub fn compare(
    profile_id: String,
    logged: &[TopLogprobs<u32>],
    validator: &[Vec<TopCandidate>],
    thresholds: &Thresholds,
) -> FullCheckReport {
    let validated: Vec<TopLogprobs<u32>> = validator
        .iter()
        .zip(logged)
        .map(|(top, l)| TopLogprobs {
            chosen: l.chosen,
            entries: top.iter().map(|c| (c.token, f64::from(c.logprob))).collect(),
        })
        .collect();
    let (distance2, match_ratio) = distance2(logged, &validated);
    let positions = logged
        .iter()
        .zip(&validated)
        .enumerate()
        .map(|(position, (l, v))| {
            let (distance, matches) = position_distance(&l.entries, &v.entries);
            let validator_rank = v.entries.iter().position(|(t, _)| *t == l.chosen);
            PositionDetail { position, chosen: l.chosen, distance, matches, validator_rank }
        })
        .collect();
    let reason = rejection(distance2, match_ratio, thresholds);
    FullCheckReport { profile_id, distance2, match_ratio, accepted: reason.is_none(), reason, positions }
}

/// Why the full check rejects these figures under `thresholds`, or `None`
/// when it accepts them.
pub fn rejection(distance2: f64, match_ratio: f64, thresholds: &Thresholds) -> Option<String> {
    if distance2 < 0.0 {
        Some("nothing to compare".to_string())
    } else if distance2 > thresholds.max_distance2 {
        Some(format!("distance2 {distance2:.6} exceeds {}", thresholds.max_distance2))
    } else if match_ratio < thresholds.min_match_ratio {
        Some(format!("match ratio {match_ratio:.4} is below {}", thresholds.min_match_ratio))
    } else {
        None
    }
}
