//! The verdict rule (DESIGN §6) on signed votes from the devnet's validators.

use poi_artifact::{sha256, ArtifactId, Keypair, Verdict, Vote, VoteBody, VoteFigures, SELECT_DOMAIN};
use poi_chain_spec::{devnet_keypair, ChainSpec};
use poi_verifier::verdict::{committee, is_selected, Status, VerdictOutcome};
use poi_verifier::SeedingClass;

/// The verdict of a requester-bound artifact: selection at the chain's rate.
fn verdict(spec: &ChainSpec, id: &ArtifactId, votes: &[Vote]) -> VerdictOutcome {
    poi_verifier::verdict::verdict(spec, id, SeedingClass::RequesterBound, votes)
}

fn vote(spec: &ChainSpec, key: &Keypair, artifact: &ArtifactId, verdict: Verdict, at: u64) -> Vote {
    vote_under(spec, &spec.numerics.label(), key, artifact, verdict, at)
}

fn vote_under(
    spec: &ChainSpec,
    profile: &str,
    key: &Keypair,
    artifact: &ArtifactId,
    verdict: Verdict,
    at: u64,
) -> Vote {
    VoteBody {
        chain_id: spec.chain_id(),
        artifact_id: *artifact,
        validator: key.public(),
        selection_proof: key.sign(SELECT_DOMAIN, artifact),
        verdict,
        figures: VoteFigures {
            distance: 0.001,
            match_ratio: 1.0,
            surprisal_z: 0.0,
            profile_id: profile.into(),
            reason: String::new(),
        },
        created_at_ms: at,
    }
    .sign(key)
}

fn keys() -> Vec<Keypair> {
    (0..4).map(devnet_keypair).collect()
}

/// An artifact id whose committee and selections suit the test.
fn artifact_where(spec: &ChainSpec, want: impl Fn(&[bool], &[poi_artifact::PublicKey]) -> bool) -> ArtifactId {
    (0u32..10_000)
        .map(|i| sha256(&i.to_le_bytes()))
        .find(|id| {
            let selected: Vec<bool> = keys()
                .iter()
                .map(|k| is_selected(&k.public(), id, &k.sign(SELECT_DOMAIN, id), spec.full_check_rate))
                .collect();
            want(&selected, &committee(spec, id))
        })
        .expect("some id fits")
}

#[test]
fn selection_rate_is_close_to_the_spec() {
    let spec = ChainSpec::devnet();
    let key = devnet_keypair(0);
    let n = 4000;
    let hits = (0u32..n)
        .filter(|i| {
            let id = sha256(&i.to_le_bytes());
            is_selected(&key.public(), &id, &key.sign(SELECT_DOMAIN, &id), spec.full_check_rate)
        })
        .count();
    let rate = hits as f64 / f64::from(n);
    assert!((rate - spec.full_check_rate).abs() < 0.03, "rate {rate}");
    let id = sha256(b"x");
    let forged = devnet_keypair(1).sign(SELECT_DOMAIN, &id);
    assert!(!is_selected(&key.public(), &id, &forged, 1.0), "another key's proof never selects");
}

#[test]
fn committee_is_deterministic_and_sized() {
    let spec = ChainSpec::devnet();
    let id = sha256(b"artifact");
    assert_eq!(committee(&spec, &id), committee(&spec, &id));
    assert_eq!(committee(&spec, &id).len(), 3);
}

#[test]
fn the_rule_from_replay_only_to_rejected() {
    let spec = ChainSpec::devnet();
    let keys = keys();
    // One validator selected and outside the committee.
    let id = artifact_where(&spec, |sel, com| {
        sel.iter().filter(|s| **s).count() == 1 && !com.contains(&keys[sel.iter().position(|s| *s).unwrap()].public())
    });
    let selected =
        keys.iter().find(|k| is_selected(&k.public(), &id, &k.sign(SELECT_DOMAIN, &id), spec.full_check_rate)).unwrap();
    let unselected =
        keys.iter().find(|k| k.public() != selected.public() && !committee(&spec, &id).contains(&k.public()));

    assert_eq!(verdict(&spec, &id, &[]).status, Status::AcceptedReplayOnly);
    let accept = vote(&spec, selected, &id, Verdict::Accept, 1);
    assert_eq!(verdict(&spec, &id, std::slice::from_ref(&accept)).status, Status::Accepted);
    if let Some(outsider) = unselected {
        let uninvited = vote(&spec, outsider, &id, Verdict::Reject, 1);
        assert_eq!(
            verdict(&spec, &id, &[accept.clone(), uninvited]).status,
            Status::Accepted,
            "unselected votes do not count"
        );
    }

    let reject = vote(&spec, selected, &id, Verdict::Reject, 2);
    let outcome = verdict(&spec, &id, std::slice::from_ref(&reject));
    assert_eq!(outcome.status, Status::Disputed);

    let members = committee(&spec, &id);
    let member_keys: Vec<&Keypair> = members.iter().map(|m| keys.iter().find(|k| k.public() == *m).unwrap()).collect();
    let mut votes = vec![reject.clone(), vote(&spec, member_keys[0], &id, Verdict::Reject, 3)];
    assert_eq!(verdict(&spec, &id, &votes).status, Status::Disputed, "1 of 3 committee weight is no majority");
    votes.push(vote(&spec, member_keys[1], &id, Verdict::Reject, 4));
    assert_eq!(verdict(&spec, &id, &votes).status, Status::Rejected);

    let upheld = vec![
        reject,
        vote(&spec, member_keys[0], &id, Verdict::Accept, 3),
        vote(&spec, member_keys[1], &id, Verdict::Accept, 4),
    ];
    assert_eq!(verdict(&spec, &id, &upheld).status, Status::Accepted);
    // Any order, duplicates ignored.
    let mut shuffled: Vec<Vote> = upheld.iter().rev().cloned().collect();
    shuffled.push(upheld[0].clone());
    assert_eq!(verdict(&spec, &id, &shuffled), verdict(&spec, &id, &upheld));
}

