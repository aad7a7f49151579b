//! The libp2p side: transports (TCP and QUIC, noise, yamux), connection
//! limits, gossipsub with application validation and peer scoring,
//! identify, and the catch-up sync protocol over request-response. Building
//! the swarm is here; running it is the event loop's.

use std::time::Duration;

use futures::StreamExt;
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::gossipsub::{
    self, IdentTopic, MessageAuthenticity, PeerScoreParams, PeerScoreThresholds, TopicHash, TopicScoreParams,
};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{allow_block_list, identify, identity, noise, tcp, yamux, Multiaddr, StreamProtocol, Swarm, SwarmBuilder};
use poi_artifact::{sha256, ChainId, Keypair};
use poi_chain_spec::ChainSpec;

pub use poi_artifact::sync::{SyncEntry, SyncRequest, SyncResponse};

use super::Topic;

pub const SYNC_PROTOCOL: &str = "/poi/sync/2";
/// Objects per sync page, and the byte budget a page aims for: a request
/// of a few bytes costs its server at most about this much.
pub const SYNC_PAGE_ENTRIES: usize = 512;
pub const SYNC_PAGE_BYTES: usize = 1 << 20;
/// An honest node has one sync request to a peer in flight; the second
/// stream leaves room for a request racing its predecessor's timeout.
const SYNC_STREAMS_PER_CONNECTION: usize = 2;
const SYNC_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with nothing to do (not in a gossip mesh, no request under
/// way) is closed after this; gossip peers stay, idle sybils go.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections a node accepts. A validator set is small (tens of nodes):
/// 128 established connections leave room for every validator, miners and
/// tools, while a peer with many identities cannot hold more than that, nor
/// more than 32 handshakes at once.
fn connection_limits() -> ConnectionLimits {
    ConnectionLimits::default()
        .with_max_pending_incoming(Some(32))
        .with_max_pending_outgoing(Some(32))
        .with_max_established_incoming(Some(96))
        .with_max_established(Some(128))
        .with_max_established_per_peer(Some(2))
}

/// Gossipsub score penalty per invalid message, squared by count: three
/// invalid messages pass the graylist threshold.
const INVALID_MESSAGE_WEIGHT: f64 = -10.0;
pub const GRAYLIST_THRESHOLD: f64 = -80.0;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub limits: connection_limits::Behaviour,
    /// Peers the operator or the node cut off: their connections are closed
    /// and refused.
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub gossipsub: gossipsub::Behaviour,
    pub identify: identify::Behaviour,
    pub sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
}

/// The chain's two gossip topics; the chain id in the name keeps chains
/// apart. Version 2: messages carry no gossipsub signature (see
/// `gossipsub`), so nodes of version 1, which require one, do not share a
/// topic with them.
#[derive(Clone)]
pub struct Topics {
    pub artifacts: IdentTopic,
    pub votes: IdentTopic,
}

impl Topics {
    pub fn new(chain_id: &ChainId) -> Self {
        let prefix = &chain_id.to_hex()[..16];
        Self {
            artifacts: IdentTopic::new(format!("/poi/{prefix}/artifacts/2")),
            votes: IdentTopic::new(format!("/poi/{prefix}/votes/2")),
        }
    }

    pub fn get(&self, topic: Topic) -> &IdentTopic {
        match topic {
            Topic::Artifacts => &self.artifacts,
            Topic::Votes => &self.votes,
        }
    }

    /// Which of the chain's topics a message came on; `None` for any other.
    pub fn find(&self, hash: &TopicHash) -> Option<Topic> {
        [Topic::Artifacts, Topic::Votes].into_iter().find(|&topic| self.get(topic).hash() == *hash)
    }
}

/// The libp2p identity of a node is its validator (or miner) key, so a peer
/// id names the key holder.
pub fn identity(key: &Keypair) -> identity::Keypair {
    identity::Keypair::ed25519_from_bytes(key.secret()).expect("32 bytes are a valid ed25519 secret")
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("gossipsub configuration: {0}")]
    Gossipsub(String),
    #[error("transport: {0}")]
    Transport(String),
    #[error("the peer did not join the artifacts topic within {0:?}")]
    NotJoined(Duration),
}

