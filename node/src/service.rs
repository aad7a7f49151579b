//! A running node: one event loop owns the swarm; validation, storage and
//! sync paging run on a fixed pool of worker threads fed by a bounded queue,
//! and the model on the scheduler's own pool. The loop never waits on them:
//! when the validation queue is full, gossip is ignored (not penalised) and
//! sync waits for the next tick.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use poi_artifact::{Keypair, Vote};
use poi_chain_spec::ChainSpec;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::net::{self, Behaviour, BehaviourEvent, SyncEntry, SyncRequest, SyncResponse, Topics};
use crate::pipeline::{Admission, IngestError, Pipeline, Source};
use crate::scheduler::{FullChecker, Scheduler};
use crate::store::Store;

/// Validation jobs waiting for a worker; beyond this, gossip is ignored.
const VALIDATION_QUEUE: usize = 4096;

pub struct NodeConfig {
    pub spec: ChainSpec,
    pub key: Keypair,
    pub data_dir: PathBuf,
    pub listen: Vec<Multiaddr>,
    pub bootnodes: Vec<Multiaddr>,
    pub rpc: Option<SocketAddr>,
    pub rpc_limits: crate::rpc::RpcLimits,
    pub metrics: Option<SocketAddr>,
    /// The model; `None` runs a node that checks replay, stores and relays
    /// but never votes.
    pub checker: Option<Arc<dyn FullChecker>>,
    pub full_check_workers: usize,
    pub full_check_queue: usize,
    pub validation_workers: usize,
    /// How often each connected peer is asked for what this node missed.
    pub sync_interval: Duration,
    pub admission: Admission,
    /// fsync every stored batch (see `Store::with_sync_writes`).
    pub sync_writes: bool,
}

impl NodeConfig {
    /// Loopback defaults for one node; callers set what differs.
    pub fn new(spec: ChainSpec, key: Keypair, data_dir: PathBuf) -> Self {
        Self {
            spec,
            key,
            data_dir,
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")],
            bootnodes: Vec::new(),
            rpc: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            rpc_limits: crate::rpc::RpcLimits::default(),
            metrics: None,
            checker: None,
            full_check_workers: 1,
            full_check_queue: 64,
            validation_workers: 2,
            sync_interval: Duration::from_secs(5),
            admission: Admission::default(),
            sync_writes: false,
        }
    }
}

/// A peer as the event loop sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerInfo {
    pub peer_id: String,
    /// Gossipsub's score; below the graylist threshold the peer is ignored.
    pub score: Option<f64>,
}

pub enum Command {
    Publish { votes: bool, bytes: Vec<u8> },
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Block(PeerId),
    Unblock(PeerId),
    Dial(Multiaddr),
}

enum Job {
    Gossip { message_id: MessageId, source: PeerId, votes: bool, data: Vec<u8> },
    SyncPage { peer: PeerId, page: SyncResponse },
    ServeSync { from: u64, channel: ResponseChannel<SyncResponse> },
}

enum Done {
    Gossip { message_id: MessageId, source: PeerId, acceptance: MessageAcceptance },
    SyncPage { peer: PeerId, next: u64, more: bool, bad: usize },
    ServeSync { channel: ResponseChannel<SyncResponse>, page: SyncResponse },
}

pub struct NodeHandle {
    pub peer_id: PeerId,
    pub listen_addrs: Vec<Multiaddr>,
    pub rpc_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub pipeline: Arc<Pipeline>,
    pub metrics: Arc<Metrics>,
    commands: mpsc::Sender<Command>,
    stop: Option<oneshot::Sender<()>>,
    event_loop: tokio::task::JoinHandle<()>,
    rpc: Option<jsonrpsee::server::ServerHandle>,
    background: Vec<tokio::task::JoinHandle<()>>,
    validators: Vec<std::thread::JoinHandle<()>>,
}

impl NodeHandle {
    /// An address others can dial, with this node's peer id.
    pub fn dial_addr(&self) -> Multiaddr {
        self.listen_addrs[0].clone().with(Protocol::P2p(self.peer_id))
    }

    /// Closes and refuses connections to `peer` until [`Self::unblock`].
    pub async fn block(&self, peer: PeerId) {
        let _ = self.commands.send(Command::Block(peer)).await;
    }

    pub async fn unblock(&self, peer: PeerId) {
        let _ = self.commands.send(Command::Unblock(peer)).await;
    }

