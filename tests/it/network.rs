//! Multi-node tests: real nodes in this process on 127.0.0.1 (libp2p over
//! TCP, RocksDB, JSON-RPC over HTTP), and the real model where votes matter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poi_chain_spec::{devnet_keypair, ChainSpec};
use poi_model::runtime::{default_model_path, Runtime};
use poi_node::clock::now_ms;
use poi_node::config::{NodeConfig, Settings};
use poi_node::metrics::SourceLabel;
use poi_node::network::{Topic, GRAYLIST_THRESHOLD};
use poi_node::scheduler::{FullChecker, ModelChecker};
use poi_node::service::{start, NodeHandle};
use poi_rpc_api::{PoiApiClient, Status};
use poi_tests::{eventually, http_get, node, stored, submit, Outsider, Testnet};
use poi_verifier::simulate::{build, build_at, forged, Chooser};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_reaches_every_node_and_a_late_or_restarted_node_catches_up() {
    let spec = ChainSpec::local_devnet(3, 0.25).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = node(&spec, 0, dir.path(), &[]).await;
    let b = node(&spec, 1, dir.path(), &[&a]).await;
    let artifacts: Vec<_> = (0..5).map(|seed| build(&spec, 32, 100 + seed, Chooser::Seeded)).collect();
    // Gossip needs the mesh; the first submissions may reach b by sync instead.
    for built in &artifacts {
        assert!(submit(&a, &built.bytes).await.stored);
    }
    let ids: Vec<_> = artifacts.iter().map(|b| b.artifact.id()).collect();
    assert!(eventually(Duration::from_secs(20), || ids.iter().all(|id| stored(&b, id))).await, "b has every artifact");

    // c starts after everything was published: only sync can bring it.
    let c = node(&spec, 2, dir.path(), &[&b]).await;
    assert!(eventually(Duration::from_secs(20), || ids.iter().all(|id| stored(&c, id))).await, "c caught up");
    for id in &ids {
        let verdicts: Vec<_> = [&a, &b, &c].map(|n| n.pipeline.store().verdict(id).unwrap().unwrap().status).into();
        assert!(verdicts.iter().all(|s| *s == Status::AcceptedReplayOnly), "{verdicts:?}");
    }

    // Restarted from its data dir alone, c still has everything.
    c.stop().await;
    let c = node(&spec, 2, dir.path(), &[]).await;
    assert!(ids.iter().all(|id| stored(&c, id)));
    for node in [a, b, c] {
        node.stop().await;
    }
}

