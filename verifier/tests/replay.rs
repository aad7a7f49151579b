//! The replay check: honest artifacts pass; each rule broken once gets its own
//! typed rejection, naming the position where there is one.

use poi_verifier::simulate as common;

use common::{body_with, build, miner, Chooser};
use poi_artifact::{f16, Artifact, ArtifactBody, Candidate, DecodeError, FinishReason, Generation, Hash32, Keypair};
use poi_chain_spec::ChainSpec;
use poi_verifier::{ReplayChecker, ReplayError, StructureRule};

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
        assert!(report.seeded && report.miner_seeded);
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
        assert!(!report.seeded);
    }
}

#[test]
fn a_requester_bound_request_is_not_miner_seeded() {
    let mut body = honest();
    body.request.bind(&spec().chain_id(), &Keypair::from_secret([21; 32]));
    assert!(!check(body).unwrap().miner_seeded);
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
    let artifact = Artifact::from_parts(body, forged);
    assert!(matches!(checker().check(&artifact), Err(ReplayError::Signature(_))));

    let mut body = honest();
    body.request.bind(&spec().chain_id(), &Keypair::from_secret([21; 32]));
    body.request.user_seed = body.request.user_seed.map(|s| s ^ 1);
    assert!(matches!(check(body), Err(ReplayError::RequestBinding(_))));
}

#[test]
fn limit_rules() {
    let mut body = honest();
    body.request.prompt_tokens = vec![5; 4097];
    assert!(matches!(check(body), Err(ReplayError::TooLong { what: "prompt", found: 4097, .. })));
    let mut body = honest();
    body.request.prompt_tokens[3] = 49152;
    assert_eq!(check(body), Err(ReplayError::PromptOutOfVocabulary { index: 3, token: 49152, vocab: 49152 }));
    let mut short = spec();
    short.limits.max_generated_tokens = 40;
    let artifact = honest().sign(&miner());
    let mut body = artifact.body.clone();
    body.chain_id = short.chain_id();
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

    for bad in [f16::NAN, f16::INFINITY, f16::NEG_INFINITY, f16::from_f32(0.5)] {
        let mut body = honest();
        edit_position(&mut body, 11, |c, _| c[19].logprob = bad);
        assert!(matches!(structure_error(check(body)), (11, StructureRule::BadLogprob { .. })), "{bad}");
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
    assert_eq!(structure_error(check(body)), (5, StructureRule::EarlyEos));

    let mut body = honest();
    body.finish_reason = FinishReason::Eos;
    assert!(matches!(structure_error(check(body)), (47, StructureRule::MissingEos { .. })));
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