    /// Connects to another node; what each missed arrives by catch-up sync.
    pub async fn dial(&self, addr: Multiaddr) {
        let _ = self.commands.send(Command::Dial(addr)).await;
    }

    pub async fn peers(&self) -> Vec<PeerInfo> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Peers(reply)).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Stops networking and RPC and waits until nothing else holds the
    /// store, so that the data dir can be opened again at once.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(rpc) = self.rpc.take() {
            let _ = rpc.stop();
            rpc.stopped().await;
        }
        for task in &self.background {
            task.abort();
        }
        for task in self.background.drain(..) {
            let _ = task.await;
        }
        // Ending the loop closes the validation queue; its threads then end.
        let _ = (&mut self.event_loop).await;
        let threads = std::mem::take(&mut self.validators);
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
    }
}

pub async fn start(config: NodeConfig) -> anyhow::Result<NodeHandle> {
    let metrics = Arc::new(Metrics::default());
    let store = Arc::new(
        Store::open(&config.data_dir, config.spec.clone())
            .with_context(|| format!("opening the store in {}", config.data_dir.display()))?
            .with_sync_writes(config.sync_writes),
    );
    let key = Arc::new(Keypair::from_secret(config.key.secret()));
    let (votes_tx, mut votes_rx) = mpsc::channel::<Vote>(256);
    let scheduler = config.checker.clone().map(|checker| {
        Scheduler::start(
            config.full_check_workers,
            config.full_check_queue,
            checker,
            key.clone(),
            &config.spec,
            metrics.clone(),
            votes_tx.clone(),
        )
    });
    let validator = scheduler.map(|s| (key.clone(), s));
    let pipeline = Arc::new(Pipeline::new(store, config.spec.clone(), metrics.clone(), validator, config.admission));

    let mut swarm = net::build_swarm(&config.key, &config.spec)?;
    for addr in &config.listen {
        swarm.listen_on(addr.clone()).with_context(|| format!("listening on {addr}"))?;
    }
    let mut listen_addrs = Vec::new();
    while listen_addrs.len() < config.listen.len() {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => listen_addrs.push(address),
            SwarmEvent::ListenerError { error, .. } => anyhow::bail!("listening: {error}"),
            SwarmEvent::ListenerClosed { reason: Err(error), .. } => anyhow::bail!("listening: {error}"),
            _ => {}
        }
    }
    for addr in &config.bootnodes {
        if let Err(err) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, %err, "dialing bootnode");
        }
    }

    let (commands, commands_rx) = mpsc::channel(1024);
    let (jobs, jobs_rx) = sync_channel(VALIDATION_QUEUE);
    let (done_tx, done_rx) = mpsc::channel(VALIDATION_QUEUE);
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let mut validators = Vec::new();
    for index in 0..config.validation_workers.max(1) {
        let (pipeline, jobs_rx, done_tx) = (pipeline.clone(), jobs_rx.clone(), done_tx.clone());
        let thread = std::thread::Builder::new()
            .name(format!("validate-{index}"))
            .spawn(move || validation_worker(&pipeline, &jobs_rx, &done_tx))
            .context("spawning a validation worker")?;
        validators.push(thread);
    }

    let mut background = Vec::new();
    // Own votes: stored like any other, then gossiped.
    {
        let (pipeline, commands) = (pipeline.clone(), commands.clone());
        background.push(tokio::spawn(async move {
            while let Some(vote) = votes_rx.recv().await {
                let bytes = vote.encode();
                let stored = {
                    let (pipeline, bytes) = (pipeline.clone(), bytes.clone());
                    tokio::task::spawn_blocking(move || pipeline.ingest_own_vote(&bytes)).await
                };
                match stored {
                    Ok(Ok(true)) => {
                        let _ = commands.send(Command::Publish { votes: true, bytes }).await;
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(err)) => tracing::error!(%err, "storing own vote"),
                    Err(err) => tracing::error!(%err, "vote task"),
                }
            }
        }));
    }
    let (rpc_addr, rpc) = match config.rpc {
        Some(addr) => {
            let api = crate::rpc::Rpc::new(pipeline.clone(), Some(commands.clone()));
            let (bound, handle) =
                crate::rpc::serve(addr, api, config.rpc_limits).await.with_context(|| format!("RPC on {addr}"))?;
            (Some(bound), Some(handle))
        }
        None => (None, None),
    };
    let metrics_addr = match config.metrics {
        Some(addr) => {
            let (bound, task) =
                crate::metrics::serve(addr, metrics.clone()).await.with_context(|| format!("metrics on {addr}"))?;
            background.push(task);
            Some(bound)
        }
        None => None,
    };

    let (stop, stop_rx) = oneshot::channel();
    let peer_id = *swarm.local_peer_id();
    let event_loop = EventLoop {
        swarm,
        topics: Topics::new(&config.spec.chain_id()),
        pipeline: pipeline.clone(),
        metrics: metrics.clone(),
        jobs,
        bootnodes: config.bootnodes,
        syncing: HashSet::new(),
    };
    let event_loop = tokio::spawn(event_loop.run(commands_rx, done_rx, stop_rx, config.sync_interval));
    tracing::info!(%peer_id, addrs = ?listen_addrs, rpc = ?rpc_addr, metrics = ?metrics_addr, "node started");
    Ok(NodeHandle {
        peer_id,
        listen_addrs,
        rpc_addr,
        metrics_addr,
        pipeline,
        metrics,
        commands,
        stop: Some(stop),
        event_loop,
        rpc,
        background,
        validators,
    })
}

