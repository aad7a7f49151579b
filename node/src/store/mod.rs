//! The ledger on RocksDB (DESIGN §7): artifacts, votes and verdicts, with
//! big-endian index keys so that time and miner ranges are plain scans. Every
//! event is one atomic write batch; RocksDB's write-ahead log makes a write
//! that returned survive a crash of the process. The store persists what it
//! is given and decides nothing: verdicts are the pipeline's.

mod duties;
mod keys;
mod miner_test;

use std::path::Path;
use std::sync::Mutex;

use poi_artifact::sync::{SyncEntry, SyncResponse};
use poi_artifact::{Artifact, ArtifactId, ChainId, PublicKey, Vote};
use poi_chain_spec::ChainSpec;
use poi_verifier::verdict::{Status, VerdictOutcome};
use poi_verifier::SeedingClass;
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use duties::{Duty, DutyClass};
use keys::{
    by_miner_key, by_time_key, log_key, vote_key, CF_ARTIFACTS, CF_BY_MINER, CF_BY_TIME, CF_DUTIES, CF_DUTY_INDEX,
    CF_LOG, CF_META, CF_MINER_EVIDENCE, CF_VERDICTS, CF_VOTES, LOG_ARTIFACT, LOG_VOTE,
};

const META_CHAIN_ID: &[u8] = b"chain_id";
const META_SYNC_PREFIX: &[u8] = b"sync/";
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

/// What the ledger says about one artifact, as stored (JSON in the
/// `verdicts` column family). RPC serves it as `poi_rpc_api::VerdictView`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictRecord {
    pub artifact_id: String,
    pub miner: String,
    /// Who fixed the run seed (requester-bound, miner-seeded, unseeded).
    pub seeding: SeedingClass,
    pub status: Status,
    /// A side holds more than half the chain's weight: the status never
    /// changes again (`poi_verifier::verdict`).
    #[serde(default, rename = "final")]
    pub is_final: bool,
    pub counted_votes: Vec<String>,
    /// The validators whose votes counted.
    pub voters: Vec<String>,
    pub equivocators: Vec<String>,
    pub received_at_ms: u64,
    pub updated_at_ms: u64,
    /// The artifact's evidence for the per-miner test
    /// (`poi_verifier::miner_test`): unseeded and miner-seeded artifacts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<f64>,
}

/// Filters and paging for `history`; the cursor is opaque to clients.
#[derive(Clone, Debug, Default)]
pub struct HistoryQuery {
    pub miner: Option<poi_artifact::PublicKey>,
    /// Only artifacts this validator has a counted vote on.
    pub validator: Option<poi_artifact::PublicKey>,
    pub status: Option<Status>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub cursor: Option<Vec<u8>>,
    pub limit: usize,
}

/// One stored object in the order this node stored it, as canonical bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEntry {
    Artifact(Vec<u8>),
    Vote(Vec<u8>),
}

impl LogEntry {
    pub fn len(&self) -> usize {
        match self {
            Self::Artifact(bytes) | Self::Vote(bytes) => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A page of the log: entries from a sequence number on, and where the next
/// page starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogPage {
    pub entries: Vec<LogEntry>,
    pub next: u64,
    pub more: bool,
}

impl From<LogPage> for SyncResponse {
    fn from(page: LogPage) -> Self {
        let entries = page
            .entries
            .into_iter()
            .map(|entry| match entry {
                LogEntry::Artifact(bytes) => SyncEntry::Artifact(bytes),
                LogEntry::Vote(bytes) => SyncEntry::Vote(bytes),
            })
            .collect();
        Self { entries, next: page.next, more: page.more }
    }
}

pub struct Store {
    db: DB,
    /// The next log sequence number. Writers hold this lock across their
    /// existence check, numbering and batch, so the log has no gap that a
    /// peer paging through it could step over, and a duplicate is never
    /// written twice.
    writer: Mutex<u64>,
    /// Whether each batch is fsynced before it counts as written.
    writes: WriteOptions,
}

impl Store {
    pub fn open(path: &Path, spec: ChainSpec) -> Result<Self, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = [
            CF_META,
            CF_ARTIFACTS,
            CF_VOTES,
            CF_VERDICTS,
            CF_BY_TIME,
            CF_BY_MINER,
            CF_MINER_EVIDENCE,
            CF_LOG,
            CF_DUTIES,
            CF_DUTY_INDEX,
        ]
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, path, families)?;
        let next_seq = {
            let cf = db.cf_handle(CF_LOG).expect("opened above");
            match db.iterator_cf(cf, IteratorMode::End).next().transpose()? {
                Some((key, _)) => u64::from_be_bytes(key[..8].try_into().expect("log keys start with 8 bytes")) + 1,
                None => 0,
            }
        };
        let store = Self { db, writer: Mutex::new(next_seq), writes: WriteOptions::default() };
        let chain_id = spec.chain_id();
        match store.db.get_cf(store.cf(CF_META), META_CHAIN_ID)? {
            Some(found) if found != chain_id.0 => {
                return Err(StoreError::WrongChain { expected: chain_id, found: hex::encode(found) })
            }
            Some(_) => {}
            None => store.db.put_cf(store.cf(CF_META), META_CHAIN_ID, chain_id.0)?,
        }
        Ok(store)
    }

