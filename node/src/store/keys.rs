//! Column families and key layouts. Integers are big-endian so that byte
//! order is numeric order and range scans need no decoding.

use poi_artifact::{ArtifactId, PublicKey, VoteId};

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

pub fn log_key(seq: u64, kind: u8, key: &[u8]) -> Vec<u8> {
    [&seq.to_be_bytes()[..], &[kind], key].concat()
}