/// Four nodes in a full mesh are split into two halves by blocking every
/// connection across; each half goes on checking and storing what it is
/// given; once healed, catch-up sync brings every node everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_network_keeps_working_and_converges_after_healing() {
    let net = Testnet::start(ChainSpec::local_devnet(4, 0.25).unwrap(), 4).await;
    let spec = net.spec.clone();
    let [a, b, c, d] = [&net.nodes[0], &net.nodes[1], &net.nodes[2], &net.nodes[3]];
    assert!(net.partition(&[0, 1], &[2, 3]).await, "still connected across the cut");

    let on_left: Vec<_> = (0..3).map(|seed| build(&spec, 32, 500 + seed, Chooser::Seeded)).collect();
    let on_right: Vec<_> = (0..3).map(|seed| build(&spec, 32, 600 + seed, Chooser::Seeded)).collect();
    for built in &on_left {
        assert!(submit(a, &built.bytes).await.stored);
    }
    for built in &on_right {
        assert!(submit(d, &built.bytes).await.stored);
    }
    let ids = |built: &[poi_verifier::simulate::Built]| built.iter().map(|b| b.artifact.id()).collect::<Vec<_>>();
    let (left_ids, right_ids) = (ids(&on_left), ids(&on_right));
    let has_all = |n: &NodeHandle, ids: &[poi_artifact::ArtifactId]| ids.iter().all(|id| stored(n, id));
    assert!(eventually(Duration::from_secs(20), || has_all(b, &left_ids) && has_all(c, &right_ids)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(left_ids.iter().all(|id| !stored(c, id) && !stored(d, id)), "left artifacts crossed the cut");
    assert!(right_ids.iter().all(|id| !stored(a, id) && !stored(b, id)), "right artifacts crossed the cut");

    let healing = Instant::now();
    net.heal(&[2, 3], &[0, 1]).await;
    let all: Vec<_> = left_ids.iter().chain(&right_ids).copied().collect();
    let converged = eventually(Duration::from_secs(30), || [&a, &b, &c, &d].iter().all(|n| has_all(n, &all))).await;
    assert!(converged, "not every node has every artifact 30 s after healing");
    eprintln!("partition healed: every node had every artifact after {:?}", healing.elapsed());
    for id in &all {
        let verdicts: Vec<_> = [&a, &b, &c, &d].map(|n| n.pipeline.store().verdict(id).unwrap().unwrap()).into();
        assert!(verdicts.iter().all(|v| v.status == verdicts[0].status && v.status == Status::AcceptedReplayOnly));
    }
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_gossip_is_not_forwarded_and_its_sender_is_penalised() {
    let spec = ChainSpec::local_devnet(2, 0.25).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = poi_tests::node_config(&spec, 0, dir.path(), []);
    config.metrics = Some("127.0.0.1:0".parse().unwrap());
    let a = start(config).await.unwrap();
    let b = node(&spec, 1, dir.path(), &[&a]).await;

    // A peer that speaks the protocol but publishes garbage and a forged artifact.
    let evil = Outsider::join(&spec, &a).await;
    for bad in [b"not an artifact".to_vec(), forged(&spec, 16, 7)] {
        evil.publish(Topic::Artifacts, bad);
    }

    let rejected = |n: &NodeHandle| {
        n.metrics.artifacts_rejected.get_or_create(&poi_node::metrics::SourceLabel { source: "gossip" }).get()
    };
    assert!(eventually(Duration::from_secs(20), || rejected(&a) == 2).await, "a rejected both messages");
    let mut penalised = false;
    for _ in 0..40 {
        if evil.score_at(&a).await < 0.0 {
            penalised = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(penalised, "a's gossip score for the sender is negative: {:?}", a.network.peers().await.unwrap());
    // b never saw them: a did not forward what it rejected.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rejected(&b), 0);
    assert_eq!(b.pipeline.store().artifact_count_estimate().unwrap(), 0);
    let metrics = http_get(a.metrics_addr.unwrap(), "/metrics").await;
    assert!(metrics.contains("poi_artifacts_rejected_total{source=\"gossip\"} 2"), "{metrics}");
    drop(evil);
    a.stop().await;
    b.stop().await;
}

/// A peer flooding invalid artifacts is graylisted after a few: gossipsub
/// drops the rest before they cost a replay check, while honest artifacts
/// submitted during the flood reach every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_is_graylisted_and_honest_artifacts_still_flow() {
    const FLOOD: usize = 300;
    let spec = ChainSpec::local_devnet(2, 0.25).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = node(&spec, 0, dir.path(), &[]).await;
    let b = node(&spec, 1, dir.path(), &[&a]).await;

    let evil = Outsider::join(&spec, &a).await;
    for seed in 0..FLOOD as u64 {
        evil.publish(Topic::Artifacts, forged(&spec, 16, 10_000 + seed));
    }

    let honest: Vec<_> = (0..20).map(|seed| build(&spec, 32, 800 + seed, Chooser::Seeded)).collect();
    for built in &honest {
        assert!(submit(&a, &built.bytes).await.stored);
    }
    let ids: Vec<_> = honest.iter().map(|b| b.artifact.id()).collect();
    assert!(eventually(Duration::from_secs(20), || ids.iter().all(|id| stored(&b, id))).await, "honest flow stopped");

    let graylisted = |peers: &[poi_node::network::PeerInfo]| {
        peers.iter().any(|p| p.peer_id == evil.peer_id && p.score.is_some_and(|s| s < GRAYLIST_THRESHOLD))
    };
    let mut seen = false;
    for _ in 0..100 {
        if graylisted(&a.network.peers().await.unwrap()) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the flooder is not graylisted: {:?}", a.network.peers().await.unwrap());
    tokio::time::timeout(Duration::from_secs(30), evil.flush()).await.expect("the flood was sent within 30 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let checked =
        a.metrics.artifacts_rejected.get_or_create(&poi_node::metrics::SourceLabel { source: "gossip" }).get();
    eprintln!("flood: {checked} of {FLOOD} invalid artifacts reached the replay check before graylisting");
    assert!(checked > 0 && (checked as usize) < FLOOD / 2, "{checked} of {FLOOD} flood messages were replay-checked");
    for seed in 0..FLOOD as u64 {
        let forged_id = build(&spec, 16, 10_000 + seed, Chooser::Seeded).artifact.id();
        assert!(!stored(&a, &forged_id) && !stored(&b, &forged_id));
    }
    drop(evil);
    a.stop().await;
    b.stop().await;
}

/// Every validator selected (rate 1): each re-runs the real model, votes are
/// gossiped, and every node reaches the same final verdict (a validator
/// whose check comes after finality drops it unrun).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_from_the_real_model_converge_to_one_verdict_on_every_node() {
    let spec = ChainSpec::local_devnet(3, 1.0).unwrap();
    let runtime = Arc::new(Runtime::load_pinned(&spec, &default_model_path(&spec), None).unwrap());
    let checker: Arc<dyn FullChecker> = Arc::new(ModelChecker::new(runtime, &spec));
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for i in 0..3 {
        let mut config = poi_tests::node_config(&spec, i, dir.path(), &nodes);
        config.checker = Some(checker.clone());
        nodes.push(start(config).await.unwrap());
    }
    // Synthetic distributions are not the model's: every full check rejects.
    let built = build(&spec, 16, 9, Chooser::Seeded);
    let id = built.artifact.id();
    submit(&nodes[1], &built.bytes).await;
    let settled = eventually(Duration::from_secs(120), || {
        nodes.iter().all(|n| n.pipeline.store().verdict(&id).unwrap().is_some_and(|v| v.is_final))
    })
    .await;
    assert!(settled, "every node holds a final verdict");
    for node in &nodes {
        let record = node.pipeline.store().verdict(&id).unwrap().unwrap();
        assert_eq!(record.status, Status::Rejected);
        assert!(record.voters.len() >= 2, "two of three rejects make it final: {record:?}");
        assert!(record.equivocators.is_empty());
    }
    for node in nodes {
        node.stop().await;
    }
}

/// The admission window at the RPC and gossip edges: an artifact created
/// long ago or in the future is refused with an error naming the window and
/// stored nowhere; a relay just past the window is not penalised, one far
/// past it is; catch-up sync is exempt, so a node still converges with a peer
/// that admitted an artifact while it was fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_outside_the_admission_window_are_refused_at_the_edges_but_synced() {
    let spec = ChainSpec::local_devnet(2, 0.25).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = start(NodeConfig::new(spec.clone(), devnet_keypair(0), dir.path().join("node0"))).await.unwrap();
    let window = Settings::default().admission();
    let (max_age, max_ahead) = (window.max_age.unwrap().as_millis() as u64, window.max_ahead.as_millis() as u64);
    let at = |seed, created_at_ms| build_at(&spec, 16, seed, Chooser::Seeded, created_at_ms);
    let outside =
        |n: &NodeHandle, source| n.metrics.artifacts_outside_window.get_or_create(&SourceLabel { source }).get();

    let fresh = at(1, now_ms());
    assert!(submit(&a, &fresh.bytes).await.stored, "a fresh artifact is admitted");
    let fresh_verdict = a.pipeline.store().verdict(&fresh.artifact.id()).unwrap().unwrap();
    let client = poi_tests::client(&a);
    for (seed, created_at_ms, said) in
        [(2, now_ms() - 2 * max_age, "s ago"), (3, now_ms() + 2 * max_ahead, "s in the future")]
    {
        let built = at(seed, created_at_ms);
        let refused = client.submit_artifact(hex::encode(&built.bytes)).await.unwrap_err().to_string();
        assert!(refused.contains("outside this node's admission window") && refused.contains(said), "{refused}");
        assert!(!stored(&a, &built.artifact.id()));
    }
    assert_eq!(outside(&a, "rpc"), 2);

    let outsider = Outsider::join(&spec, &a).await;
    // A validator starts every outsider below zero (it sends them no gossip).
    let mut start = 0.0;
    for _ in 0..40 {
        start = outsider.score_at(&a).await;
        if start < 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let just_past = at(4, now_ms() - max_age - 10_000);
    let far_past = at(5, now_ms() - 2 * max_age);
    outsider.publish(Topic::Artifacts, just_past.bytes.clone());
    outsider.publish(Topic::Artifacts, far_past.bytes.clone());
    assert!(eventually(Duration::from_secs(20), || outside(&a, "gossip") == 2).await);
    let mut last = start;
    for _ in 0..40 {
        last = outsider.score_at(&a).await;
        if last < start {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One invalid message costs -10 (its count decaying from 1), two -40:
    // only the artifact far past the window was held against the relay.
    let penalty = start - last;
    assert!(penalty > 0.0 && penalty < 20.0, "the relay's score went from {start} to {last}");
    assert!(!stored(&a, &just_past.artifact.id()) && !stored(&a, &far_past.artifact.id()));
    drop(outsider);

    // b admitted the old artifact (here: no window), then a meets b: sync
    // brings it over the window.
    let b = node(&spec, 1, dir.path(), &[]).await;
    assert!(submit(&b, &far_past.bytes).await.stored);
    a.network.dial(b.dial_addr()).await.unwrap();
    assert!(eventually(Duration::from_secs(20), || stored(&a, &far_past.artifact.id())).await, "sync is exempt");
    assert_eq!(outside(&a, "sync"), 0);
    // Once stored, the old artifact sent again is a duplicate, not a refusal.
    assert!(!submit(&a, &far_past.bytes).await.stored);
    // What a had stored before the refusals is unchanged.
    assert_eq!(a.pipeline.store().artifact_bytes(&fresh.artifact.id()).unwrap().as_deref(), Some(&fresh.bytes[..]));
    assert_eq!(a.pipeline.store().verdict(&fresh.artifact.id()).unwrap().unwrap(), fresh_verdict);
    a.stop().await;
    b.stop().await;
}
