//! The replay check: honest artifacts pass; each rule broken once gets its own
//! typed rejection, naming the position where there is one.

use poi_verifier::simulate as common;

use common::{body_with, build, miner, Chooser};
use poi_artifact::{f16, Artifact, ArtifactBody, Candidate, DecodeError, FinishReason, Generation, Hash32, Keypair};
use poi_chain_spec::{ChainSpec, SeedingPolicy};
use poi_verifier::{ReplayChecker, ReplayError, SeedingClass, StructureRule};

fn spec() -> ChainSpec {
    ChainSpec::devnet()
}

fn checker() -> ReplayChecker {
    ReplayChecker::new(spec())
}

fn honest() -> ArtifactBody {
    body_with(&spec(), 48, 1, Chooser::Seeded)
}

fn check(body: ArtifactBody) -> Result<poi_verifier::ReplayReport, ReplayError> {
    checker().check(&body.sign(&miner()))
}

/// Rebuilds the body's generation with one position edited.
fn edit_position(body: &mut ArtifactBody, index: usize, edit: impl FnOnce(&mut Vec<Candidate>, &mut u8)) {
    let mut positions = body.generation.to_positions();
    let (candidates, chosen) = &mut positions[index];
    edit(candidates, chosen);
    body.generation = Generation::new(body.generation.k(), &positions).unwrap();
}

#[test]
fn honest_seeded_artifacts_pass() {
    let spec = spec();
    let mut checker = ReplayChecker::new(spec.clone());
    for seed in 0..20 {
        let built = build(&spec, 64, seed, Chooser::Seeded);
        let (artifact, report) = checker.check_bytes(&built.bytes).unwrap();
        assert_eq!(artifact, built.artifact);
        assert_eq!(report.seeding, SeedingClass::RequesterBound);
        assert_eq!(report.positions, 64);
    }
}

#[test]
fn honest_unseeded_artifacts_pass_on_surprisal_alone() {
    let spec = spec();
    let mut checker = ReplayChecker::new(spec.clone());
    for seed in 0..20 {
        let built = build(&spec, 64, seed, Chooser::HonestUnseeded);
        let (_, report) = checker.check_bytes(&built.bytes).unwrap();
        assert_eq!(report.seeding, SeedingClass::Unseeded);
    }
}

/// The attack: a miner signs its own request binding (so it can grind the
/// uuid) and hopes the artifact passes as requester-bound. A key outside the
/// chain's requester set makes it miner-seeded, like no binding at all.
#[test]
fn a_binding_by_a_key_the_chain_does_not_know_is_miner_seeded() {
    let mut body = honest();
    body.request.bind(&spec().chain_id(), &miner());
    assert_eq!(check(body).unwrap().seeding, SeedingClass::MinerSeeded);
    let mut body = honest();
    body.request.binding = None;
    assert_eq!(check(body).unwrap().seeding, SeedingClass::MinerSeeded);
}

#[test]
fn required_seeding_refuses_miner_seeded_and_unseeded_artifacts() {
    let mut strict = spec();
    strict.seeding.policy = SeedingPolicy::Required;
    let resign = |mut body: ArtifactBody| {
        body.chain_id = strict.chain_id();
        body.request.bind(&strict.chain_id(), &poi_chain_spec::devnet_requester());
        body
    };
    let bound = resign(honest());
    assert_eq!(
        ReplayChecker::new(strict.clone()).check(&bound.sign(&miner())).unwrap().seeding,
        SeedingClass::RequesterBound
    );
    let mut self_bound = resign(honest());
    self_bound.request.bind(&strict.chain_id(), &miner());
    assert_eq!(
        ReplayChecker::new(strict.clone()).check(&self_bound.sign(&miner())),
        Err(ReplayError::SeedingRequired { class: SeedingClass::MinerSeeded })
    );
    let mut unseeded = body_with(&spec(), 16, 3, Chooser::HonestUnseeded);
    unseeded.chain_id = strict.chain_id();
    assert_eq!(
        ReplayChecker::new(strict).check(&unseeded.sign(&miner())),
        Err(ReplayError::SeedingRequired { class: SeedingClass::Unseeded })
    );
}

