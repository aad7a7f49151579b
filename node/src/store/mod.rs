//! The ledger on RocksDB (DESIGN §7): artifacts, votes and verdicts, with
//! big-endian index keys so that time and miner ranges are plain scans. Every
//! event is one atomic write batch; RocksDB's write-ahead log makes a write
//! that returned survive a crash of the process.

mod keys;

use std::path::Path;

use poi_artifact::{Artifact, ArtifactId, ChainId, Vote};
use poi_chain_spec::ChainSpec;
use poi_verifier::verdict::{verdict, Status, VerdictOutcome};
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use keys::{
    by_miner_key, by_time_key, vote_key, CF_ARTIFACTS, CF_BY_MINER, CF_BY_TIME, CF_META, CF_VERDICTS, CF_VOTES,
};

const META_CHAIN_ID: &[u8] = b"chain_id";
/// The most rows one history page returns.
pub const MAX_PAGE: usize = 1000;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("data dir belongs to chain {found}, this node runs chain {expected}")]
    WrongChain { expected: ChainId, found: String },
    #[error("stored record {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

/// What the ledger says about one artifact, as stored and served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictRecord {
    pub artifact_id: String,
    pub miner: String,
    pub status: String,
    pub counted_votes: Vec<String>,
    pub equivocators: Vec<String>,
    pub received_at_ms: u64,
    pub updated_at_ms: u64,
}

/// Filters and paging for `history`; the cursor is opaque to clients.
#[derive(Clone, Debug, Default)]
pub struct HistoryQuery {
    pub miner: Option<poi_artifact::PublicKey>,
    pub status: Option<Status>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub cursor: Option<Vec<u8>>,
    pub limit: usize,
}

pub struct Store {
    db: DB,
    spec: ChainSpec,
}

