//! The pipeline's rules on their own, without threads or a network: the
//! admission window, which faults cost the sender, the duties it writes, and
//! the bounds on votes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use poi_artifact::{sha256, Verdict};
use poi_chain_spec::{devnet_keypair, ChainSpec};
use poi_verifier::simulate::{build, forged, Chooser};

use super::*;

const HOUR_MS: u64 = 3_600_000;

fn window() -> Admission {
    Admission { max_age: Some(Duration::from_secs(3600)), max_ahead: Duration::from_secs(300) }
}

#[test]
fn the_window_admits_its_own_range_and_names_what_falls_outside() {
    let now = 10 * HOUR_MS;
    assert!(window().check(now - HOUR_MS, now).is_ok(), "exactly an hour old");
    assert!(window().check(now + 300_000, now).is_ok(), "exactly five minutes ahead");
    match window().check(now - HOUR_MS - 1, now) {
        Err(IngestError::OutsideWindow { age_ms, .. }) => assert_eq!(age_ms, HOUR_MS as i64 + 1),
        other => panic!("{other:?}"),
    }
    match window().check(now + 300_001, now) {
        Err(err @ IngestError::OutsideWindow { age_ms: -300_001, .. }) => {
            assert!(err.to_string().contains("300 s in the future"), "{err}")
        }
        other => panic!("{other:?}"),
    }
    assert!(Admission::ANY_AGE.check(0, now).is_ok());
    assert!(Admission::ANY_AGE.check(u64::MAX, now).is_ok());
}

#[test]
fn only_the_senders_faults_cost_it_score() {
    let outside = |age_ms: i64| IngestError::OutsideWindow { age_ms, max_age_ms: HOUR_MS, max_ahead_ms: 300_000 };
    let grace = RELAY_GRACE.as_millis() as i64;
    assert!(!outside(HOUR_MS as i64 + grace).is_peer_fault(), "an honest relay can be late by the grace");
    assert!(outside(HOUR_MS as i64 + grace + 1).is_peer_fault());
    assert!(!outside(-300_000 - grace).is_peer_fault());
    assert!(outside(-300_000 - grace - 1).is_peer_fault());
    assert!(IngestError::InvalidVote("forged".into()).is_peer_fault());
    assert!(!IngestError::SignedAgain { id: String::new() }.is_peer_fault(), "an honest relay may carry either copy");
    let corrupt = StoreError::Corrupt { what: "verdict", detail: "test".into() };
    assert!(!IngestError::Store(corrupt).is_peer_fault(), "this node's own failure");
}

/// Counts wake-ups; the duties themselves are in the store.
#[derive(Default)]
struct Bell(AtomicUsize);

impl DutyQueue for Bell {
    fn wake(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn pipeline(spec: &ChainSpec, dir: &std::path::Path) -> Pipeline {
    let store = Arc::new(Store::open(dir, spec.clone()).unwrap());
    let key = devnet_keypair(0);
    let validator = Validator { vrf: Arc::new(key.vrf()), key: Arc::new(key), duties: Arc::new(Bell::default()) };
    Pipeline::new(store, spec.clone(), Arc::new(Metrics::default()), Some(validator), Admission::ANY_AGE)
}

fn spec_at(rate: f64) -> ChainSpec {
    let mut spec = ChainSpec::devnet();
    spec.full_check_rate = rate;
    spec
}

fn vote(spec: &ChainSpec, index: u32, artifact: &ArtifactId, verdict: Verdict, at: u64) -> Vote {
    poi_verifier::simulate::vote(spec, &devnet_keypair(index), artifact, verdict, at)
}

#[test]
fn a_selected_artifact_is_a_durable_duty_once_and_a_rejected_one_never() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_at(1.0);
    let pipeline = pipeline(&spec, dir.path());
    let honest = build(&spec, 16, 1, Chooser::Seeded);
    assert!(pipeline.ingest_artifact(&honest.bytes, Source::Rpc).unwrap().new);
    assert!(!pipeline.ingest_artifact(&honest.bytes, Source::Gossip).unwrap().new);
    assert!(pipeline.ingest_artifact(&forged(&spec, 16, 3), Source::Rpc).is_err());
    let duty = pipeline.store().duty(&honest.artifact.id()).unwrap().expect("owed");
    assert_eq!(duty.class, DutyClass::Selected);
    assert_eq!(pipeline.store().duty_count(DutyClass::Selected, 10).unwrap(), 1, "a duplicate owes nothing more");

    let dir = tempfile::tempdir().unwrap();
    let pipeline = super::tests::pipeline(&spec_at(0.0), dir.path());
    pipeline.ingest_artifact(&build(&spec_at(0.0), 16, 2, Chooser::Seeded).bytes, Source::Rpc).unwrap();
    assert_eq!(pipeline.store().duty_count(DutyClass::Selected, 10).unwrap(), 0, "rate 0 selects nobody");
}

/// A selected reject disputes the artifact: every validator that has not
/// voted owes a check, ahead of its selected ones; a final verdict owes none.
#[test]
fn a_dispute_is_owed_by_every_validator_that_has_not_voted() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ChainSpec::devnet();
    let pipeline = pipeline(&spec, dir.path());
    // An artifact that a validator other than this node's (key 0) is
    // selected for, at the devnet's rate of 0.25.
    let (honest, rejecter) = (10..)
        .find_map(|seed| {
            let built = build(&spec, 16, seed, Chooser::Seeded);
            let id = built.artifact.id();
            let selected = (1..4).find(|i| selection(&devnet_keypair(*i).vrf(), &id, spec.full_check_rate).0);
            selected.map(|i| (built, i))
        })
        .unwrap();
    let id = honest.artifact.id();
    pipeline.ingest_artifact(&honest.bytes, Source::Rpc).unwrap();
    let outcome = pipeline.ingest_vote(&vote(&spec, rejecter, &id, Verdict::Reject, 1).encode(), Source::Gossip);
    match outcome.unwrap() {
        VoteIngested::Stored(record) => assert_eq!(record.status, Status::Disputed),
        other => panic!("{other:?}"),
    }
    assert_eq!(pipeline.store().duty(&id).unwrap().expect("owed").class, DutyClass::Dispute);
}

