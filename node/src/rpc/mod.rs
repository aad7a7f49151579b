//! JSON-RPC 2.0 over HTTP and WebSocket (DESIGN §7), one port for both.
//! Bound to loopback unless the operator says otherwise; request size (from
//! the chain's artifact limit), batch size, connections, subscriptions, web
//! origins, and calls and bytes per connection, IP and node are limited
//! ([`server`], [`rate_limit`]); store work runs on at most
//! [`BLOCKING_CALLS`] threads at once, and a history page examines a bounded
//! number of rows. The only write a client can make is submitting an
//! artifact, and only one that passes the replay check is stored.

use std::sync::Arc;

use jsonrpsee::core::{async_trait, SubscriptionResult};
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::PendingSubscriptionSink;
use poi_artifact::json::VoteJson;
use poi_artifact::{ArtifactId, PublicKey};
use poi_rpc_api::error_code::REJECTED;
use poi_rpc_api::{
    HistoryFilter, HistoryPage, MinerTestView, NodeStatus, PeerInfo, PoiApiServer, RpcResult, SubmitResult, VerdictView,
};
use tokio::sync::{broadcast, Semaphore};

use crate::network::{NetworkClient, Topic};
use crate::pipeline::{IngestError, Pipeline, Source};
use crate::store::{HistoryError, HistoryQuery, VerdictRecord};

mod rate_limit;
mod server;
mod sockets;
pub use rate_limit::{Rate, RpcLimits};
pub use server::{max_request_bytes, serve, RpcConfig, HEADER_TIMEOUT, MAX_SOCKETS};

pub const MAX_BATCH: u32 = 20;
/// Calls doing store work at once; the rest wait their turn (their number
/// is bounded by connections, batches and rate limits).
pub const BLOCKING_CALLS: usize = 8;
pub const MAX_CONNECTIONS: u32 = 128;
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: u32 = 16;

const INVALID_PARAMS: i32 = -32602;
const INTERNAL: i32 = -32603;

fn view(record: VerdictRecord) -> VerdictView {
    VerdictView {
        artifact_id: record.artifact_id,
        miner: record.miner,
        seeding: record.seeding,
        status: record.status,
        is_final: record.is_final,
        counted_votes: record.counted_votes,
        voters: record.voters,
        equivocators: record.equivocators,
        received_at_ms: record.received_at_ms,
        updated_at_ms: record.updated_at_ms,
        evidence: record.evidence,
    }
}

pub struct Rpc {
    pipeline: Arc<Pipeline>,
    /// To gossip accepted artifacts; absent without networking.
    net: Option<NetworkClient>,
    blocking: Arc<Semaphore>,
}

impl Rpc {
    pub fn new(pipeline: Arc<Pipeline>, net: Option<NetworkClient>) -> Self {
        Self { pipeline, net, blocking: Arc::new(Semaphore::new(BLOCKING_CALLS)) }
    }

    /// Runs blocking store work off the async runtime, at most
    /// [`BLOCKING_CALLS`] at once.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Pipeline) -> Result<T, ErrorObjectOwned> + Send + 'static,
    ) -> RpcResult<T> {
        let permit = self.blocking.clone().acquire_owned().await.map_err(internal)?;
        let pipeline = self.pipeline.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&pipeline)
        })
        .await
        .map_err(internal)?
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
                // Stored already: a node that is stopping still answers.
                if let Err(err) = net.publish(Topic::Artifacts, bytes).await {
                    tracing::warn!(%err, "gossiping a submitted artifact");
                }
            }
        }
        Ok(SubmitResult { artifact_id: ingested.id.to_hex(), stored: ingested.new, verdict: view(ingested.verdict) })
    }

    async fn get_artifact(&self, artifact_id: String) -> RpcResult<Option<serde_json::Value>> {
        let id = parse_id(&artifact_id)?;
        let artifact = self.blocking(move |p| p.store().artifact(&id).map_err(internal)).await?;
        artifact.map(|a| serde_json::to_value(a.to_json()).map_err(internal)).transpose()
    }

    async fn get_verdict(&self, artifact_id: String) -> RpcResult<Option<VerdictView>> {
        let id = parse_id(&artifact_id)?;
        Ok(self.blocking(move |p| p.store().verdict(&id).map_err(internal)).await?.map(view))
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
        let cursor = filter
            .cursor
            .map(|c| hex::decode(c).map_err(|e| error(INVALID_PARAMS, format!("cursor: {e}"))))
            .transpose()?;
        let query = HistoryQuery {
            miner,
            validator,
            status: filter.status,
            from_ms: filter.from_ms,
            to_ms: filter.to_ms,
            cursor,
            limit: filter.limit.unwrap_or(100),
        };
        let page = self
            .blocking(move |p| {
                p.store().history(&query).map_err(|e| match e {
                    HistoryError::Cursor(_) => error(INVALID_PARAMS, e.to_string()),
                    HistoryError::Store(e) => internal(e),
                })
            })
            .await?;
        Ok(HistoryPage { rows: page.rows.into_iter().map(view).collect(), next_cursor: page.next.map(hex::encode) })
    }

    async fn miner_test(&self, miner: String) -> RpcResult<MinerTestView> {
        let key = PublicKey::from_hex(&miner).map_err(|e| error(INVALID_PARAMS, format!("miner: {e}")))?;
        let params = self.pipeline.spec().miner_test.clone();
        let test = {
            let params = params.clone();
            self.blocking(move |p| p.store().miner_test(&key, &params).map_err(internal)).await?
        };
        Ok(MinerTestView {
            miner: key.to_hex(),
            artifacts: test.artifacts,
            statistic: test.statistic,
            threshold: params.threshold(),
            flagged: test.flagged(&params),
            peak: test.peak,
            first_flagged_at: test.first_flagged_at,
            tilt: params.tilt,
            false_alarm_rate: params.false_alarm_rate,
            window: params.window,
        })
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
        let peers = net.peers().await.map_err(internal)?;
        Ok(peers.into_iter().map(|p| PeerInfo { peer_id: p.peer_id.to_string(), score: p.score }).collect())
    }

    async fn subscribe_verdicts(&self, pending: PendingSubscriptionSink) -> SubscriptionResult {
        let sink = pending.accept().await?;
        let mut verdicts = self.pipeline.subscribe();
        loop {
            match verdicts.recv().await {
                Ok(record) => {
                    let message = jsonrpsee::SubscriptionMessage::from_json(&view(record))?;
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