impl Store {
    pub fn open(path: &Path, spec: ChainSpec) -> Result<Self, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = [CF_META, CF_ARTIFACTS, CF_VOTES, CF_VERDICTS, CF_BY_TIME, CF_BY_MINER]
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, path, families)?;
        let store = Self { db, spec };
        let chain_id = store.spec.chain_id();
        match store.db.get_cf(store.cf(CF_META), META_CHAIN_ID)? {
            Some(found) if found != chain_id.0 => {
                return Err(StoreError::WrongChain { expected: chain_id, found: hex::encode(found) })
            }
            Some(_) => {}
            None => store.db.put_cf(store.cf(CF_META), META_CHAIN_ID, chain_id.0)?,
        }
        Ok(store)
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("every column family is opened")
    }

    /// Stores a checked artifact; `false` if it was already there (nothing
    /// is rewritten).
    pub fn put_artifact(&self, artifact: &Artifact, received_at_ms: u64) -> Result<bool, StoreError> {
        let id = artifact.id();
        if self.db.get_pinned_cf(self.cf(CF_ARTIFACTS), id.0)?.is_some() {
            return Ok(false);
        }
        let miner = artifact.body.miner;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_ARTIFACTS), id.0, artifact.encode());
        batch.put_cf(self.cf(CF_BY_TIME), by_time_key(received_at_ms, &id), []);
        batch.put_cf(self.cf(CF_BY_MINER), by_miner_key(&miner, received_at_ms, &id), []);
        // Votes may have arrived before the artifact.
        let outcome = verdict(&self.spec, &id, &self.votes(&id)?);
        let record = record(&id, &miner, &outcome, received_at_ms, received_at_ms);
        batch.put_cf(self.cf(CF_VERDICTS), id.0, serde_json::to_vec(&record).expect("serialisable"));
        self.db.write(batch)?;
        Ok(true)
    }

    /// Stores a vote (the caller checked its signature) and recomputes the
    /// verdict; `None` when the vote was already stored.
    pub fn put_vote(&self, vote: &Vote, now_ms: u64) -> Result<Option<VerdictRecord>, StoreError> {
        let artifact_id = vote.body.artifact_id;
        let key = vote_key(&artifact_id, &vote.id());
        if self.db.get_pinned_cf(self.cf(CF_VOTES), &key)?.is_some() {
            return Ok(None);
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_VOTES), &key, vote.encode());
        let mut updated = None;
        if let Some(previous) = self.verdict(&artifact_id)? {
            let mut votes = self.votes(&artifact_id)?;
            votes.push(vote.clone());
            let outcome = verdict(&self.spec, &artifact_id, &votes);
            let miner = poi_artifact::PublicKey::from_hex(&previous.miner)
                .map_err(|detail| StoreError::Corrupt { what: "verdict", detail })?;
            let record = record(&artifact_id, &miner, &outcome, previous.received_at_ms, now_ms);
            batch.put_cf(self.cf(CF_VERDICTS), artifact_id.0, serde_json::to_vec(&record).expect("serialisable"));
            updated = Some(record);
        }
        self.db.write(batch)?;
        Ok(updated.or(Some(VerdictRecord::pending(&artifact_id))))
    }

    pub fn artifact(&self, id: &ArtifactId) -> Result<Option<Artifact>, StoreError> {
        let Some(bytes) = self.db.get_pinned_cf(self.cf(CF_ARTIFACTS), id.0)? else { return Ok(None) };
        Artifact::decode(&bytes, bytes.len())
            .map(Some)
            .map_err(|e| StoreError::Corrupt { what: "artifact", detail: e.to_string() })
    }

    pub fn votes(&self, artifact_id: &ArtifactId) -> Result<Vec<Vote>, StoreError> {
        let mut votes = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(CF_VOTES), artifact_id.0) {
            let (key, value) = item?;
            if !key.starts_with(&artifact_id.0) {
                break;
            }
            votes.push(Vote::decode(&value).map_err(|e| StoreError::Corrupt { what: "vote", detail: e.to_string() })?);
        }
        Ok(votes)
    }

    pub fn verdict(&self, id: &ArtifactId) -> Result<Option<VerdictRecord>, StoreError> {
        let Some(bytes) = self.db.get_pinned_cf(self.cf(CF_VERDICTS), id.0)? else { return Ok(None) };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt { what: "verdict", detail: e.to_string() })
    }

    /// Verdicts newest first, filtered; returns the page and the cursor of
    /// the next page (None at the end).
    pub fn history(&self, query: &HistoryQuery) -> Result<(Vec<VerdictRecord>, Option<Vec<u8>>), StoreError> {
        let (cf, prefix): (&str, Vec<u8>) = match &query.miner {
            Some(miner) => (CF_BY_MINER, miner.0.to_vec()),
            None => (CF_BY_TIME, Vec::new()),
        };
        // Scans run backwards from an inclusive upper key.
        let upper = match (&query.cursor, query.to_ms) {
            (Some(cursor), _) => cursor.clone(),
            (None, Some(to)) => [&prefix[..], &to.to_be_bytes(), &[0xff; 32]].concat(),
            (None, None) => [&prefix[..], &[0xff; 40]].concat(),
        };
        let mut rows = Vec::new();
        let limit = query.limit.clamp(1, MAX_PAGE);
        for item in self.db.iterator_cf(self.cf(cf), IteratorMode::From(&upper, Direction::Reverse)) {
            let (key, _) = item?;
            if !key.starts_with(&prefix) || key.len() != prefix.len() + 40 {
                break;
            }
            let rest = &key[prefix.len()..];
            let time = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
            if query.from_ms.is_some_and(|from| time < from) {
                break;
            }
            if rows.len() == limit {
                return Ok((rows, Some(key.to_vec())));
            }
            let id = poi_artifact::Hash32(rest[8..].try_into().expect("32 bytes"));
            let Some(record) = self.verdict(&id)? else { continue };
            if query.status.is_none_or(|s| s.as_str() == record.status) {
                rows.push(record);
            }
        }
        Ok((rows, None))
    }

    pub fn artifact_count_estimate(&self) -> Result<u64, StoreError> {
        Ok(self.db.property_int_value_cf(self.cf(CF_ARTIFACTS), "rocksdb.estimate-num-keys")?.unwrap_or(0))
    }
}

impl VerdictRecord {
    /// A vote about an artifact this node has not seen yet.
    fn pending(id: &ArtifactId) -> Self {
        Self {
            artifact_id: id.to_hex(),
            miner: String::new(),
            status: "unknown-artifact".into(),
            counted_votes: Vec::new(),
            equivocators: Vec::new(),
            received_at_ms: 0,
            updated_at_ms: 0,
        }
    }
}

fn record(
    id: &ArtifactId,
    miner: &poi_artifact::PublicKey,
    outcome: &VerdictOutcome,
    received_at_ms: u64,
    updated_at_ms: u64,
) -> VerdictRecord {
    VerdictRecord {
        artifact_id: id.to_hex(),
        miner: miner.to_hex(),
        status: outcome.status.as_str().to_string(),
        counted_votes: outcome.counted.clone(),
        equivocators: outcome.equivocators.clone(),
        received_at_ms,
        updated_at_ms,
    }
}
