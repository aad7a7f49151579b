//! Tables, goals and the markdown report, computed from the run records.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use poi_chain_spec::Thresholds;
use serde::Serialize;

use poi_verifier::full_check::rejection;

use super::matrix::{Class, Decoding, Pair, PREFIX_LENGTHS};
use super::population::HonestSummary;
use super::redteam::AttackRow;
use super::run::PairRecord;
use super::sequential;
use crate::stats::{auc, quantile, rate, zero_failure_bound};

/// The recommended `max_distance2` is the honest quantile at the
/// false-positive target times this margin, for machines and inputs the
/// experiment did not see.
pub const MARGIN: f64 = 1.5;

/// All records of one pair under one decoding.
pub struct PairData {
    pub decoding: Decoding,
    pub pair: Pair,
    pub records: Vec<PairRecord>,
}

impl PairData {
    pub fn distances(&self) -> Vec<f64> {
        self.records.iter().map(|r| r.distance2).collect()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Recommended {
    pub fpr_target: f64,
    pub honest_samples: usize,
    pub max_distance2: f64,
    pub min_match_ratio: f64,
    /// The largest honest surprisal z seen at each prefix length.
    pub honest_max_z: Vec<(usize, Option<f64>)>,
}

impl Recommended {
    pub fn derive(data: &[PairData], chain: &Thresholds, fpr_target: f64) -> Self {
        let honest: Vec<&PairRecord> =
            data.iter().filter(|d| d.pair.class == Class::Honest).flat_map(|d| &d.records).collect();
        let distances: Vec<f64> = honest.iter().map(|r| r.distance2).collect();
        let matches: Vec<f64> = honest.iter().map(|r| r.match_ratio).collect();
        let max_distance2 =
            quantile(&distances, 1.0 - fpr_target).map_or(chain.max_distance2, |q| round_up(q * MARGIN));
        // Match ratios vary little among honest runs; keep the chain's value
        // unless honest runs come near it.
        let min_match_ratio = quantile(&matches, fpr_target)
            .map_or(chain.min_match_ratio, |q| chain.min_match_ratio.min(((q - 0.05) * 100.0).floor() / 100.0));
        let honest_max_z = PREFIX_LENGTHS
            .iter()
            .map(|&n| {
                let zs = honest.iter().flat_map(|r| &r.prefixes).filter(|p| p.n == n).filter_map(|p| p.z);
                (n, zs.reduce(f64::max))
            })
            .collect();
        Self { fpr_target, honest_samples: honest.len(), max_distance2, min_match_ratio, honest_max_z }
    }
}

/// Two significant digits, rounded up: a threshold an operator can read.
fn round_up(value: f64) -> f64 {
    if value <= 0.0 {
        return value;
    }
    let scale = 10f64.powf(value.log10().floor() - 1.0);
    let rounded = (value / scale).ceil() * scale;
    // Through text, so that 8.2e-4 is stored as 0.00082, not 0.00082000…01.
    format!("{rounded:.1e}").parse().unwrap_or(rounded)
}

/// The `distance2` / match-ratio rule (the seed's, and a tolerant
/// profile's), on the stored figures.
fn rejected(record: &PairRecord, thresholds: &Thresholds) -> bool {
    rejection(record.distance2, record.match_ratio, thresholds).is_some()
}

#[derive(Clone, Debug, Serialize)]
pub struct PairRow {
    pub decoding: &'static str,
    pub pair: &'static str,
    pub class: Class,
    pub n: usize,
    pub median_distance2: Option<f64>,
    pub p99_distance2: Option<f64>,
    pub max_distance2: Option<f64>,
    pub mean_match_ratio: Option<f64>,
    /// Rejected by the full check at the chain's thresholds: detection for
    /// fraud, the false-positive rate for honest pairs.
    pub rejected_chain: Option<f64>,
    /// Rejected by the node's full check itself: exact comparison under the
    /// chain's bit-exact profile.
    pub rejected_exact: Option<f64>,
    pub rejected_recommended: Option<f64>,
    /// Against the honest pair of the same decoding; `None` for honest pairs.
    pub auc_distance2: Option<f64>,
    pub auc_max_position: Option<f64>,
    /// Median tokens the adaptive attacker replaced per artifact.
    pub median_replaced_tokens: Option<f64>,
}

pub fn pair_rows(data: &[PairData], chain: &Thresholds, recommended: &Recommended) -> Vec<PairRow> {
    let recommended_thresholds = Thresholds {
        max_distance2: recommended.max_distance2,
        min_match_ratio: recommended.min_match_ratio,
        ..chain.clone()
    };
    data.iter()
        .map(|d| {
            let honest = data.iter().find(|h| h.decoding == d.decoding && h.pair.name == "honest");
            let (auc_distance2, auc_max_position) = match honest {
                Some(h) if d.pair.class != Class::Honest => (
                    auc(&h.distances(), &d.distances()),
                    auc(
                        &h.records.iter().map(|r| r.max_position_distance).collect::<Vec<_>>(),
                        &d.records.iter().map(|r| r.max_position_distance).collect::<Vec<_>>(),
                    ),
                ),
                _ => (None, None),
            };
            let distances = d.distances();
            let replaced: Vec<f64> = d.records.iter().filter_map(|r| r.replaced_tokens).map(|n| n as f64).collect();
            PairRow {
                decoding: d.decoding.name(),
                pair: d.pair.name,
                class: d.pair.class,
                n: d.records.len(),
                median_distance2: quantile(&distances, 0.5),
                p99_distance2: quantile(&distances, 0.99),
                max_distance2: quantile(&distances, 1.0),
                mean_match_ratio: (!d.records.is_empty())
                    .then(|| d.records.iter().map(|r| r.match_ratio).sum::<f64>() / d.records.len() as f64),
                rejected_chain: rate(&d.records, |r| rejected(r, chain)),
                rejected_exact: rate(&d.records, |r| !r.full_check_accepted),
                rejected_recommended: rate(&d.records, |r| rejected(r, &recommended_thresholds)),
                auc_distance2,
                auc_max_position,
                median_replaced_tokens: quantile(&replaced, 0.5),
            }
        })
        .collect()
}

/// The replay and surprisal tests on the first `n` positions.
#[derive(Clone, Debug, Serialize)]
pub struct PrefixRow {
    pub decoding: &'static str,
    pub pair: &'static str,
    pub class: Class,
    pub n: usize,
    /// Artifacts with at least `n` positions.
    pub count: usize,
    pub replay_rejected: Option<f64>,
    /// Rejected by the unseeded check: a chosen token outside the sampler's
    /// kept set, or z above the threshold.
    pub surprisal_rejected: Option<f64>,
    /// The part of those with a chosen token outside the kept set (no z).
    pub outside_kept_set: Option<f64>,
    pub median_z: Option<f64>,
}

pub fn prefix_rows(data: &[PairData], max_z: f64) -> Vec<PrefixRow> {
    let mut rows = Vec::new();
    for d in data {
        for n in PREFIX_LENGTHS {
            let prefixes: Vec<_> = d.records.iter().flat_map(|r| &r.prefixes).filter(|p| p.n == n).collect();
            if prefixes.is_empty() {
                continue;
            }
            let seeded: Vec<_> = prefixes.iter().filter_map(|p| p.replay_ok).collect();
            let zs: Vec<f64> = prefixes.iter().filter_map(|p| p.z).collect();
            // A greedy artifact carries no randomness: the surprisal test
            // has nothing to measure there.
            let surprisal_rejected =
                (d.decoding == Decoding::Sampled).then(|| rate(&prefixes, |p| p.z.is_none_or(|z| z > max_z))).flatten();
            rows.push(PrefixRow {
                decoding: d.decoding.name(),
                pair: d.pair.name,
                class: d.pair.class,
                n,
                count: prefixes.len(),
                replay_rejected: rate(&seeded, |ok| !ok),
                surprisal_rejected,
                outside_kept_set: rate(&prefixes, |p| p.z.is_none()),
                median_z: quantile(&zs, 0.5),
            });
        }
    }
    rows
}

/// How a goal stands against the measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GoalStatus {
    /// Observed and statistically shown (95 % bound within the goal).
    Met,
    /// Observed on these samples, but too few to show the rate.
    NotShown,
    Missed,
    NoData,
}

impl GoalStatus {
    pub fn label(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::NotShown => "not shown",
            Self::Missed => "MISSED",
            Self::NoData => "no data",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    pub goal: String,
    pub measured: String,
    pub status: GoalStatus,
}

fn percent(value: f64) -> String {
    format!("{:.2} %", value * 100.0)
}

/// A failure-rate goal (`failures` of `n`, at most `allowed`): met when the
/// 95 % upper bound is within it, not shown when only the observation is.
fn rate_verdict(failures: f64, n: usize, allowed: f64) -> GoalStatus {
    if n == 0 {
        return GoalStatus::NoData;
    }
    let observed = failures / n as f64;
    let bound = if failures == 0.0 { zero_failure_bound(n).unwrap_or(1.0) } else { 1.0 };
    if observed > allowed {
        GoalStatus::Missed
    } else if bound <= allowed || allowed == 0.0 {
        GoalStatus::Met
    } else {
        GoalStatus::NotShown
    }
}

/// DESIGN §9's goals against the measured rows.
pub fn goals(
    rows: &[PairRow],
    prefixes: &[PrefixRow],
    honest_checks: &HonestSummary,
    red_team: &[AttackRow],
    miner_test: &sequential::Summary,
) -> Vec<Goal> {
    let mut goals = Vec::new();
    goals.push(Goal {
        goal: "honest false-positive rate ≤ 0.1 %, shown on ≥ 3000 honest checks (the node's full check and replay)"
            .into(),
        measured: format!(
            "{} of {} honest artifacts ({} positions) rejected; 95 % upper bound {}",
            honest_checks.rejected,
            honest_checks.checks,
            honest_checks.positions,
            honest_checks.upper_bound.map_or("n/a".into(), percent)
        ),
        status: match honest_checks.upper_bound {
            None => GoalStatus::NoData,
            Some(_) if honest_checks.observed_rate.is_some_and(|r| r > 0.001) => GoalStatus::Missed,
            Some(bound) if bound <= 0.001 => GoalStatus::Met,
            Some(_) => GoalStatus::NotShown,
        },
    });
    let seeded: Vec<&AttackRow> = red_team.iter().filter(|r| r.seeding != "unseeded" && !r.honest).collect();
    let changed: usize = seeded.iter().map(|r| r.changed).sum();
    let slipped: usize = seeded.iter().map(|r| r.changed_accepted).sum();
    goals.push(Goal {
        goal: "every seeded attack rejected where the miner changed at least one token".into(),
        measured: format!("{slipped} of {changed} changed seeded artifacts accepted"),
        status: if changed == 0 {
            GoalStatus::NoData
        } else if slipped == 0 {
            GoalStatus::Met
        } else {
            GoalStatus::Missed
        },
    });
    let at_chain_tilt: Vec<&sequential::TiltRow> =
        miner_test.rows.iter().filter(|r| r.tilt == miner_test.chain_tilt && r.laundering_admitted > 0).collect();
    let measured: Vec<String> = at_chain_tilt
        .iter()
        .map(|r| {
            format!(
                "{} drafts: median {} artifacts ({} of orders within {})",
                r.launderer,
                r.median_to_flag.map_or(format!("> {}", r.laundering_admitted), |m| format!("{m}")),
                r.flagged_within_goal.map_or("n/a".into(), percent),
                miner_test.goal_artifacts
            )
        })
        .collect();
    let honest_row = at_chain_tilt.first();
    goals.push(Goal {
        goal: format!(
            "laundering miner flagged within ≤ {} artifacts (median over orders) at an honest false-alarm rate ≤ 0.1 %",
            miner_test.goal_artifacts
        ),
        measured: match honest_row {
            Some(h) => format!(
                "tilt {}, artifacts of {} tokens: {}; honest: {} of {} looks flagged",
                miner_test.chain_tilt,
                miner_test.honest_tokens,
                measured.join("; "),
                h.honest_flagged_looks,
                h.honest_looks
            ),
            None => "no data".into(),
        },
        status: match honest_row {
            Some(h) if h.honest_looks > 0 => {
                let honest_ok = (h.honest_flagged_looks as f64) <= 0.001 * h.honest_looks as f64;
                let flagged =
                    |r: &&&sequential::TiltRow| r.median_to_flag.is_some_and(|m| m <= miner_test.goal_artifacts as f64);
                if honest_ok && at_chain_tilt.iter().all(|r| flagged(&r)) {
                    GoalStatus::Met
                } else {
                    GoalStatus::Missed
                }
            }
            _ => GoalStatus::NoData,
        },
    });
    let mut detection = |class: Class, goal: &str, target: f64, min_auc: Option<f64>| {
        let of_class: Vec<&PairRow> = rows.iter().filter(|r| r.class == class).collect();
        let n: usize = of_class.iter().map(|r| r.n).sum();
        let missed: f64 =
            of_class.iter().map(|r| (1.0 - r.rejected_recommended.unwrap_or(0.0)) * r.n as f64).sum::<f64>().round();
        let lowest_auc = of_class.iter().filter_map(|r| r.auc_distance2).reduce(f64::min);
        let mut status = rate_verdict(missed, n, 1.0 - target);
        if min_auc.is_some_and(|m| lowest_auc.is_none_or(|a| a < m)) && status != GoalStatus::NoData {
            status = GoalStatus::Missed;
        }
        goals.push(Goal {
            goal: goal.into(),
            measured: format!(
                "{missed} of {n} missed; lowest AUC {}",
                lowest_auc.map_or("n/a".into(), |a| format!("{a:.4}"))
            ),
            status,
        });
    };
    detection(Class::NumericsSwap, "numerics swap detected ≥ 99 % (AUC ≥ 0.999)", 0.99, Some(0.999));
    detection(Class::CheaperModel, "cheaper model detected ≥ 99.9 %", 0.999, None);
    let counted = |rows: &[&PrefixRow], rate: fn(&PrefixRow) -> Option<f64>| {
        let n: usize = rows.iter().map(|p| p.count).sum();
        let missed: f64 = rows.iter().map(|p| (1.0 - rate(p).unwrap_or(0.0)) * p.count as f64).sum::<f64>().round();
        (missed, n)
    };
    let seeded: Vec<&PrefixRow> =
        prefixes.iter().filter(|p| p.class == Class::Prefill && p.replay_rejected.is_some()).collect();
    let (missed, n) = counted(&seeded, |p| p.replay_rejected);
    goals.push(Goal {
        goal: "pre-fill rejected 100 % by replay for N ≥ 32".into(),
        measured: format!("{missed} of {n} prefixes (N = 32, 64, 128) passed replay"),
        status: rate_verdict(missed, n, 0.0),
    });
    let unseeded: Vec<&PrefixRow> =
        prefixes.iter().filter(|p| p.class == Class::Prefill && p.replay_rejected.is_none() && p.n >= 128).collect();
    let (missed, n) = counted(&unseeded, |p| p.surprisal_rejected);
    let (not_outside, _) = counted(&unseeded, |p| p.outside_kept_set);
    goals.push(Goal {
        goal: "unseeded pre-fill rejected ≥ 99 % by the surprisal test for N ≥ 128".into(),
        measured: format!(
            "{missed} of {n} passed; {} rejected by a token outside the kept set",
            n as f64 - not_outside
        ),
        status: rate_verdict(missed, n, 0.01),
    });
    let adaptive: Vec<&PrefixRow> =
        prefixes.iter().filter(|p| p.class == Class::AdaptivePrefill && p.n >= 128).collect();
    let (missed, n) = counted(&adaptive, |p| p.surprisal_rejected);
    let medians: Vec<String> = adaptive
        .iter()
        .map(|p| format!("`{}` {}", p.pair, p.median_z.map_or("n/a".into(), |z| format!("{z:.2}"))))
        .collect();
    goals.push(Goal {
        goal: "adaptive unseeded pre-fill (every token repaired into the kept set) rejected ≥ 99 % by the surprisal test for N ≥ 128".into(),
        measured: format!("{missed} of {n} passed; median z {}", medians.join(", ")),
        status: rate_verdict(missed, n, 0.01),
    });
    goals
}

/// Statements the report's text makes only when the data bear them out.
#[derive(Clone, Debug, Serialize)]
pub struct Findings {
    /// Every numerics-swap and cheaper-model artifact scores above every
    /// honest one of its decoding.
    pub fraud_separated: bool,
    /// Every pre-fill artifact the unseeded check rejected had a token
    /// outside the kept set, so the z threshold decided none.
    pub prefill_rejected_by_kept_set_alone: bool,
    /// The longest prefix the adaptive attacker was tested at (128 when the
    /// run has that many tokens).
    pub adaptive_n: Option<usize>,
    /// The largest honest z at that length.
    pub honest_max_z_at_adaptive_n: Option<f64>,
    /// The surprisal test at that length passes more than 1 % of the
    /// adaptive attacker's artifacts.
    pub adaptive_evades_surprisal: bool,
    /// The adaptive attacker's median z there is within the largest honest z.
    pub adaptive_median_within_honest: bool,
}

impl Findings {
    pub fn new(rows: &[PairRow], prefixes: &[PrefixRow], recommended: &Recommended) -> Self {
        let fraud = rows.iter().filter(|r| matches!(r.class, Class::NumericsSwap | Class::CheaperModel));
        let prefill = prefixes.iter().filter(|p| p.class == Class::Prefill && p.surprisal_rejected.is_some());
        let adaptive_n = prefixes.iter().filter(|p| p.class == Class::AdaptivePrefill).map(|p| p.n).max();
        let adaptive = || prefixes.iter().filter(|p| p.class == Class::AdaptivePrefill && Some(p.n) == adaptive_n);
        let honest_max_z = recommended.honest_max_z.iter().find(|(n, _)| Some(*n) == adaptive_n).and_then(|(_, z)| *z);
        Self {
            adaptive_n,
            honest_max_z_at_adaptive_n: honest_max_z,
            fraud_separated: fraud.clone().count() > 0 && fraud.into_iter().all(|r| r.auc_distance2 == Some(1.0)),
            prefill_rejected_by_kept_set_alone: prefill.clone().count() > 0
                && prefill.into_iter().all(|p| p.surprisal_rejected == p.outside_kept_set),
            adaptive_evades_surprisal: adaptive().any(|p| p.surprisal_rejected.is_some_and(|r| r < 0.99)),
            adaptive_median_within_honest: adaptive().count() > 0
                && adaptive().all(|p| p.median_z.zip(honest_max_z).is_some_and(|(m, h)| m <= h)),
        }
    }
}

/// Everything the report shows, also written as `results.json`.
#[derive(Serialize)]
pub struct Results {
    pub command: String,
    pub prompts: usize,
    pub max_tokens: usize,
    pub model_sha256: String,
    pub chain_thresholds: Thresholds,
    pub recommended: Recommended,
    pub pairs: Vec<PairRow>,
    pub prefixes: Vec<PrefixRow>,
    pub goals: Vec<Goal>,
    pub findings: Findings,
    pub adaptive_per_kind: usize,
    pub plots: BTreeMap<String, String>,
    pub honest_checks: HonestSummary,
    pub red_team: Vec<AttackRow>,
    pub miner_test: sequential::Summary,
    pub miner_test_plot: String,
}

pub fn write(results: &Results, out: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(out.join("results").join("results.json"), json)?;
    let mut env = minijinja::Environment::new();
    env.add_filter("num", |value: Option<f64>| match value {
        None => "–".to_string(),
        Some(v) if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e4) => format!("{v:.2e}"),
        Some(v) => format!("{v:.4}"),
    });
    env.add_filter("pct", |value: Option<f64>| value.map_or("–".to_string(), percent));
    env.add_template("results", include_str!("RESULTS.md.j2"))?;
    let text = env.get_template("results")?.render(results).context("rendering RESULTS.md")?;
    std::fs::write(out.join("RESULTS.md"), text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::round_up;

    #[test]
    fn thresholds_round_up_to_two_significant_digits() {
        assert_eq!(round_up(5.42e-4 * 1.5), 0.00082);
        assert_eq!(round_up(0.0123), 0.013);
        assert_eq!(round_up(0.5), 0.5);
    }
}
