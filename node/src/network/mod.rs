//! The network layer: one event loop owns the libp2p swarm and nothing of the
//! chain; the rest of the node talks to it through a cloneable
//! [`NetworkClient`] (commands in) and a stream of [`NetworkEvent`]s (what
//! peers sent, out). The loop never waits on the node: events go out with
//! `try_send`, and when the node's queue is full a gossip message is ignored
//! (not penalised) and a peer's sync request is dropped (it asks again).

mod behaviour;
mod event_loop;

use std::time::Duration;

use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::request_response::ResponseChannel;
pub use libp2p::{Multiaddr, PeerId};
use poi_artifact::Keypair;
use poi_chain_spec::ChainSpec;
use tokio::sync::{mpsc, oneshot};

use behaviour::build_swarm;
pub use behaviour::{
    join_as_outsider, Behaviour, BehaviourEvent, NetError, SyncEntry, SyncRequest, SyncResponse, Topics,
    GRAYLIST_THRESHOLD, SYNC_PAGE_BYTES, SYNC_PAGE_ENTRIES,
};

use crate::metrics::Metrics;
use event_loop::{Command, EventLoop};

/// Events the loop hands out before the node takes them; beyond this it
/// sheds load as the module doc says.
const EVENT_QUEUE: usize = 4096;
/// Commands waiting for the loop; senders wait when it is full.
const COMMAND_QUEUE: usize = 1024;

/// The chain's gossip topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Artifacts,
    Votes,
}

/// What peers sent, for the node to check.
#[derive(Debug)]
pub enum NetworkEvent {
    /// A gossip message held until the node reports on it with
    /// [`NetworkClient::report`]: accepted messages are forwarded, rejected
    /// ones cost the sender score.
    Gossip { topic: Topic, message_id: MessageId, source: PeerId, data: Vec<u8> },
    /// A peer asks for this node's log from `from` on; answer with
    /// [`NetworkClient::respond_sync`].
    SyncRequest { peer: PeerId, from: u64, channel: ResponseChannel<SyncResponse> },
    /// A connection to a peer that had none.
    PeerConnected(PeerId),
    /// The last connection to a peer closed.
    PeerDisconnected(PeerId),
}

/// A connected peer as the network layer sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerInfo {
    pub peer_id: PeerId,
    /// Gossipsub's score; below [`GRAYLIST_THRESHOLD`] the peer is ignored.
    pub score: Option<f64>,
    /// Whether messages are pushed to it in full (a mesh peer of a topic),
    /// rather than announced for it to ask for.
    pub in_mesh: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("the network event loop has stopped")]
    Stopped,
    #[error("dialling {addr}: {reason}")]
    Dial { addr: Multiaddr, reason: String },
    #[error("sync request to {peer}: {reason}")]
    Sync { peer: PeerId, reason: String },
}

impl<T> From<mpsc::error::SendError<T>> for NetworkError {
    fn from(_: mpsc::error::SendError<T>) -> Self {
        Self::Stopped
    }
}

impl From<oneshot::error::RecvError> for NetworkError {
    fn from(_: oneshot::error::RecvError) -> Self {
        Self::Stopped
    }
}

/// The handle the node, RPC and tests use; cheap to clone.
#[derive(Clone)]
pub struct NetworkClient {
    commands: mpsc::Sender<Command>,
}

