//! The ledger: RocksDB with atomic events, verdicts from votes (decided by
//! the pipeline, stored with each event), history pages, and everything still
//! there after a restart.

use poi_verifier::simulate as common;

use common::Chooser;
use poi_artifact::{Artifact, ArtifactId, Keypair, Verdict, Vote, VoteBody};
use poi_chain_spec::{devnet_keypair, ChainSpec, MinerTestParams};
use std::sync::Arc;

use poi_node::metrics::Metrics;
use poi_node::pipeline::{Admission, Pipeline, Source, VoteIngested};
use poi_node::store::{HistoryQuery, LogEntry, Store, StoreError, SyncCursor, VerdictRecord, MAX_EXAMINED};
use poi_verifier::verdict::{selection, verdict, Status};
use poi_verifier::SeedingClass;

fn artifact(seed: u64) -> Artifact {
    common::build(&ChainSpec::devnet(), 16, seed, Chooser::Seeded).artifact
}

fn vote(key: &Keypair, id: &ArtifactId, verdict: Verdict) -> Vote {
    let spec = ChainSpec::devnet();
    VoteBody {
        chain_id: spec.chain_id(),
        artifact_id: *id,
        validator: key.public(),
        selection_proof: key.vrf().prove(id),
        verdict,
        figures: poi_tests::clean_figures(&spec),
        created_at_ms: 5,
    }
    .sign(key)
}

/// A devnet validator whose VRF selects it to check `id`, if any.
fn selected(id: &ArtifactId) -> Option<Keypair> {
    let spec = ChainSpec::devnet();
    (0..4).map(devnet_keypair).find(|k| selection(&k.vrf(), id, spec.full_check_rate).0)
}

/// An artifact (from seed `from` on) that some devnet validator is selected
/// for, with that validator.
fn selected_artifact(from: u64) -> (Artifact, Keypair) {
    (from..)
        .find_map(|seed| {
            let artifact = artifact(seed);
            selected(&artifact.id()).map(|key| (artifact, key))
        })
        .unwrap()
}

/// A store and the pipeline that decides what goes into it, as a node has.
fn ledger(dir: &std::path::Path) -> Pipeline {
    let store = Arc::new(Store::open(dir, ChainSpec::devnet()).unwrap());
    Pipeline::new(store, ChainSpec::devnet(), Arc::new(Metrics::default()), None, Admission::ANY_AGE)
}

/// Stores `artifact` received at `at` with the verdict of no votes.
fn put(store: &Store, artifact: &Artifact, at: u64) -> bool {
    put_voted(store, artifact, at, &[])
}

/// The same with a record naming `voters` (the store indexes the record it
/// is given; the pipeline decides it).
fn put_voted(store: &Store, artifact: &Artifact, at: u64, voters: &[&Keypair]) -> bool {
    let id = artifact.id();
    let outcome = verdict(&ChainSpec::devnet(), &id, SeedingClass::RequesterBound, &[]);
    let mut record = VerdictRecord::new(&id, &artifact.body.miner, SeedingClass::RequesterBound, &outcome, &[], at, at);
    record.voters = voters.iter().map(|v| v.public().to_hex()).collect();
    store.put_artifact(artifact, &record, None).unwrap()
}

#[test]
fn artifacts_votes_and_verdicts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (a, voter) = selected_artifact(1);
    let id = a.id();
    {
        let ledger = ledger(dir.path());
        let first = ledger.ingest_artifact(&a.encode(), Source::Rpc).unwrap();
        assert!(first.new);
        assert!(!ledger.ingest_artifact(&a.encode(), Source::Gossip).unwrap().new, "duplicates are not rewritten");
        assert_eq!(ledger.store().verdict(&id).unwrap().unwrap().status, Status::AcceptedReplayOnly);
        let vote = vote(&voter, &id, Verdict::Accept).encode();
        let VoteIngested::Stored(record) = ledger.ingest_vote(&vote, Source::Gossip).unwrap() else {
            panic!("the vote was stored with a verdict")
        };
        assert_eq!(record.status, Status::Accepted);
        assert_eq!(record.received_at_ms, first.verdict.received_at_ms, "a vote keeps the artifact's receive time");
    }
    let store = Store::open(dir.path(), ChainSpec::devnet()).unwrap();
    assert_eq!(store.artifact(&id).unwrap().unwrap(), a);
    assert_eq!(store.votes(&id).unwrap().len(), 1);
    assert_eq!(store.verdict(&id).unwrap().unwrap().status, Status::Accepted);
}

