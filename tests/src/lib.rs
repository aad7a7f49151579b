//! The test kit of poi's integration tests (`tests/it`): nodes on loopback
//! with fixture settings, a running [`Testnet`] with partitions, a
//! misbehaving peer ([`Outsider`]), the typed RPC client, and polling with a
//! deadline instead of sleeps.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, PeerId, Swarm};
use poi_artifact::{ArtifactId, VoteFigures};
use poi_chain_spec::{devnet_keypair, ChainSpec};
use poi_node::config::NodeConfig;
use poi_node::network::{join_as_outsider, Behaviour, BehaviourEvent, SyncRequest, SyncResponse, Topic, Topics};
use poi_node::pipeline::Admission;
use poi_node::service::{start, NodeHandle};
use poi_rpc_api::{PoiApiClient, SubmitResult};
use tokio::sync::{mpsc, oneshot};

/// Devnet validator `index` on loopback, its data under `dir`, joined to
/// `bootnodes`, asking peers for what it missed every 300 ms. Fixture
/// artifacts carry fixed, long-past creation times, so the admission window
/// is off.
pub fn node_config<'a>(
    spec: &ChainSpec,
    index: u32,
    dir: &Path,
    bootnodes: impl IntoIterator<Item = &'a NodeHandle>,
) -> NodeConfig {
    let mut config = NodeConfig::new(spec.clone(), devnet_keypair(index), dir.join(format!("node{index}")));
    config.admission = Admission::ANY_AGE;
    config.bootnodes = bootnodes.into_iter().map(NodeHandle::dial_addr).collect();
    config.sync_interval = Duration::from_millis(300);
    config
}

/// Starts validator `index` with [`node_config`].
pub async fn node(spec: &ChainSpec, index: u32, dir: &Path, bootnodes: &[&NodeHandle]) -> NodeHandle {
    start(node_config(spec, index, dir, bootnodes.iter().copied())).await.expect("node starts")
}

/// The node's typed JSON-RPC client over HTTP.
/// The figures of a vote that found nothing wrong, under `spec`'s own
/// profile (a vote under any other does not count).
pub fn clean_figures(spec: &ChainSpec) -> VoteFigures {
    VoteFigures {
        distance: 0.0,
        match_ratio: 1.0,
        surprisal_z: 0.0,
        profile_id: spec.numerics.label(),
        reason: String::new(),
    }
}

pub fn client(node: &NodeHandle) -> HttpClient {
    HttpClientBuilder::default().build(format!("http://{}", node.rpc_addr.expect("RPC on"))).expect("valid URL")
}

/// Submits canonical artifact bytes over JSON-RPC; panics if refused.
pub async fn submit(node: &NodeHandle, bytes: &[u8]) -> SubmitResult {
    client(node).submit_artifact(hex::encode(bytes)).await.expect("submitted")
}

pub fn stored(node: &NodeHandle, id: &ArtifactId) -> bool {
    node.pipeline.store().has_artifact(id).expect("store readable")
}

/// Polls `done` every 50 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

/// A plain HTTP GET, as a scraper sends it; the whole response.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connects");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sends");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("reads");
    response
}

/// Devnet validators `0..n` in one process, each joined to all before it,
/// with data under one temporary directory.
pub struct Testnet {
    pub spec: ChainSpec,
    pub nodes: Vec<NodeHandle>,
    dir: tempfile::TempDir,
}

impl Testnet {
    pub async fn start(spec: ChainSpec, n: u32) -> Self {
        Self::start_with(spec, n, |_, _| {}).await
    }

