//! Column families and key layouts. Integers are big-endian so that byte
//! order is numeric order and range scans need no decoding.

use poi_artifact::{ArtifactId, PublicKey, VoteId};

pub const CF_META: &str = "meta";
/// artifact id → canonical artifact bytes
pub const CF_ARTIFACTS: &str = "artifacts";
/// artifact id ‖ vote id → canonical vote bytes
pub const CF_VOTES: &str = "votes";
/// artifact id → verdict record (JSON)
pub const CF_VERDICTS: &str = "verdicts";
/// u64_be(received ms) ‖ artifact id → ()
pub const CF_BY_TIME: &str = "by_time";
/// miner key ‖ u64_be(received ms) ‖ artifact id → ()
pub const CF_BY_MINER: &str = "by_miner";

pub fn vote_key(artifact: &ArtifactId, vote: &VoteId) -> Vec<u8> {
    [&artifact.0[..], &vote.0[..]].concat()
}

pub fn by_time_key(ms: u64, id: &ArtifactId) -> Vec<u8> {
    [&ms.to_be_bytes()[..], &id.0[..]].concat()
}

pub fn by_miner_key(miner: &PublicKey, ms: u64, id: &ArtifactId) -> Vec<u8> {
    [&miner.0[..], &ms.to_be_bytes()[..], &id.0[..]].concat()
}