/// The binding covers the stop rules: a miner cannot raise `max_tokens` or
/// drop a stop token under a requester's signature.
#[test]
fn the_binding_covers_max_tokens_and_stop_tokens() {
    let mut body = honest();
    body.request.max_tokens += 1;
    assert!(matches!(check(body), Err(ReplayError::RequestBinding(_))));
    let mut body = honest();
    body.request.stop_token_ids.push(7);
    assert!(matches!(check(body), Err(ReplayError::RequestBinding(_))));
}

#[test]
fn envelope_rules() {
    let built = build(&spec(), 8, 2, Chooser::Seeded);
    let mut c = checker();
    assert_eq!(
        c.check_bytes(&built.bytes[..built.bytes.len() - 3]).unwrap_err(),
        ReplayError::Decode(DecodeError::Truncated)
    );
    let mut small = spec();
    small.limits.max_artifact_bytes = 1024;
    let big = build(&spec(), 64, 2, Chooser::Seeded);
    assert!(matches!(
        ReplayChecker::new(small).check_bytes(&big.bytes),
        Err(ReplayError::Decode(DecodeError::TooLarge { .. }))
    ));

    let mut body = honest();
    body.chain_id = Hash32([1; 32]);
    assert!(matches!(check(body), Err(ReplayError::WrongChain { .. })));

    let mut body = honest();
    body.sampling.top_p = 0.81;
    assert_eq!(check(body), Err(ReplayError::WrongSampling));

    let mut other_k = spec();
    other_k.logged_k = 10;
    other_k.sampling.top_k = 10;
    let body = body_with(&other_k, 8, 3, Chooser::Seeded);
    let mut body = body;
    body.chain_id = spec().chain_id();
    body.sampling = spec().sampling;
    assert_eq!(check(body), Err(ReplayError::WrongK { expected: 20, found: 10 }));

    let body = honest();
    let forged = Keypair::from_secret([99; 32]).sign(poi_artifact::ARTIFACT_DOMAIN, &body.id());
    let artifact = Artifact::from_parts(body.clone(), forged);
    assert!(matches!(checker().check(&artifact), Err(ReplayError::Signature(_))));
    // The same forgery after the checker has cached the miner's key.
    let mut warm = checker();
    warm.check(&body.sign(&miner())).unwrap();
    assert!(matches!(warm.check(&artifact), Err(ReplayError::Signature(_))));

    let mut body = honest();
    body.request.bind(&spec().chain_id(), &Keypair::from_secret([21; 32]));
    body.request.user_seed = body.request.user_seed.map(|s| s ^ 1);
    assert!(matches!(check(body), Err(ReplayError::RequestBinding(_))));
}

/// What the full check cannot run is refused here, so it never silently
/// fails later: an empty prompt, and prompt plus generation past the model's
/// context.
#[test]
fn the_replay_check_refuses_what_the_full_check_cannot_run() {
    let mut body = honest();
    body.request.prompt_tokens.clear();
    body.request.binding = None;
    assert_eq!(check(body), Err(ReplayError::EmptyPrompt));

    // 4096 prompt tokens (the limit) + 48 generated under a 4100-token context.
    let mut small_context = spec();
    small_context.model.context_length = 4100;
    let mut body = honest();
    body.chain_id = small_context.chain_id();
    body.request.prompt_tokens = vec![5; 4096];
    body.request.binding = None;
    assert_eq!(
        ReplayChecker::new(small_context).check(&body.sign(&miner())),
        Err(ReplayError::ExceedsContext { found: 4144, limit: 4100 })
    );
}

#[test]
fn limit_rules() {
    let mut body = honest();
    body.request.binding = None;
    body.request.prompt_tokens = vec![5; 4097];
    assert!(matches!(check(body), Err(ReplayError::TooLong { what: "prompt", found: 4097, .. })));
    let mut body = honest();
    body.request.binding = None;
    body.request.prompt_tokens[3] = 49152;
    assert_eq!(check(body), Err(ReplayError::PromptOutOfVocabulary { index: 3, token: 49152, vocab: 49152 }));
    let mut short = spec();
    short.limits.max_generated_tokens = 40;
    let artifact = honest().sign(&miner());
    let mut body = artifact.body.clone();
    body.chain_id = short.chain_id();
    body.request.binding = None;
    assert!(matches!(
        ReplayChecker::new(short).check(&body.sign(&miner())),
        Err(ReplayError::TooLong { what: "generation", found: 48, limit: 40 })
    ));
}