#[test]
fn equivocators_do_not_count_and_are_named() {
    let spec = ChainSpec::devnet();
    let keys = keys();
    let id = artifact_where(&spec, |sel, _| sel.iter().filter(|s| **s).count() == 1);
    let selected =
        keys.iter().find(|k| is_selected(&k.public(), &id, &k.sign(SELECT_DOMAIN, &id), spec.full_check_rate)).unwrap();
    let votes = [vote(&spec, selected, &id, Verdict::Accept, 1), vote(&spec, selected, &id, Verdict::Reject, 2)];
    let outcome = verdict(&spec, &id, &votes);
    assert_eq!(outcome.equivocators, vec![selected.public().to_hex()]);
    assert_eq!(outcome.status, Status::AcceptedReplayOnly);
}

#[test]
fn foreign_and_forged_votes_are_ignored() {
    let spec = ChainSpec::devnet();
    let id = artifact_where(&spec, |sel, _| sel[0]);
    let stranger = Keypair::from_secret([77; 32]);
    let mut other_chain = spec.clone();
    other_chain.name = "elsewhere".into();
    let mut tampered = vote(&spec, &devnet_keypair(0), &id, Verdict::Accept, 1);
    tampered.body.verdict = Verdict::Reject;
    let votes = [
        vote(&spec, &stranger, &id, Verdict::Reject, 1),
        vote(&other_chain, &devnet_keypair(0), &id, Verdict::Reject, 1),
        vote(&spec, &devnet_keypair(0), &sha256(b"other artifact"), Verdict::Reject, 1),
        Vote::from_parts(tampered.body, tampered.signature),
    ];
    let outcome = verdict(&spec, &id, &votes);
    assert_eq!(outcome.status, Status::AcceptedReplayOnly);
    assert!(outcome.counted.is_empty());
}

/// The attack: a validator runs another (cheaper, or friendlier) profile and
/// votes. Its vote judged other numbers than the chain pins, so it does not
/// count, whatever it says; neither does one under an older profile version.
#[test]
fn votes_under_another_profile_do_not_count() {
    let spec = ChainSpec::devnet();
    let id = artifact_where(&spec, |sel, _| sel[0]);
    let key = devnet_keypair(0);
    for profile in ["dequant-f32-cpu/v1", "gguf-native-cpu/v1", "gguf-native-cpu"] {
        let outcome = verdict(&spec, &id, &[vote_under(&spec, profile, &key, &id, Verdict::Reject, 1)]);
        assert_eq!(outcome.status, Status::AcceptedReplayOnly, "{profile}");
        assert!(outcome.counted.is_empty(), "{profile}");
    }
    let outcome = verdict(&spec, &id, &[vote(&spec, &key, &id, Verdict::Reject, 1)]);
    assert_eq!(outcome.status, Status::Disputed, "the chain's own profile counts");
    // Two votes under two profiles are still two votes: equivocation.
    let both = [vote(&spec, &key, &id, Verdict::Reject, 1), vote_under(&spec, "x/v1", &key, &id, Verdict::Accept, 1)];
    let outcome = verdict(&spec, &id, &both);
    assert_eq!(outcome.equivocators, vec![key.public().to_hex()]);
    assert_eq!(outcome.status, Status::AcceptedReplayOnly);
}

/// Miner-seeded and unseeded artifacts are fully checked by every validator
/// (DESIGN §3): each one's vote counts without the sample-rate lottery.
#[test]
fn every_validator_is_selected_for_artifacts_the_miner_seeded() {
    let spec = ChainSpec::devnet();
    let keys = keys();
    let id = artifact_where(&spec, |sel, com| (0..4).any(|i| !sel[i] && !com.contains(&keys[i].public())));
    let outsider = (0..4)
        .find(|&i| {
            let k = &keys[i];
            !is_selected(&k.public(), &id, &k.sign(SELECT_DOMAIN, &id), spec.full_check_rate)
                && !committee(&spec, &id).contains(&k.public())
        })
        .unwrap();
    let votes = [vote(&spec, &keys[outsider], &id, Verdict::Reject, 1)];
    assert_eq!(verdict(&spec, &id, &votes).status, Status::AcceptedReplayOnly, "not selected at rate 0.25");
    for class in [SeedingClass::MinerSeeded, SeedingClass::Unseeded] {
        let outcome = poi_verifier::verdict::verdict(&spec, &id, class, &votes);
        assert_eq!(outcome.status, Status::Disputed, "{class}");
    }
}
