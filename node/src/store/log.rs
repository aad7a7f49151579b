//! The log peers page through to catch up (`/poi/sync/2`), and how far this
//! node has read each peer's. A log is named by its epoch, drawn when the
//! store is made: a peer that wipes its data dir keeps its key but restarts
//! its log at 0 under a new epoch, and a cursor into the old epoch is void.

use poi_artifact::sync::{SyncEntry, SyncResponse};
use rand::RngCore;
use rocksdb::{Direction, IteratorMode, DB};

use super::keys::{CF_ARTIFACTS, CF_LOG, CF_META, CF_VOTES, LOG_ARTIFACT, LOG_VOTE};
use super::{Store, StoreError};

const META_LOG_EPOCH: &[u8] = b"log_epoch";
const META_SYNC_PREFIX: &[u8] = b"sync/";

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
    pub epoch: u64,
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
        Self { epoch: page.epoch, entries, next: page.next, more: page.more }
    }
}

/// How far this node has read a peer's log. `epoch` is `None` for a cursor
/// stored before logs had epochs: it matches no epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCursor {
    pub epoch: Option<u64>,
    pub next: u64,
}

impl SyncCursor {
    /// Where to read a log of `epoch` from: this cursor if it is into that
    /// log, else its start.
    pub fn start_in(&self, epoch: u64) -> u64 {
        if self.epoch == Some(epoch) {
            self.next
        } else {
            0
        }
    }
}

/// The store's log epoch, drawn and saved when the store is new.
pub(super) fn open_epoch(db: &DB) -> Result<u64, StoreError> {
    let meta = db.cf_handle(CF_META).expect("opened with the store");
    if let Some(bytes) = db.get_pinned_cf(meta, META_LOG_EPOCH)? {
        return be_u64(&bytes, "log epoch");
    }
    let epoch = rand::thread_rng().next_u64();
    db.put_cf(meta, META_LOG_EPOCH, epoch.to_be_bytes())?;
    Ok(epoch)
}

fn be_u64(bytes: &[u8], what: &'static str) -> Result<u64, StoreError> {
    bytes.try_into().map(u64::from_be_bytes).map_err(|_| StoreError::Corrupt { what, detail: "not 8 bytes".into() })
}

impl Store {
    pub fn log_epoch(&self) -> u64 {
        self.log_epoch
    }

    /// Stored objects from log sequence `from` on, up to `max_entries` or
    /// about `max_bytes` (at least one entry, so a page always advances).
    pub fn log_page(&self, from: u64, max_entries: usize, max_bytes: usize) -> Result<LogPage, StoreError> {
        let mut page = LogPage { epoch: self.log_epoch, entries: Vec::new(), next: from, more: false };
        let mut bytes = 0;
        let start = from.to_be_bytes();
        for item in self.db.iterator_cf(self.cf(CF_LOG), IteratorMode::From(&start, Direction::Forward)) {
            let (key, _) = item?;
            if page.entries.len() == max_entries || (bytes >= max_bytes && !page.entries.is_empty()) {
                page.more = true;
                break;
            }
            let corrupt = |detail: &str| StoreError::Corrupt { what: "log", detail: detail.to_string() };
            let seq = be_u64(key.get(..8).ok_or_else(|| corrupt("short key"))?, "log key")?;
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

    /// How far this node has read a peer's log (at 0 in no epoch: not at all).
    pub fn sync_cursor(&self, peer: &[u8]) -> Result<SyncCursor, StoreError> {
        let key = [META_SYNC_PREFIX, peer].concat();
        let Some(bytes) = self.db.get_pinned_cf(self.cf(CF_META), key)? else { return Ok(SyncCursor::default()) };
        match bytes.len() {
            // Written before logs had epochs.
            8 => Ok(SyncCursor { epoch: None, next: be_u64(&bytes, "sync cursor")? }),
            16 => Ok(SyncCursor {
                epoch: Some(be_u64(&bytes[..8], "sync cursor")?),
                next: be_u64(&bytes[8..], "sync cursor")?,
            }),
            _ => Err(StoreError::Corrupt { what: "sync cursor", detail: format!("{} bytes", bytes.len()) }),
        }
    }

    pub fn set_sync_cursor(&self, peer: &[u8], epoch: u64, next: u64) -> Result<(), StoreError> {
        let value = [epoch.to_be_bytes(), next.to_be_bytes()].concat();
        Ok(self.db.put_cf_opt(self.cf(CF_META), [META_SYNC_PREFIX, peer].concat(), value, &self.writes)?)
    }
}
