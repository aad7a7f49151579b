//! The JSON-RPC interface of a poi node (DESIGN §7): one trait that the node's
//! server implements and from which jsonrpsee generates the typed client that
//! the devnet, the benchmarks, the tests and other programs call
//! (`PoiApiClient` on any jsonrpsee HTTP or WebSocket client), with the view
//! types both sides exchange. No storage or model here: what a node stores is
//! converted to these views at its edge.

use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::proc_macros::rpc;
use jsonrpsee::types::ErrorObjectOwned;
use poi_artifact::json::VoteJson;

mod views;

pub use poi_verifier::verdict::Status;
pub use poi_verifier::SeedingClass;
pub use views::{HistoryFilter, HistoryPage, MinerTestView, NodeStatus, PeerInfo, SubmitResult, VerdictView};

/// Error codes a node answers with beside JSON-RPC's own (-32602 invalid
/// params, -32603 internal).
pub mod error_code {
    /// The artifact failed the replay check or the node's admission rules;
    /// the message says which rule.
    pub const REJECTED: i32 = 1;
    /// The call was refused by a rate limit; retry later.
    pub const RATE_LIMITED: i32 = -32029;
}

pub type RpcResult<T> = Result<T, ErrorObjectOwned>;

#[rpc(server, client, namespace = "poi")]
pub trait PoiApi {
    /// Canonical artifact bytes as hex. Runs the replay check; stores the
    /// artifact only if it passes.
    #[method(name = "submitArtifact")]
    async fn submit_artifact(&self, artifact_hex: String) -> RpcResult<SubmitResult>;
    /// The artifact's JSON view.
    #[method(name = "getArtifact")]
    async fn get_artifact(&self, artifact_id: String) -> RpcResult<Option<serde_json::Value>>;
    #[method(name = "getVerdict")]
    async fn get_verdict(&self, artifact_id: String) -> RpcResult<Option<VerdictView>>;
    /// Every stored signed vote about the artifact, so a client can recompute
    /// the verdict itself.
    #[method(name = "getVotes")]
    async fn get_votes(&self, artifact_id: String) -> RpcResult<Vec<VoteJson>>;
    #[method(name = "verdictHistory")]
    async fn verdict_history(&self, filter: Option<HistoryFilter>) -> RpcResult<HistoryPage>;
    /// The per-miner sequential test of a miner (hex public key) over its
    /// newest unseeded and miner-seeded artifacts on this node.
    #[method(name = "minerTest")]
    async fn miner_test(&self, miner: String) -> RpcResult<MinerTestView>;
    #[method(name = "status")]
    async fn status(&self) -> RpcResult<NodeStatus>;
    /// Connected peers and their gossip scores.
    #[method(name = "peers")]
    async fn peers(&self) -> RpcResult<Vec<PeerInfo>>;
    /// Every verdict as it changes on this node.
    #[subscription(name = "subscribeVerdicts" => "verdict", unsubscribe = "unsubscribeVerdicts", item = VerdictView)]
    async fn subscribe_verdicts(&self) -> SubscriptionResult;
}
