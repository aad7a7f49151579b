//! Between the network and the validation pool: network events become jobs
//! (gossip is ignored when the queue is full, never waited for), outcomes go
//! back to the network, and catch-up sync is driven from here: on connect
//! and every interval each peer is asked, one page at a time, for its log
//! from the cursor this node keeps for it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use libp2p::gossipsub::MessageAcceptance;
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::workers::{Done, Job};
use crate::network::{NetworkClient, NetworkEvent};
use crate::pipeline::Pipeline;

pub(super) struct Router {
    pipeline: Arc<Pipeline>,
    network: NetworkClient,
    jobs: mpsc::Sender<Job>,
    /// Peers with a sync request or page in progress.
    syncing: HashSet<PeerId>,
    /// Sync requests that ended without a page to check.
    sync_failed: (mpsc::UnboundedSender<PeerId>, mpsc::UnboundedReceiver<PeerId>),
}

impl Router {
    pub(super) fn new(pipeline: Arc<Pipeline>, network: NetworkClient, jobs: mpsc::Sender<Job>) -> Self {
        Self { pipeline, network, jobs, syncing: HashSet::new(), sync_failed: mpsc::unbounded_channel() }
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

    async fn on_event(&mut self, event: NetworkEvent) -> Result<(), crate::network::NetworkError> {
        match event {
            NetworkEvent::Gossip { topic, message_id, source, data } => {
                if let Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) =
                    self.jobs.try_send(Job::Gossip { topic, message_id, source, data })
                {
                    if let Job::Gossip { message_id, source, .. } = job {
                        self.pipeline.metrics().gossip_dropped.inc();
                        self.network.report(message_id, source, MessageAcceptance::Ignore).await?;
                    }
                }
            }
            NetworkEvent::SyncRequest { from, channel, .. } => {
                // A full queue drops the channel: the peer's request fails
                // and it asks again on its next tick.
                let _ = self.jobs.try_send(Job::ServeSync { from, channel });
            }
            NetworkEvent::PeerConnected(peer) => self.request_sync(peer),
        }
        Ok(())
    }

    async fn on_done(&mut self, done: Done) -> Result<(), crate::network::NetworkError> {
        match done {
            Done::Gossip { message_id, source, acceptance } => {
                self.network.report(message_id, source, acceptance).await
            }
            Done::ServeSync { channel, page } => self.network.respond_sync(channel, page).await,
            Done::SyncPage { peer, more, bad } => {
                self.syncing.remove(&peer);
                if bad > 0 {
                    // Invalid data over sync is as bad as over gossip.
                    return self.network.penalise(peer).await;
                }
                if more {
                    self.request_sync(peer);
                }
                Ok(())
            }
        }
    }

    async fn on_tick(&mut self) -> Result<(), crate::network::NetworkError> {
        for peer in self.network.peers().await? {
            self.request_sync(peer.peer_id);
        }
        Ok(())
    }

    /// Asks `peer` for the next page of its log unless a request is under
    /// way. The cursor read, the request and the wait for a place in the
    /// validation queue run in a task of their own, so the router never waits.
    fn request_sync(&mut self, peer: PeerId) {
        if !self.syncing.insert(peer) {
            return;
        }
        let (pipeline, network, jobs, failed) =
            (self.pipeline.clone(), self.network.clone(), self.jobs.clone(), self.sync_failed.0.clone());
        tokio::spawn(async move {
            let store = pipeline.store().clone();
            let from = match tokio::task::spawn_blocking(move || store.sync_cursor(&peer.to_bytes())).await {
                Ok(Ok(from)) => from,
                Ok(Err(err)) => {
                    tracing::error!(%err, "reading sync cursor");
                    let _ = failed.send(peer);
                    return;
                }
                Err(_) => return,
            };
            let handed_over = match network.request_sync(peer, from).await {
                Ok(page) => jobs.send(Job::SyncPage { peer, from, page }).await.is_ok(),
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