impl NetworkClient {
    /// Gossips `data` on `topic`. Peers that miss it catch up through sync,
    /// so a publish that finds no peers is not an error.
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), NetworkError> {
        Ok(self.commands.send(Command::Publish { topic, data }).await?)
    }

    /// The node's verdict on a gossip message from [`NetworkEvent::Gossip`].
    pub async fn report(
        &self,
        message_id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
    ) -> Result<(), NetworkError> {
        Ok(self.commands.send(Command::Report { message_id, source, acceptance }).await?)
    }

    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetworkError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Peers(reply)).await?;
        Ok(answer.await?)
    }

    /// Closes and refuses connections to `peer` until [`Self::unblock`].
    pub async fn block(&self, peer: PeerId) -> Result<(), NetworkError> {
        Ok(self.commands.send(Command::Block(peer)).await?)
    }

    pub async fn unblock(&self, peer: PeerId) -> Result<(), NetworkError> {
        Ok(self.commands.send(Command::Unblock(peer)).await?)
    }

    /// Starts a connection to `addr`; what each side missed arrives by sync.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetworkError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Dial { addr, reply }).await?;
        answer.await?
    }

    /// Pushes `peer` below the graylist threshold: it served invalid data
    /// outside gossip, where gossipsub's own scoring cannot see it.
    pub async fn penalise(&self, peer: PeerId) -> Result<(), NetworkError> {
        Ok(self.commands.send(Command::Penalise(peer)).await?)
    }

    /// Sends `peer` no gossip (a score below gossipsub's gossip and publish
    /// thresholds, above its graylist): no mesh slot, no announcements, no
    /// answers to its requests for messages, nothing published or forwarded
    /// to it; what it publishes is still checked and forwarded. A score
    /// already below zero is left as it is.
    pub async fn withhold_gossip(&self, peer: PeerId) -> Result<(), NetworkError> {
        Ok(self.commands.send(Command::WithholdGossip(peer)).await?)
    }

    /// Penalises `peer` as [`Self::penalise`] does, closes its connections
    /// and refuses new ones for `time`.
    pub async fn ban(&self, peer: PeerId, time: Duration) -> Result<(), NetworkError> {
        Ok(self.commands.send(Command::Ban { peer, time }).await?)
    }

    /// Asks `peer` for its log from sequence `from` on.
    pub async fn request_sync(&self, peer: PeerId, from: u64) -> Result<SyncResponse, NetworkError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::RequestSync { peer, from, reply }).await?;
        answer.await?
    }

    pub async fn respond_sync(
        &self,
        channel: ResponseChannel<SyncResponse>,
        page: SyncResponse,
    ) -> Result<(), NetworkError> {
        Ok(self.commands.send(Command::RespondSync { channel, page }).await?)
    }
}

/// Where and how the network layer runs.
pub struct NetworkConfig<'a> {
    pub key: &'a Keypair,
    pub spec: &'a ChainSpec,
    pub listen: &'a [Multiaddr],
    /// Dialled at start and again whenever their connection is lost.
    pub bootnodes: Vec<Multiaddr>,
    /// How often lost bootnodes are dialled again.
    pub redial_interval: Duration,
}

/// A started network layer.
pub struct Network {
    pub client: NetworkClient,
    pub events: mpsc::Receiver<NetworkEvent>,
    pub peer_id: PeerId,
    /// The addresses it listens on, as bound.
    pub listen_addrs: Vec<Multiaddr>,
    /// Ends when `stop` is sent or dropped.
    pub event_loop: tokio::task::JoinHandle<()>,
    pub stop: oneshot::Sender<()>,
}

/// Builds the swarm, binds every listen address (an error if one fails),
/// dials the bootnodes and starts the event loop.
pub async fn start(config: NetworkConfig<'_>, metrics: std::sync::Arc<Metrics>) -> Result<Network, NetError> {
    let mut swarm = build_swarm(config.key, config.spec)?;
    let listen_addrs = event_loop::listen(&mut swarm, config.listen).await?;
    for addr in &config.bootnodes {
        if let Err(err) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, %err, "dialing bootnode");
        }
    }
    let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let (stop, stop_rx) = oneshot::channel();
    let peer_id = *swarm.local_peer_id();
    let event_loop = EventLoop::new(swarm, Topics::new(&config.spec.chain_id()), events_tx, metrics, config.bootnodes);
    let event_loop = tokio::spawn(event_loop.run(commands_rx, stop_rx, config.redial_interval));
    Ok(Network { client: NetworkClient { commands }, events, peer_id, listen_addrs, event_loop, stop })
}
