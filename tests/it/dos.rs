//! Hostile peers on real nodes (libp2p on loopback): a sync-request flood, a
//! peer that wiped its data dir, sync pages from outside the validator set,
//! sybils filling the validation queue with the largest forgeries, and
//! outsiders asking to be sent every message.

use std::time::{Duration, Instant};

use futures::StreamExt;
use poi_chain_spec::ChainSpec;
use poi_node::clock::now_ms;
use poi_node::config::Settings;
use poi_node::metrics::SourceLabel;
use poi_node::network::{SyncEntry, SyncResponse, Topic};
use poi_node::service::{start, NodeHandle};
use poi_tests::{eventually, node, node_config, stored, submit, Outsider};
use poi_verifier::simulate::{build, build_at, forged, Built, Chooser};

fn ids(built: &[Built]) -> Vec<poi_artifact::ArtifactId> {
    built.iter().map(|b| b.artifact.id()).collect()
}

fn has_all(node: &NodeHandle, ids: &[poi_artifact::ArtifactId]) -> bool {
    ids.iter().all(|id| stored(node, id))
}

/// Before: every sync request was served, up to 100 at once per connection,
/// on the workers and queue that gossip validation needs. Now a peer asking
/// out of turn is banned within a few requests, the pages it got are few,
/// and honest gossip submitted during the flood reaches the other validator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_sync_requests_is_banned_and_gossip_still_flows() {
    let spec = ChainSpec::local_devnet(2, 0.25).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = node(&spec, 0, dir.path(), &[]).await;
    let stock: Vec<_> = (0..100).map(|seed| build(&spec, 64, 3_000 + seed, Chooser::Seeded)).collect();
    for built in &stock {
        assert!(submit(&a, &built.bytes).await.stored);
    }
    let b = node(&spec, 1, dir.path(), &[&a]).await;

    let evil = Outsider::join(&spec, &a).await;
    let flooding = Instant::now();
    let flood = futures::stream::iter(0..400).map(|_| evil.request_sync(0)).buffer_unordered(4);
    let honest: Vec<_> = (0..20).map(|seed| build(&spec, 64, 4_000 + seed, Chooser::Seeded)).collect();
    let (answers, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(30), flood.collect::<Vec<_>>()), async {
        for built in &honest {
            assert!(submit(&a, &built.bytes).await.stored);
        }
    });
    let answers = answers.expect("the flood ends within 30 s");
    let served = answers.iter().filter(|a| a.as_ref().is_ok_and(|page| !page.entries.is_empty())).count();
    eprintln!("sync flood: {served} of {} requests served in {:?}", answers.len(), flooding.elapsed());
    // At most a second's burst and refill of the rates (20 pages/s per
    // peer, 5 for all outsiders) and the ten requests it took to earn the
    // ban; before, all 400.
    assert!(served <= 50, "{served} pages served to a peer asking out of turn");

    let all: Vec<_> = ids(&stock).into_iter().chain(ids(&honest)).collect();
    assert!(eventually(Duration::from_secs(20), || has_all(&b, &all)).await, "b has the stock and the honest gossip");
    assert!(a.metrics.peers_banned.get() >= 1);
    assert!(a.metrics.sync_requests_refused.get() >= 1);
    assert!(disconnected(&evil, &a).await, "the flooder is disconnected");
    assert!(evil.request_sync(0).await.is_err(), "and cannot come back while banned");
    drop(evil);
    a.stop().await;
    b.stop().await;
}

