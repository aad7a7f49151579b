//! A Byzantine validator (a quarter of the weight) votes the opposite of the
//! truth on every artifact; the honest verdicts stand on every node,
//! including its own. The validators' judgement is a stand-in (honest iff
//! the artifact's miner is the honest one), so the test is about votes and
//! the verdict rule over a real network, not about the model.

use std::time::{Duration, Instant};

use poi_artifact::{Artifact, ArtifactId, Keypair, PublicKey, Verdict, Vote, VoteBody, VoteFigures};
use poi_chain_spec::{devnet_keypair, ChainSpec};
use poi_node::metrics::SourceLabel;
use poi_node::network::Topic;
use poi_node::scheduler::FullChecker;
use poi_node::service::{start, NodeHandle};
use poi_rpc_api::{PoiApiClient, Status, SubmitResult};
use poi_tests::Outsider;
use poi_verifier::simulate::{body_with, build, miner, Chooser};

struct Judge {
    honest_miner: PublicKey,
    lies: bool,
}

impl FullChecker for Judge {
    fn check(&self, artifact: &Artifact) -> (Verdict, VoteFigures) {
        let honest = artifact.body.miner == self.honest_miner;
        let verdict = if honest != self.lies { Verdict::Accept } else { Verdict::Reject };
        let figures =
            VoteFigures { distance: if honest { 0.0 } else { 1.0 }, ..poi_tests::clean_figures(&ChainSpec::devnet()) };
        (verdict, figures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_voting_wrongly_does_not_change_any_verdict() {
    const VALIDATORS: u32 = 4;
    const LIAR: u32 = 3;
    // Every validator selected: every one votes on every artifact.
    let spec = ChainSpec::local_devnet(VALIDATORS, 1.0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for i in 0..VALIDATORS {
        let mut config = poi_tests::node_config(&spec, i, dir.path(), &nodes);
        config.checker = Some(std::sync::Arc::new(Judge { honest_miner: miner().public(), lies: i == LIAR }));
        nodes.push(start(config).await.unwrap());
    }

    let cheat = Keypair::from_secret([9; 32]);
    let mut expected = Vec::new();
    let client = poi_tests::client(&nodes[0]);
    for seed in 0..6u64 {
        let honest = seed % 2 == 0;
        let signer = if honest { miner() } else { cheat.clone() };
        let mut body = body_with(&spec, 16, 700 + seed, Chooser::Seeded);
        body.miner = signer.public();
        let artifact = body.sign(&signer);
        let submitted: SubmitResult = client.submit_artifact(hex::encode(artifact.encode())).await.unwrap();
        assert!(submitted.stored);
        expected.push((artifact.id(), if honest { Status::Accepted } else { Status::Rejected }));
    }

    // Settled: every node holds a final verdict on every artifact. A
    // validator whose check comes after finality drops it unrun, so the liar
    // may or may not have voted; either way its vote decides nothing.
    let settled = |n: &NodeHandle| {
        expected.iter().all(|(id, _)| n.pipeline.store().verdict(id).unwrap().is_some_and(|v| v.is_final))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !nodes.iter().all(settled) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(nodes.iter().all(settled), "verdicts not final within 60 s");
    for node in &nodes {
        for (id, status) in &expected {
            let verdict = node.pipeline.store().verdict(id).unwrap().unwrap();
            assert_eq!(verdict.status, *status, "{verdict:?}");
            assert!(verdict.voters.len() >= 3, "three honest votes make it final: {verdict:?}");
        }
    }
    for node in nodes {
        node.stop().await;
    }
}

fn vote(spec: &ChainSpec, key: &Keypair, artifact: &ArtifactId, proof_over: &ArtifactId, verdict: Verdict) -> Vote {
    VoteBody {
        chain_id: spec.chain_id(),
        artifact_id: *artifact,
        validator: key.public(),
        selection_proof: key.vrf().prove(proof_over),
        verdict,
        figures: poi_tests::clean_figures(spec),
        created_at_ms: 1,
    }
    .sign(key)
}

/// Over gossip: a validator that votes both ways on one artifact is named
/// as an equivocator and neither vote counts; a vote whose VRF proof is for
/// another artifact is refused at the edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivocating_and_unproven_votes_over_gossip_count_for_nothing() {
    let spec = ChainSpec::local_devnet(4, 1.0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Validators 0..3 run nodes without a model (they vote on nothing);
    // validator 3's key is in the hands of the misbehaving peer.
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for i in 0..3 {
        nodes.push(start(poi_tests::node_config(&spec, i, dir.path(), &nodes)).await.unwrap());
    }
    let byzantine = devnet_keypair(3);
    let (built, honest) = (build(&spec, 16, 4242, Chooser::Seeded), devnet_keypair(0));
    let id = built.artifact.id();
    let client = poi_tests::client(&nodes[0]);
    let _: SubmitResult = client.submit_artifact(hex::encode(&built.bytes)).await.unwrap();

    let evil = Outsider::join(&spec, &nodes[0]).await;
    let elsewhere = poi_artifact::sha256(b"another artifact");
    for vote in [
        vote(&spec, &byzantine, &id, &id, Verdict::Accept),
        vote(&spec, &byzantine, &id, &id, Verdict::Reject),
        vote(&spec, &honest, &id, &elsewhere, Verdict::Reject),
    ] {
        evil.publish(Topic::Votes, vote.encode());
    }

    let named = |n: &NodeHandle| {
        n.pipeline.store().verdict(&id).unwrap().is_some_and(|v| v.equivocators == [byzantine.public().to_hex()])
    };
    let refused = || nodes[0].metrics.votes_rejected.get_or_create(&SourceLabel { source: "gossip" }).get();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(nodes.iter().all(named) && refused() > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in &nodes {
        let verdict = node.pipeline.store().verdict(&id).unwrap().unwrap();
        assert_eq!(verdict.equivocators, [byzantine.public().to_hex()], "{verdict:?}");
        assert!(verdict.voters.is_empty(), "no vote counts: {verdict:?}");
        assert_eq!(verdict.status, Status::AcceptedReplayOnly);
    }
    assert_eq!(refused(), 1, "the vote with another artifact's selection proof");
    drop(evil);
    for node in nodes {
        node.stop().await;
    }
}

/// The vote-flood attack over gossip: a validator's key in a misbehaving
/// peer's hands sends 1000 different votes on one artifact and 1000 on ids
/// that do not exist. Every node keeps two of the first kind (the first and
/// the proof of equivocation) and drops the rest before any signature work;
/// the votes on unknown ids wait within the flooder's share; an honest
/// artifact submitted after the flood still gets its votes and final verdict
/// everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_flood_keeps_two_votes_per_validator_and_honest_verdicts_flow() {
    const FLOOD: u64 = 1000;
    let spec = ChainSpec::local_devnet(4, 1.0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for i in 0..3 {
        let mut config = poi_tests::node_config(&spec, i, dir.path(), &nodes);
        config.checker = Some(std::sync::Arc::new(Judge { honest_miner: miner().public(), lies: false }));
        nodes.push(start(config).await.unwrap());
    }
    let flooded = build(&spec, 16, 5150, Chooser::Seeded);
    let client = poi_tests::client(&nodes[0]);
    let _: SubmitResult = client.submit_artifact(hex::encode(&flooded.bytes)).await.unwrap();
    let id = flooded.artifact.id();
    let byzantine = devnet_keypair(3);
    let template = vote(&spec, &byzantine, &id, &id, Verdict::Accept);
    let evil = Outsider::join(&spec, &nodes[0]).await;
    for at in 0..FLOOD {
        let mut body = template.body.clone();
        body.created_at_ms = at;
        body.verdict = if at % 2 == 0 { Verdict::Accept } else { Verdict::Reject };
        evil.publish(Topic::Votes, body.sign(&byzantine).encode());
    }
    for i in 0..FLOOD {
        let nowhere = poi_artifact::sha256(&i.to_le_bytes());
        evil.publish(Topic::Votes, vote(&spec, &byzantine, &nowhere, &nowhere, Verdict::Reject).encode());
    }
    evil.flush().await;

    let honest = build(&spec, 16, 5151, Chooser::Seeded);
    let _: SubmitResult = client.submit_artifact(hex::encode(&honest.bytes)).await.unwrap();
    let over = |n: &NodeHandle| n.metrics.votes_over_limit.get();
    let done = |n: &NodeHandle| {
        let voted = n.pipeline.store().verdict(&honest.artifact.id()).unwrap().is_some_and(|v| v.voters.len() == 3);
        voted && n.pipeline.store().votes_by(&id, &byzantine.public()).unwrap().len() == 2
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !(nodes.iter().all(done) && over(&nodes[0]) >= FLOOD - 2) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for node in &nodes {
        assert!(done(node), "every node has the honest verdict and two of the flooder's votes");
        let verdict = node.pipeline.store().verdict(&id).unwrap().unwrap();
        assert_eq!(verdict.equivocators, [byzantine.public().to_hex()]);
        assert_eq!(node.pipeline.store().votes(&id).unwrap().len(), 2 + 3, "two of the flood and the honest three");
        let honest_verdict = node.pipeline.store().verdict(&honest.artifact.id()).unwrap().unwrap();
        assert_eq!((honest_verdict.status, honest_verdict.is_final), (Status::Accepted, true));
        assert!(node.metrics.votes_pending.get() <= poi_node::pipeline::PENDING_VOTES as i64);
    }
    for node in &nodes {
        // Each node that heard the flood counted the rest of it, unchecked.
        let heard = node.metrics.votes_rejected.get_or_create(&SourceLabel { source: "gossip" }).get();
        assert_eq!(heard, 0, "every flood vote was valid");
        assert!(over(node) == 0 || over(node) >= FLOOD - 2, "{}", over(node));
    }
    assert!(over(&nodes[0]) >= FLOOD - 2, "the node the flooder joined dropped the rest of the flood");
    drop(evil);
    for node in nodes {
        node.stop().await;
    }
}

/// A validator whose chain spec lists another VRF key for it would cast
/// votes that every node refuses; it refuses to start instead, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_spec_lists_another_vrf_key_refuses_to_start() {
    let mut spec = ChainSpec::local_devnet(4, 0.5).unwrap();
    spec.validators[0].vrf_key = Keypair::from_secret([42; 32]).vrf().public();
    let dir = tempfile::tempdir().unwrap();
    match start(poi_tests::node_config(&spec, 0, dir.path(), &[])).await {
        Err(err @ poi_node::service::StartError::WrongVrfKey { .. }) => {
            assert!(err.to_string().contains("poi keys show"), "{err}")
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("started with a VRF key that is not its own"),
    }
}
