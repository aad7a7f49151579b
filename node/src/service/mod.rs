//! A running node. The network layer's event loop owns the swarm; the
//! [`router`] takes what it hears and hands checks, storage and synced pages
//! to a fixed pool of validation threads, and peers' sync requests to a
//! serving pool of their own, each fed by a bounded queue ([`workers`], with
//! [`sync`]'s rules for both directions of catch-up sync); the model runs on
//! the scheduler's own pool over the checks owed in the store, and this
//! validator's votes are stored, fsynced, before they are gossiped
//! ([`own_votes`]). Nothing here waits on the swarm: when the validation
//! queue is full, gossip is ignored (not penalised); when the serving queue
//! is, a peer's sync request is dropped; this node's own sync waits for the
//! next tick.

mod own_votes;
mod router;
mod sync;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use poi_artifact::Keypair;
use tokio::sync::{mpsc, oneshot};

use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::network::{self, NetworkClient, NetworkConfig};
use crate::pipeline::{Pipeline, Validator};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::store::Store;

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the store in {dir}: {source}")]
    Store { dir: std::path::PathBuf, source: crate::store::StoreError },
    #[error(transparent)]
    Network(#[from] network::NetError),
    #[error("serving {what} on {addr}: {source}")]
    Serve { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("spawning a validation worker: {0}")]
    Spawn(std::io::Error),
    #[error(
        "the chain spec lists this validator's VRF key as {listed}, but its key file derives {derived}: \
         its votes would be refused everywhere (`poi keys show` prints the entry to list)"
    )]
    WrongVrfKey { listed: String, derived: String },
}

/// Validation jobs waiting for a worker; beyond this (or the router's byte
/// budget), gossip is ignored.
const VALIDATION_QUEUE: usize = 4096;
/// Sync requests waiting for the serving thread: each is a page read of up
/// to `SYNC_PAGE_BYTES`.
const SERVING_QUEUE: usize = 16;
const SERVING_THREADS: usize = 1;

pub struct NodeHandle {
    pub peer_id: PeerId,
    pub listen_addrs: Vec<Multiaddr>,
    pub rpc_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub pipeline: Arc<Pipeline>,
    pub metrics: Arc<Metrics>,
    pub network: NetworkClient,
    stop_network: Option<oneshot::Sender<()>>,
    event_loop: tokio::task::JoinHandle<()>,
    rpc: Option<jsonrpsee::server::ServerHandle>,
    background: Vec<tokio::task::JoinHandle<()>>,
    validators: Vec<std::thread::JoinHandle<()>>,
    scheduler: Option<Scheduler>,
}

impl NodeHandle {
    /// An address others can dial, with this node's peer id.
    pub fn dial_addr(&self) -> Multiaddr {
        self.listen_addrs[0].clone().with(Protocol::P2p(self.peer_id))
    }

    /// Stops networking and RPC and waits until nothing else holds the
    /// store, so that the data dir can be opened again at once.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop_network.take() {
            let _ = stop.send(());
        }
        if let Some(scheduler) = self.scheduler.take() {
            let _ = tokio::task::spawn_blocking(move || scheduler.stop()).await;
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
        let _ = (&mut self.event_loop).await;
        // The router is gone, so the validation queue is closed; its threads
        // end once they finish the job at hand.
        let threads = std::mem::take(&mut self.validators);
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
        // Tasks the RPC server spawned per connection can still hold the
        // pipeline for a moment after it stops; RocksDB's lock goes with the
        // last reference.
        let store = Arc::downgrade(self.pipeline.store());
        drop(self);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.strong_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if store.strong_count() > 0 {
            tracing::warn!("the store is still referenced 10 s after stopping; its data dir stays locked until then");
        }
    }
}

