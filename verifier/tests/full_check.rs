//! The full check's comparison against an adaptive miner (DESIGN §5, §7b).
//! The simulated model's raw log-probs do not depend on the history, so the
//! validator's lists are the honest artifact's logged values, and a miner's
//! edit at one position can be followed by an honest continuation.

use poi_artifact::{f16, Artifact, ArtifactBody, Candidate, Generation, History};
use poi_chain_spec::ChainSpec;
use poi_verifier::attacks::steer_list;
use poi_verifier::full_check::{compare, rejection, Difference, FullCheckReport, Mismatch};
use poi_verifier::simulate::{body_with, miner, Chooser};
use poi_verifier::topk::{logged_candidates, TopCandidate};
use poi_verifier::{ReplayChecker, Sampler};

const N: usize = 48;

fn spec() -> ChainSpec {
    ChainSpec::devnet()
}

fn honest(seed: u64) -> ArtifactBody {
    body_with(&spec(), N, seed, Chooser::Seeded)
}

/// What the pinned model gives at every position: the honest raw values.
fn model_tops(body: &ArtifactBody) -> Vec<Vec<TopCandidate>> {
    body.generation
        .positions()
        .map(|p| p.candidates().map(|c| TopCandidate { token: c.token, logprob: c.logprob.to_f32() }).collect())
        .collect()
}

fn full_check(body: &ArtifactBody, tops: &[Vec<TopCandidate>]) -> FullCheckReport {
    let spec = spec();
    compare(&spec.numerics, &body.clone().sign(&miner()), tops, &spec.thresholds)
}

fn mismatch(report: &FullCheckReport) -> (usize, Difference) {
    assert!(!report.accepted, "expected a rejection");
    let Mismatch { position, difference } = report.mismatch.clone().expect("a mismatch");
    (position, difference)
}

/// Sampler v1's pick from `list` at `position`.
fn seeded_pick(body: &ArtifactBody, list: &[Candidate], history: &History, position: usize) -> usize {
    let seed = body.request.run_seed().unwrap();
    let candidates = list.iter().map(|c| (c.token, c.logprob.to_f64()));
    Sampler::new().choose(candidates, history, &body.sampling, &seed, position as u32).unwrap()
}

/// The attack of the sound-checks issue: at `target`, log the model's list
/// edited (`attacks::steer_list`) so that the seeded pick is `wanted`, and
/// continue honestly after it.
fn steer(body: &ArtifactBody, tops: &[Vec<TopCandidate>], target: usize, wanted: u32) -> Option<ArtifactBody> {
    let seed = body.request.run_seed().unwrap();
    let mut history = History::new(&body.request.prompt_tokens);
    let mut positions = Vec::with_capacity(N);
    let mut fillers = 40_000..;
    for (position, top) in tops.iter().enumerate() {
        let list = logged_candidates(top, &history, &body.sampling);
        let (list, chosen) = if position == target {
            steer_list(&list, &history, &body.sampling, &seed, position as u32, wanted, &mut fillers)?
        } else {
            let chosen = seeded_pick(body, &list, &history, position);
            (list, chosen as u8)
        };
        history.push(list[usize::from(chosen)].token);
        positions.push((list, chosen));
    }
    let mut edited = body.clone();
    edited.generation = Generation::new(body.generation.k(), &positions).unwrap();
    Some(edited)
}

/// A token at `position` the seeded pick did not choose but the sampler keeps.
fn unchosen_kept_token(body: &ArtifactBody, position: usize) -> Option<u32> {
    let history = History::with_generated(&body.request.prompt_tokens, &body.generation.chosen_tokens()[..position]);
    let view = body.generation.position(position);
    let mut sampler = Sampler::new();
    let kept = sampler.distribution(view.candidates().map(|c| (c.token, c.logprob.to_f64())), &history, &body.sampling);
    kept.iter().map(|k| view.tokens[k.index]).find(|&t| t != view.chosen_token())
}

/// An honest artifact whose last position keeps a second candidate.
fn last_position_with_choice() -> (ArtifactBody, u32) {
    (0..).map(honest).find_map(|body| Some((body.clone(), unchosen_kept_token(&body, N - 1)?))).unwrap()
}

#[test]
fn honest_artifacts_are_exactly_what_the_model_gives() {
    for seed in 0..10 {
        let body = honest(seed);
        let report = full_check(&body, &model_tops(&body));
        assert!(report.accepted, "seed {seed}: {:?}", report.reason);
        assert!(report.mismatch.is_none() && report.positions.iter().all(|p| p.exact));
        assert_eq!(report.match_ratio, 1.0);
        assert_eq!(report.profile_id, "gguf-native-cpu/v3");
    }
}

