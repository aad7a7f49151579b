//! JSON-RPC 2.0 over HTTP and WebSocket (DESIGN §7), one port for both.
//! Bound to loopback unless the operator says otherwise; request size, batch
//! size, connections, subscriptions and call rate are limited. The only write a client
//! can make is submitting an artifact, and only one that passes the replay
//! check is stored.

use std::net::SocketAddr;
use std::sync::Arc;

use jsonrpsee::core::{async_trait, RpcResult, SubscriptionResult};
use jsonrpsee::proc_macros::rpc;
use jsonrpsee::server::middleware::rpc::RpcServiceBuilder;
use jsonrpsee::server::{BatchRequestConfig, Server, ServerHandle};
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::PendingSubscriptionSink;
use poi_artifact::json::VoteJson;
use poi_artifact::{ArtifactId, PublicKey};
use poi_verifier::verdict::Status;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::pipeline::{IngestError, Pipeline, Source};
use crate::service::{Command, PeerInfo};
use crate::store::{HistoryQuery, VerdictRecord};

mod rate_limit;
pub use rate_limit::{RpcLimits, RATE_LIMITED};

/// Requests above this are refused before parsing (an artifact is at most
/// the chain's `max_artifact_bytes`, twice that in hex).
pub const MAX_REQUEST_BYTES: u32 = 4 << 20;
pub const MAX_BATCH: u32 = 20;
pub const MAX_CONNECTIONS: u32 = 128;
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: u32 = 16;

const INVALID_PARAMS: i32 = -32602;
const REJECTED: i32 = 1;
const INTERNAL: i32 = -32603;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmitResult {
    pub artifact_id: String,
    /// False when the artifact was already stored.
    pub stored: bool,
    pub verdict: VerdictRecord,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryFilter {
    pub miner: Option<String>,
    /// Only artifacts with a counted vote from this validator.
    pub validator: Option<String>,
    pub status: Option<String>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryPage {
    pub rows: Vec<VerdictRecord>,
    /// Pass back as `cursor` for the next page; absent at the end.
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub chain: String,
    pub chain_id: String,
    pub version: String,
    pub artifacts_estimate: u64,
    /// Connected peers; absent when the node runs without networking.
    pub peers: Option<usize>,
}

#[rpc(server, namespace = "poi")]
pub trait PoiApi {
    /// Canonical artifact bytes as hex. Runs the replay check; stores the
    /// artifact only if it passes.
    #[method(name = "submitArtifact")]
    async fn submit_artifact(&self, artifact_hex: String) -> RpcResult<SubmitResult>;
    /// The artifact's JSON view.
    #[method(name = "getArtifact")]
    async fn get_artifact(&self, artifact_id: String) -> RpcResult<Option<serde_json::Value>>;
    #[method(name = "getVerdict")]
    async fn get_verdict(&self, artifact_id: String) -> RpcResult<Option<VerdictRecord>>;
    /// Every stored signed vote about the artifact, so a client can recompute
    /// the verdict itself.
    #[method(name = "getVotes")]
    async fn get_votes(&self, artifact_id: String) -> RpcResult<Vec<VoteJson>>;
    #[method(name = "verdictHistory")]
    async fn verdict_history(&self, filter: Option<HistoryFilter>) -> RpcResult<HistoryPage>;
    #[method(name = "status")]
    async fn status(&self) -> RpcResult<NodeStatus>;
    /// Connected peers and their gossip scores.
    #[method(name = "peers")]
    async fn peers(&self) -> RpcResult<Vec<PeerInfo>>;
    #[subscription(name = "subscribeVerdicts" => "verdict", unsubscribe = "unsubscribeVerdicts", item = VerdictRecord)]
    async fn subscribe_verdicts(&self) -> SubscriptionResult;
}

pub struct Rpc {
    pipeline: Arc<Pipeline>,
    /// The event loop, to gossip accepted artifacts; absent without networking.
    net: Option<mpsc::Sender<Command>>,
}

impl Rpc {
    pub fn new(pipeline: Arc<Pipeline>, net: Option<mpsc::Sender<Command>>) -> Self {
        Self { pipeline, net }
    }

    /// Runs blocking store work off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Pipeline) -> Result<T, ErrorObjectOwned> + Send + 'static,
    ) -> RpcResult<T> {
        let pipeline = self.pipeline.clone();
        tokio::task::spawn_blocking(move || work(&pipeline)).await.map_err(internal)?
    }
}

fn error(code: i32, message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, message.into(), None::<()>)
}

fn internal(e: impl std::fmt::Display) -> ErrorObjectOwned {
    error(INTERNAL, e.to_string())
}

fn parse_id(text: &str) -> RpcResult<ArtifactId> {
    ArtifactId::from_hex(text).map_err(|e| error(INVALID_PARAMS, format!("artifact id: {e}")))
}

