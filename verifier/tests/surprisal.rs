//! The surprisal test on simulated sequences: honest z looks standard normal;
//! tokens chosen by another model are caught.

use poi_verifier::simulate as common;

use common::{build, Chooser};
use poi_chain_spec::ChainSpec;
use poi_verifier::{ReplayChecker, ReplayError};

/// The devnet spec with the surprisal threshold out of the way, to observe z.
fn observing_spec() -> ChainSpec {
    let mut spec = ChainSpec::devnet();
    spec.thresholds.max_surprisal_z = 1e9;
    spec
}

fn z_scores(n: usize, count: u64, make: fn(f64) -> Chooser, noise: f64) -> (Vec<f64>, usize) {
    let spec = observing_spec();
    let mut checker = ReplayChecker::new(spec.clone());
    let mut zs = Vec::new();
    let mut unsampleable = 0;
    for seed in 0..count {
        let built = build(&spec, n, 10_000 + seed, make(noise));
        match checker.check_bytes(&built.bytes) {
            Ok((_, report)) => zs.push(report.z()),
            Err(ReplayError::ChosenNotSampleable { .. }) => unsampleable += 1,
            Err(other) => panic!("seed {seed}: {other}"),
        }
    }
    (zs, unsampleable)
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[test]
fn honest_z_is_standard_normal() {
    for n in [32, 128] {
        let (zs, unsampleable) = z_scores(n, 400, |_| Chooser::HonestUnseeded, 0.0);
        assert_eq!(unsampleable, 0);
        let (mean, std) = mean_std(&zs);
        let above_1645 = zs.iter().filter(|&&z| z > 1.645).count() as f64 / zs.len() as f64;
        let above_4 = zs.iter().filter(|&&z| z > 4.0).count();
        eprintln!("honest n={n}: mean {mean:.3} std {std:.3} P(z>1.645) {above_1645:.3} count(z>4) {above_4}");
        // 400 draws: the mean's standard error is 0.05, the std's about 0.035.
        assert!(mean.abs() < 0.2, "mean {mean}");
        assert!((0.85..1.15).contains(&std), "std {std}");
        assert!((0.02..0.09).contains(&above_1645), "tail {above_1645}");
        assert_eq!(above_4, 0);
    }
}

#[test]
fn seeded_honest_sequences_also_look_honest() {
    let (zs, _) = z_scores(128, 200, |_| Chooser::Seeded, 0.0);
    let (mean, std) = mean_std(&zs);
    eprintln!("seeded n=128: mean {mean:.3} std {std:.3}");
    assert!(mean.abs() < 0.25 && (0.8..1.2).contains(&std));
}

fn detection(n: usize, make: fn(f64) -> Chooser, noise: f64) -> (f64, f64) {
    let threshold = ChainSpec::devnet().thresholds.max_surprisal_z;
    let (zs, unsampleable) = z_scores(n, 200, make, noise);
    let detected = unsampleable + zs.iter().filter(|&&z| z > threshold).count();
    let mean_z = if zs.is_empty() { f64::NAN } else { mean_std(&zs).0 };
    (detected as f64 / 200.0, mean_z)
}

#[test]
fn another_models_tokens_are_detected() {
    // Most of another model's picks fall outside the logged kept set.
    let (rate, _) = detection(128, Chooser::OtherModel, 1.0);
    eprintln!("other model, noise 1, n=128: detected {rate:.3}");
    assert!(rate >= 0.99, "detection rate {rate}");
}

#[test]
fn in_kept_substitution_grows_like_sqrt_n() {
    // Measured (see the closing note): the signal per position inside small
    // top-p sets is weak, so z grows like sqrt(n) from a small base.
    let (rate_128, z_128) = detection(128, Chooser::OtherModelInKept, 3.0);
    let (rate_512, z_512) = detection(512, Chooser::OtherModelInKept, 3.0);
    eprintln!(
        "in-kept noise 3: n=128 rate {rate_128:.3} mean z {z_128:.2}; n=512 rate {rate_512:.3} mean z {z_512:.2}"
    );
    assert!(z_128 > 1.5, "mean z {z_128}");
    assert!(z_512 / z_128 > 1.6, "z grows {z_128} -> {z_512}");
    assert!(rate_512 > rate_128 && rate_512 >= 0.5, "{rate_128} -> {rate_512}");
}
