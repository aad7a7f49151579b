//! Between the network and the two pools: network events become jobs, never
//! waited for, outcomes go back to the network, and catch-up sync is driven
//! from here: on connect and every interval each peer that is not
//! graylisted is asked, one page at a time, for its log from the cursor this
//! node keeps for it.
//!
//! The validation queue holds at most [`QUEUE_BYTES`] of gossip, one
//! validator's forwards at most [`PEER_QUEUE_BYTES`] of it, and peers
//! outside the validator set (whose identities cost nothing) at most
//! [`OUTSIDERS_QUEUE_BYTES`] together and [`OUTSIDER_QUEUE_BYTES`] each,
//! and [`OUTSIDER_BYTES_PER_S`] together (gossipsub graylists a peer only
//! after its rejects land, so each new identity gets some checks for free:
//! this rate bounds what all of them cost); past any of these, gossip is
//! ignored (not penalised). Sync requests go to the serving pool through
//! [`ServeGate`]'s rules; peers that break them, or send invalid pages, are
//! banned for [`BAN_TIME`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::gossipsub::MessageAcceptance;
use libp2p::request_response::ResponseChannel;
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::sync::{validator_peers, Admit, OutsiderCursors, PageOutcome, ServeGate, BAN_TIME, MIN_REQUEST_INTERVAL};
use super::workers::{Done, Job};
use crate::network::{NetworkClient, NetworkError, NetworkEvent, SyncResponse, GRAYLIST_THRESHOLD};
use crate::pipeline::Pipeline;
use crate::rate::TokenBucket;
use crate::store::SyncCursor;

/// Gossip bytes waiting for validation, in all and from one peer. At 1 MiB,
/// the largest message, a full queue is 64 messages: a few replay checks'
/// time, well inside gossipsub's 2.5 s cache window.
pub(super) const QUEUE_BYTES: usize = 64 << 20;
pub(super) const PEER_QUEUE_BYTES: usize = 16 << 20;
/// Sybils together hold no more of the queue than this, however many they
/// are, and each little enough that its first rejects land (and graylist
/// it) before much more of its gossip is checked.
pub(super) const OUTSIDERS_QUEUE_BYTES: usize = 8 << 20;
pub(super) const OUTSIDER_QUEUE_BYTES: usize = 2 << 20;
/// 100 artifacts of 256 tokens a second from miners and relays outside the
/// validator set; validators forward each other everything.
pub(super) const OUTSIDER_BYTES_PER_S: u32 = 2 << 20;

/// The queues the router feeds.
pub(super) struct Queues {
    pub validation: mpsc::Sender<Job>,
    pub serving: mpsc::Sender<Job>,
}

/// Gossip bytes waiting in the validation queue: in all, from peers
/// outside the validator set, and from each peer (with whether it is a
/// validator).
struct GossipBudget {
    total: usize,
    outsiders: usize,
    outsider_rate: TokenBucket,
    by_peer: HashMap<PeerId, (usize, bool)>,
}

impl Default for GossipBudget {
    fn default() -> Self {
        Self { total: 0, outsiders: 0, outsider_rate: TokenBucket::new(OUTSIDER_BYTES_PER_S), by_peer: HashMap::new() }
    }
}

impl GossipBudget {
    fn try_reserve(&mut self, peer: PeerId, validator: bool, bytes: usize) -> bool {
        let held = self.by_peer.get(&peer).map_or(0, |(held, _)| *held);
        let (peer_limit, outsiders) =
            if validator { (PEER_QUEUE_BYTES, 0) } else { (OUTSIDER_QUEUE_BYTES, self.outsiders + bytes) };
        if self.total + bytes > QUEUE_BYTES || held + bytes > peer_limit || outsiders > OUTSIDERS_QUEUE_BYTES {
            return false;
        }
        if !validator && !self.outsider_rate.try_take_n(bytes as f64, Instant::now()) {
            return false;
        }
        self.total += bytes;
        if !validator {
            self.outsiders += bytes;
        }
        self.by_peer.insert(peer, (held + bytes, validator));
        true
    }

    fn release(&mut self, peer: &PeerId, bytes: usize) {
        self.total = self.total.saturating_sub(bytes);
        if let Some((held, validator)) = self.by_peer.get_mut(peer) {
            *held = held.saturating_sub(bytes);
            if !*validator {
                self.outsiders = self.outsiders.saturating_sub(bytes);
            }
            if *held == 0 {
                self.by_peer.remove(peer);
            }
        }
    }
}

pub(super) struct Router {
    pipeline: Arc<Pipeline>,
    network: NetworkClient,
    queues: Queues,
    validators: HashSet<PeerId>,
    budget: GossipBudget,
    gate: ServeGate,
    outsider_cursors: OutsiderCursors,
    /// Peers with a sync request or page in progress, and when each was
    /// last asked.
    syncing: HashSet<PeerId>,
    last_asked: HashMap<PeerId, Instant>,
    /// Sync requests that ended without a page to check.
    sync_failed: (mpsc::UnboundedSender<PeerId>, mpsc::UnboundedReceiver<PeerId>),
}

