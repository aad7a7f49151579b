//! A Byzantine validator (a quarter of the weight) votes the opposite of the
//! truth on every artifact; the honest verdicts stand on every node,
//! including its own. The validators' judgement is a stand-in (honest iff
//! the artifact's miner is the honest one), so the test is about votes and
//! the verdict rule over a real network, not about the model.

use std::time::{Duration, Instant};

use poi_artifact::{Artifact, ArtifactId, Keypair, PublicKey, Verdict, Vote, VoteBody, VoteFigures, SELECT_DOMAIN};
use poi_chain_spec::{devnet_keypair, ChainSpec};
use poi_node::metrics::SourceLabel;
use poi_node::network::Topic;
use poi_node::scheduler::FullChecker;
use poi_node::service::{start, NodeHandle};
use poi_rpc_api::{PoiApiClient, Status, SubmitResult};
use poi_tests::Outsider;
use poi_verifier::simulate::{body_with, build, miner, Chooser};
use poi_verifier::verdict::committee;

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

    // Settled: every node holds all four validators' votes on every artifact.
    let settled = |n: &NodeHandle| {
        expected.iter().all(|(id, _)| {
            n.pipeline.store().verdict(id).unwrap().is_some_and(|v| v.voters.len() == VALIDATORS as usize)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !nodes.iter().all(settled) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(nodes.iter().all(settled), "votes did not settle within 60 s");
    let liar = devnet_keypair(LIAR).public().to_hex();
    for node in &nodes {
        for (id, status) in &expected {
            let verdict = node.pipeline.store().verdict(id).unwrap().unwrap();
            assert_eq!(verdict.status, *status, "{verdict:?}");
            assert!(verdict.voters.contains(&liar), "the liar's vote counted but did not decide");
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
        selection_proof: key.sign(SELECT_DOMAIN, proof_over),
        verdict,
        figures: poi_tests::clean_figures(spec),
        created_at_ms: 1,
    }
    .sign(key)
}

/// Over gossip: a validator that votes both ways on one artifact is named
/// as an equivocator and neither vote counts; a vote whose selection proof
/// is for another artifact is refused at the edge.
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
    // A dispute-committee seat lets a vote count whatever its selection
    // proof, so the honest validator whose proof is for another artifact
    // must be one without a seat on this artifact's committee.
    let (built, honest) = (4242..)
        .find_map(|seed| {
            let built = build(&spec, 16, seed, Chooser::Seeded);
            let seats = committee(&spec, &built.artifact.id());
            let outside = (0..3).map(devnet_keypair).find(|k| !seats.contains(&k.public()))?;
            Some((built, outside))
        })
        .unwrap();
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
