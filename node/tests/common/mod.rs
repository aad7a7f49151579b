//! Helpers shared by the multi-node tests.

use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub;
use libp2p::swarm::SwarmEvent;
use poi_artifact::Keypair;
use poi_chain_spec::ChainSpec;
use poi_node::net::{build_swarm, BehaviourEvent, Topics};
use poi_node::service::NodeHandle;

/// A peer that speaks the protocol, connected to `target` and in its
/// artifact topic's mesh view.
pub async fn evil_peer(spec: &ChainSpec, target: &NodeHandle) -> (libp2p::Swarm<poi_node::net::Behaviour>, Topics) {
    let mut evil = build_swarm(&Keypair::generate(), spec).unwrap();
    evil.dial(target.dial_addr()).unwrap();
    let topics = Topics::new(&spec.chain_id());
    let subscribed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { topic, .. })) =
                evil.select_next_some().await
            {
                if topic == topics.artifacts.hash() {
                    return;
                }
            }
        }
    })
    .await;
    assert!(subscribed.is_ok(), "the target subscribed to the artifacts topic, as the evil peer sees it");
    (evil, topics)
}