#[test]
fn a_resigned_copy_of_a_stored_artifact_is_neither_checked_nor_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_at(0.0);
    let pipeline = pipeline(&spec, dir.path());
    let honest = build(&spec, 16, 5, Chooser::Seeded);
    pipeline.ingest_artifact(&honest.bytes, Source::Rpc).unwrap();
    let mut copy = honest.bytes.clone();
    let last = copy.len() - 1;
    copy[last] ^= 1; // another signature over the same body (invalid here; valid ones are as easy to make)
    match pipeline.ingest_artifact(&copy, Source::Gossip) {
        Err(err @ IngestError::SignedAgain { .. }) => assert!(!err.is_peer_fault()),
        other => panic!("{other:?}"),
    }
    assert_eq!(pipeline.store().artifact_bytes(&honest.artifact.id()).unwrap().unwrap(), honest.bytes);
}

/// The vote-flood attack: one validator sends 10^4 different votes on one
/// artifact. The node keeps its first and one conflicting (the proof of
/// equivocation) and ignores the rest before any signature work.
#[test]
fn a_validator_flooding_one_artifact_keeps_two_votes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_at(0.0);
    let pipeline = pipeline(&spec, dir.path());
    let honest = build(&spec, 16, 6, Chooser::Seeded);
    let id = honest.artifact.id();
    pipeline.ingest_artifact(&honest.bytes, Source::Rpc).unwrap();
    let template = vote(&spec, 1, &id, Verdict::Accept, 0);
    let key = devnet_keypair(1);
    let mut outcomes = std::collections::HashMap::new();
    for at in 0..10_000u64 {
        let mut body = template.body.clone();
        body.created_at_ms = at;
        body.verdict = if at % 2 == 0 { Verdict::Accept } else { Verdict::Reject };
        let outcome = pipeline.ingest_vote(&body.sign(&key).encode(), Source::Gossip).unwrap();
        *outcomes.entry(std::mem::discriminant(&outcome)).or_insert(0) += 1;
    }
    assert_eq!(pipeline.store().votes(&id).unwrap().len(), 2);
    assert_eq!(pipeline.metrics().votes_over_limit.get(), 9_998);
    let record = pipeline.store().verdict(&id).unwrap().unwrap();
    assert_eq!(record.equivocators, vec![key.public().to_hex()]);
    assert_eq!(outcomes.len(), 2, "stored twice, over the limit otherwise: {outcomes:?}");
}

/// The other flood: votes on artifacts that do not exist. They wait in a
/// buffer bounded in total and per validator; once a validator's share is
/// full its further votes are refused before any signature work, and the
/// other validators' votes still wait and count when their artifact comes.
#[test]
fn votes_on_unknown_artifacts_wait_within_each_validators_share() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_at(0.0);
    let pipeline = pipeline(&spec, dir.path());
    let share = PENDING_VOTES / spec.validators.len();
    let flooder = devnet_keypair(1);
    let template = vote(&spec, 1, &sha256(b"nothing"), Verdict::Reject, 0);
    for i in 0..(share as u64 + 2_000) {
        let id = sha256(&i.to_le_bytes());
        let mut body = template.body.clone();
        body.artifact_id = id;
        // Valid proofs for the share, then whatever is cheapest to send.
        if i < share as u64 + 10 {
            body.selection_proof = flooder.vrf().prove(&id);
        }
        let outcome = pipeline.ingest_vote(&body.sign(&flooder).encode(), Source::Gossip).unwrap();
        assert_eq!(outcome, VoteIngested::Pending { held: (i as usize) < share }, "vote {i}");
    }
    assert_eq!(pipeline.metrics().votes_pending.get(), share as i64);
    assert_eq!(pipeline.metrics().votes_pending_refused.get(), 2_000);

    let honest = build(&spec, 16, 7, Chooser::Seeded);
    let early = vote(&spec, 2, &honest.artifact.id(), Verdict::Accept, 1);
    assert_eq!(pipeline.ingest_vote(&early.encode(), Source::Gossip).unwrap(), VoteIngested::Pending { held: true });
    let ingested = pipeline.ingest_artifact(&honest.bytes, Source::Gossip).unwrap();
    assert_eq!(ingested.verdict.counted_votes, vec![early.id().to_hex()], "the waiting vote counts on arrival");
    assert_eq!(pipeline.store().votes(&honest.artifact.id()).unwrap(), vec![early]);
}