fn structure_error(result: Result<poi_verifier::ReplayReport, ReplayError>) -> (usize, StructureRule) {
    match result {
        Err(ReplayError::Structure { position, rule }) => (position, rule),
        other => panic!("expected a structure error, got {other:?}"),
    }
}

#[test]
fn structure_rules_name_the_position() {
    let mut body = honest();
    edit_position(&mut body, 7, |c, _| c[4].token = 50_000);
    assert_eq!(structure_error(check(body)), (7, StructureRule::TokenOutOfVocabulary { token: 50_000, vocab: 49152 }));

    let mut body = honest();
    edit_position(&mut body, 9, |c, _| c[5].token = c[2].token);
    assert!(matches!(structure_error(check(body)), (9, StructureRule::DuplicateCandidate { .. })));

    // Inflated values: two candidates of probability ~1 each.
    let mut body = honest();
    edit_position(&mut body, 8, |c, _| {
        c[0].logprob = f16::ZERO;
        c[1].logprob = f16::from_f32(-0.001);
    });
    assert!(matches!(structure_error(check(body)), (8, StructureRule::NotASubDistribution { .. })));

    let mut body = honest();
    edit_position(&mut body, 11, |c, _| c[19].logprob = f16::from_f32(0.5));
    assert!(matches!(structure_error(check(body)), (11, StructureRule::BadLogprob { .. })));
    // NaN, infinities and -0 never get this far: no generation holds them.
    for bad in [f16::NAN, f16::INFINITY, f16::NEG_INFINITY, f16::NEG_ZERO] {
        let mut positions = honest().generation.to_positions();
        positions[11].0[19].logprob = bad;
        assert!(matches!(Generation::new(20, &positions), Err(DecodeError::Structure(_))), "{bad}");
    }

    let mut body = honest();
    edit_position(&mut body, 12, |c, chosen| {
        c.swap(0, 1);
        *chosen = match *chosen {
            0 => 1,
            1 => 0,
            other => other,
        };
    });
    assert_eq!(structure_error(check(body)), (12, StructureRule::Unordered { slot: 1 }));

    let eos = spec().model.eos_token_id;
    let mut body = honest();
    edit_position(&mut body, 5, |c, chosen| c[usize::from(*chosen)].token = eos);
    assert_eq!(structure_error(check(body)), (5, StructureRule::EarlyStop { token: eos }));

    let mut body = honest();
    body.finish_reason = FinishReason::Eos;
    assert!(matches!(structure_error(check(body)), (47, StructureRule::MissingEos { .. })));
}

/// Forced early stop: the miner cuts the output where it likes and claims the
/// token budget ran out, or claims a stop the request never asked for.
#[test]
fn a_generation_ends_only_where_the_request_says() {
    let unbound = |mut body: ArtifactBody| {
        body.request.binding = None;
        body
    };
    let mut body = unbound(honest());
    let mut positions = body.generation.to_positions();
    positions.truncate(30);
    body.generation = Generation::new(20, &positions).unwrap();
    assert_eq!(structure_error(check(body)), (29, StructureRule::StoppedEarly { generated: 30, max_tokens: 48 }));

    let mut body = unbound(honest());
    body.finish_reason = FinishReason::Stop;
    assert!(matches!(structure_error(check(body)), (47, StructureRule::MissingStop { .. })));

    // A stop token mid-sequence ends the generation there.
    let mut body = unbound(honest());
    let early = body.generation.position(10).chosen_token();
    body.request.stop_token_ids.push(early);
    assert_eq!(structure_error(check(body)), (10, StructureRule::EarlyStop { token: early }));

    // Ending on a stop token is a stop, not a spent budget (an artifact
    // whose last token occurs only there).
    let mut body = (0..)
        .map(|seed| unbound(body_with(&spec(), 48, seed, Chooser::Seeded)))
        .find(|b| {
            let tokens = b.generation.chosen_tokens();
            !tokens[..47].contains(&tokens[47])
        })
        .unwrap();
    let last = body.generation.chosen_tokens()[47];
    body.request.stop_token_ids.push(last);
    assert_eq!(structure_error(check(body.clone())), (47, StructureRule::UnclaimedStop { token: last }));
    body.finish_reason = FinishReason::Stop;
    assert!(check(body).is_ok());

    let mut body = unbound(honest());
    body.request.max_tokens = 40;
    assert!(matches!(check(body), Err(ReplayError::TooLong { what: "generation", found: 48, limit: 40 })));
}

