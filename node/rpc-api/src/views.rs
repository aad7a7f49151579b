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
    /// A side holds more than half the chain's weight: the status never
    /// changes again, whatever later votes or equivocations say.
    #[serde(default, rename = "final")]
    pub is_final: bool,
    /// Ids of the votes that counted.
    pub counted_votes: Vec<String>,
    /// The validators whose votes counted.
    pub voters: Vec<String>,
    pub equivocators: Vec<String>,
    pub received_at_ms: u64,
    pub updated_at_ms: u64,
    /// The artifact's evidence for the per-miner test (unseeded and
    /// miner-seeded artifacts only): with `poi_minerTest`'s parameters a
    /// client recomputes the statistic from history rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<f64>,
}

/// The per-miner sequential test (DESIGN §9) over a miner's newest unseeded
/// and miner-seeded artifacts, in creation-time order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinerTestView {
    pub miner: String,
    /// Artifacts the statistic runs over (at most `window`).
    pub artifacts: u64,
    /// The CUSUM of the artifacts' evidence.
    pub statistic: f64,
    /// `ln(1 / false_alarm_rate)`.
    pub threshold: f64,
    /// Whether the statistic is at the threshold or above: an honest miner
    /// is flagged at any one time with probability at most
    /// `false_alarm_rate`.
    pub flagged: bool,
    /// The largest statistic over those artifacts.
    pub peak: f64,
    /// The 1-based artifact (of those) at which it first reached the
    /// threshold.
    pub first_flagged_at: Option<u64>,
    pub tilt: f64,
    pub false_alarm_rate: f64,
    pub window: u32,
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
