//! The verdict rule (DESIGN §6) on signed votes from the devnet's
//! validators, and the attacks on selection and disputes it must survive.

use poi_artifact::{sha256, ArtifactId, Keypair, SelectionProof, Verdict, Vote, VoteBody, VoteFigures};
use poi_chain_spec::{devnet_keypair, ChainSpec};
use poi_verifier::verdict::{selection, Status, VerdictOutcome};
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
    vote_with_proof(spec, profile, key, artifact, key.vrf().prove(artifact), verdict, at)
}

fn vote_with_proof(
    spec: &ChainSpec,
    profile: &str,
    key: &Keypair,
    artifact: &ArtifactId,
    selection_proof: SelectionProof,
    verdict: Verdict,
    at: u64,
) -> Vote {
    VoteBody {
        chain_id: spec.chain_id(),
        artifact_id: *artifact,
        validator: key.public(),
        selection_proof,
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

fn selected(spec: &ChainSpec, key: &Keypair, id: &ArtifactId) -> bool {
    selection(&key.vrf(), id, spec.full_check_rate).0
}

/// An artifact id whose selections (per devnet key) suit the test.
fn artifact_where(spec: &ChainSpec, want: impl Fn(&[bool]) -> bool) -> ArtifactId {
    let vrfs: Vec<_> = keys().iter().map(Keypair::vrf).collect();
    (0u32..10_000)
        .map(|i| sha256(&i.to_le_bytes()))
        .find(|id| {
            let picks: Vec<bool> = vrfs.iter().map(|v| selection(v, id, spec.full_check_rate).0).collect();
            want(&picks)
        })
        .expect("some id fits")
}

#[test]
fn selection_rate_is_close_to_the_spec() {
    let spec = ChainSpec::devnet();
    let key = devnet_keypair(0);
    let vrf = key.vrf();
    let n = 4000;
    let hits = (0u32..n).filter(|i| selection(&vrf, &sha256(&i.to_le_bytes()), spec.full_check_rate).0).count();
    let rate = hits as f64 / f64::from(n);
    assert!((rate - spec.full_check_rate).abs() < 0.03, "rate {rate}");
    let id = sha256(b"x");
    let output = vrf.public().verify(&id, &vrf.prove(&id)).unwrap();
    assert!(output.selects(1.0) && !output.selects(0.0) && !output.selects(f64::NAN), "NaN selects nobody");
}

/// The attack on the rule before this one, which selected `v` iff a hash of
/// `sig_v("poi/select/v1" || a)` was below the rate: strict ed25519 accepts a
/// signature made with any nonce, so a validator signs with fresh nonces
/// until one selects it. The VRF has one output per key and artifact: other
/// nonces give other proof bytes for the same output, and no proof of
/// another output verifies.
#[test]
fn a_validator_cannot_grind_its_selection() {
    use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
    use sha2::Digest;

    let key = devnet_keypair(0);
    let id = sha256(b"an artifact the validator wants to vote on");
    let rate = 0.01;
    let message = [poi_artifact::SELECT_DOMAIN, &id.0[..]].concat();
    let signing = ed25519_dalek::SigningKey::from_bytes(&key.secret());
    let mut expanded = ExpandedSecretKey::from(&key.secret());
    let old_rule_selects = |signature: &ed25519_dalek::Signature| {
        let digest = sha2::Sha256::digest(signature.to_bytes());
        u128::from_be_bytes(digest[..16].try_into().unwrap()) < (rate * 2f64.powi(128)) as u128
    };
    let tries = (0u32..100_000)
        .position(|nonce| {
            expanded.hash_prefix[..4].copy_from_slice(&nonce.to_le_bytes());
            let signature = raw_sign::<sha2::Sha512>(&expanded, &message, &signing.verifying_key());
            assert!(signing.verifying_key().verify_strict(&message, &signature).is_ok(), "every nonce verifies");
            old_rule_selects(&signature)
        })
        .expect("the old rule can be ground");
    eprintln!("old rule: selected at rate {rate} after {} signatures", tries + 1);

    let vrf = key.vrf();
    let public = vrf.public();
    let honest = vrf.prove(&id);
    assert_eq!(vrf.prove(&id), honest, "proofs are deterministic: a re-made vote is the same vote");
    let output = public.verify(&id, &honest).expect("the honest proof verifies");
    let other = sha256(b"another artifact");
    let foreign = vrf.prove(&other);
    let mut spliced = honest;
    spliced.0[..32].copy_from_slice(&foreign.0[..32]);
    assert!(public.verify(&id, &spliced).is_err(), "another output with this proof");
    assert!(public.verify(&id, &foreign).is_err(), "another artifact's proof");
    assert!(devnet_keypair(1).vrf().public().verify(&id, &honest).is_err(), "another key");
    for byte in [0, 31, 32, 95] {
        let mut flipped = honest;
        flipped.0[byte] ^= 1;
        assert!(public.verify(&id, &flipped).is_err(), "byte {byte} flipped");
    }
    assert_eq!(public.verify(&id, &honest).unwrap(), output, "one output, however often it is verified");
}

/// The attack on committees drawn from the artifact id: the miner grinds its
/// artifact's `created_at_ms` (no generation needed) until the committee
/// holds its colluders. 100 validators of equal weight, 10 colluding.
/// The rule before this one (the 3 validators with the lowest
/// `SHA256("poi/committee/v1" || id || key)`) is won in a few hundred
/// bodies; under this one the whole set decides every dispute, and over
/// 10^6 ground bodies the colluders' share of the deciding weight never
/// exceeds their 10 %.
#[test]
fn a_miner_grinding_its_artifact_cannot_choose_who_decides_a_dispute() {
    use sha2::Digest;

    let spec = ChainSpec::local_devnet(100, 0.05).unwrap();
    let weights: std::collections::HashMap<_, _> = spec.validators.iter().map(|v| (v.public_key, v.weight)).collect();
    let colluders: std::collections::HashSet<_> = spec.validators[..10].iter().map(|v| v.public_key).collect();
    let colluding_share = |deciders: &[poi_artifact::PublicKey]| {
        let total: u64 = deciders.iter().map(|k| weights[k]).sum();
        let colluding: u64 = deciders.iter().filter(|k| colluders.contains(*k)).map(|k| weights[k]).sum();
        colluding as f64 / total as f64
    };
    let old_committee = |id: &ArtifactId| -> Vec<poi_artifact::PublicKey> {
        let mut ranked: Vec<([u8; 32], poi_artifact::PublicKey)> = spec
            .validators
            .iter()
            .map(|v| {
                let digest = sha2::Sha256::new()
                    .chain_update(b"poi/committee/v1")
                    .chain_update(id.0)
                    .chain_update(v.public_key.0)
                    .finalize();
                (digest.into(), v.public_key)
            })
            .collect();
        ranked.sort();
        ranked.into_iter().take(3).map(|(_, key)| key).collect()
    };
    let mut body = poi_verifier::simulate::build(&spec, 8, 1, poi_verifier::simulate::Chooser::Seeded).artifact.body;
    let start = body.created_at_ms;
    let bodies = 1_000_000u64;

    let mut best_old = (0.0, 0);
    for offset in 0..bodies {
        body.created_at_ms = start + offset;
        let share = colluding_share(&old_committee(&body.id()));
        if share > best_old.0 {
            best_old = (share, offset + 1);
        }
        if share == 1.0 {
            break;
        }
    }
    eprintln!("old rule: colluders hold {:.0} % of the committee after {} bodies", 100.0 * best_old.0, best_old.1);
    assert!(best_old.0 > 0.5, "the old committee is won by grinding");

    let mut best_new: f64 = 0.0;
    for offset in 0..bodies {
        body.created_at_ms = start + offset;
        std::hint::black_box(body.id());
        let deciders = poi_verifier::verdict::dispute_deciders(&spec);
        best_new = best_new.max(colluding_share(&deciders));
    }
    eprintln!(
        "this rule: colluders hold at most {:.1} % of the deciding weight over {bodies} bodies",
        100.0 * best_new
    );
    assert!(best_new <= 0.10, "no more than the colluders' own weight: {best_new}");
}

#[test]
fn the_rule_from_replay_only_to_final() {
    let spec = ChainSpec::devnet();
    let keys = keys();
    let id = artifact_where(&spec, |sel| sel.iter().filter(|s| **s).count() == 1 && !sel[3]);
    let chosen = keys.iter().find(|k| selected(&spec, k, &id)).unwrap();
    let others: Vec<&Keypair> = keys.iter().filter(|k| k.public() != chosen.public()).collect();

    assert_eq!(verdict(&spec, &id, &[]).status, Status::AcceptedReplayOnly);
    let accept = vote(&spec, chosen, &id, Verdict::Accept, 1);
    let outcome = verdict(&spec, &id, std::slice::from_ref(&accept));
    assert_eq!((outcome.status, outcome.is_final), (Status::Accepted, false), "one selected accept: provisional");
    let uninvited = vote(&spec, &keys[3], &id, Verdict::Reject, 1);
    assert_eq!(
        verdict(&spec, &id, &[accept.clone(), uninvited]).status,
        Status::Accepted,
        "an unselected reject disputes nothing"
    );

    let reject = vote(&spec, chosen, &id, Verdict::Reject, 2);
    assert_eq!(verdict(&spec, &id, std::slice::from_ref(&reject)).status, Status::Disputed);
    let mut votes = vec![reject.clone(), vote(&spec, others[0], &id, Verdict::Reject, 3)];
    let outcome = verdict(&spec, &id, &votes);
    assert_eq!((outcome.status, outcome.is_final), (Status::Disputed, false), "2 of 4 is no majority");
    votes.push(vote(&spec, others[1], &id, Verdict::Reject, 4));
    let outcome = verdict(&spec, &id, &votes);
    assert_eq!((outcome.status, outcome.is_final), (Status::Rejected, true));

    let upheld = vec![
        reject,
        vote(&spec, others[0], &id, Verdict::Accept, 3),
        vote(&spec, others[1], &id, Verdict::Accept, 4),
        vote(&spec, others[2], &id, Verdict::Accept, 5),
    ];
    let outcome = verdict(&spec, &id, &upheld);
    assert_eq!((outcome.status, outcome.is_final), (Status::Accepted, true), "3 of 4 overrule the one reject");
    // Any order, duplicates ignored.
    let mut shuffled: Vec<Vote> = upheld.iter().rev().cloned().collect();
    shuffled.push(upheld[0].clone());
    assert_eq!(verdict(&spec, &id, &shuffled), verdict(&spec, &id, &upheld));
}

/// A validator whose vote made a verdict final signs the opposite later (a
/// Byzantine voter retracting, or a crashed one re-voting): the final
/// verdict stands, and the validator is named.
#[test]
fn a_late_equivocation_does_not_change_a_final_verdict() {
    let spec = ChainSpec::devnet();
    let keys = keys();
    let id = artifact_where(&spec, |sel| sel[0]);
    let rejects: Vec<Vote> = keys[..3].iter().map(|k| vote(&spec, k, &id, Verdict::Reject, 1)).collect();
    let before = verdict(&spec, &id, &rejects);
    assert_eq!((before.status, before.is_final), (Status::Rejected, true));

    let mut after = rejects.clone();
    after.push(vote(&spec, &keys[1], &id, Verdict::Accept, 2));
    after.push(vote(&spec, &keys[2], &id, Verdict::Accept, 2));
    let outcome = verdict(&spec, &id, &after);
    assert_eq!((outcome.status, outcome.is_final), (Status::Rejected, true), "the quorum already signed stays");
    assert_eq!(outcome.equivocators.len(), 2);
    assert_eq!(outcome.counted.len(), 1, "only the validator that signed once is counted");
}

#[test]
fn an_equivocating_selected_validator_drives_nothing() {
    let spec = ChainSpec::devnet();
    let keys = keys();
    let id = artifact_where(&spec, |sel| sel.iter().filter(|s| **s).count() == 1);
    let chosen = keys.iter().find(|k| selected(&spec, k, &id)).unwrap();
    let votes = [vote(&spec, chosen, &id, Verdict::Accept, 1), vote(&spec, chosen, &id, Verdict::Reject, 2)];
    let outcome = verdict(&spec, &id, &votes);
    assert_eq!(outcome.equivocators, vec![chosen.public().to_hex()]);
    assert_eq!(outcome.status, Status::AcceptedReplayOnly, "no dispute, no provisional accept");
}

/// Selected rejects are never overruled by a smaller weight: when both
/// sides hold a majority (only possible with equivocators), nothing is final.
#[test]
fn conflicting_quorums_are_a_dispute() {
    let spec = ChainSpec::devnet();
    let keys = keys();
    let id = artifact_where(&spec, |sel| sel[0]);
    let votes = [
        vote(&spec, &keys[0], &id, Verdict::Reject, 1),
        vote(&spec, &keys[1], &id, Verdict::Reject, 1),
        vote(&spec, &keys[2], &id, Verdict::Accept, 1),
        vote(&spec, &keys[3], &id, Verdict::Accept, 1),
        vote(&spec, &keys[3], &id, Verdict::Reject, 2),
        vote(&spec, &keys[0], &id, Verdict::Accept, 2),
    ];
    let outcome = verdict(&spec, &id, &votes);
    assert_eq!((outcome.status, outcome.is_final), (Status::Disputed, false));
}

#[test]
fn foreign_and_forged_votes_are_ignored() {
    let spec = ChainSpec::devnet();
    let id = artifact_where(&spec, |sel| sel[0]);
    let stranger = Keypair::from_secret([77; 32]);
    let mut other_chain = spec.clone();
    other_chain.name = "elsewhere".into();
    let key = devnet_keypair(0);
    let mut tampered = vote(&spec, &key, &id, Verdict::Accept, 1);
    tampered.body.verdict = Verdict::Reject;
    let label = spec.numerics.label();
    let other_proof = key.vrf().prove(&sha256(b"elsewhere"));
    let votes = [
        vote(&spec, &stranger, &id, Verdict::Reject, 1),
        vote(&other_chain, &key, &id, Verdict::Reject, 1),
        vote(&spec, &key, &sha256(b"other artifact"), Verdict::Reject, 1),
        Vote::from_parts(tampered.body, tampered.signature),
        vote_with_proof(&spec, &label, &key, &id, other_proof, Verdict::Reject, 1),
        vote_with_proof(&spec, &label, &key, &id, devnet_keypair(1).vrf().prove(&id), Verdict::Reject, 1),
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
    let id = artifact_where(&spec, |sel| sel[0]);
    let key = devnet_keypair(0);
    for profile in ["dequant-f32-cpu/v1", "gguf-native-cpu/v1", "gguf-native-cpu"] {
        let outcome = verdict(&spec, &id, &[vote_under(&spec, profile, &key, &id, Verdict::Reject, 1)]);
        assert_eq!(outcome.status, Status::AcceptedReplayOnly, "{profile}");
        assert!(outcome.counted.is_empty(), "{profile}");
    }
    let outcome = verdict(&spec, &id, &[vote(&spec, &key, &id, Verdict::Reject, 1)]);
    assert_eq!(outcome.status, Status::Disputed, "the chain's own profile counts");
}

/// Miner-seeded and unseeded artifacts are fully checked by every validator
/// (DESIGN §3): each one's reject disputes without the sample-rate lottery.
#[test]
fn every_validator_is_selected_for_artifacts_the_miner_seeded() {
    let spec = ChainSpec::devnet();
    let keys = keys();
    let id = artifact_where(&spec, |sel| !sel[0]);
    let votes = [vote(&spec, &keys[0], &id, Verdict::Reject, 1)];
    assert_eq!(verdict(&spec, &id, &votes).status, Status::AcceptedReplayOnly, "not selected at rate 0.25");
    for class in [SeedingClass::MinerSeeded, SeedingClass::Unseeded] {
        let outcome = poi_verifier::verdict::verdict(&spec, &id, class, &votes);
        assert_eq!(outcome.status, Status::Disputed, "{class}");
    }
}