/// Before: a peer that wiped its data dir (same key) restarted its log at 0
/// while this node's cursor pointed past the old log's end: nothing it
/// stored afterwards was synced from it again. Its log epoch is new, so the
/// cursor starts over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_wiped_its_data_dir_is_synced_again_from_its_new_start() {
    let spec = ChainSpec::local_devnet(2, 0.25).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = node(&spec, 0, dir.path(), &[]).await;
    let b = node(&spec, 1, dir.path(), &[&a]).await;
    let before: Vec<_> = (0..6).map(|seed| build(&spec, 32, 5_000 + seed, Chooser::Seeded)).collect();
    for built in &before {
        assert!(submit(&b, &built.bytes).await.stored);
    }
    let cursor_on_b = |a: &NodeHandle| a.pipeline.store().sync_cursor(&b.peer_id.to_bytes()).unwrap().next;
    assert!(eventually(Duration::from_secs(20), || cursor_on_b(&a) >= 6).await, "a read b's log to its end");

    // b loses its data; a does not see b come back until b stored anew.
    let b_peer = b.peer_id;
    a.network.block(b_peer).await.unwrap();
    b.stop().await;
    std::fs::remove_dir_all(dir.path().join("node1")).unwrap();
    let b = node(&spec, 1, dir.path(), &[]).await;
    assert_eq!(b.peer_id, b_peer, "the same key");
    let after: Vec<_> = (0..2).map(|seed| build(&spec, 32, 6_000 + seed, Chooser::Seeded)).collect();
    for built in &after {
        assert!(submit(&b, &built.bytes).await.stored);
    }
    assert!(!has_all(&a, &ids(&after)));

    a.network.unblock(b_peer).await.unwrap();
    a.network.dial(b.dial_addr()).await.unwrap();
    assert!(eventually(Duration::from_secs(20), || has_all(&a, &ids(&after))).await, "a synced b's new log");
    a.stop().await;
    b.stop().await;
}

/// Whether `node` drops its connection to `peer` within 5 s.
async fn disconnected(peer: &Outsider, node: &NodeHandle) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while peer.connected_to(node).await {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// A page of `entries` from log 1, with nothing after it.
fn page_of(entries: Vec<SyncEntry>) -> SyncResponse {
    SyncResponse { epoch: 1, next: entries.len() as u64, entries, more: false }
}

/// Before: catch-up sync from any peer was exempt from the admission
/// window, so anyone could feed a node old artifacts nobody had seen while
/// they were fresh. Pages from outside the validator set now meet the
/// window (old entries refused, no fault); a page with an invalid entry or
/// one that claims more without moving gets its sender banned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_pages_from_outside_the_validator_set_meet_the_window_and_bad_pages_ban() {
    let spec = ChainSpec::local_devnet(2, 0.25).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = node_config(&spec, 0, dir.path(), []);
    config.admission = Settings::default().admission();
    let max_age = config.admission.max_age.unwrap().as_millis() as u64;
    let a = start(config).await.unwrap();
    let outside = || a.metrics.artifacts_outside_window.get_or_create(&SourceLabel { source: "sync" }).get();

    let fresh = build_at(&spec, 16, 1, Chooser::Seeded, now_ms());
    let old = build_at(&spec, 16, 2, Chooser::Seeded, now_ms() - 2 * max_age);
    let log = vec![SyncEntry::Artifact(fresh.bytes.clone()), SyncEntry::Artifact(old.bytes.clone())];
    let relay = Outsider::join_serving(
        &spec,
        &a,
        Box::new(move |from| {
            Some(if from == 0 {
                page_of(log.clone())
            } else {
                SyncResponse { epoch: 1, next: from, ..page_of(vec![]) }
            })
        }),
    )
    .await;
    assert!(eventually(Duration::from_secs(20), || stored(&a, &fresh.artifact.id()) && outside() == 1).await);
    assert!(!stored(&a, &old.artifact.id()), "an old artifact from a relay is refused");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(relay.connected_to(&a).await, "a relay holding old artifacts is no offender");
    assert_eq!(a.metrics.peers_banned.get(), 0);

    let forgery = SyncEntry::Artifact(forged(&spec, 16, 3));
    let stalling = SyncResponse { epoch: 1, entries: vec![], next: 0, more: true };
    for (banned, bad_page) in [(1, page_of(vec![forgery])), (2, stalling)] {
        let evil = Outsider::join_serving(&spec, &a, Box::new(move |_| Some(bad_page.clone()))).await;
        assert!(eventually(Duration::from_secs(20), || a.metrics.peers_banned.get() == banned).await);
        assert!(disconnected(&evil, &a).await, "ban {banned}: disconnected");
    }
    assert!(relay.connected_to(&a).await);
    a.stop().await;
}