/// DESIGN §4: a candidate whose weight underflows keeps an integer weight of
/// 1, but choosing it rejects, and it adds `0 · ln 0 = 0` to the surprisal
/// (before, `0 · -inf` made z NaN, and a NaN z passed `z > threshold`).
#[test]
fn zero_probability_candidates_fail_closed() {
    let mut wide = spec();
    wide.sampling.top_p = 1.0;
    let mut body = body_with(&wide, 24, 5, Chooser::HonestUnseeded);
    let position = body.generation.positions().position(|p| p.chosen != 19).unwrap();
    // Far below the best candidate: exp((x - x0) / T) underflows to 0.
    edit_position(&mut body, position, |c, _| c[19].logprob = f16::from_f32(-60000.0));
    let report = ReplayChecker::new(wide.clone()).check(&body.clone().sign(&miner())).unwrap();
    assert!(report.z().is_finite(), "z = {}", report.z());

    edit_position(&mut body, position, |_, chosen| *chosen = 19);
    let err = ReplayChecker::new(wide).check(&body.sign(&miner())).unwrap_err();
    assert!(matches!(err, ReplayError::ZeroProbabilityChoice { position: p, .. } if p == position), "{err}");
}

#[test]
fn replay_names_the_first_position_that_differs() {
    let spec = spec();
    let mut sampler = poi_verifier::Sampler::new();
    let body = honest();
    // Find a position with at least two kept candidates and log another one.
    let mut history = poi_artifact::History::new(&body.request.prompt_tokens);
    let mut target = None;
    for (i, p) in body.generation.positions().enumerate() {
        let kept =
            sampler.distribution(p.candidates().map(|c| (c.token, c.logprob.to_f64())), &history, &spec.sampling);
        if target.is_none() && kept.len() >= 2 {
            let other = kept.iter().find(|k| k.index != usize::from(p.chosen)).unwrap().index;
            target = Some((i, other));
        }
        history.push(p.chosen_token());
    }
    let (position, other) = target.expect("some position keeps two candidates");
    let mut body = body;
    edit_position(&mut body, position, |_, chosen| *chosen = other as u8);
    match check(body) {
        Err(ReplayError::ReplayMismatch { position: p, logged, .. }) => {
            assert_eq!(p, position);
            assert_eq!(logged, other);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_token_outside_the_kept_set_is_never_sampleable() {
    let mut body = honest();
    // The last candidate of a position is far below top-p 0.8 for these distributions.
    edit_position(&mut body, 3, |_, chosen| *chosen = 19);
    assert!(matches!(check(body), Err(ReplayError::ChosenNotSampleable { position: 3, .. })));
}

#[test]
fn another_models_tokens_fail_the_surprisal_test() {
    let spec = spec();
    let mut checker = ReplayChecker::new(spec.clone());
    let built = build(&spec, 256, 7, Chooser::OtherModel(2.0));
    let err = checker.check_bytes(&built.bytes).unwrap_err();
    assert!(matches!(err, ReplayError::Surprisal { .. } | ReplayError::ChosenNotSampleable { .. }), "{err}");
}

#[test]
fn json_artifacts_check_the_same_as_binary() {
    let built = build(&spec(), 16, 4, Chooser::Seeded);
    let from_json = Artifact::from_json_str(&built.artifact.to_json_string()).unwrap();
    assert_eq!(checker().check(&from_json).unwrap(), checker().check(&built.artifact).unwrap());
}