#[test]
fn a_vote_before_its_artifact_counts_once_the_artifact_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path());
    let (a, voter) = selected_artifact(2);
    let id = a.id();
    let v = vote(&voter, &id, Verdict::Reject).encode();
    assert_eq!(ledger.ingest_vote(&v, Source::Gossip).unwrap(), VoteIngested::Pending { held: true });
    assert_eq!(ledger.ingest_vote(&v, Source::Sync).unwrap(), VoteIngested::Duplicate, "a duplicate vote is a no-op");
    assert_eq!(ledger.ingest_artifact(&a.encode(), Source::Sync).unwrap().verdict.status, Status::Disputed);
    assert_eq!(ledger.store().verdict(&id).unwrap().unwrap().status, Status::Disputed);
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
        put(&store, a, 1000 + i as u64);
    }
    let mut seen = Vec::new();
    let mut query = HistoryQuery { limit: 10, ..Default::default() };
    loop {
        let page = store.history(&query).unwrap();
        seen.extend(page.rows.into_iter().map(|r| r.received_at_ms));
        match page.next {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, (1000..1025).rev().collect::<Vec<u64>>());

    let window = HistoryQuery { from_ms: Some(1005), to_ms: Some(1009), limit: 100, ..Default::default() };
    let page = store.history(&window).unwrap();
    assert_eq!(page.rows.iter().map(|r| r.received_at_ms).collect::<Vec<_>>(), vec![1009, 1008, 1007, 1006, 1005]);
    assert!(page.next.is_none());

    let miner = artifacts[0].body.miner;
    let rows = store.history(&HistoryQuery { miner: Some(miner), limit: 100, ..Default::default() }).unwrap().rows;
    assert_eq!(rows.len(), artifacts.iter().filter(|a| a.body.miner == miner).count());
    let stranger = Keypair::from_secret([1; 32]).public();
    assert!(store
        .history(&HistoryQuery { miner: Some(stranger), limit: 5, ..Default::default() })
        .unwrap()
        .rows
        .is_empty());

    let (disputed_artifact, voter) = selected_artifact(40);
    put(&store, &disputed_artifact, 1003);
    let disputed = disputed_artifact.id();
    let reject = vote(&voter, &disputed, Verdict::Reject);
    let votes = std::slice::from_ref(&reject);
    let class = SeedingClass::RequesterBound;
    let outcome = verdict(&ChainSpec::devnet(), &disputed, class, votes);
    let record = VerdictRecord::new(&disputed, &disputed_artifact.body.miner, class, &outcome, votes, 1003, 2000);
    assert_eq!(record.status, Status::Disputed);
    assert!(store.put_vote(&reject, &record, None).unwrap());
    let rows =
        store.history(&HistoryQuery { status: Some(Status::Disputed), limit: 100, ..Default::default() }).unwrap().rows;
    assert_eq!(rows.iter().map(|r| r.artifact_id.clone()).collect::<Vec<_>>(), vec![disputed.to_hex()]);
}

/// `artifact` re-signed by `miner`.
fn mined_by(artifact: Artifact, miner: &Keypair) -> Artifact {
    let mut body = artifact.body;
    body.miner = miner.public();
    body.sign(miner)
}