/// Sybils publish forgeries of the longest generation the spec allows
/// (4096 tokens, 332 KB each on the devnet) as fast as they can: the validation queue is bounded in bytes in all and per peer (the
/// rest is ignored), each sybil is graylisted after a few, and honest
/// artifacts submitted meanwhile reach the other validator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sybils_flooding_the_largest_forgeries_do_not_stop_honest_gossip() {
    const SYBILS: u64 = 4;
    const EACH: u64 = 40;
    let spec = ChainSpec::local_devnet(2, 0.25).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = node(&spec, 0, dir.path(), &[]).await;
    let b = node(&spec, 1, dir.path(), &[&a]).await;
    let tokens = spec.limits.max_generated_tokens as usize;

    let flooding = Instant::now();
    let mut sybils = Vec::new();
    for s in 0..SYBILS {
        let sybil = Outsider::join(&spec, &a).await;
        for i in 0..EACH {
            sybil.publish(Topic::Artifacts, forged(&spec, tokens, 20_000 + s * EACH + i));
        }
        sybils.push(sybil);
    }
    let honest: Vec<_> = (0..20).map(|seed| build(&spec, 64, 7_000 + seed, Chooser::Seeded)).collect();
    for built in &honest {
        assert!(submit(&a, &built.bytes).await.stored);
    }
    assert!(eventually(Duration::from_secs(30), || has_all(&b, &ids(&honest))).await, "honest gossip stopped");
    for sybil in &sybils {
        tokio::time::timeout(Duration::from_secs(60), sybil.flush()).await.expect("the flood was sent");
    }
    let checked = a.metrics.artifacts_rejected.get_or_create(&SourceLabel { source: "gossip" }).get();
    let dropped = a.metrics.gossip_dropped.get();
    let seconds = flooding.elapsed().as_secs_f64();
    eprintln!("sybil flood: {checked} of {} forgeries checked, {dropped} ignored, in {seconds:.1} s", SYBILS * EACH);
    // Non-validators together get 2 MiB/s of the validation queue (with a
    // second's burst), however many identities they have.
    let admitted = (2 << 20) as f64 * (seconds + 1.0);
    let largest = forged(&spec, tokens, 0).len() as f64;
    assert!(checked as f64 * largest <= admitted, "{checked} forgeries of {largest} bytes checked in {seconds:.1} s");
    for seed in 20_000..20_000 + SYBILS * EACH {
        assert!(!stored(&a, &build(&spec, tokens, seed, Chooser::Seeded).artifact.id()));
    }
    a.stop().await;
    b.stop().await;
}