fn validation_worker(pipeline: &Pipeline, jobs: &Mutex<Receiver<Job>>, done: &mpsc::Sender<Done>) {
    loop {
        let job = match jobs.lock().expect("job queue").recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let result = match job {
            Job::Gossip { message_id, source, votes, data } => {
                let outcome = if votes {
                    pipeline.ingest_vote(&data, Source::Gossip).map(|_| ())
                } else {
                    pipeline.ingest_artifact(&data, Source::Gossip).map(|_| ())
                };
                let acceptance = match outcome {
                    Ok(()) => MessageAcceptance::Accept,
                    Err(err) if err.is_peer_fault() => {
                        tracing::debug!(%source, %err, "invalid gossip");
                        MessageAcceptance::Reject
                    }
                    Err(IngestError::Store(err)) => {
                        tracing::error!(%err, "storing gossip");
                        MessageAcceptance::Ignore
                    }
                    Err(err) => {
                        tracing::debug!(%source, %err, "gossip not admitted");
                        MessageAcceptance::Ignore
                    }
                };
                Done::Gossip { message_id, source, acceptance }
            }
            Job::SyncPage { peer, page } => {
                let mut bad = 0;
                for entry in &page.entries {
                    let result = match entry {
                        SyncEntry::Artifact(bytes) => pipeline.ingest_artifact(bytes, Source::Sync).map(|_| ()),
                        SyncEntry::Vote(bytes) => pipeline.ingest_vote(bytes, Source::Sync).map(|_| ()),
                    };
                    match result {
                        Err(err) if err.is_peer_fault() => {
                            tracing::warn!(%peer, %err, "invalid sync entry");
                            bad += 1;
                        }
                        Err(err) => tracing::error!(%err, "storing synced entry"),
                        Ok(()) => {}
                    }
                }
                Done::SyncPage { peer, next: page.next, more: page.more, bad }
            }
            Job::ServeSync { from, channel } => {
                let page = pipeline
                    .store()
                    .log_page(from, net::SYNC_PAGE_ENTRIES, net::SYNC_PAGE_BYTES)
                    .map(SyncResponse::from)
                    .unwrap_or_else(|err| {
                        tracing::error!(%err, "reading the log for a peer");
                        SyncResponse { entries: Vec::new(), next: from, more: false }
                    });
                Done::ServeSync { channel, page }
            }
        };
        if done.blocking_send(result).is_err() {
            return;
        }
    }
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    topics: Topics,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    jobs: SyncSender<Job>,
    bootnodes: Vec<Multiaddr>,
    /// Peers with a sync request or page in progress.
    syncing: HashSet<PeerId>,
}

