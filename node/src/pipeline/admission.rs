//! The admission window: which new artifacts a node takes from miners and
//! peers, by the time their miner signed.

use std::time::Duration;

use crate::pipeline::IngestError;

/// How far past the admission window a relayed artifact may be before its
/// sender is penalised for it.
pub const RELAY_GRACE: Duration = Duration::from_secs(60);

pub(super) fn describe_age(age_ms: i64) -> String {
    if age_ms >= 0 {
        format!("{} s ago", age_ms / 1000)
    } else {
        format!("{} s in the future", -age_ms / 1000)
    }
}

/// Which new artifacts a node admits from miners and peers (RPC, gossip), by
/// the `created_at_ms` their miner signed, against this node's clock. It
/// stops an old artifact that was never published from being passed off as
/// new work, and a future-dated one from outliving the window. Catch-up sync
/// from a validator is exempt: a node that was away for longer than the
/// window must still converge, and what it pulls was admitted fresh by the
/// validator that logged it. Sync from any other peer is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// `None`: no window at all, past or future (a node replaying an
    /// archive, or test fixtures with fixed timestamps).
    pub max_age: Option<Duration>,
    pub max_ahead: Duration,
}

impl Admission {
    pub const ANY_AGE: Admission = Admission { max_age: None, max_ahead: Duration::MAX };

    pub(super) fn check(&self, created_at_ms: u64, now_ms: u64) -> Result<(), IngestError> {
        let Some(max_age) = self.max_age else { return Ok(()) };
        let age_ms = now_ms as i64 - created_at_ms.min(i64::MAX as u64) as i64;
        let (max_age_ms, max_ahead_ms) = (millis(max_age), millis(self.max_ahead));
        if age_ms > max_age_ms as i64 || -age_ms > max_ahead_ms as i64 {
            return Err(IngestError::OutsideWindow { age_ms, max_age_ms, max_ahead_ms });
        }
        Ok(())
    }
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().min(i64::MAX as u128) as u64
}
