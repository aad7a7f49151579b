//! Verdict history (`poi_verdictHistory`): one index per filter (time,
//! miner, validator, status) and per pairing of a key with a status (miner
//! and status, validator and status), each keyed `prefix ‖ u64_be(received
//! ms) ‖ artifact id`, so a page is a reverse range scan of one index. A
//! query scans the index that serves most of its filters and checks the
//! rest on each record (only validator with miner is left to checking);
//! every call examines at most [`MAX_EXAMINED`] keys and hands back a
//! cursor where it stopped, so no filter costs more than that per call
//! however rare its matches are.

use poi_artifact::{ArtifactId, PublicKey};
use poi_verifier::verdict::Status;
use rocksdb::{Direction, IteratorMode, WriteBatch};
use thiserror::Error;

use super::keys::{
    by_key_and_status_key, by_status_key, by_validator_key, indexed_key, status_prefix, CF_BY_MINER,
    CF_BY_MINER_STATUS, CF_BY_STATUS, CF_BY_TIME, CF_BY_VALIDATOR, CF_BY_VALIDATOR_STATUS, CF_VERDICTS,
};
use super::{Store, StoreError, VerdictRecord};

/// The most rows one history page returns.
pub const MAX_PAGE: usize = 1000;
/// The most index keys one history call reads, matching or not.
pub const MAX_EXAMINED: usize = 10 * MAX_PAGE;

/// Filters and paging for `history`; the cursor is opaque to clients.
#[derive(Clone, Debug, Default)]
pub struct HistoryQuery {
    pub miner: Option<PublicKey>,
    /// Only artifacts this validator has a counted vote on.
    pub validator: Option<PublicKey>,
    pub status: Option<Status>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub cursor: Option<Vec<u8>>,
    pub limit: usize,
}

/// One page of history, newest first.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub rows: Vec<VerdictRecord>,
    /// Where the next page starts; `None` at the end. A page may hold fewer
    /// than `limit` rows and still have a next one: the call stopped after
    /// [`MAX_EXAMINED`] keys.
    pub next: Option<Vec<u8>>,
    /// Index keys read.
    pub examined: usize,
}

