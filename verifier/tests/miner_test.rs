//! The per-miner sequential test on simulated miners: honest evidence is a
//! likelihood ratio of mean 1, honest miners are flagged no more often than
//! the stated rate, a laundering miner whose every token is in the kept set
//! (which no per-artifact test catches) is flagged, and credit banked with
//! unusually likely artifacts does not hide later laundering.

use poi_artifact::History;
use poi_chain_spec::{ChainSpec, MinerTestParams};
use poi_verifier::miner_test::{position_evidence, MinerTest};
use poi_verifier::simulate::{build, synthetic_candidates, Chooser};
use poi_verifier::{ReplayChecker, ReplayError, Sampler};
use rand::rngs::StdRng;
use rand::SeedableRng;

const POSITIONS: usize = 64;

/// Each artifact's evidence, for the artifacts the replay check admits (a
/// node stores only those); `None` for one it rejects.
fn evidence(spec: &ChainSpec, checker: &mut ReplayChecker, seed: u64, chooser: Chooser) -> Option<f64> {
    let built = build(spec, POSITIONS, seed, chooser);
    match checker.check_bytes(&built.bytes) {
        Ok((_, report)) => Some(report.evidence.expect("unseeded artifacts carry evidence")),
        Err(ReplayError::Surprisal { .. } | ReplayError::ChosenNotSampleable { .. }) => None,
        Err(other) => panic!("seed {seed}: {other}"),
    }
}

#[test]
fn honest_evidence_is_a_likelihood_ratio_of_mean_one() {
    let spec = ChainSpec::devnet();
    let mut rng = StdRng::seed_from_u64(7);
    let mut sampler = Sampler::new();
    let history = History::new(&[1, 2, 3]);
    for _ in 0..200 {
        let candidates = synthetic_candidates(&mut rng, 20, spec.model.vocab_size);
        let kept = sampler.distribution(candidates.into_iter(), &history, &spec.sampling).to_vec();
        for tilt in [0.01, 0.0625, 0.5, 0.99] {
            // E_q[e^ℓ] over every token the honest sampler could draw.
            let mean: f64 =
                kept.iter().map(|k| k.probability * position_evidence(&kept, k.probability, tilt).exp()).sum();
            assert!((mean - 1.0).abs() < 1e-12, "tilt {tilt}: E[e^l] = {mean}");
        }
    }
    // A position with one kept candidate carries no evidence either way.
    let only = [poi_verifier::Kept { index: 0, probability: 1.0 }];
    assert_eq!(position_evidence(&only, 1.0, 0.0625), 0.0);
}

#[test]
fn honest_miners_are_flagged_no_more_often_than_the_stated_rate() {
    let spec = ChainSpec::devnet();
    let mut checker = ReplayChecker::new(spec.clone());
    // A rate large enough to measure on 6000 looks, and the chain's own.
    for alpha in [0.05, spec.miner_test.false_alarm_rate] {
        let params = MinerTestParams { false_alarm_rate: alpha, ..spec.miner_test.clone() };
        let (mut looks, mut flagged) = (0u32, 0u32);
        let mut rejected = 0;
        for miner in 0..100u64 {
            let mut test = MinerTest::default();
            for artifact in 0..60u64 {
                // The surprisal test's own false positives are not stored.
                let Some(value) = evidence(&spec, &mut checker, miner * 1000 + artifact, Chooser::HonestUnseeded)
                else {
                    rejected += 1;
                    continue;
                };
                test.observe(value, &params);
                looks += 1;
                flagged += u32::from(test.flagged(&params));
            }
        }
        let rate = f64::from(flagged) / f64::from(looks);
        eprintln!("alpha {alpha}: {flagged} of {looks} looks flagged ({rate:.5}); {rejected} not admitted");
        assert!(rejected <= 6, "{rejected} honest artifacts failed the surprisal test");
        assert!(rate <= alpha, "alpha {alpha}: measured {rate}");
    }
}

/// The laundered artifact (1-based) at which the test flags a miner whose
/// artifacts come from `chooser`, after `banking` artifacts of its most
/// likely tokens; `None` if 2000 laundered artifacts do not suffice.
fn flagged_after(
    params: &MinerTestParams,
    banking: usize,
    chooser: fn() -> Chooser,
    sum_from_start: bool,
) -> Option<u64> {
    let spec = ChainSpec::devnet();
    let mut checker = ReplayChecker::new(spec.clone()).with_evidence_tilt(params.tilt);
    let mut test = MinerTest::default();
    let mut total = 0.0;
    for seed in 0..banking as u64 {
        let value = evidence(&spec, &mut checker, 50_000 + seed, Chooser::MostLikely).expect("in the kept set");
        test.observe(value, params);
        total += value;
    }
    let mut laundered = 0;
    for seed in 0..2_000u64 {
        let Some(value) = evidence(&spec, &mut checker, 90_000 + seed, chooser()) else { continue };
        laundered += 1;
        test.observe(value, params);
        total += value;
        let flagged = if sum_from_start { total >= params.threshold() } else { test.flagged(params) };
        if flagged {
            return Some(laundered);
        }
    }
    None
}

#[test]
fn a_laundering_miner_inside_the_kept_set_is_flagged() {
    let spec = ChainSpec::devnet();
    let params = spec.miner_test.clone();
    let mut checker = ReplayChecker::new(spec.clone());
    // Per artifact, the surprisal test passes almost all of them.
    let launder = || Chooser::OtherModelInKept(1.0);
    let passed = (0..200u64).filter(|&s| evidence(&spec, &mut checker, 90_000 + s, launder()).is_some()).count();
    assert!(passed >= 180, "the surprisal test alone caught {} of 200", 200 - passed);
    let after = flagged_after(&params, 0, launder, false).expect("flagged");
    eprintln!("laundering miner flagged after {after} admitted artifacts of {POSITIONS} positions");
    assert!(after <= 40, "flagged after {after}");
}

#[test]
fn credit_banked_with_likely_tokens_does_not_hide_later_laundering() {
    let params = ChainSpec::devnet().miner_test;
    let launder = || Chooser::OtherModelInKept(1.0);
    let fresh = flagged_after(&params, 0, launder, false).expect("flagged");
    let banked = flagged_after(&params, 200, launder, false);
    // The attack works on a test that sums evidence from the first artifact.
    let banked_sum = flagged_after(&params, 200, launder, true);
    eprintln!("flagged after {fresh} fresh, {banked:?} after banking; a plain sum after {banked_sum:?}");
    assert_eq!(banked, Some(fresh), "the CUSUM's floor discards banked credit");
    assert!(banked_sum.is_none_or(|n| n > 3 * fresh), "banking should delay a plain sum: {banked_sum:?} vs {fresh}");
}

#[test]
fn a_missing_figure_flags() {
    let params = ChainSpec::devnet().miner_test;
    let mut test = MinerTest::over([0.5, -2.0, 1.0], &params);
    assert!(!test.flagged(&params));
    assert_eq!(test.statistic, 1.0);
    test.observe(f64::NAN, &params);
    assert!(test.flagged(&params));
    assert_eq!(test.first_flagged_at, Some(4));
}
