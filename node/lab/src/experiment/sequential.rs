//! The per-miner sequential test on the real model: its statistic over
//! honest miners (the honest population, seeds removed, cut into miners of
//! `HONEST_MINER_ARTIFACTS` artifacts) and over the laundering miner (the
//! adaptive unseeded attacker's artifacts in many random orders), at every
//! tilt the experiment computes, against the chain's threshold.

use poi_chain_spec::MinerTestParams;
use poi_verifier::miner_test::MinerTest;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use super::matrix::{short_name, TILTS};
use super::population::{HonestRecord, LaunderedRecord};
use crate::stats::quantile;

pub const HONEST_MINER_ARTIFACTS: usize = 50;
/// Random orders of the laundering miner's artifacts.
const ORDERINGS: usize = 400;
/// The goal: flagged within this many artifacts (DESIGN §9, the issue).
pub const GOAL_ARTIFACTS: usize = 20;

#[derive(Clone, Debug, Serialize)]
pub struct TiltRow {
    /// The laundering miner's draft model.
    pub launderer: String,
    pub tilt: f64,
    pub honest_miners: usize,
    /// Looks: one after each honest artifact.
    pub honest_looks: usize,
    pub honest_flagged_looks: usize,
    /// The same with all honest artifacts as one miner.
    pub one_miner_flagged_looks: usize,
    pub honest_peak: f64,
    /// Laundering artifacts a node stores (the replay check admits them).
    pub laundering_admitted: usize,
    /// The fraction of orders flagged within `GOAL_ARTIFACTS` artifacts.
    pub flagged_within_goal: Option<f64>,
    /// The fraction flagged at all within the available artifacts.
    pub flagged_at_all: Option<f64>,
    /// Median artifacts until flagged over the orders (`None` when fewer
    /// than half are flagged).
    pub median_to_flag: Option<f64>,
    pub p90_to_flag: Option<f64>,
    pub mean_evidence_honest: Option<f64>,
    pub mean_evidence_laundering: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub chain_tilt: f64,
    pub false_alarm_rate: f64,
    pub threshold: f64,
    pub honest_miner_artifacts: usize,
    pub goal_artifacts: usize,
    pub orderings: usize,
    pub honest_tokens: usize,
    pub launderers: Vec<Launderer>,
    pub rows: Vec<TiltRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Launderer {
    pub drafts: String,
    pub tried: usize,
    pub rejected_alone: usize,
    pub median_replaced: Option<f64>,
    /// The tilt with the shortest median time to flag this miner.
    pub best_tilt: Option<f64>,
}

/// The statistic after each artifact.
pub fn path(evidence: &[f64], params: &MinerTestParams) -> Vec<f64> {
    let mut test = MinerTest::default();
    evidence
        .iter()
        .map(|&e| {
            test.observe(e, params);
            test.statistic
        })
        .collect()
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

pub fn summarise(
    honest: &[HonestRecord],
    launderers: &[(&str, Vec<LaunderedRecord>)],
    chain: &MinerTestParams,
    honest_tokens: usize,
) -> Summary {
    let threshold = chain.threshold();
    let mut rows = Vec::new();
    let mut summaries = Vec::new();
    for (drafts, laundered) in launderers {
        let first = rows.len();
        for (i, &tilt) in TILTS.iter().enumerate() {
            rows.push(tilt_row(honest, laundered, drafts, i, tilt, chain));
        }
        let best_tilt = rows[first..]
            .iter()
            .filter_map(|r| r.median_to_flag.map(|m| (m, r.tilt)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, tilt)| tilt);
        let replaced: Vec<f64> = laundered.iter().map(|r| r.replaced as f64).collect();
        summaries.push(Launderer {
            drafts: short_name(drafts).to_string(),
            tried: laundered.len(),
            rejected_alone: laundered.iter().filter(|r| r.rejected_by.is_some()).count(),
            median_replaced: quantile(&replaced, 0.5),
            best_tilt,
        });
    }
    Summary {
        chain_tilt: chain.tilt,
        false_alarm_rate: chain.false_alarm_rate,
        threshold,
        honest_miner_artifacts: HONEST_MINER_ARTIFACTS,
        goal_artifacts: GOAL_ARTIFACTS,
        orderings: ORDERINGS,
        honest_tokens,
        launderers: summaries,
        rows,
    }
}

fn tilt_row(
    honest: &[HonestRecord],
    laundered: &[LaunderedRecord],
    drafts: &str,
    i: usize,
    tilt: f64,
    chain: &MinerTestParams,
) -> TiltRow {
    let threshold = chain.threshold();
    let params = MinerTestParams { tilt, ..chain.clone() };
    let honest_evidence: Vec<f64> = honest.iter().filter_map(|r| r.evidence.get(i).copied()).collect();
    let miners: Vec<&[f64]> = honest_evidence.chunks(HONEST_MINER_ARTIFACTS).collect();
    let paths: Vec<Vec<f64>> = miners.iter().map(|m| path(m, &params)).collect();
    let flagged = |path: &[f64]| path.iter().filter(|&&s| s >= threshold).count();
    let one_miner = path(&honest_evidence, &params);
    let launder: Vec<f64> = laundered.iter().filter_map(|r| r.evidence.get(i).copied()).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let delays: Vec<Option<usize>> = (0..if launder.is_empty() { 0 } else { ORDERINGS })
        .map(|_| {
            let mut order = launder.clone();
            order.shuffle(&mut rng);
            path(&order, &params).iter().position(|&s| s >= threshold).map(|p| p + 1)
        })
        .collect();
    let fraction = |hit: &dyn Fn(&Option<usize>) -> bool| {
        (!delays.is_empty()).then(|| delays.iter().filter(|d| hit(d)).count() as f64 / delays.len() as f64)
    };
    // Unflagged orders count as longer than any flagged one.
    let sorted: Vec<f64> = delays.iter().map(|d| d.map_or(f64::INFINITY, |d| d as f64)).collect();
    let finite_quantile = |q: f64| quantile(&sorted, q).filter(|v| v.is_finite());
    TiltRow {
        launderer: short_name(drafts).to_string(),
        tilt,
        honest_miners: miners.len(),
        honest_looks: honest_evidence.len(),
        honest_flagged_looks: paths.iter().map(|p| flagged(p)).sum(),
        one_miner_flagged_looks: flagged(&one_miner),
        honest_peak: paths.iter().flatten().copied().fold(0.0, f64::max),
        laundering_admitted: launder.len(),
        flagged_within_goal: fraction(&|d| d.is_some_and(|d| d <= GOAL_ARTIFACTS)),
        flagged_at_all: fraction(&|d| d.is_some()),
        median_to_flag: finite_quantile(0.5),
        p90_to_flag: finite_quantile(0.9),
        mean_evidence_honest: mean(&honest_evidence),
        mean_evidence_laundering: mean(&launder),
    }
}

type Paths = Vec<Vec<f64>>;

/// Curves for the plot at the chain's tilt: a few honest miners, and a few
/// orders of each laundering miner.
pub fn curves(
    honest: &[HonestRecord],
    launderers: &[(&str, Vec<LaunderedRecord>)],
    chain: &MinerTestParams,
) -> (Paths, Vec<Paths>) {
    let Some(i) = TILTS.iter().position(|&t| t == chain.tilt) else { return (Vec::new(), Vec::new()) };
    let honest_evidence: Vec<f64> = honest.iter().filter_map(|r| r.evidence.get(i).copied()).collect();
    let honest_paths = honest_evidence.chunks(HONEST_MINER_ARTIFACTS).take(8).map(|m| path(m, chain)).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let launder_paths = launderers
        .iter()
        .map(|(_, laundered)| {
            let launder: Vec<f64> = laundered.iter().filter_map(|r| r.evidence.get(i).copied()).collect();
            (0..if launder.is_empty() { 0 } else { 4 })
                .map(|_| {
                    let mut order = launder.clone();
                    order.shuffle(&mut rng);
                    path(&order, chain)
                })
                .collect()
        })
        .collect();
    (honest_paths, launder_paths)
}
