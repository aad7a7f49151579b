//! The one task that owns the swarm. It turns swarm events into
//! [`NetworkEvent`]s and carries out the client's commands; it keeps only
//! network state (outstanding sync requests, bootnodes, bans), never waits
//! on the node, and never touches storage.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};

use super::behaviour::{Behaviour, BehaviourEvent, NetError, SyncRequest, SyncResponse, Topics, GRAYLIST_THRESHOLD};
use super::{NetworkError, NetworkEvent, PeerInfo, Topic};
use crate::metrics::Metrics;

pub(super) enum Command {
    Publish { topic: Topic, data: Vec<u8> },
    Report { message_id: MessageId, source: PeerId, acceptance: MessageAcceptance },
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Block(PeerId),
    Unblock(PeerId),
    Dial { addr: Multiaddr, reply: oneshot::Sender<Result<(), NetworkError>> },
    Penalise(PeerId),
    WithholdGossip(PeerId),
    Ban { peer: PeerId, time: Duration },
    RequestSync { peer: PeerId, from: u64, reply: oneshot::Sender<Result<SyncResponse, NetworkError>> },
    RespondSync { channel: ResponseChannel<SyncResponse>, page: SyncResponse },
}

/// Binds every address and waits until each is listening.
pub(super) async fn listen(swarm: &mut Swarm<Behaviour>, addrs: &[Multiaddr]) -> Result<Vec<Multiaddr>, NetError> {
    for addr in addrs {
        swarm.listen_on(addr.clone()).map_err(|e| NetError::Transport(format!("listening on {addr}: {e}")))?;
    }
    let mut bound = Vec::new();
    while bound.len() < addrs.len() {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => bound.push(address),
            SwarmEvent::ListenerError { error, .. } => return Err(NetError::Transport(format!("listening: {error}"))),
            SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                return Err(NetError::Transport(format!("listening: {error}")))
            }
            _ => {}
        }
    }
    Ok(bound)
}

pub(super) struct EventLoop {
    swarm: Swarm<Behaviour>,
    topics: Topics,
    events: mpsc::Sender<NetworkEvent>,
    metrics: Arc<Metrics>,
    bootnodes: Vec<Multiaddr>,
    sync_requests: HashMap<OutboundRequestId, oneshot::Sender<Result<SyncResponse, NetworkError>>>,
    /// Peers the node banned, until when; lifted as they expire.
    bans: HashMap<PeerId, Instant>,
    /// Peers the operator blocked: no ban's expiry unblocks them.
    blocked: HashSet<PeerId>,
}

/// Bans held at once. A peer with many identities could otherwise grow the
/// block list without bound; past this a misbehaving peer is disconnected
/// and may dial again (connection limits bound how fast).
const MAX_BANS: usize = 4096;
/// Application score of a peer this node sends no gossip: times
/// gossipsub's application weight (10) it is -60, below the 0 a mesh peer
/// needs, the gossip threshold (-10: no announcements, its requests for
/// messages ignored) and the publish threshold (-50: nothing published or
/// forwarded to it), above the graylist (-80): its own messages are still
/// checked, and two invalid ones (-10 × 2²) graylist it.
const WITHHELD_APPLICATION_SCORE: f64 = -6.0;