/// The attack: a client asks for a status (or validator, or a miner's
/// disputes) that almost no row has. Before the indexes, each such call
/// scanned the whole time index until `limit` rows matched: every stored
/// artifact, up to 2000 times a second; before the paired indexes, a
/// miner's disputes scanned the miner's every artifact. Now such a filter
/// reads its own index, and the one combination no index serves
/// (validator with miner) stops after `MAX_EXAMINED` keys with a cursor.
#[test]
fn a_rare_filter_costs_a_page_not_a_table_scan() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), ChainSpec::devnet()).unwrap();
    let busy_validator = Keypair::generate();
    let stored = MAX_EXAMINED as u64 + 500;
    for seed in 0..stored {
        assert!(put_voted(&store, &artifact(100_000 + seed), seed, &[&busy_validator]));
    }
    let (disputed_artifact, voter) = selected_artifact(40);
    put(&store, &disputed_artifact, 7);
    let disputed = disputed_artifact.id();
    let reject = vote(&voter, &disputed, Verdict::Reject);
    let votes = std::slice::from_ref(&reject);
    let class = SeedingClass::RequesterBound;
    let outcome = verdict(&ChainSpec::devnet(), &disputed, class, votes);
    let record = VerdictRecord::new(&disputed, &disputed_artifact.body.miner, class, &outcome, votes, 7, 2000);
    assert!(store.put_vote(&reject, &record, None).unwrap());
    let other_miner = Keypair::generate();
    assert!(put_voted(&store, &mined_by(artifact(99), &other_miner), 3, &[&busy_validator]));

    let query = |q: HistoryQuery| store.history(&HistoryQuery { limit: 100, ..q }).unwrap();
    let costs = |q: HistoryQuery| {
        let page = query(q);
        (page.rows.len(), page.examined)
    };
    let disputes = || HistoryQuery { status: Some(Status::Disputed), ..Default::default() };
    assert_eq!(costs(disputes()), (1, 1), "the status index holds only the disputed artifact");
    assert_eq!(costs(HistoryQuery { validator: Some(voter.public()), ..Default::default() }), (1, 1));
    let miner = disputed_artifact.body.miner;
    assert_eq!(costs(HistoryQuery { miner: Some(miner), ..disputes() }), (1, 1), "a miner's disputes");
    assert_eq!(costs(HistoryQuery { validator: Some(voter.public()), ..disputes() }), (1, 1));
    assert_eq!(costs(HistoryQuery { validator: Some(busy_validator.public()), ..disputes() }), (0, 0));
    let not_replay_only = query(HistoryQuery { status: Some(Status::AcceptedReplayOnly), ..Default::default() });
    assert_eq!((not_replay_only.rows.len(), not_replay_only.examined), (100, 100), "a page costs its rows");
    assert!(
        !not_replay_only.rows.iter().any(|r| r.artifact_id == disputed.to_hex()),
        "the vote moved the artifact out of its old status's index"
    );
    let replay_only_of_miner =
        HistoryQuery { miner: Some(miner), status: Some(Status::AcceptedReplayOnly), ..disputes() };
    assert!(
        !query(replay_only_of_miner).rows.iter().any(|r| r.artifact_id == disputed.to_hex()),
        "... and out of the miner's index for that status"
    );

    // Validator and miner: the validator's index, checked row by row, at
    // most MAX_EXAMINED keys per call, and the cursor goes on from there.
    let mut q = HistoryQuery {
        validator: Some(busy_validator.public()),
        miner: Some(other_miner.public()),
        limit: 100,
        ..Default::default()
    };
    let (mut found, mut calls) = (Vec::new(), 0);
    loop {
        let page = store.history(&q).unwrap();
        assert!(page.examined <= MAX_EXAMINED, "{} keys in one call", page.examined);
        calls += 1;
        found.extend(page.rows.into_iter().map(|r| r.miner));
        match page.next {
            Some(next) => q.cursor = Some(next),
            None => break,
        }
    }
    assert_eq!((found, calls), (vec![other_miner.public().to_hex()], 2));

    // A cursor handed out for one filter is refused by another.
    let time_cursor = query(HistoryQuery::default()).next.unwrap();
    let err = store
        .history(&HistoryQuery { status: Some(Status::Rejected), cursor: Some(time_cursor), ..Default::default() })
        .unwrap_err();
    assert!(err.to_string().contains("cursor"), "{err}");
}

/// A data dir written by an older version lacks some history indexes:
/// version 1 had only time and miner, 2 added status and validator, 3 the
/// pairings with a status. Opening it builds what is missing; without that,
/// the indexed filters would miss every artifact stored before.
#[test]
fn an_older_data_dir_gets_its_missing_history_indexes_on_open() {
    let lacking: [(u64, &[&str]); 2] = [
        (1, &["by_status", "by_validator", "by_miner_status", "by_validator_status"]),
        (2, &["by_miner_status", "by_validator_status"]),
    ];
    for (version, families) in lacking {
        let dir = tempfile::tempdir().unwrap();
        let (disputed_artifact, voter) = selected_artifact(40);
        {
            let store = Store::open(dir.path(), ChainSpec::devnet()).unwrap();
            for seed in 0..20 {
                put(&store, &artifact(200 + seed), seed);
            }
            put(&store, &disputed_artifact, 30);
            let id = disputed_artifact.id();
            let reject = vote(&voter, &id, Verdict::Reject);
            let votes = std::slice::from_ref(&reject);
            let outcome = verdict(&ChainSpec::devnet(), &id, SeedingClass::RequesterBound, votes);
            let miner = &disputed_artifact.body.miner;
            let record = VerdictRecord::new(&id, miner, SeedingClass::RequesterBound, &outcome, votes, 30, 40);
            assert!(store.put_vote(&reject, &record, None).unwrap());
        }
        {
            // The older layout: those families absent, its version recorded
            // (version 1 recorded none).
            let options = rocksdb::Options::default();
            let names = rocksdb::DB::list_cf(&options, dir.path()).unwrap();
            let mut db = rocksdb::DB::open_cf(&options, dir.path(), &names).unwrap();
            for family in families {
                db.drop_cf(family).unwrap();
            }
            let meta = db.cf_handle("meta").unwrap();
            match version {
                1 => db.delete_cf(meta, b"index_version").unwrap(),
                _ => db.put_cf(meta, b"index_version", version.to_be_bytes()).unwrap(),
            }
        }
        let store = Store::open(dir.path(), ChainSpec::devnet()).unwrap();
        let disputed = disputed_artifact.id().to_hex();
        let disputes = HistoryQuery { status: Some(Status::Disputed), limit: 100, ..Default::default() };
        for query in [
            disputes.clone(),
            HistoryQuery { validator: Some(voter.public()), ..disputes.clone() },
            HistoryQuery { miner: Some(disputed_artifact.body.miner), ..disputes.clone() },
            HistoryQuery { validator: Some(voter.public()), status: None, ..disputes.clone() },
        ] {
            let page = store.history(&query).unwrap();
            let found: Vec<_> = page.rows.into_iter().map(|r| r.artifact_id).collect();
            assert_eq!(found, vec![disputed.clone()], "from version {version}: {query:?}");
        }
        let replay_only = HistoryQuery { status: Some(Status::AcceptedReplayOnly), ..disputes };
        assert_eq!(store.history(&replay_only).unwrap().rows.len(), 20, "from version {version}");
    }
}