/// The steering attack passes the replay check and the seed's `distance2`
/// thresholds (which is how it passed before), and the exact comparison
/// rejects it at the edited position, first, middle or last.
#[test]
fn steering_the_seeded_pick_by_editing_a_list_is_rejected_at_any_position() {
    let spec = spec();
    let mut attacks = 0;
    for seed in 0..40 {
        let body = honest(seed);
        let tops = model_tops(&body);
        for target in [0, N / 2, N - 1] {
            let Some(wanted) = unchosen_kept_token(&body, target) else { continue };
            let Some(edited) = steer(&body, &tops, target, wanted) else { continue };
            attacks += 1;
            let artifact = edited.clone().sign(&miner());
            ReplayChecker::new(spec.clone()).check(&artifact).expect("the edited list replays: the attack's premise");
            let report = full_check(&edited, &tops);
            assert!(
                rejection(report.distance2, report.match_ratio, &spec.thresholds).is_none(),
                "seed {seed} position {target}: distance2 {} and match ratio {} alone would reject",
                report.distance2,
                report.match_ratio
            );
            let (position, difference) = mismatch(&report);
            assert_eq!(position, target, "seed {seed}");
            assert!(matches!(difference, Difference::Omitted { .. }), "seed {seed}: {difference}");
        }
    }
    assert!(attacks >= 60, "only {attacks} steerable positions");
}

fn edit(body: &ArtifactBody, position: usize, change: impl FnOnce(&mut Vec<Candidate>, &mut u8)) -> ArtifactBody {
    let mut positions = body.generation.to_positions();
    let (list, chosen) = &mut positions[position];
    change(list, chosen);
    let mut edited = body.clone();
    edited.generation = Generation::new(body.generation.k(), &positions).unwrap();
    edited
}

#[test]
fn omitted_added_altered_and_reordered_candidates_are_named() {
    let body = honest(3);
    let tops = model_tops(&body);
    for position in [0, N / 2, N - 1] {
        let omitted = edit(&body, position, |list, _| list[19].token = 45_000);
        assert!(
            matches!(mismatch(&full_check(&omitted, &tops)), (p, Difference::Omitted { rank: 19, .. }) if p == position)
        );

        // The model's list of the edited position minus one entry, plus one.
        let mut short = tops.clone();
        short[position][19].token = 45_001;
        assert!(matches!(
            mismatch(&full_check(&body, &short)),
            (p, Difference::Omitted { .. }) if p == position
        ));

        let altered = edit(&body, position, |list, _| {
            list[19].logprob = f16::from_bits(list[19].logprob.to_bits() + 1);
        });
        assert!(matches!(
            mismatch(&full_check(&altered, &tops)),
            (p, Difference::Altered { .. }) if p == position
        ));

        let reordered = edit(&body, position, |list, _| list.swap(17, 18));
        let (p, difference) = mismatch(&full_check(&reordered, &tops));
        assert_eq!(p, position);
        assert!(matches!(difference, Difference::Reordered { slot: 17, .. }), "{difference}");
    }
    let mut added = tops.clone();
    added[5].truncate(19);
    let (p, difference) = mismatch(&full_check(&body, &added));
    assert_eq!(p, 5);
    assert!(matches!(difference, Difference::Added { slot: _, k: 19, .. }), "{difference}");
}

/// With the list untouched, a chosen token that is not the seeded pick from
/// the model's own list rejects (the full check stands without the replay).
#[test]
fn a_chosen_token_other_than_the_seeded_pick_is_rejected() {
    let (body, wanted) = last_position_with_choice();
    let tops = model_tops(&body);
    let edited =
        edit(&body, N - 1, |list, chosen| *chosen = list.iter().position(|c| c.token == wanted).unwrap() as u8);
    let (position, difference) = mismatch(&full_check(&edited, &tops));
    assert_eq!(position, N - 1);
    assert!(matches!(difference, Difference::NotTheSeededPick { logged, .. } if logged == wanted));
}

/// A profile that is not bit-exact tolerates value noise within the chain's
/// `distance2` and match-ratio thresholds, never a token other than the
/// seeded pick from the validator's list.
#[test]
fn a_tolerant_profile_accepts_value_noise_but_not_a_chosen_token() {
    let spec = spec();
    let mut tolerant = spec.numerics.clone();
    tolerant.bit_exact = false;
    let (body, wanted) = last_position_with_choice();
    let mut noisy = model_tops(&body);
    for top in &mut noisy {
        for c in top.iter_mut().skip(15) {
            // A few half steps: enough to change the rounded value.
            c.logprob *= 1.003;
        }
    }
    let artifact: Artifact = body.clone().sign(&miner());
    let report = compare(&tolerant, &artifact, &noisy, &spec.thresholds);
    assert!(report.accepted, "{:?}", report.reason);
    assert!(report.mismatch.is_some(), "the difference is still reported");
    assert!(!compare(&spec.numerics, &artifact, &noisy, &spec.thresholds).accepted, "bit-exact: rejected");

    let tops = model_tops(&body);
    let edited =
        edit(&body, N - 1, |list, chosen| *chosen = list.iter().position(|c| c.token == wanted).unwrap() as u8);
    let report = compare(&tolerant, &edited.sign(&miner()), &tops, &spec.thresholds);
    assert!(!report.accepted);
    assert!(report.reason.unwrap().contains("sampler v1's pick"));
}
