//! The catch-up sync protocol's messages (`/poi/sync/2` over libp2p
//! request-response, CBOR-encoded): a peer asks for its log from a sequence
//! number and gets a page of canonical artifact and vote bytes, with the
//! epoch that names the log (a peer whose data dir was made anew has another
//! and is read again from 0).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The first log sequence number wanted.
    pub from: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncEntry {
    Artifact(#[serde(with = "serde_bytes")] Vec<u8>),
    Vote(#[serde(with = "serde_bytes")] Vec<u8>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub epoch: u64,
    pub entries: Vec<SyncEntry>,
    pub next: u64,
    pub more: bool,
}