impl EventLoop {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut done: mpsc::Receiver<Done>,
        mut stop: oneshot::Receiver<()>,
        sync_interval: Duration,
    ) {
        let mut tick = tokio::time::interval(sync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(command) = commands.recv() => self.on_command(command),
                Some(result) = done.recv() => self.on_done(result),
                _ = tick.tick() => self.on_tick(),
                _ = &mut stop => break,
            }
        }
    }

    /// A refused job comes back so that its sender can be answered; moving
    /// ~130 bytes per refusal costs nothing next to boxing every job.
    #[allow(clippy::result_large_err)]
    fn submit(&mut self, job: Job) -> Result<(), Job> {
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Err(job),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let votes = message.topic == self.topics.votes.hash();
                if !votes && message.topic != self.topics.artifacts.hash() {
                    self.report(&message_id, &propagation_source, MessageAcceptance::Reject);
                    return;
                }
                let job = Job::Gossip { message_id, source: propagation_source, votes, data: message.data };
                if let Err(Job::Gossip { message_id, source, .. }) = self.submit(job) {
                    self.metrics.gossip_dropped.inc();
                    self.report(&message_id, &source, MessageAcceptance::Ignore);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message { peer, message, .. })) => {
                match message {
                    request_response::Message::Request { request, channel, .. } => {
                        // A full queue drops the channel: the peer's request
                        // fails and it asks again on its next tick.
                        let _ = self.submit(Job::ServeSync { from: request.from, channel });
                    }
                    request_response::Message::Response { response, .. } => {
                        self.metrics.sync_entries.inc_by(response.entries.len() as u64);
                        if self.submit(Job::SyncPage { peer, page: response }).is_err() {
                            self.syncing.remove(&peer);
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                peer,
                error,
                ..
            })) => {
                tracing::debug!(%peer, %error, "sync request failed");
                self.syncing.remove(&peer);
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                self.metrics.peers.set(self.swarm.connected_peers().count() as i64);
                self.request_sync(peer_id);
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.metrics.peers.set(self.swarm.connected_peers().count() as i64);
                self.syncing.remove(&peer_id);
            }
            _ => {}
        }
    }

    fn report(&mut self, message_id: &MessageId, source: &PeerId, acceptance: MessageAcceptance) {
        self.swarm.behaviour_mut().gossipsub.report_message_validation_result(message_id, source, acceptance);
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Gossip { message_id, source, acceptance } => self.report(&message_id, &source, acceptance),
            Done::SyncPage { peer, next, more, bad } => {
                self.syncing.remove(&peer);
                if bad > 0 {
                    // Invalid data over sync is as bad as over gossip: push
                    // the peer below the graylist threshold.
                    let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
                    gossipsub.set_application_score(&peer, 2.0 * net::GRAYLIST_THRESHOLD / 10.0);
                    return;
                }
                if let Err(err) = self.pipeline.store().set_sync_cursor(&peer.to_bytes(), next) {
                    tracing::error!(%err, "saving sync cursor");
                }
                if more {
                    self.request_sync(peer);
                }
            }
            Done::ServeSync { channel, page } => {
                let _ = self.swarm.behaviour_mut().sync.send_response(channel, page);
            }
        }
    }

    fn request_sync(&mut self, peer: PeerId) {
        if self.syncing.contains(&peer) {
            return;
        }
        let from = match self.pipeline.store().sync_cursor(&peer.to_bytes()) {
            Ok(from) => from,
            Err(err) => {
                tracing::error!(%err, "reading sync cursor");
                return;
            }
        };
        self.syncing.insert(peer);
        self.swarm.behaviour_mut().sync.send_request(&peer, SyncRequest { from });
    }

    fn on_tick(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            self.request_sync(peer);
        }
        // Bootnodes lost to a restart or a partition are dialled again.
        for addr in self.bootnodes.clone() {
            let known = addr.iter().find_map(|p| match p {
                Protocol::P2p(peer) => Some(peer),
                _ => None,
            });
            if known.is_some_and(|peer| !self.swarm.is_connected(&peer)) {
                let _ = self.swarm.dial(addr);
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { votes, bytes } => {
                let topic = if votes { self.topics.votes.clone() } else { self.topics.artifacts.clone() };
                match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
                    Ok(_) | Err(gossipsub::PublishError::Duplicate) => {}
                    // Peers that missed it catch up through sync.
                    Err(err) => tracing::debug!(%err, "publishing"),
                }
            }
            Command::Peers(reply) => {
                let gossipsub = &self.swarm.behaviour().gossipsub;
                let peers = self
                    .swarm
                    .connected_peers()
                    .map(|peer| PeerInfo { peer_id: peer.to_string(), score: gossipsub.peer_score(peer) })
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Block(peer) => {
                self.swarm.behaviour_mut().blocked.block_peer(peer);
            }
            Command::Unblock(peer) => {
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            }
            Command::Dial(addr) => {
                if let Err(err) = self.swarm.dial(addr) {
                    tracing::warn!(%err, "dialling");
                }
            }
        }
    }
}