/// Before: outsiders (free identities) each held a mesh slot and were
/// pushed every message in full, then, kept out of the mesh, still asked
/// for every message they were told of: the validator's sending grew with
/// their number. Now a validator sends outsiders no gossip at all, even one
/// that keeps delivering valid artifacts first (standing is not earned);
/// they catch up by sync. Attacked from both sides: artifacts submitted at
/// the validator itself (published) and at the other one (forwarded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_are_sent_no_gossip_however_they_behave_and_catch_up_by_sync() {
    use libp2p::gossipsub;
    use libp2p::swarm::SwarmEvent;
    use poi_node::network::{join_as_outsider, BehaviourEvent};
    let spec = ChainSpec::local_devnet(2, 0.25).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = node(&spec, 0, dir.path(), &[]).await;
    let b = node(&spec, 1, dir.path(), &[&a]).await;
    let (mut swarm, topics) = join_as_outsider(&spec, a.dial_addr(), Duration::from_secs(20)).await.unwrap();
    let outsider = *swarm.local_peer_id();
    let honest: Vec<_> = (0..10).map(|seed| build(&spec, 16, 9_000 + seed, Chooser::Seeded)).collect();
    let own: Vec<_> = (0..120).map(|seed| build(&spec, 16, 9_100 + seed, Chooser::Seeded)).collect();
    let own_ids = ids(&own);
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    // The outsider publishes a valid artifact of its own every 25 ms (each
    // a first delivery at a) and keeps what gossip brings it.
    let outsider_task = tokio::spawn(async move {
        let mut received = Vec::new();
        let mut own = own.into_iter();
        let mut pace = tokio::time::interval(Duration::from_millis(25));
        loop {
            tokio::select! {
                _ = &mut stopped => return (swarm, received),
                _ = pace.tick() => if let Some(built) = own.next() {
                    let _ = swarm.behaviour_mut().gossipsub.publish(topics.artifacts.clone(), built.bytes);
                },
                event = swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. })) = event {
                        received.push(message.data);
                    }
                }
            }
        }
    });
    // Its own artifacts reach both validators, so it has delivered first.
    assert!(eventually(Duration::from_secs(20), || has_all(&a, &own_ids[..40]) && has_all(&b, &own_ids[..40])).await);
    for (i, built) in honest.iter().enumerate() {
        assert!(submit(if i % 2 == 0 { &a } else { &b }, &built.bytes).await.stored);
    }
    assert!(eventually(Duration::from_secs(20), || has_all(&a, &ids(&honest))).await);
    // Six heartbeats (500 ms) of announcements, had there been any.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let peers = a.network.peers().await.unwrap();
    let in_mesh = |peer| peers.iter().find(|p| p.peer_id == peer).expect("connected").in_mesh;
    assert!(!in_mesh(outsider), "an outsider holds a mesh slot");
    assert!(in_mesh(b.peer_id), "validators mesh with each other");
    stop.send(()).unwrap();
    let (swarm, received) = outsider_task.await.unwrap();
    let sent: Vec<_> = honest.iter().filter(|built| received.contains(&built.bytes)).map(|b| b.artifact.id()).collect();
    assert!(sent.is_empty(), "a sent an outsider {} of 10 honest artifacts by gossip: {sent:?}", sent.len());
    drop(swarm);
    // By sync, the outsider (any peer) gets them all.
    let reader = Outsider::join(&spec, &a).await;
    let page = reader.request_sync(0).await.expect("a sync page");
    let synced: Vec<_> = page
        .entries
        .iter()
        .filter_map(|entry| match entry {
            SyncEntry::Artifact(bytes) => Some(bytes.clone()),
            SyncEntry::Vote(_) => None,
        })
        .collect();
    assert!(honest.iter().all(|built| synced.contains(&built.bytes)), "every honest artifact is in a's log");
    a.stop().await;
    b.stop().await;
}

/// Before: the metrics server took every connection and waited on each for
/// ever. Now 16 are served at once and each must send its request head
/// within 5 s: clients that connect and say nothing are closed, and a
/// scrape behind them is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_hold_the_metrics_server() {
    use tokio::io::AsyncReadExt;
    let spec = ChainSpec::local_devnet(1, 0.25).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = node_config(&spec, 0, dir.path(), []);
    config.metrics = Some("127.0.0.1:0".parse().unwrap());
    let a = start(config).await.unwrap();
    let addr = a.metrics_addr.unwrap();
    let mut silent = Vec::new();
    for _ in 0..32 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let scrape = tokio::time::timeout(Duration::from_secs(20), poi_tests::http_get(addr, "/metrics")).await;
    assert!(scrape.expect("a scrape is answered within 20 s").contains("poi_peers"));
    for stream in &mut silent[..16] {
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "a silent connection is closed: {closed:?}");
    }
    a.stop().await;
}