#[test]
fn the_log_pages_through_everything_stored_in_order_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts: Vec<Artifact> = (10..15).map(artifact).collect();
    let id = artifacts[0].id();
    let v = vote(&devnet_keypair(0), &id, Verdict::Accept);
    {
        let store = Store::open(dir.path(), ChainSpec::devnet()).unwrap();
        for (i, a) in artifacts.iter().enumerate() {
            put(&store, a, i as u64);
        }
        assert!(!put(&store, &artifacts[0], 99), "a duplicate takes no log entry");
        let record = store.verdict(&id).unwrap().unwrap();
        assert!(store.put_vote(&v, &record, None).unwrap());
        assert!(!store.put_vote(&v, &record, None).unwrap(), "nor does a duplicate vote");
        store.set_sync_cursor(b"peer", store.log_epoch(), 4).unwrap();
    }
    let store = Store::open(dir.path(), ChainSpec::devnet()).unwrap();
    let first = store.log_page(0, 4, usize::MAX).unwrap();
    assert_eq!(first.entries.len(), 4);
    assert!(first.more);
    assert_eq!(first.entries[0], LogEntry::Artifact(artifacts[0].encode()));
    let rest = store.log_page(first.next, 100, usize::MAX).unwrap();
    assert_eq!(rest.entries, vec![LogEntry::Artifact(artifacts[4].encode()), LogEntry::Vote(v.encode())]);
    assert!(!rest.more);
    let epoch = store.log_epoch();
    assert_eq!(store.sync_cursor(b"peer").unwrap(), SyncCursor { epoch: Some(epoch), next: 4 });
    assert_eq!(store.sync_cursor(b"other").unwrap(), SyncCursor::default());
    assert_eq!(first.epoch, epoch, "pages name the log they are from");
    // Numbering continues after a restart.
    put(&store, &artifact(20), 200);
    assert_eq!(store.log_page(rest.next, 100, usize::MAX).unwrap().entries.len(), 1);
}

/// The per-miner test reads at most the window's newest entries, in the
/// artifacts' creation order whatever order they arrived in, and its index
/// survives a restart.
#[test]
fn the_miner_test_reads_the_newest_window_in_creation_order_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ChainSpec::devnet();
    let window = MinerTestParams { window: 3, ..spec.miner_test.clone() };
    let miner = common::miner().public();
    // Evidence 1, 2, … by creation time, stored newest first.
    let evidence = [1.0, -5.0, 2.0, 0.5, 4.0];
    {
        let store = Store::open(dir.path(), ChainSpec::devnet()).unwrap();
        for (i, value) in evidence.iter().enumerate().rev() {
            let artifact = common::build_at(&spec, 8, i as u64, Chooser::HonestUnseeded, 1_000 + i as u64).artifact;
            let id = artifact.id();
            let outcome = verdict(&spec, &id, SeedingClass::Unseeded, &[]);
            let record = VerdictRecord::new(&id, &miner, SeedingClass::Unseeded, &outcome, &[], 7, 7)
                .with_evidence(Some(*value));
            assert!(store.put_artifact(&artifact, &record, None).unwrap());
        }
        // A requester-bound artifact carries no evidence and is not read.
        assert!(put(&store, &artifact(99), 8));
    }
    let store = Store::open(dir.path(), ChainSpec::devnet()).unwrap();
    let test = store.miner_test(&miner, &window).unwrap();
    assert_eq!(test.artifacts, 3);
    // The CUSUM over 2.0, 0.5, 4.0 (the three newest, oldest first).
    assert_eq!(test.statistic, 6.5);
    let all = MinerTestParams { window: 10, ..spec.miner_test.clone() };
    let test = store.miner_test(&miner, &all).unwrap();
    assert_eq!(test.artifacts, 5);
    assert_eq!(test.statistic, 6.5, "the floor after -5.0 forgets the first artifact");
    assert_eq!(test.peak, 6.5);
    let other = Keypair::from_secret([3; 32]).public();
    assert_eq!(store.miner_test(&other, &all).unwrap().artifacts, 0);
}