pub async fn start(config: NodeConfig) -> Result<NodeHandle, StartError> {
    if let Some(listed) = config.spec.validator(&config.key.public()) {
        let derived = config.key.vrf().public();
        if listed.vrf_key != derived {
            return Err(StartError::WrongVrfKey { listed: listed.vrf_key.to_hex(), derived: derived.to_hex() });
        }
    }
    let metrics = Arc::new(Metrics::default());
    let store = Arc::new(
        Store::open(&config.data_dir, config.spec.clone())
            .map_err(|source| StartError::Store { dir: config.data_dir.clone(), source })?
            .with_sync_writes(config.sync_writes),
    );
    let key = Arc::new(Keypair::from_secret(config.key.secret()));
    let vrf = Arc::new(key.vrf());
    let scheduler = config.checker.clone().map(|checker| {
        Scheduler::new(SchedulerConfig {
            workers: config.full_check_workers,
            checker,
            key: key.clone(),
            vrf: vrf.clone(),
            spec: config.spec.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
        })
    });
    let validator = scheduler.as_ref().map(|scheduler| Validator {
        key: key.clone(),
        vrf: vrf.clone(),
        duties: Arc::new(scheduler.clone()),
    });
    let pipeline = Arc::new(Pipeline::new(store, config.spec.clone(), metrics.clone(), validator, config.admission));

    let network = network::start(
        NetworkConfig {
            key: &config.key,
            spec: &config.spec,
            listen: &config.listen,
            bootnodes: config.bootnodes.clone(),
            redial_interval: config.sync_interval,
        },
        metrics.clone(),
    )
    .await?;
    let client = network.client.clone();

    let (votes_tx, votes_rx) = mpsc::channel(256);
    let (validation, validation_rx) = mpsc::channel(VALIDATION_QUEUE);
    let (serving, serving_rx) = mpsc::channel(SERVING_QUEUE);
    let (done, done_rx) = mpsc::channel(VALIDATION_QUEUE + SERVING_QUEUE);
    let handler = workers::handler(pipeline.clone());
    let mut validators = workers::spawn(
        "validate",
        config.validation_workers,
        handler.clone(),
        validation_rx,
        done.clone(),
        metrics.clone(),
    )
    .map_err(StartError::Spawn)?;
    validators.extend(
        workers::spawn("serve-sync", SERVING_THREADS, handler, serving_rx, done, metrics.clone())
            .map_err(StartError::Spawn)?,
    );
    let queues = router::Queues { validation, serving };
    let mut background = vec![
        tokio::spawn(router::Router::new(pipeline.clone(), client.clone(), queues).run(
            network.events,
            done_rx,
            config.sync_interval,
        )),
        tokio::spawn(own_votes::publish(client.clone(), votes_rx)),
    ];
    if let Some(scheduler) = &scheduler {
        let sink = own_votes::OwnVotes { pipeline: pipeline.clone(), gossip: votes_tx };
        scheduler.start(Arc::new(sink)).map_err(StartError::Spawn)?;
    }
    let (rpc_addr, rpc) = match config.rpc {
        Some(addr) => {
            let api = crate::rpc::Rpc::new(pipeline.clone(), Some(client.clone()));
            let (bound, handle) = crate::rpc::serve(addr, api, config.rpc_config.clone())
                .await
                .map_err(|source| StartError::Serve { what: "JSON-RPC", addr, source })?;
            (Some(bound), Some(handle))
        }
        None => (None, None),
    };
    let metrics_addr = match config.metrics {
        Some(addr) => {
            let (bound, task) = crate::metrics::serve(addr, metrics.clone())
                .await
                .map_err(|source| StartError::Serve { what: "metrics", addr, source })?;
            background.push(task);
            Some(bound)
        }
        None => None,
    };
    tracing::info!(peer_id = %network.peer_id, addrs = ?network.listen_addrs, rpc = ?rpc_addr, metrics = ?metrics_addr, "node started");
    Ok(NodeHandle {
        peer_id: network.peer_id,
        listen_addrs: network.listen_addrs,
        rpc_addr,
        metrics_addr,
        pipeline,
        metrics,
        network: client,
        stop_network: Some(network.stop),
        event_loop: network.event_loop,
        rpc,
        background,
        validators,
        scheduler,
    })
}
