//! The per-miner sequential test (DESIGN §9) for artifacts whose seed the
//! miner fixed or that have none: no single such artifact can be caught by an
//! adaptive attacker who keeps every token inside the sampler's kept set, but
//! a miner's artifacts taken together can.
//!
//! **Evidence.** At each position the sampler's final distribution `q` is
//! known (DESIGN §4 steps 2–5). The alternative is the same sampler run
//! hotter: `q'(t) = q(t)^(1-λ) / Z` with `Z = Σ_j q_j^(1-λ)` and the chain's
//! tilt `λ ∈ (0, 1)`. A position's evidence is the log-likelihood ratio
//! `ℓ = ln q'(t) - ln q(t) = -λ ln q(t) - ln Z`, an artifact's is the sum over
//! its positions. For an honest miner the token is a draw from `q`, so
//! `E[e^ℓ] = Σ_t q(t) · q(t)^(-λ) / Z = 1` exactly, whatever the prompt and
//! the history: the product of `e^ℓ` over positions and artifacts is a test
//! martingale. Tokens from a cheaper model, or repaired into the kept set,
//! are on average less likely under `q` than its own draws (that is what the
//! surprisal z measures per artifact), and push the evidence up.
//!
//! **Statistic.** A CUSUM over the miner's artifacts in a fixed order:
//! `S_n = max(0, S_{n-1} + ℓ_n)`, flagged while `S_n ≥ h = ln(1/α)`.
//! `S_n` is the largest sum of evidence over a run of the newest artifacts,
//! and the floor at 0 means credit from earlier, unusually likely artifacts
//! never offsets later laundering.
//!
//! **False alarms.** For a fixed run of artifacts ending at the newest, the
//! product of `e^ℓ` read from the newest backwards is a nonnegative martingale
//! of mean 1 when honest artifacts are independent given their prompts, so by
//! Ville's inequality the chance that any of those sums reaches `h` is at most
//! `e^-h = α`: an honest miner is flagged at any one time with probability at
//! most α, however many artifacts it has. Without the independence, Lorden's
//! bound for the CUSUM still holds: an honest miner's statistic first reaches
//! `h` after `1/α` artifacts on average or more. The bound is close to tight
//! when each artifact's evidence is small against `h` (the statistic creeps
//! up to the threshold with little overshoot): the simulated honest miners of
//! `tests/miner_test.rs` are flagged at 0.083 % of their looks at α = 0.1 %.
//! (The sampler draws with integer weights `W_j / S`, not `q_j`; they differ
//! by at most 2^-32 relative, which moves `E[e^ℓ]` by as little.)

use poi_chain_spec::MinerTestParams;

use crate::sampler::Kept;

/// One position's evidence: the log-likelihood ratio of the tilted sampler
/// against the logged one for a chosen token of probability
/// `chosen_probability` (positive: a zero-probability choice is rejected
/// before this) under the kept distribution `kept`. `libm` throughout
/// (DESIGN §4), so that every node computes the same bits.
pub fn position_evidence(kept: &[Kept], chosen_probability: f64, tilt: f64) -> f64 {
    if kept.len() <= 1 {
        return 0.0;
    }
    let power = 1.0 - tilt;
    let normaliser: f64 = kept.iter().filter(|k| k.probability > 0.0).map(|k| libm::pow(k.probability, power)).sum();
    -tilt * libm::log(chosen_probability) - libm::log(normaliser)
}

/// The test's state after a run of a miner's artifacts, in order.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MinerTest {
    /// Artifacts observed.
    pub artifacts: u64,
    /// The CUSUM `S_n`.
    pub statistic: f64,
    /// The largest `S` seen so far.
    pub peak: f64,
    /// The 1-based artifact at which `S` first reached the threshold.
    pub first_flagged_at: Option<u64>,
}

impl MinerTest {
    /// The test over `evidence` (one value per artifact, in order).
    pub fn over(evidence: impl IntoIterator<Item = f64>, params: &MinerTestParams) -> Self {
        let mut test = Self::default();
        for value in evidence {
            test.observe(value, params);
        }
        test
    }

    /// Adds one artifact's evidence. A value that is not a number fails
    /// closed: it flags.
    pub fn observe(&mut self, evidence: f64, params: &MinerTestParams) {
        self.artifacts += 1;
        let next = self.statistic + evidence;
        self.statistic = if next.is_nan() { f64::INFINITY } else { next.max(0.0) };
        self.peak = self.peak.max(self.statistic);
        if self.first_flagged_at.is_none() && self.flagged(params) {
            self.first_flagged_at = Some(self.artifacts);
        }
    }

    /// Whether the miner is flagged now (the statistic is never NaN:
    /// `observe` turns a NaN into infinity).
    pub fn flagged(&self, params: &MinerTestParams) -> bool {
        self.statistic >= params.threshold()
    }
}
