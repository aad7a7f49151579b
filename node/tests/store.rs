//! The RocksDB ledger: atomic events, verdicts from votes, history pages,
//! and everything still there after a restart.

use poi_verifier::simulate as common;

use common::Chooser;
use poi_artifact::{Artifact, ArtifactId, Keypair, Verdict, Vote, VoteBody, VoteFigures, SELECT_DOMAIN};
use poi_chain_spec::{devnet_keypair, ChainSpec};
use poi_node::store::{HistoryQuery, LogEntry, Store, StoreError};
use poi_verifier::verdict::{committee, is_selected, Status};

fn artifact(seed: u64) -> Artifact {
    common::build(&ChainSpec::devnet(), 16, seed, Chooser::Seeded).artifact
}

fn vote(key: &Keypair, id: &ArtifactId, verdict: Verdict) -> Vote {
    let spec = ChainSpec::devnet();
    VoteBody {
        chain_id: spec.chain_id(),
        artifact_id: *id,
        validator: key.public(),
        selection_proof: key.sign(SELECT_DOMAIN, id),
        verdict,
        figures: VoteFigures {
            distance: 0.0,
            match_ratio: 1.0,
            surprisal_z: 0.0,
            profile_id: "gguf-native-cpu".into(),
        },
        created_at_ms: 5,
    }
    .sign(key)
}

/// A devnet validator that may vote on `id` (selected or in its committee).
fn eligible(id: &ArtifactId) -> Keypair {
    let spec = ChainSpec::devnet();
    (0..4)
        .map(devnet_keypair)
        .find(|k| {
            committee(&spec, id).contains(&k.public())
                || is_selected(&k.public(), id, &k.sign(SELECT_DOMAIN, id), spec.full_check_rate)
        })
        .unwrap()
}

#[test]
fn artifacts_votes_and_verdicts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let a = artifact(1);
    let id = a.id();
    {
        let store = Store::open(dir.path(), ChainSpec::devnet()).unwrap();
        assert!(store.put_artifact(&a, 100).unwrap());
        assert!(!store.put_artifact(&a, 200).unwrap(), "duplicates are not rewritten");
        assert_eq!(store.verdict(&id).unwrap().unwrap().status, Status::AcceptedReplayOnly.as_str());
        let record = store.put_vote(&vote(&eligible(&id), &id, Verdict::Accept), 150).unwrap().unwrap();
        assert_eq!(record.status, "accepted");
        assert_eq!(record.received_at_ms, 100);
    }
    let store = Store::open(dir.path(), ChainSpec::devnet()).unwrap();
    assert_eq!(store.artifact(&id).unwrap().unwrap(), a);
    assert_eq!(store.votes(&id).unwrap().len(), 1);
    assert_eq!(store.verdict(&id).unwrap().unwrap().status, "accepted");
}

#[test]
fn a_vote_before_its_artifact_counts_once_the_artifact_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), ChainSpec::devnet()).unwrap();
    let a = artifact(2);
    let id = a.id();
    let v = vote(&eligible(&id), &id, Verdict::Reject);
    assert_eq!(store.put_vote(&v, 1).unwrap().unwrap().status, "unknown-artifact");
    assert!(store.put_vote(&v, 2).unwrap().is_none(), "a duplicate vote is a no-op");
    store.put_artifact(&a, 3).unwrap();
    assert_eq!(store.verdict(&id).unwrap().unwrap().status, "disputed");
}

#[test]
fn a_data_dir_of_another_chain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), ChainSpec::devnet()).unwrap());
    let mut other = ChainSpec::devnet();
    other.name = "other".into();
    assert!(matches!(Store::open(dir.path(), other), Err(StoreError::WrongChain { .. })));
}

#[test]
fn history_pages_newest_first_with_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), ChainSpec::devnet()).unwrap();
    let artifacts: Vec<Artifact> = (10..35).map(artifact).collect();
    for (i, a) in artifacts.iter().enumerate() {
        store.put_artifact(a, 1000 + i as u64).unwrap();
    }
    let mut seen = Vec::new();
    let mut query = HistoryQuery { limit: 10, ..Default::default() };
    loop {
        let (rows, next) = store.history(&query).unwrap();
        seen.extend(rows.into_iter().map(|r| r.received_at_ms));
        match next {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, (1000..1025).rev().collect::<Vec<u64>>());

    let window = HistoryQuery { from_ms: Some(1005), to_ms: Some(1009), limit: 100, ..Default::default() };
    let (rows, next) = store.history(&window).unwrap();
    assert_eq!(rows.iter().map(|r| r.received_at_ms).collect::<Vec<_>>(), vec![1009, 1008, 1007, 1006, 1005]);
    assert!(next.is_none());

    let miner = artifacts[0].body.miner;
    let (rows, _) = store.history(&HistoryQuery { miner: Some(miner), limit: 100, ..Default::default() }).unwrap();
    assert_eq!(rows.len(), artifacts.iter().filter(|a| a.body.miner == miner).count());
    let stranger = Keypair::from_secret([1; 32]).public();
    assert!(store
        .history(&HistoryQuery { miner: Some(stranger), limit: 5, ..Default::default() })
        .unwrap()
        .0
        .is_empty());

    let disputed = artifacts[3].id();
    store.put_vote(&vote(&eligible(&disputed), &disputed, Verdict::Reject), 2000).unwrap();
    let (rows, _) =
        store.history(&HistoryQuery { status: Some(Status::Disputed), limit: 100, ..Default::default() }).unwrap();
    assert_eq!(rows.iter().map(|r| r.artifact_id.clone()).collect::<Vec<_>>(), vec![disputed.to_hex()]);
}

#[test]
fn the_log_pages_through_everything_stored_in_order_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts: Vec<Artifact> = (10..15).map(artifact).collect();
    let id = artifacts[0].id();
    let v = vote(&eligible(&id), &id, Verdict::Accept);
    {
        let store = Store::open(dir.path(), ChainSpec::devnet()).unwrap();
        for (i, a) in artifacts.iter().enumerate() {
            store.put_artifact(a, i as u64).unwrap();
        }
        store.put_artifact(&artifacts[0], 99).unwrap(); // a duplicate takes no log entry
        store.put_vote(&v, 100).unwrap();
        store.set_sync_cursor(b"peer", 4).unwrap();
    }
    let store = Store::open(dir.path(), ChainSpec::devnet()).unwrap();
    let first = store.log_page(0, 4, usize::MAX).unwrap();
    assert_eq!(first.entries.len(), 4);
    assert!(first.more);
    assert_eq!(first.entries[0], LogEntry::Artifact(artifacts[0].encode()));
    let rest = store.log_page(first.next, 100, usize::MAX).unwrap();
    assert_eq!(rest.entries, vec![LogEntry::Artifact(artifacts[4].encode()), LogEntry::Vote(v.encode())]);
    assert!(!rest.more);
    assert_eq!(store.sync_cursor(b"peer").unwrap(), 4);
    assert_eq!(store.sync_cursor(b"other").unwrap(), 0);
    // Numbering continues after a restart.
    store.put_artifact(&artifact(20), 200).unwrap();
    assert_eq!(store.log_page(rest.next, 100, usize::MAX).unwrap().entries.len(), 1);
}