#[async_trait]
impl PoiApiServer for Rpc {
    async fn submit_artifact(&self, artifact_hex: String) -> RpcResult<SubmitResult> {
        let bytes = hex::decode(artifact_hex.trim()).map_err(|e| error(INVALID_PARAMS, format!("not hex: {e}")))?;
        let submitted = bytes.clone();
        let ingested = self
            .blocking(move |pipeline| {
                pipeline.ingest_artifact(&submitted, Source::Rpc).map_err(|e| match e {
                    IngestError::Store(e) => internal(e),
                    rejected => error(REJECTED, rejected.to_string()),
                })
            })
            .await?;
        if ingested.new {
            if let Some(net) = &self.net {
                let _ = net.send(Command::Publish { votes: false, bytes }).await;
            }
        }
        Ok(SubmitResult { artifact_id: ingested.id.to_hex(), stored: ingested.new, verdict: ingested.verdict })
    }

    async fn get_artifact(&self, artifact_id: String) -> RpcResult<Option<serde_json::Value>> {
        let id = parse_id(&artifact_id)?;
        let artifact = self.blocking(move |p| p.store().artifact(&id).map_err(internal)).await?;
        artifact.map(|a| serde_json::to_value(a.to_json()).map_err(internal)).transpose()
    }

    async fn get_verdict(&self, artifact_id: String) -> RpcResult<Option<VerdictRecord>> {
        let id = parse_id(&artifact_id)?;
        self.blocking(move |p| p.store().verdict(&id).map_err(internal)).await
    }

    async fn get_votes(&self, artifact_id: String) -> RpcResult<Vec<VoteJson>> {
        let id = parse_id(&artifact_id)?;
        let votes = self.blocking(move |p| p.store().votes(&id).map_err(internal)).await?;
        Ok(votes.iter().map(VoteJson::from).collect())
    }

    async fn verdict_history(&self, filter: Option<HistoryFilter>) -> RpcResult<HistoryPage> {
        let filter = filter.unwrap_or_default();
        let key = |field: &str, text: Option<String>| {
            text.map(|t| PublicKey::from_hex(&t).map_err(|e| error(INVALID_PARAMS, format!("{field}: {e}"))))
                .transpose()
        };
        let miner = key("miner", filter.miner)?;
        let validator = key("validator", filter.validator)?;
        let status = filter
            .status
            .map(|s| {
                [Status::AcceptedReplayOnly, Status::Accepted, Status::Disputed, Status::Rejected]
                    .into_iter()
                    .find(|known| known.as_str() == s)
                    .ok_or_else(|| error(INVALID_PARAMS, format!("unknown status {s:?}")))
            })
            .transpose()?;
        let cursor = filter
            .cursor
            .map(|c| hex::decode(c).map_err(|e| error(INVALID_PARAMS, format!("cursor: {e}"))))
            .transpose()?;
        let query = HistoryQuery {
            miner,
            validator,
            status,
            from_ms: filter.from_ms,
            to_ms: filter.to_ms,
            cursor,
            limit: filter.limit.unwrap_or(100),
        };
        let (rows, next) = self.blocking(move |p| p.store().history(&query).map_err(internal)).await?;
        Ok(HistoryPage { rows, next_cursor: next.map(hex::encode) })
    }

    async fn status(&self) -> RpcResult<NodeStatus> {
        let spec = self.pipeline.spec();
        let peers = match &self.net {
            Some(_) => Some(self.peers().await?.len()),
            None => None,
        };
        Ok(NodeStatus {
            chain: spec.name.clone(),
            chain_id: spec.chain_id().to_hex(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            artifacts_estimate: self.pipeline.store().artifact_count_estimate().map_err(internal)?,
            peers,
        })
    }

    async fn peers(&self) -> RpcResult<Vec<PeerInfo>> {
        let Some(net) = &self.net else { return Ok(Vec::new()) };
        let (reply, answer) = oneshot::channel();
        net.send(Command::Peers(reply)).await.map_err(|_| internal("the node is stopping"))?;
        answer.await.map_err(|_| internal("the node is stopping"))
    }

    async fn subscribe_verdicts(&self, pending: PendingSubscriptionSink) -> SubscriptionResult {
        let sink = pending.accept().await?;
        let mut verdicts = self.pipeline.subscribe();
        loop {
            match verdicts.recv().await {
                Ok(record) => {
                    let message = jsonrpsee::SubscriptionMessage::from_json(&record)?;
                    if sink.send(message).await.is_err() {
                        return Ok(());
                    }
                }
                // A slow subscriber misses verdicts rather than holding memory.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }
}

/// Starts the server; the handle stops it.
pub async fn serve(addr: SocketAddr, rpc: Rpc, limits: RpcLimits) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let layer = rate_limit::RateLimitLayer::new(limits, rpc.pipeline.metrics().clone());
    let server = Server::builder()
        .set_rpc_middleware(RpcServiceBuilder::new().layer_fn(move |service| layer.wrap(service)))
        .max_request_body_size(MAX_REQUEST_BYTES)
        .max_response_body_size(MAX_REQUEST_BYTES * 4)
        .max_connections(MAX_CONNECTIONS)
        .max_subscriptions_per_connection(MAX_SUBSCRIPTIONS_PER_CONNECTION)
        .set_batch_request_config(BatchRequestConfig::Limit(MAX_BATCH))
        .build(addr)
        .await?;
    let local = server.local_addr()?;
    Ok((local, server.start(rpc.into_rpc())))
}