impl EventLoop {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        topics: Topics,
        events: mpsc::Sender<NetworkEvent>,
        metrics: Arc<Metrics>,
        bootnodes: Vec<Multiaddr>,
    ) -> Self {
        Self {
            swarm,
            topics,
            events,
            metrics,
            bootnodes,
            sync_requests: HashMap::new(),
            bans: HashMap::new(),
            blocked: HashSet::new(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut stop: oneshot::Receiver<()>,
        redial_interval: Duration,
    ) {
        let mut redial = tokio::time::interval(redial_interval);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(command) = commands.recv() => self.on_command(command),
                _ = redial.tick() => {
                    self.lift_expired_bans();
                    self.redial_bootnodes();
                }
                _ = &mut stop => break,
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let Some(topic) = self.topics.find(&message.topic) else {
                    self.report(&message_id, &propagation_source, MessageAcceptance::Reject);
                    return;
                };
                let event = NetworkEvent::Gossip { topic, message_id, source: propagation_source, data: message.data };
                if let Err(mpsc::error::TrySendError::Full(event) | mpsc::error::TrySendError::Closed(event)) =
                    self.events.try_send(event)
                {
                    if let NetworkEvent::Gossip { message_id, source, .. } = event {
                        self.metrics.gossip_dropped.inc();
                        self.report(&message_id, &source, MessageAcceptance::Ignore);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message { peer, message, .. })) => {
                match message {
                    request_response::Message::Request { request, channel, .. } => {
                        // When the node is busy the channel is dropped: the
                        // peer's request fails and it asks again later.
                        let _ = self.events.try_send(NetworkEvent::SyncRequest { peer, from: request.from, channel });
                    }
                    request_response::Message::Response { request_id, response } => {
                        self.metrics.sync_entries.inc_by(response.entries.len() as u64);
                        if let Some(reply) = self.sync_requests.remove(&request_id) {
                            let _ = reply.send(Ok(response));
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            })) => {
                if let Some(reply) = self.sync_requests.remove(&request_id) {
                    let _ = reply.send(Err(NetworkError::Sync { peer, reason: error.to_string() }));
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, num_established, .. } => {
                self.metrics.peers.set(self.swarm.connected_peers().count() as i64);
                if num_established.get() == 1 {
                    let _ = self.events.try_send(NetworkEvent::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.metrics.peers.set(self.swarm.connected_peers().count() as i64);
                let _ = self.events.try_send(NetworkEvent::PeerDisconnected(peer_id));
            }
            _ => {}
        }
    }

    /// Reports a validation result. A message that waited past gossipsub's
    /// cache window is no longer known to it, and a reject would then cost
    /// its sender nothing: such a sender is penalised directly.
    fn report(&mut self, message_id: &MessageId, source: &PeerId, acceptance: MessageAcceptance) {
        let reject = matches!(acceptance, MessageAcceptance::Reject);
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        if !gossipsub.report_message_validation_result(message_id, source, acceptance) && reject {
            self.metrics.gossip_late_rejects.inc();
            self.penalise(source);
        }
    }

    fn penalise(&mut self, peer: &PeerId) {
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        gossipsub.set_application_score(peer, 2.0 * GRAYLIST_THRESHOLD / 10.0);
    }

    fn ban(&mut self, peer: PeerId, time: Duration) {
        if !self.bans.contains_key(&peer) {
            self.metrics.peers_banned.inc();
        }
        self.penalise(&peer);
        if self.bans.len() < MAX_BANS || self.bans.contains_key(&peer) {
            self.bans.insert(peer, Instant::now() + time);
            self.swarm.behaviour_mut().blocked.block_peer(peer);
        } else {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn lift_expired_bans(&mut self) {
        let now = Instant::now();
        let expired: Vec<PeerId> = self.bans.iter().filter(|(_, until)| **until <= now).map(|(p, _)| *p).collect();
        for peer in expired {
            self.bans.remove(&peer);
            if !self.blocked.contains(&peer) {
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            }
        }
    }

    /// Bootnodes lost to a restart or a partition are dialled again.
    fn redial_bootnodes(&mut self) {
        for addr in &self.bootnodes {
            let known = addr.iter().find_map(|p| match p {
                Protocol::P2p(peer) => Some(peer),
                _ => None,
            });
            if known.is_some_and(|peer| !self.swarm.is_connected(&peer)) {
                let _ = self.swarm.dial(addr.clone());
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { topic, data } => {
                let topic = self.topics.get(topic).clone();
                match self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
                    Ok(_) | Err(gossipsub::PublishError::Duplicate) => {}
                    // Peers that missed it catch up through sync.
                    Err(err) => tracing::debug!(%err, "publishing"),
                }
            }
            Command::Report { message_id, source, acceptance } => self.report(&message_id, &source, acceptance),
            Command::Peers(reply) => {
                let gossipsub = &self.swarm.behaviour().gossipsub;
                let peers = self
                    .swarm
                    .connected_peers()
                    .map(|peer| PeerInfo {
                        peer_id: *peer,
                        score: gossipsub.peer_score(peer),
                        in_mesh: gossipsub.all_mesh_peers().any(|p| p == peer),
                    })
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Block(peer) => {
                self.blocked.insert(peer);
                self.swarm.behaviour_mut().blocked.block_peer(peer);
            }
            Command::Unblock(peer) => {
                self.blocked.remove(&peer);
                self.bans.remove(&peer);
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            }
            Command::Dial { addr, reply } => {
                let result =
                    self.swarm.dial(addr.clone()).map_err(|e| NetworkError::Dial { addr, reason: e.to_string() });
                let _ = reply.send(result);
            }
            Command::Penalise(peer) => self.penalise(&peer),
            Command::WithholdGossip(peer) => {
                let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
                // Never raises a score: a peer penalised before it
                // reconnected stays penalised.
                if gossipsub.peer_score(&peer).is_none_or(|score| score >= 0.0) {
                    gossipsub.set_application_score(&peer, WITHHELD_APPLICATION_SCORE);
                }
            }
            Command::Ban { peer, time } => self.ban(peer, time),
            Command::RequestSync { peer, from, reply } => {
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, SyncRequest { from });
                self.sync_requests.insert(id, reply);
            }
            Command::RespondSync { channel, page } => {
                let _ = self.swarm.behaviour_mut().sync.send_response(channel, page);
            }
        }
    }
}
