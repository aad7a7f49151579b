//! What a node's JSON-RPC answers carry. Keys and ids are lowercase hex.

use serde::{Deserialize, Serialize};

use crate::{SeedingClass, Status};

/// What the ledger says about one artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictView {
    pub artifact_id: String,
    pub miner: String,
    /// Who fixed the run seed: `requester-bound`, `miner-seeded` (fully
    /// checked by every validator) or `unseeded` (likewise; surprisal only
    /// at the replay check).
    pub seeding: SeedingClass,
    pub status: Status,
    /// Ids of the votes that counted.
    pub counted_votes: Vec<String>,
    /// The validators whose votes counted.
    pub voters: Vec<String>,
    pub equivocators: Vec<String>,
    pub received_at_ms: u64,
    pub updated_at_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmitResult {
    pub artifact_id: String,
    /// False when the artifact was already stored.
    pub stored: bool,
    pub verdict: VerdictView,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryFilter {
    pub miner: Option<String>,
    /// Only artifacts with a counted vote from this validator.
    pub validator: Option<String>,
    pub status: Option<Status>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub cursor: Option<String>,
    /// At most 1000; 100 when absent.
    pub limit: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryPage {
    pub rows: Vec<VerdictView>,
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

/// A connected peer as the node's network layer sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerInfo {
    pub peer_id: String,
    /// Gossipsub's score; below the graylist threshold the peer is ignored.
    pub score: Option<f64>,
}