    /// With `sync`, every batch (one per stored artifact or vote) is fsynced
    /// to the write-ahead log before the write returns, so what was
    /// acknowledged also survives a power loss or kernel crash. Without it a
    /// killed process still loses nothing (the log is in the OS's page cache),
    /// and writes cost no disk round trip: `poi-lab bench store` measures both.
    pub fn with_sync_writes(mut self, sync: bool) -> Self {
        self.writes.set_sync(sync);
        self
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("every column family is opened")
    }

    /// Stores a checked artifact with its verdict, its time and miner index
    /// entries (at the verdict's `received_at_ms`), a log entry and the full
    /// check it makes this validator owe, in one batch; `false` if it was
    /// already there (nothing is rewritten).
    pub fn put_artifact(
        &self,
        artifact: &Artifact,
        verdict: &VerdictRecord,
        duty: Option<&Duty>,
    ) -> Result<bool, StoreError> {
        let id = artifact.id();
        let received_at_ms = verdict.received_at_ms;
        let mut next_seq = self.writer.lock().expect("writer lock");
        if self.has_artifact(&id)? {
            return Ok(false);
        }
        let miner = artifact.body.miner;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_ARTIFACTS), id.0, artifact.encode());
        batch.put_cf(self.cf(CF_BY_TIME), by_time_key(received_at_ms, &id), []);
        batch.put_cf(self.cf(CF_BY_MINER), by_miner_key(&miner, received_at_ms, &id), []);
        if let Some(evidence) = verdict.evidence {
            let key = by_miner_key(&miner, artifact.body.created_at_ms, &id);
            batch.put_cf(self.cf(CF_MINER_EVIDENCE), key, evidence.to_le_bytes());
        }
        batch.put_cf(self.cf(CF_LOG), log_key(*next_seq, LOG_ARTIFACT, &id.0), []);
        batch.put_cf(self.cf(CF_VERDICTS), id.0, serde_json::to_vec(verdict).expect("serialisable"));
        if let Some(duty) = duty {
            self.batch_duty(&mut batch, duty)?;
        }
        self.db.write_opt(batch, &self.writes)?;
        *next_seq += 1;
        Ok(true)
    }

    /// Stores a checked vote on a stored artifact with a log entry, the
    /// artifact's new verdict and the full check the vote makes this
    /// validator owe, in one batch; `false` if the vote was already there
    /// (nothing is rewritten).
    pub fn put_vote(&self, vote: &Vote, verdict: &VerdictRecord, duty: Option<&Duty>) -> Result<bool, StoreError> {
        self.write_vote(vote, verdict, |batch| duty.map_or(Ok(()), |duty| self.batch_duty(batch, duty)), &self.writes)
    }

    /// Stores this validator's own vote as `put_vote` does, deletes the duty
    /// it discharges, and fsyncs the batch whatever `--sync-writes` says:
    /// once it returns, a restart knows this node voted, so the vote may
    /// leave the node.
    pub fn put_own_vote(&self, vote: &Vote, verdict: &VerdictRecord) -> Result<bool, StoreError> {
        let mut durable = WriteOptions::default();
        durable.set_sync(true);
        let id = vote.body.artifact_id;
        self.write_vote(vote, verdict, |batch| self.batch_discharge(batch, &id), &durable)
    }

    fn write_vote(
        &self,
        vote: &Vote,
        verdict: &VerdictRecord,
        extra: impl FnOnce(&mut WriteBatch) -> Result<(), StoreError>,
        options: &WriteOptions,
    ) -> Result<bool, StoreError> {
        let key = vote_key(&vote.body.artifact_id, &vote.body.validator, &vote.id());
        let mut next_seq = self.writer.lock().expect("writer lock");
        if self.db.get_pinned_cf(self.cf(CF_VOTES), &key)?.is_some() {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_VOTES), &key, vote.encode());
        batch.put_cf(self.cf(CF_LOG), log_key(*next_seq, LOG_VOTE, &key), []);
        batch.put_cf(self.cf(CF_VERDICTS), vote.body.artifact_id.0, serde_json::to_vec(verdict).expect("serialisable"));
        extra(&mut batch)?;
        self.db.write_opt(batch, options)?;
        *next_seq += 1;
        Ok(true)
    }

    /// One validator's stored votes on an artifact (at most two: the first
    /// and one conflicting, as the pipeline admits them).
    pub fn votes_by(&self, artifact_id: &ArtifactId, validator: &PublicKey) -> Result<Vec<Vote>, StoreError> {
        self.votes_with_prefix(&[&artifact_id.0[..], &validator.0[..]].concat())
    }

    pub fn has_artifact(&self, id: &ArtifactId) -> Result<bool, StoreError> {
        Ok(self.db.get_pinned_cf(self.cf(CF_ARTIFACTS), id.0)?.is_some())
    }

    /// The artifact's canonical bytes as stored.
    pub fn artifact_bytes(&self, id: &ArtifactId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_ARTIFACTS), id.0)?)
    }

    pub fn artifact(&self, id: &ArtifactId) -> Result<Option<Artifact>, StoreError> {
        let Some(bytes) = self.artifact_bytes(id)? else { return Ok(None) };
        Artifact::decode(&bytes, bytes.len())
            .map(Some)
            .map_err(|e| StoreError::Corrupt { what: "artifact", detail: e.to_string() })
    }

    /// Every stored vote on an artifact: at most two per validator of the
    /// chain, so the list is bounded by the validator set.
    pub fn votes(&self, artifact_id: &ArtifactId) -> Result<Vec<Vote>, StoreError> {
        self.votes_with_prefix(&artifact_id.0)
    }

    fn votes_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vote>, StoreError> {
        let mut votes = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_VOTES), IteratorMode::From(prefix, Direction::Forward)) {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
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
            let status_matches = query.status.is_none_or(|s| s == record.status);
            let validator_matches = query.validator.is_none_or(|v| record.voters.contains(&v.to_hex()));
            if status_matches && validator_matches {
                rows.push(record);
            }
        }
        Ok((rows, None))
    }

    /// Stored objects from log sequence `from` on, up to `max_entries` or
    /// about `max_bytes` (at least one entry, so a page always advances).
    pub fn log_page(&self, from: u64, max_entries: usize, max_bytes: usize) -> Result<LogPage, StoreError> {
        let mut page = LogPage { entries: Vec::new(), next: from, more: false };
        let mut bytes = 0;
        let start = from.to_be_bytes();
        for item in self.db.iterator_cf(self.cf(CF_LOG), IteratorMode::From(&start, Direction::Forward)) {
            let (key, _) = item?;
            if page.entries.len() == max_entries || (bytes >= max_bytes && !page.entries.is_empty()) {
                page.more = true;
                break;
            }
            let corrupt = |detail: &str| StoreError::Corrupt { what: "log", detail: detail.to_string() };
            let seq = u64::from_be_bytes(key.get(..8).ok_or_else(|| corrupt("short key"))?.try_into().expect("8"));
            let (family, make): (&str, fn(Vec<u8>) -> LogEntry) = match key.get(8) {
                Some(&LOG_ARTIFACT) => (CF_ARTIFACTS, LogEntry::Artifact),
                Some(&LOG_VOTE) => (CF_VOTES, LogEntry::Vote),
                _ => return Err(corrupt("unknown kind")),
            };
            let value = self.db.get_cf(self.cf(family), &key[9..])?.ok_or_else(|| corrupt("dangling entry"))?;
            bytes += value.len();
            page.entries.push(make(value));
            page.next = seq + 1;
        }
        Ok(page)
    }

    /// How far this node has read a peer's log (0: not at all).
    pub fn sync_cursor(&self, peer: &[u8]) -> Result<u64, StoreError> {
        let key = [META_SYNC_PREFIX, peer].concat();
        Ok(match self.db.get_pinned_cf(self.cf(CF_META), key)? {
            Some(bytes) => u64::from_be_bytes(
                bytes[..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt { what: "sync cursor", detail: "not 8 bytes".into() })?,
            ),
            None => 0,
        })
    }

    pub fn set_sync_cursor(&self, peer: &[u8], next: u64) -> Result<(), StoreError> {
        Ok(self.db.put_cf_opt(self.cf(CF_META), [META_SYNC_PREFIX, peer].concat(), next.to_be_bytes(), &self.writes)?)
    }

    pub fn artifact_count_estimate(&self) -> Result<u64, StoreError> {
        Ok(self.db.property_int_value_cf(self.cf(CF_ARTIFACTS), "rocksdb.estimate-num-keys")?.unwrap_or(0))
    }
}