    /// As [`Self::start`], with `configure` changing each node's config.
    pub async fn start_with(spec: ChainSpec, n: u32, mut configure: impl FnMut(u32, &mut NodeConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut nodes: Vec<NodeHandle> = Vec::new();
        for index in 0..n {
            let mut config = node_config(&spec, index, dir.path(), &nodes);
            configure(index, &mut config);
            nodes.push(start(config).await.expect("node starts"));
        }
        Self { spec, nodes, dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Blocks every connection between the two groups (node indexes) and
    /// waits until none is left; false if one still is after 10 s.
    pub async fn partition(&self, left: &[usize], right: &[usize]) -> bool {
        for (near, far) in [(left, right), (right, left)] {
            for &n in near {
                for &f in far {
                    self.nodes[n].network.block(self.nodes[f].peer_id).await.expect("network running");
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !self.connected_across(left, right).await {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn connected_across(&self, left: &[usize], right: &[usize]) -> bool {
        for &n in left {
            let peers = self.nodes[n].network.peers().await.expect("network running");
            if peers.iter().any(|p| right.iter().any(|&f| p.peer_id == self.nodes[f].peer_id)) {
                return true;
            }
        }
        false
    }

    /// Lifts every block and has each node of `left` dial its partner in
    /// `right`, so the halves reconnect at once.
    pub async fn heal(&self, left: &[usize], right: &[usize]) {
        for node in &self.nodes {
            for other in &self.nodes {
                node.network.unblock(other.peer_id).await.expect("network running");
            }
        }
        for (&n, &f) in left.iter().zip(right) {
            self.nodes[n].network.dial(self.nodes[f].dial_addr()).await.expect("dialled");
        }
    }

    pub async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
    }
}

/// A misbehaving peer: a throwaway identity outside the validator set,
/// joined to one node's gossip topics, publishing whatever a test hands it,
/// asking the node for sync pages, and answering the node's sync requests
/// with whatever its `serve` function gives (by default: nothing, the
/// request fails). Its swarm runs in a task of its own until the `Outsider`
/// is dropped.
pub struct Outsider {
    pub peer_id: PeerId,
    publish: mpsc::UnboundedSender<Outgoing>,
    task: tokio::task::JoinHandle<()>,
}

/// What an outsider answers a sync request from `from`; `None` drops it.
pub type Serve = Box<dyn FnMut(u64) -> Option<SyncResponse> + Send>;

type SyncReply = oneshot::Sender<Result<SyncResponse, String>>;

enum Outgoing {
    Message(Topic, Vec<u8>),
    Flush(oneshot::Sender<()>),
    Sync(u64, SyncReply),
}

impl Outsider {
    /// Joins `node`; panics if its artifacts topic is not seen within 20 s.
    pub async fn join(spec: &ChainSpec, node: &NodeHandle) -> Self {
        Self::join_serving(spec, node, Box::new(|_| None)).await
    }

    /// As [`Self::join`], answering the node's sync requests with `serve`.
    pub async fn join_serving(spec: &ChainSpec, node: &NodeHandle, mut serve: Serve) -> Self {
        let (mut swarm, topics) =
            join_as_outsider(spec, node.dial_addr(), Duration::from_secs(20)).await.expect("outsider joins");
        let (peer_id, target) = (*swarm.local_peer_id(), node.peer_id);
        let (publish, mut outgoing) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut asked: HashMap<OutboundRequestId, SyncReply> = HashMap::new();
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => on_sync_event(&mut swarm, event, &mut asked, &mut serve),
                    Some(next) = outgoing.recv() => match next {
                        Outgoing::Message(topic, data) => publish_soon(&mut swarm, &topics, topic, data).await,
                        Outgoing::Flush(done) => drop(done.send(())),
                        Outgoing::Sync(from, reply) => {
                            let id = swarm.behaviour_mut().sync.send_request(&target, SyncRequest { from });
                            asked.insert(id, reply);
                        }
                    },
                }
            }
        });
        Self { peer_id, publish, task }
    }

    /// Queues `data` for gossip on `topic`, in order.
    pub fn publish(&self, topic: Topic, data: Vec<u8>) {
        self.publish.send(Outgoing::Message(topic, data)).expect("outsider running");
    }

    /// Waits until everything queued so far was handed to gossipsub.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        self.publish.send(Outgoing::Flush(done)).expect("outsider running");
        flushed.await.expect("outsider running");
    }

    /// Asks the node for its log from `from`: the page, or why none came.
    pub async fn request_sync(&self, from: u64) -> Result<SyncResponse, String> {
        let (reply, answer) = oneshot::channel();
        self.publish.send(Outgoing::Sync(from, reply)).expect("outsider running");
        answer.await.expect("outsider running")
    }

    /// `node`'s gossip score for this peer now (0 before it has one).
    pub async fn score_at(&self, node: &NodeHandle) -> f64 {
        let peers = node.network.peers().await.expect("network running");
        peers.iter().find(|p| p.peer_id == self.peer_id).and_then(|p| p.score).unwrap_or(0.0)
    }

    /// Whether `node` has a connection to this peer now.
    pub async fn connected_to(&self, node: &NodeHandle) -> bool {
        node.network.peers().await.expect("network running").iter().any(|p| p.peer_id == self.peer_id)
    }
}

impl Drop for Outsider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn on_sync_event(
    swarm: &mut Swarm<Behaviour>,
    event: SwarmEvent<BehaviourEvent>,
    asked: &mut HashMap<OutboundRequestId, SyncReply>,
    serve: &mut Serve,
) {
    let SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) = event else { return };
    match event {
        request_response::Event::Message { message, .. } => match message {
            request_response::Message::Request { request, channel, .. } => {
                if let Some(page) = serve(request.from) {
                    let _ = swarm.behaviour_mut().sync.send_response(channel, page);
                }
            }
            request_response::Message::Response { request_id, response } => {
                if let Some(reply) = asked.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
        },
        request_response::Event::OutboundFailure { request_id, error, .. } => {
            if let Some(reply) = asked.remove(&request_id) {
                let _ = reply.send(Err(error.to_string()));
            }
        }
        _ => {}
    }
}

/// Publishes once the target's subscription is known (until then gossipsub
/// finds no peer for the topic: retried for up to 5 s), then lets the swarm
/// send it before the next message.
async fn publish_soon(swarm: &mut Swarm<Behaviour>, topics: &Topics, topic: Topic, data: Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match swarm.behaviour_mut().gossipsub.publish(topics.get(topic).clone(), data.clone()) {
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) if Instant::now() < deadline => {
                let _ = tokio::time::timeout(Duration::from_millis(50), swarm.select_next_some()).await;
            }
            _ => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(5), swarm.select_next_some()).await;
}
