//! The ledger on RocksDB (DESIGN §7): artifacts, votes and verdicts, with
//! big-endian index keys so that time and miner ranges are plain scans. Every
//! event is one atomic write batch; RocksDB's write-ahead log makes a write
//! that returned survive a crash of the process. The store persists what it
//! is given and decides nothing: verdicts are the pipeline's.

mod duties;
mod history;
mod keys;
mod log;
mod miner_test;

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use poi_artifact::{Artifact, ArtifactId, ChainId, PublicKey, Vote};
use poi_chain_spec::ChainSpec;
use poi_verifier::verdict::{Status, VerdictOutcome};
use poi_verifier::SeedingClass;
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use duties::{Duty, DutyClass};
pub use history::{History, HistoryError, HistoryQuery, MAX_EXAMINED, MAX_PAGE};
use keys::{
    by_miner_key, by_time_key, log_key, vote_key, CF_ARTIFACTS, CF_BY_MINER, CF_BY_MINER_STATUS, CF_BY_STATUS,
    CF_BY_TIME, CF_BY_VALIDATOR, CF_BY_VALIDATOR_STATUS, CF_DUTIES, CF_DUTY_INDEX, CF_LOG, CF_META, CF_MINER_EVIDENCE,
    CF_VERDICTS, CF_VOTES, LOG_ARTIFACT, LOG_VOTE,
};
pub use log::{LogEntry, LogPage, SyncCursor};

const META_CHAIN_ID: &[u8] = b"chain_id";
/// Which history indexes the store has built: 2 adds status and validator,
/// 3 miner and validator paired with status.
const META_INDEX_VERSION: &[u8] = b"index_version";
const INDEX_VERSION: u64 = 3;

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

pub struct Store {
    db: DB,
    /// The next log sequence number. Writers hold this lock across their
    /// existence check, numbering and batch, so the log has no gap that a
    /// peer paging through it could step over, and a duplicate is never
    /// written twice.
    writer: Mutex<u64>,
    /// Whether each batch is fsynced before it counts as written.
    writes: WriteOptions,
    /// Names this store's log: a data dir made anew (same node key, log
    /// restarting at 0) has another, so peers read it again from the start.
    log_epoch: u64,
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
            CF_BY_STATUS,
            CF_BY_VALIDATOR,
            CF_BY_MINER_STATUS,
            CF_BY_VALIDATOR_STATUS,
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
        let log_epoch = log::open_epoch(&db)?;
        let store = Self { db, writer: Mutex::new(next_seq), writes: WriteOptions::default(), log_epoch };
        let chain_id = spec.chain_id();
        match store.db.get_cf(store.cf(CF_META), META_CHAIN_ID)? {
            Some(found) if found != chain_id.0 => {
                return Err(StoreError::WrongChain { expected: chain_id, found: hex::encode(found) })
            }
            Some(_) => {}
            None => store.db.put_cf(store.cf(CF_META), META_CHAIN_ID, chain_id.0)?,
        }
        store.upgrade_indexes()?;
        Ok(store)
    }

    /// Builds the indexes a store written by an older version lacks.
    fn upgrade_indexes(&self) -> Result<(), StoreError> {
        let version = match self.db.get_cf(self.cf(CF_META), META_INDEX_VERSION)? {
            Some(bytes) => u64::from_be_bytes(
                bytes[..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt { what: "index version", detail: "not 8 bytes".into() })?,
            ),
            None => 1,
        };
        if version < INDEX_VERSION {
            let rebuilt = self.rebuild_history_indexes()?;
            if rebuilt > 0 {
                tracing::info!(verdicts = rebuilt, from_version = version, "built the history indexes");
            }
            self.db.put_cf(self.cf(CF_META), META_INDEX_VERSION, INDEX_VERSION.to_be_bytes())?;
        }
        Ok(())
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
        let mut next_seq = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
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
        self.batch_history_indexes(&mut batch, &id, None, verdict)?;
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
        let mut next_seq = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if self.db.get_pinned_cf(self.cf(CF_VOTES), &key)?.is_some() {
            return Ok(false);
        }
        let id = vote.body.artifact_id;
        let previous = self.verdict(&id)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_VOTES), &key, vote.encode());
        batch.put_cf(self.cf(CF_LOG), log_key(*next_seq, LOG_VOTE, &key), []);
        batch.put_cf(self.cf(CF_VERDICTS), id.0, serde_json::to_vec(verdict).expect("serialisable"));
        self.batch_history_indexes(&mut batch, &id, previous.as_ref(), verdict)?;
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
