//! The pipeline's rules on their own, without threads or a network: the
//! admission window, which faults cost the sender, and which artifacts this
//! validator hands to its full-check queue.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use poi_chain_spec::{devnet_keypair, ChainSpec};
use poi_verifier::simulate::{build, forged, Chooser};

use super::*;
use crate::scheduler::{FullCheckJob, QueueFull};

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
    let corrupt = StoreError::Corrupt { what: "verdict", detail: "test".into() };
    assert!(!IngestError::Store(corrupt).is_peer_fault(), "this node's own failure");
}

/// A full-check queue that keeps what it is offered, or refuses everything.
#[derive(Default)]
struct Recorder {
    offered: Mutex<Vec<FullCheckJob>>,
    full: bool,
}

impl FullCheckQueue for Recorder {
    fn offer(&self, job: FullCheckJob) -> Result<(), QueueFull> {
        if self.full {
            return Err(QueueFull);
        }
        self.offered.lock().unwrap().push(job);
        Ok(())
    }
}

fn pipeline(spec: &ChainSpec, queue: Arc<Recorder>, dir: &std::path::Path) -> Pipeline {
    let store = Arc::new(Store::open(dir, spec.clone()).unwrap());
    let validator = Validator { key: Arc::new(devnet_keypair(0)), queue };
    Pipeline::new(store, spec.clone(), Arc::new(Metrics::default()), Some(validator), Admission::ANY_AGE)
}

#[test]
fn a_selected_artifact_is_offered_once_and_a_full_queue_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ChainSpec::devnet();
    spec.full_check_rate = 1.0;
    let queue = Arc::new(Recorder::default());
    let pipeline = pipeline(&spec, queue.clone(), &dir.path().join("a"));
    let honest = build(&spec, 16, 1, Chooser::Seeded);
    assert!(pipeline.ingest_artifact(&honest.bytes, Source::Rpc).unwrap().new);
    assert!(!pipeline.ingest_artifact(&honest.bytes, Source::Gossip).unwrap().new);
    let offered = queue.offered.lock().unwrap();
    assert_eq!(offered.len(), 1, "a duplicate is not checked again");
    assert_eq!(offered[0].artifact.id(), honest.artifact.id());
    assert_eq!(offered[0].reason, crate::scheduler::CheckReason::Selected);

    let full = Arc::new(Recorder { full: true, ..Recorder::default() });
    let pipeline = super::tests::pipeline(&spec, full, &dir.path().join("b"));
    pipeline.ingest_artifact(&honest.bytes, Source::Rpc).unwrap();
    assert_eq!(pipeline.metrics().full_checks_skipped.get(), 1);
}

#[test]
fn at_rate_zero_nothing_is_offered_and_a_rejected_artifact_never() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ChainSpec::devnet();
    spec.full_check_rate = 0.0;
    let queue = Arc::new(Recorder::default());
    let pipeline = pipeline(&spec, queue.clone(), dir.path());
    pipeline.ingest_artifact(&build(&spec, 16, 2, Chooser::Seeded).bytes, Source::Rpc).unwrap();
    assert!(pipeline.ingest_artifact(&forged(&spec, 16, 3), Source::Rpc).is_err());
    assert!(queue.offered.lock().unwrap().is_empty());
}
