//! This validator's owed full checks, durable: a duty is written in the same
//! batch as the artifact or vote that created it and deleted in the same
//! fsynced batch as the vote that discharges it, so a crash loses none and
//! never leaves one that was already voted on.

use std::collections::HashSet;
use std::sync::PoisonError;

use poi_artifact::{ArtifactId, Hash32, PublicKey};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::keys::{CF_DUTIES, CF_DUTY_INDEX};
use super::{Store, StoreError};

/// Why the check is owed; disputes come first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DutyClass {
    /// A selected validator rejected the artifact: the whole set decides.
    Dispute = 0,
    /// This validator's VRF selected it.
    Selected = 1,
}

impl DutyClass {
    pub const BY_PRIORITY: [DutyClass; 2] = [Self::Dispute, Self::Selected];

    fn from_byte(byte: u8) -> Option<Self> {
        Self::BY_PRIORITY.into_iter().find(|class| *class as u8 == byte)
    }
}

/// One owed check. `vote_at_ms` is fixed when the duty is made, so the vote
/// it ends in has the same body however often the check is run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duty {
    pub artifact_id: ArtifactId,
    pub miner: PublicKey,
    pub class: DutyClass,
    pub queued_at_ms: u64,
    pub vote_at_ms: u64,
}

impl Duty {
    fn key(&self) -> Vec<u8> {
        [&[self.class as u8][..], &self.miner.0, &self.queued_at_ms.to_be_bytes(), &self.artifact_id.0].concat()
    }

    fn parse(key: &[u8], value: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |detail: &str| StoreError::Corrupt { what: "duty", detail: detail.into() };
        if key.len() != 73 || value.len() != 8 {
            return Err(corrupt("wrong length"));
        }
        Ok(Self {
            class: DutyClass::from_byte(key[0]).ok_or_else(|| corrupt("unknown class"))?,
            miner: PublicKey(key[1..33].try_into().expect("32 bytes")),
            queued_at_ms: u64::from_be_bytes(key[33..41].try_into().expect("8 bytes")),
            artifact_id: Hash32(key[41..73].try_into().expect("32 bytes")),
            vote_at_ms: u64::from_le_bytes(value.try_into().expect("8 bytes")),
        })
    }
}

impl Store {
    /// Adds `duty` to `batch`, unless one of the same or higher priority is
    /// owed for the artifact; a dispute replaces a selected check.
    pub(super) fn batch_duty(&self, batch: &mut WriteBatch, duty: &Duty) -> Result<(), StoreError> {
        if let Some(owed) = self.duty(&duty.artifact_id)? {
            if owed.class <= duty.class {
                return Ok(());
            }
            batch.delete_cf(self.cf(CF_DUTIES), owed.key());
        }
        let key = duty.key();
        batch.put_cf(self.cf(CF_DUTIES), &key, duty.vote_at_ms.to_le_bytes());
        batch.put_cf(self.cf(CF_DUTY_INDEX), duty.artifact_id.0, key);
        Ok(())
    }

    pub(super) fn batch_discharge(&self, batch: &mut WriteBatch, artifact_id: &ArtifactId) -> Result<(), StoreError> {
        if let Some(owed) = self.duty(artifact_id)? {
            batch.delete_cf(self.cf(CF_DUTIES), owed.key());
            batch.delete_cf(self.cf(CF_DUTY_INDEX), artifact_id.0);
        }
        Ok(())
    }

    /// The check owed for `artifact_id`, if any.
    pub fn duty(&self, artifact_id: &ArtifactId) -> Result<Option<Duty>, StoreError> {
        let Some(key) = self.db.get_cf(self.cf(CF_DUTY_INDEX), artifact_id.0)? else { return Ok(None) };
        let value = self
            .db
            .get_cf(self.cf(CF_DUTIES), &key)?
            .ok_or_else(|| StoreError::Corrupt { what: "duty", detail: "index without duty".into() })?;
        Duty::parse(&key, &value).map(Some)
    }

    /// Drops a duty that no longer needs a vote (its verdict is final).
    pub fn discharge_duty(&self, artifact_id: &ArtifactId) -> Result<(), StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = WriteBatch::default();
        self.batch_discharge(&mut batch, artifact_id)?;
        Ok(self.db.write_opt(batch, &self.writes)?)
    }

    /// The next owed check of `class` in round-robin order over miners: the
    /// oldest of the first miner after `after` that has one not in `skip`
    /// (wrapping around), so one miner's flood waits behind every other
    /// miner's next artifact. Reads past at most `skip.len()` entries.
    pub fn next_duty(
        &self,
        class: DutyClass,
        after: Option<&PublicKey>,
        skip: &HashSet<ArtifactId>,
    ) -> Result<Option<Duty>, StoreError> {
        let prefix = [class as u8];
        let resume = match after {
            Some(miner) => [&prefix[..], &miner.0, &[0xff; 40]].concat(),
            None => prefix.to_vec(),
        };
        for start in [resume, prefix.to_vec()] {
            for item in self.db.iterator_cf(self.cf(CF_DUTIES), IteratorMode::From(&start, Direction::Forward)) {
                let (key, value) = item?;
                if key.first() != Some(&prefix[0]) {
                    break;
                }
                let duty = Duty::parse(&key, &value)?;
                if !skip.contains(&duty.artifact_id) {
                    return Ok(Some(duty));
                }
            }
        }
        Ok(None)
    }

    /// How many checks of `class` are owed, counted up to `limit`.
    pub fn duty_count(&self, class: DutyClass, limit: usize) -> Result<usize, StoreError> {
        let prefix = [class as u8];
        let mut count = 0;
        for item in self.db.iterator_cf(self.cf(CF_DUTIES), IteratorMode::From(&prefix, Direction::Forward)) {
            let (key, _) = item?;
            if key.first() != Some(&prefix[0]) || count == limit {
                break;
            }
            count += 1;
        }
        Ok(count)
    }
}
