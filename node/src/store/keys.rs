//! Column families and key layouts. Integers are big-endian so that byte
//! order is numeric order and range scans need no decoding.

use poi_artifact::{ArtifactId, Hash32, PublicKey, VoteId};
use poi_verifier::verdict::Status;

pub const CF_META: &str = "meta";
/// artifact id → canonical artifact bytes
pub const CF_ARTIFACTS: &str = "artifacts";
/// artifact id ‖ validator key ‖ vote id → canonical vote bytes: a prefix
/// scan counts one validator's votes on an artifact.
pub const CF_VOTES: &str = "votes";
/// artifact id → verdict record (JSON)
pub const CF_VERDICTS: &str = "verdicts";
/// u64_be(received ms) ‖ artifact id → ()
pub const CF_BY_TIME: &str = "by_time";
/// miner key ‖ u64_be(received ms) ‖ artifact id → ()
pub const CF_BY_MINER: &str = "by_miner";
/// u8 status ‖ u64_be(received ms) ‖ artifact id → (): moved when the
/// verdict's status changes.
pub const CF_BY_STATUS: &str = "by_status";
/// validator key ‖ u64_be(received ms) ‖ artifact id → (): one per
/// validator whose vote counts in the verdict.
pub const CF_BY_VALIDATOR: &str = "by_validator";
/// miner key ‖ u8 status ‖ u64_be(received ms) ‖ artifact id → (): a
/// miner's artifacts of one status; moved with the status.
pub const CF_BY_MINER_STATUS: &str = "by_miner_status";
/// validator key ‖ u8 status ‖ u64_be(received ms) ‖ artifact id → (): the
/// artifacts of one status this validator's vote counts on.
pub const CF_BY_VALIDATOR_STATUS: &str = "by_validator_status";
/// miner key ‖ u64_be(created ms) ‖ artifact id → f64_le evidence: the
/// per-miner test's input, for unseeded and miner-seeded artifacts, in the
/// order every node agrees on (the artifacts' own times).
pub const CF_MINER_EVIDENCE: &str = "miner_evidence";
/// u64_be(local sequence) ‖ kind byte ‖ key in its family → (): the order in
/// which this node stored things, which peers page through to catch up.
pub const CF_LOG: &str = "log";
/// u8 class ‖ miner key ‖ u64_be(queued ms) ‖ artifact id → u64_le(vote
/// time): this validator's full checks still owed, in the order the
/// scheduler takes them (disputes first, then a miner at a time).
pub const CF_DUTIES: &str = "duties";
/// artifact id → its key in `duties`.
pub const CF_DUTY_INDEX: &str = "duty_index";

pub const LOG_ARTIFACT: u8 = 0;
pub const LOG_VOTE: u8 = 1;

pub fn vote_key(artifact: &ArtifactId, validator: &PublicKey, vote: &VoteId) -> Vec<u8> {
    [&artifact.0[..], &validator.0[..], &vote.0[..]].concat()
}

pub fn by_time_key(ms: u64, id: &ArtifactId) -> Vec<u8> {
    [&ms.to_be_bytes()[..], &id.0[..]].concat()
}

pub fn by_miner_key(miner: &PublicKey, ms: u64, id: &ArtifactId) -> Vec<u8> {
    [&miner.0[..], &ms.to_be_bytes()[..], &id.0[..]].concat()
}

/// A status as its index prefix; the numbering is on disk, so it never
/// changes.
pub fn status_prefix(status: Status) -> [u8; 1] {
    [match status {
        Status::AcceptedReplayOnly => 0,
        Status::Accepted => 1,
        Status::Disputed => 2,
        Status::Rejected => 3,
    }]
}

pub fn by_status_key(status: Status, ms: u64, id: &ArtifactId) -> Vec<u8> {
    [&status_prefix(status)[..], &ms.to_be_bytes()[..], &id.0[..]].concat()
}

pub fn by_validator_key(validator: &PublicKey, ms: u64, id: &ArtifactId) -> Vec<u8> {
    [&validator.0[..], &ms.to_be_bytes()[..], &id.0[..]].concat()
}

pub fn by_key_and_status_key(key: &PublicKey, status: Status, ms: u64, id: &ArtifactId) -> Vec<u8> {
    [&key.0[..], &status_prefix(status)[..], &ms.to_be_bytes()[..], &id.0[..]].concat()
}

/// The time and artifact id of an index key past its prefix (40 bytes).
pub fn indexed_key(rest: &[u8]) -> (u64, ArtifactId) {
    let time = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
    (time, Hash32(rest[8..40].try_into().expect("32 bytes")))
}

pub fn log_key(seq: u64, kind: u8, key: &[u8]) -> Vec<u8> {
    [&seq.to_be_bytes()[..], &[kind], key].concat()
}