/// Messages are anonymous: artifacts and votes carry their own signatures
/// and are named by their content's hash, so a gossipsub signature would
/// add nothing but an ed25519 verification over the whole message (up to
/// the spec's largest artifact), done on the swarm task before any budget
/// applies: a sybil sending the largest messages with bogus signatures
/// cost the node far more than it cost the sybil. Scores still go to the
/// peer that forwarded a message.
fn gossipsub(spec: &ChainSpec, topics: &Topics) -> Result<gossipsub::Behaviour, NetError> {
    let config = gossipsub::ConfigBuilder::default()
        // Nothing is forwarded before the replay check reports on it.
        .validate_messages()
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .message_id_fn(|message: &gossipsub::Message| gossipsub::MessageId::from(sha256(&message.data).0.to_vec()))
        .max_transmit_size(spec.limits.max_artifact_bytes as usize + 4096)
        .heartbeat_interval(Duration::from_millis(500))
        .build()
        .map_err(|e| NetError::Gossipsub(e.to_string()))?;
    let mut behaviour = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config)
        .map_err(|e| NetError::Gossipsub(e.to_string()))?;
    let mut params = PeerScoreParams {
        // Validators are known keys, and devnets put every node on one
        // address: co-location says nothing here.
        ip_colocation_factor_weight: 0.0,
        ..PeerScoreParams::default()
    };
    for topic in [&topics.artifacts, &topics.votes] {
        let topic_params = TopicScoreParams {
            topic_weight: 1.0,
            invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
            invalid_message_deliveries_decay: 0.9,
            // A quiet network delivers nothing; that is no fault.
            mesh_message_deliveries_weight: 0.0,
            mesh_failure_penalty_weight: 0.0,
            // Standing comes from the validator set, not from delivering
            // first: an outsider sending cheap artifacts that pass the
            // replay check must not earn its way back to being sent gossip.
            first_message_deliveries_weight: 0.0,
            ..TopicScoreParams::default()
        };
        params.topics.insert(topic.hash(), topic_params);
    }
    let thresholds = PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: GRAYLIST_THRESHOLD,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    };
    behaviour.with_peer_score(params, thresholds).map_err(NetError::Gossipsub)?;
    for topic in [&topics.artifacts, &topics.votes] {
        behaviour.subscribe(topic).map_err(|e| NetError::Gossipsub(e.to_string()))?;
    }
    Ok(behaviour)
}

/// A swarm with a throwaway identity, connected to `target` and aware of its
/// subscription to the artifacts topic, so that what it publishes reaches it:
/// for tools and tests that play an outside (possibly hostile) peer. The
/// caller drives the swarm from then on.
pub async fn join_as_outsider(
    spec: &ChainSpec,
    target: Multiaddr,
    limit: Duration,
) -> Result<(Swarm<Behaviour>, Topics), NetError> {
    let mut swarm = build_swarm(&Keypair::generate(), spec)?;
    swarm.dial(target).map_err(|e| NetError::Transport(e.to_string()))?;
    let topics = Topics::new(&spec.chain_id());
    let joined = tokio::time::timeout(limit, async {
        loop {
            if let SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { topic, .. })) =
                swarm.select_next_some().await
            {
                if topic == topics.artifacts.hash() {
                    return;
                }
            }
        }
    })
    .await;
    joined.map_err(|_| NetError::NotJoined(limit))?;
    Ok((swarm, topics))
}

pub fn build_swarm(key: &Keypair, spec: &ChainSpec) -> Result<Swarm<Behaviour>, NetError> {
    let topics = Topics::new(&spec.chain_id());
    let codec = request_response::cbor::codec::Codec::default()
        .set_request_size_maximum(1024)
        .set_response_size_maximum((SYNC_PAGE_BYTES + 2 * spec.limits.max_artifact_bytes as usize) as u64);
    let swarm = SwarmBuilder::with_existing_identity(identity(key))
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_quic()
        .with_behaviour(|key| {
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(connection_limits()),
                blocked: allow_block_list::Behaviour::default(),
                gossipsub: gossipsub(spec, &topics).map_err(Box::new)?,
                identify: identify::Behaviour::new(identify::Config::new("/poi/1".into(), key.public())),
                sync: request_response::Behaviour::with_codec(
                    codec,
                    [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(SYNC_REQUEST_TIMEOUT)
                        .with_max_concurrent_streams(SYNC_STREAMS_PER_CONNECTION),
                ),
            })
        })
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_swarm_config(|config| config.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}