#[derive(Debug, Error)]
pub enum HistoryError {
    #[error("cursor: {0}")]
    Cursor(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl HistoryQuery {
    /// The index that serves the query, and the prefix of its keys: the
    /// one covering most filters, a validator's before a miner's (a
    /// validator votes on a sampled few).
    fn index(&self) -> (&'static str, Vec<u8>) {
        let with_status = |key: &PublicKey, status: Status| [&key.0[..], &status_prefix(status)[..]].concat();
        match (&self.validator, &self.miner, self.status) {
            (Some(validator), _, Some(status)) => (CF_BY_VALIDATOR_STATUS, with_status(validator, status)),
            (Some(validator), _, None) => (CF_BY_VALIDATOR, validator.0.to_vec()),
            (None, Some(miner), Some(status)) => (CF_BY_MINER_STATUS, with_status(miner, status)),
            (None, Some(miner), None) => (CF_BY_MINER, miner.0.to_vec()),
            (None, None, Some(status)) => (CF_BY_STATUS, status_prefix(status).to_vec()),
            (None, None, None) => (CF_BY_TIME, Vec::new()),
        }
    }

    fn matches(&self, record: &VerdictRecord) -> bool {
        self.status.is_none_or(|s| s == record.status)
            && self.validator.is_none_or(|v| record.voters.contains(&v.to_hex()))
            && self.miner.is_none_or(|m| record.miner == m.to_hex())
    }
}

impl Store {
    /// Verdicts newest first, filtered, one page.
    pub fn history(&self, query: &HistoryQuery) -> Result<History, HistoryError> {
        let (cf, prefix) = query.index();
        let key_len = prefix.len() + 40;
        // Scans run backwards from an inclusive upper key.
        let upper = match (&query.cursor, query.to_ms) {
            (Some(cursor), _) if cursor.len() != key_len || !cursor.starts_with(&prefix) => {
                return Err(HistoryError::Cursor("not one this filter handed out"))
            }
            (Some(cursor), _) => cursor.clone(),
            (None, Some(to)) => [&prefix[..], &to.to_be_bytes(), &[0xff; 32]].concat(),
            (None, None) => [&prefix[..], &[0xff; 40]].concat(),
        };
        let limit = query.limit.clamp(1, MAX_PAGE);
        let mut page = History::default();
        for item in self.db.iterator_cf(self.cf(cf), IteratorMode::From(&upper, Direction::Reverse)) {
            let (key, _) = item.map_err(StoreError::from)?;
            if !key.starts_with(&prefix) || key.len() != key_len {
                break;
            }
            let (time, id) = indexed_key(&key[prefix.len()..]);
            if query.from_ms.is_some_and(|from| time < from) {
                break;
            }
            if page.rows.len() == limit || page.examined == MAX_EXAMINED {
                page.next = Some(key.to_vec());
                break;
            }
            page.examined += 1;
            let Some(record) = self.verdict(&id)? else { continue };
            if query.matches(&record) {
                page.rows.push(record);
            }
        }
        Ok(page)
    }

    /// Adds to `batch` the changes to the indexes that move with a verdict
    /// (status, validators, and their pairings with a status) from
    /// `previous` (none for a new artifact) to `record`.
    pub(super) fn batch_history_indexes(
        &self,
        batch: &mut WriteBatch,
        id: &ArtifactId,
        previous: Option<&VerdictRecord>,
        record: &VerdictRecord,
    ) -> Result<(), StoreError> {
        let before = previous.map(|p| verdict_index_keys(id, p)).transpose()?.unwrap_or_default();
        let after = verdict_index_keys(id, record)?;
        for (cf, key) in before.iter().filter(|entry| !after.contains(entry)) {
            batch.delete_cf(self.cf(cf), key);
        }
        for (cf, key) in after.iter().filter(|entry| !before.contains(entry)) {
            batch.put_cf(self.cf(cf), key, []);
        }
        Ok(())
    }

    /// Builds the indexes that move with a verdict for a store written
    /// before (some of) them existed, from its verdicts, in batches.
    pub(super) fn rebuild_history_indexes(&self) -> Result<u64, StoreError> {
        let mut batch = WriteBatch::default();
        let mut count = 0;
        for item in self.db.iterator_cf(self.cf(CF_VERDICTS), IteratorMode::Start) {
            let (key, value) = item?;
            let id =
                poi_artifact::Hash32(key[..].try_into().map_err(|_| StoreError::Corrupt {
                    what: "verdict",
                    detail: "key is not an artifact id".into(),
                })?);
            let record: VerdictRecord = serde_json::from_slice(&value)
                .map_err(|e| StoreError::Corrupt { what: "verdict", detail: e.to_string() })?;
            self.batch_history_indexes(&mut batch, &id, None, &record)?;
            count += 1;
            if batch.len() >= 10_000 {
                self.db.write(std::mem::take(&mut batch))?;
            }
        }
        self.db.write(batch)?;
        Ok(count)
    }
}

/// Every key of the indexes that move with a verdict, for `record`: a few
/// per counted voter, so a linear search of the list is cheap.
fn verdict_index_keys(id: &ArtifactId, record: &VerdictRecord) -> Result<Vec<(&'static str, Vec<u8>)>, StoreError> {
    let (at, status) = (record.received_at_ms, record.status);
    let miner = record_key(&record.miner)?;
    let mut keys = vec![
        (CF_BY_STATUS, by_status_key(status, at, id)),
        (CF_BY_MINER_STATUS, by_key_and_status_key(&miner, status, at, id)),
    ];
    for voter in &record.voters {
        let voter = record_key(voter)?;
        keys.push((CF_BY_VALIDATOR, by_validator_key(&voter, at, id)));
        keys.push((CF_BY_VALIDATOR_STATUS, by_key_and_status_key(&voter, status, at, id)));
    }
    Ok(keys)
}

/// A key a verdict record holds in hex (its miner, a voter).
fn record_key(hex: &str) -> Result<PublicKey, StoreError> {
    PublicKey::from_hex(hex).map_err(|detail| StoreError::Corrupt { what: "verdict key", detail })
}