impl VerdictRecord {
    /// The record of `outcome`, the verdict rule's answer over `votes`.
    pub fn new(
        id: &ArtifactId,
        miner: &PublicKey,
        seeding: SeedingClass,
        outcome: &VerdictOutcome,
        votes: &[Vote],
        received_at_ms: u64,
        updated_at_ms: u64,
    ) -> Self {
        let voters = votes
            .iter()
            .filter(|v| outcome.counted.contains(&v.id().to_hex()))
            .map(|v| v.body.validator.to_hex())
            .collect();
        Self {
            artifact_id: id.to_hex(),
            miner: miner.to_hex(),
            seeding,
            status: outcome.status,
            is_final: outcome.is_final,
            counted_votes: outcome.counted.clone(),
            voters,
            equivocators: outcome.equivocators.clone(),
            received_at_ms,
            updated_at_ms,
            evidence: None,
        }
    }

    /// The same record carrying the artifact's per-miner evidence.
    pub fn with_evidence(mut self, evidence: Option<f64>) -> Self {
        self.evidence = evidence;
        self
    }

    pub fn miner(&self) -> Result<PublicKey, StoreError> {
        PublicKey::from_hex(&self.miner).map_err(|detail| StoreError::Corrupt { what: "verdict", detail })
    }
}