impl Router {
    pub(super) fn new(pipeline: Arc<Pipeline>, network: NetworkClient, queues: Queues) -> Self {
        Self {
            validators: validator_peers(pipeline.spec()),
            pipeline,
            network,
            queues,
            budget: GossipBudget::default(),
            gate: ServeGate::new(),
            outsider_cursors: OutsiderCursors::default(),
            syncing: HashSet::new(),
            last_asked: HashMap::new(),
            sync_failed: mpsc::unbounded_channel(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<NetworkEvent>,
        mut done: mpsc::Receiver<Done>,
        sync_interval: Duration,
    ) {
        let mut tick = tokio::time::interval(sync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let outcome = tokio::select! {
                Some(event) = events.recv() => self.on_event(event).await,
                Some(result) = done.recv() => self.on_done(result).await,
                Some(peer) = self.sync_failed.1.recv() => {
                    self.syncing.remove(&peer);
                    Ok(())
                }
                _ = tick.tick() => self.on_tick().await,
                else => return,
            };
            if outcome.is_err() {
                // The network layer stopped: so does the node.
                return;
            }
        }
    }

    async fn on_event(&mut self, event: NetworkEvent) -> Result<(), NetworkError> {
        match event {
            NetworkEvent::Gossip { topic, message_id, source, data } => {
                let bytes = data.len();
                if !self.budget.try_reserve(source, self.validators.contains(&source), bytes) {
                    return self.ignore(message_id, source).await;
                }
                if let Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) =
                    self.queues.validation.try_send(Job::Gossip { topic, message_id, source, data })
                {
                    self.budget.release(&source, bytes);
                    if let Job::Gossip { message_id, .. } = job {
                        return self.ignore(message_id, source).await;
                    }
                }
            }
            NetworkEvent::SyncRequest { peer, from, channel } => self.on_sync_request(peer, from, channel).await?,
            NetworkEvent::PeerConnected(peer) => {
                // Gossip is sent to validators only: outsiders (any number
                // of free identities) could each ask for every message, and
                // this node's sending would grow with them. They catch up
                // by sync, whose pages they share at one rate.
                if !self.validators.contains(&peer) {
                    self.network.withhold_gossip(peer).await?;
                }
                self.request_sync(peer);
            }
            NetworkEvent::PeerDisconnected(peer) => {
                self.gate.forget(&peer);
                self.last_asked.remove(&peer);
            }
        }
        Ok(())
    }

    async fn ignore(&mut self, message_id: libp2p::gossipsub::MessageId, source: PeerId) -> Result<(), NetworkError> {
        self.pipeline.metrics().gossip_dropped.inc();
        self.network.report(message_id, source, MessageAcceptance::Ignore).await
    }

    async fn on_sync_request(
        &mut self,
        peer: PeerId,
        from: u64,
        channel: ResponseChannel<SyncResponse>,
    ) -> Result<(), NetworkError> {
        let refused = || self.pipeline.metrics().sync_requests_refused.inc();
        match self.gate.admit(peer, self.validators.contains(&peer), Instant::now()) {
            Admit::Serve => {
                // A full queue drops the channel: the peer's request fails
                // and it asks again on its next tick.
                if self.queues.serving.try_send(Job::ServeSync { peer, from, channel }).is_err() {
                    refused();
                    self.gate.done(&peer);
                }
                Ok(())
            }
            Admit::Refuse => {
                refused();
                Ok(())
            }
            Admit::Ban => {
                refused();
                tracing::warn!(%peer, "banned: sync requests out of turn");
                self.network.ban(peer, BAN_TIME).await
            }
        }
    }

    async fn on_done(&mut self, done: Done) -> Result<(), NetworkError> {
        match done {
            Done::Gossip { message_id, source, acceptance, bytes } => {
                self.budget.release(&source, bytes);
                self.network.report(message_id, source, acceptance).await
            }
            Done::ServeSync { peer, answer } => {
                self.gate.done(&peer);
                match answer {
                    Some((channel, page)) => self.network.respond_sync(channel, page).await,
                    None => Ok(()),
                }
            }
            Done::SyncPage { peer, outcome } => {
                self.syncing.remove(&peer);
                match outcome {
                    PageOutcome::Advanced { cursor, more } => {
                        self.remember_outsider(peer, cursor);
                        if more {
                            self.request_sync(peer);
                        }
                    }
                    PageOutcome::Restart { cursor } => {
                        tracing::info!(%peer, "the peer's log is new: reading it again from the start");
                        self.remember_outsider(peer, cursor);
                        self.request_sync(peer);
                    }
                    PageOutcome::Retry => {}
                    PageOutcome::Bad(reason) => {
                        tracing::warn!(%peer, %reason, "banned: invalid sync page");
                        return self.network.ban(peer, BAN_TIME).await;
                    }
                }
                Ok(())
            }
        }
    }

    fn remember_outsider(&mut self, peer: PeerId, cursor: SyncCursor) {
        if !self.validators.contains(&peer) {
            self.outsider_cursors.set(peer, cursor, Instant::now());
        }
    }

    async fn on_tick(&mut self) -> Result<(), NetworkError> {
        for peer in self.network.peers().await? {
            // Gossipsub ignores a graylisted peer; so does sync.
            if peer.score.is_none_or(|score| score >= GRAYLIST_THRESHOLD) {
                self.request_sync(peer.peer_id);
            }
        }
        Ok(())
    }

    /// Asks `peer` for the next page of its log unless a request is under
    /// way, no sooner than [`MIN_REQUEST_INTERVAL`] after the last. The
    /// cursor read, the request and the wait for a place in the validation
    /// queue run in a task of their own, so the router never waits.
    fn request_sync(&mut self, peer: PeerId) {
        if !self.syncing.insert(peer) {
            return;
        }
        let now = Instant::now();
        let delay = self
            .last_asked
            .get(&peer)
            .map_or(Duration::ZERO, |last| (*last + MIN_REQUEST_INTERVAL).saturating_duration_since(now));
        self.last_asked.insert(peer, now + delay);
        let trusted = self.validators.contains(&peer);
        let outsider_cursor = (!trusted).then(|| self.outsider_cursors.get(&peer, now));
        let (pipeline, network, jobs, failed) =
            (self.pipeline.clone(), self.network.clone(), self.queues.validation.clone(), self.sync_failed.0.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let cursor = match outsider_cursor {
                Some(cursor) => cursor,
                None => {
                    let store = pipeline.store().clone();
                    match tokio::task::spawn_blocking(move || store.sync_cursor(&peer.to_bytes())).await {
                        Ok(Ok(cursor)) => cursor,
                        Ok(Err(err)) => {
                            tracing::error!(%err, "reading sync cursor");
                            let _ = failed.send(peer);
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            let handed_over = match network.request_sync(peer, cursor.next).await {
                Ok(page) => jobs.send(Job::SyncPage { peer, cursor, trusted, page }).await.is_ok(),
                Err(err) => {
                    tracing::debug!(%peer, %err, "sync request failed");
                    false
                }
            };
            if !handed_over {
                let _ = failed.send(peer);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Before: the queue was bounded by count only (4096 jobs of up to
    /// 1 MiB each), so a few peers could park gigabytes in it.
    #[test]
    fn the_gossip_budget_bounds_bytes_in_all_per_peer_and_for_outsiders() {
        const MIB: usize = 1 << 20;
        let mut budget = GossipBudget::default();
        let (flooder, honest) = (PeerId::random(), PeerId::random());
        let reserved = (0..100).filter(|_| budget.try_reserve(flooder, true, MIB)).count();
        assert_eq!(reserved, PEER_QUEUE_BYTES / MIB, "one validator holds at most its share");
        assert!(budget.try_reserve(honest, true, MIB), "another validator still has room");

        let sybils: Vec<PeerId> = (0..100).map(|_| PeerId::random()).collect();
        let held: usize = sybils.iter().map(|p| (0..10).filter(|_| budget.try_reserve(*p, false, MIB)).count()).sum();
        // The outsiders' rate (a second's burst) runs out before their
        // share of the queue does.
        assert_eq!(held, OUTSIDER_BYTES_PER_S as usize / MIB, "sybils together get one outsiders' rate");
        assert!(held * MIB <= OUTSIDERS_QUEUE_BYTES);
        assert!(budget.by_peer.values().all(|(bytes, _)| *bytes <= PEER_QUEUE_BYTES));
        assert!(budget.try_reserve(honest, true, MIB), "validators still have room");
        let validators: usize =
            (0..100).map(|_| PeerId::random()).filter(|p| budget.try_reserve(*p, true, MIB)).count();
        assert_eq!(budget.total, QUEUE_BYTES, "{validators} more validators filled the rest, no more");

        budget.release(&flooder, MIB);
        assert!(budget.try_reserve(honest, true, MIB), "released bytes are free again");
        for sybil in &sybils {
            budget.release(sybil, OUTSIDER_QUEUE_BYTES);
        }
        assert_eq!(budget.outsiders, 0);
        for _ in 0..reserved {
            budget.release(&flooder, MIB);
        }
        assert!(!budget.by_peer.contains_key(&flooder), "a peer with nothing queued takes no entry");
    }
}
