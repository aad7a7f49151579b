//! Catch-up sync rules, both ways, apart from the tasks that run them.
//!
//! Serving ([`ServeGate`]): a peer has one request in flight at a time and a
//! rate of its own; peers outside the validator set share one node-wide rate
//! besides, so many identities get no more pages than one. A peer that asks
//! out of turn earns a strike; enough strikes in a minute and it is banned.
//!
//! Taking a page ([`take_page`]): a page must be from the log the cursor
//! points into (else the peer's data dir was made anew: read it again from
//! 0) and must make progress; entries are checked and stored one by one,
//! and the cursor moves past the page only when every entry was taken or
//! refused on its merits: a local store error leaves it where it was, and an
//! invalid entry gets the peer banned.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use poi_artifact::PublicKey;
use poi_chain_spec::ChainSpec;

use crate::network::{SyncEntry, SyncResponse, Topic, SYNC_PAGE_ENTRIES};
use crate::pipeline::{IngestError, Pipeline};
use crate::rate::TokenBucket;
use crate::store::SyncCursor;

/// Pages one peer may ask for per second. A client asks for the next page
/// only once it has taken the last one, and never faster than
/// [`MIN_REQUEST_INTERVAL`], so an honest node stays under this.
const PAGES_PER_PEER_PER_S: u32 = 20;
/// Pages per second all peers outside the validator set may ask for
/// together: 2560 entries/s of catch-up for relays and tools, and at most
/// about 5 MiB/s of this node's upload for strangers.
const PAGES_FOR_OUTSIDERS_PER_S: u32 = 5;
/// The shortest time between two requests this node sends one peer.
pub(super) const MIN_REQUEST_INTERVAL: Duration = Duration::from_millis(100);
const STRIKES_TO_BAN: u32 = 10;
const STRIKE_WINDOW: Duration = Duration::from_secs(60);
/// How long a misbehaving peer is cut off.
pub(super) const BAN_TIME: Duration = Duration::from_secs(300);
/// Cursors kept for peers outside the validator set (in memory: their
/// identities cost nothing, so they must not cost this node disk).
const OUTSIDER_CURSORS: usize = 1024;

/// The libp2p peer ids of the chain's validators: a node's peer id is its
/// validator key.
pub(super) fn validator_peers(spec: &ChainSpec) -> std::collections::HashSet<PeerId> {
    spec.validators.iter().filter_map(|v| peer_id(&v.public_key)).collect()
}

fn peer_id(key: &PublicKey) -> Option<PeerId> {
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(&key.0).ok()?;
    Some(libp2p::identity::PublicKey::from(key).to_peer_id())
}

/// The answer to a peer's sync request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    Serve,
    Refuse,
    /// Refused, and the peer has asked out of turn too often.
    Ban,
}

struct Served {
    in_flight: bool,
    pages: TokenBucket,
    strikes: u32,
    struck_at: Instant,
}

pub(super) struct ServeGate {
    peers: HashMap<PeerId, Served>,
    outsiders: TokenBucket,
}

impl ServeGate {
    pub(super) fn new() -> Self {
        Self { peers: HashMap::new(), outsiders: TokenBucket::new(PAGES_FOR_OUTSIDERS_PER_S) }
    }

    pub(super) fn admit(&mut self, peer: PeerId, validator: bool, now: Instant) -> Admit {
        let served = self.peers.entry(peer).or_insert_with(|| Served {
            in_flight: false,
            pages: TokenBucket::new_at(PAGES_PER_PEER_PER_S, now),
            strikes: 0,
            struck_at: now,
        });
        let in_turn = !served.in_flight && served.pages.try_take(now);
        if in_turn && (validator || self.outsiders.try_take(now)) {
            served.in_flight = true;
            return Admit::Serve;
        }
        if in_turn {
            // Only the shared allowance ran out: nobody's fault.
            return Admit::Refuse;
        }
        if now.saturating_duration_since(served.struck_at) > STRIKE_WINDOW {
            served.strikes = 0;
        }
        served.strikes += 1;
        served.struck_at = now;
        if served.strikes >= STRIKES_TO_BAN {
            Admit::Ban
        } else {
            Admit::Refuse
        }
    }

    /// The peer's request was answered or dropped.
    pub(super) fn done(&mut self, peer: &PeerId) {
        if let Some(served) = self.peers.get_mut(peer) {
            served.in_flight = false;
        }
    }

    pub(super) fn forget(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }
}

/// Where this node reads the logs of peers outside the validator set: at
/// most [`OUTSIDER_CURSORS`] of them, the one not asked for longest
/// forgotten first.
#[derive(Default)]
pub(super) struct OutsiderCursors {
    cursors: HashMap<PeerId, (SyncCursor, Instant)>,
}

impl OutsiderCursors {
    pub(super) fn get(&mut self, peer: &PeerId, now: Instant) -> SyncCursor {
        match self.cursors.get_mut(peer) {
            Some((cursor, used)) => {
                *used = now;
                *cursor
            }
            None => SyncCursor::default(),
        }
    }

    pub(super) fn set(&mut self, peer: PeerId, cursor: SyncCursor, now: Instant) {
        if self.cursors.len() >= OUTSIDER_CURSORS && !self.cursors.contains_key(&peer) {
            if let Some(oldest) = self.cursors.iter().min_by_key(|(_, (_, used))| *used).map(|(p, _)| *p) {
                self.cursors.remove(&oldest);
            }
        }
        self.cursors.insert(peer, (cursor, now));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.cursors.len()
    }
}

/// What became of a page.
#[derive(Debug, PartialEq)]
pub(super) enum PageOutcome {
    /// Taken; read on from `cursor`, at once if `more`.
    Advanced { cursor: SyncCursor, more: bool },
    /// The page was from another log than the cursor's: the peer's data dir
    /// was made anew. Nothing was taken; read it again from `cursor` (0).
    Restart { cursor: SyncCursor },
    /// This node could not store an entry; the cursor stays, and the page is
    /// asked for again later.
    Retry,
    /// The peer sent something no honest node sends.
    Bad(String),
}

/// Checks a page against the cursor it was asked at, then hands each entry
/// to `ingest`; persists a validator's cursor as it moves.
pub(super) fn take_page(
    pipeline: &Pipeline,
    peer: &PeerId,
    cursor: SyncCursor,
    trusted: bool,
    page: SyncResponse,
    ingest: impl Fn(Topic, &[u8]) -> Result<bool, IngestError>,
) -> PageOutcome {
    let outcome = judge_page(cursor, page, ingest);
    if let PageOutcome::Advanced { cursor: moved, .. } | PageOutcome::Restart { cursor: moved } = &outcome {
        if trusted && *moved != cursor {
            if let Err(err) = pipeline.store().set_sync_cursor(&peer.to_bytes(), moved.epoch.unwrap_or(0), moved.next) {
                tracing::error!(%err, "saving sync cursor");
                return PageOutcome::Retry;
            }
        }
    }
    outcome
}

fn judge_page(
    cursor: SyncCursor,
    page: SyncResponse,
    ingest: impl Fn(Topic, &[u8]) -> Result<bool, IngestError>,
) -> PageOutcome {
    let from = cursor.next;
    if cursor.epoch != Some(page.epoch) && from != 0 {
        return PageOutcome::Restart { cursor: SyncCursor { epoch: Some(page.epoch), next: 0 } };
    }
    let entries = page.entries.len() as u64;
    if page.entries.len() > SYNC_PAGE_ENTRIES {
        return PageOutcome::Bad(format!("{entries} entries in one page, at most {SYNC_PAGE_ENTRIES}"));
    }
    // Every entry takes a sequence number of its own.
    if page.next < from || page.next - from < entries {
        return PageOutcome::Bad(format!("{entries} entries from {from} end at {}", page.next));
    }
    if page.more && entries == 0 {
        return PageOutcome::Bad(format!("an empty page from {from} says there is more"));
    }
    let mut bad = 0;
    for entry in &page.entries {
        let (topic, bytes) = match entry {
            SyncEntry::Artifact(bytes) => (Topic::Artifacts, bytes),
            SyncEntry::Vote(bytes) => (Topic::Votes, bytes),
        };
        match ingest(topic, bytes) {
            Ok(_) => {}
            // An honest relay may hold artifacts older than this node's
            // window (it synced them from a validator): refused, no fault.
            Err(IngestError::OutsideWindow { .. }) => {}
            Err(IngestError::Store(err)) => {
                tracing::error!(%err, "storing a synced entry");
                return PageOutcome::Retry;
            }
            Err(err) if err.is_peer_fault() => {
                tracing::warn!(%err, "invalid sync entry");
                bad += 1;
            }
            Err(_) => {}
        }
    }
    if bad > 0 {
        return PageOutcome::Bad(format!("{bad} invalid entries"));
    }
    PageOutcome::Advanced { cursor: SyncCursor { epoch: Some(page.epoch), next: page.next }, more: page.more }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn page(epoch: u64, entries: usize, next: u64, more: bool) -> SyncResponse {
        SyncResponse { epoch, entries: vec![SyncEntry::Vote(vec![1]); entries], next, more }
    }

    fn take(cursor: SyncCursor, page: SyncResponse) -> PageOutcome {
        judge_page(cursor, page, |_, _| Ok(true))
    }

    fn at(epoch: u64, next: u64) -> SyncCursor {
        SyncCursor { epoch: Some(epoch), next }
    }

    /// Before: a peer answering `more: true` without moving got asked again
    /// at once, forever.
    #[test]
    fn a_page_that_does_not_move_the_cursor_is_bad() {
        assert!(matches!(take(at(7, 10), page(7, 0, 10, true)), PageOutcome::Bad(_)));
        assert!(matches!(take(at(7, 10), page(7, 3, 12, true)), PageOutcome::Bad(_)), "3 entries in 2 numbers");
        assert!(matches!(take(at(7, 10), page(7, 0, 5, false)), PageOutcome::Bad(_)), "backwards");
        assert!(matches!(take(at(7, 0), page(7, SYNC_PAGE_ENTRIES + 1, 10_000, true)), PageOutcome::Bad(_)));
        assert_eq!(take(at(7, 10), page(7, 0, 10, false)), PageOutcome::Advanced { cursor: at(7, 10), more: false });
        assert_eq!(take(at(7, 10), page(7, 2, 12, true)), PageOutcome::Advanced { cursor: at(7, 12), more: true });
    }

    /// Before: a peer that wiped its data dir (same key) restarted its log
    /// at 0 and was never read again, since the cursor pointed past its end.
    #[test]
    fn a_page_from_a_new_log_restarts_the_cursor_and_a_first_page_sets_the_epoch() {
        assert_eq!(take(at(7, 500), page(8, 3, 3, false)), PageOutcome::Restart { cursor: at(8, 0) });
        let legacy = SyncCursor { epoch: None, next: 500 };
        assert_eq!(take(legacy, page(8, 1, 501, false)), PageOutcome::Restart { cursor: at(8, 0) });
        assert_eq!(
            take(SyncCursor::default(), page(8, 3, 3, false)),
            PageOutcome::Advanced { cursor: at(8, 3), more: false }
        );
    }

    /// Before: a local store error still moved the cursor past the entry,
    /// which was then skipped for good.
    #[test]
    fn a_local_store_error_leaves_the_cursor_and_an_invalid_entry_is_bad() {
        let store_error = judge_page(at(1, 0), page(1, 3, 3, false), |_, _| {
            Err(IngestError::Store(StoreError::Corrupt { what: "test", detail: "disk".into() }))
        });
        assert_eq!(store_error, PageOutcome::Retry);
        let invalid = judge_page(at(1, 0), page(1, 3, 3, false), |_, _| Err(IngestError::InvalidVote("x".into())));
        assert!(matches!(invalid, PageOutcome::Bad(_)));
        let too_old = judge_page(at(1, 0), page(1, 3, 3, false), |_, _| {
            Err(IngestError::OutsideWindow { age_ms: 1 << 40, max_age_ms: 1000, max_ahead_ms: 1000 })
        });
        assert_eq!(too_old, PageOutcome::Advanced { cursor: at(1, 3), more: false }, "refused, no fault");
    }

    #[test]
    fn a_peer_gets_one_request_in_flight_and_is_banned_for_asking_out_of_turn() {
        let mut gate = ServeGate::new();
        let (peer, now) = (PeerId::random(), Instant::now());
        assert_eq!(gate.admit(peer, true, now), Admit::Serve);
        let out_of_turn: Vec<Admit> = (0..STRIKES_TO_BAN).map(|_| gate.admit(peer, true, now)).collect();
        assert!(out_of_turn[..STRIKES_TO_BAN as usize - 1].iter().all(|a| *a == Admit::Refuse));
        assert_eq!(out_of_turn.last(), Some(&Admit::Ban));
        // An honest client: one at a time, paced.
        let honest = PeerId::random();
        for step in 0..100 {
            let when = now + MIN_REQUEST_INTERVAL * step;
            assert_eq!(gate.admit(honest, true, when), Admit::Serve, "request {step}");
            gate.done(&honest);
        }
    }

    #[test]
    fn outsiders_share_one_rate_however_many_identities_they_have() {
        let mut gate = ServeGate::new();
        let now = Instant::now();
        let served = (0..1000).filter(|_| gate.admit(PeerId::random(), false, now) == Admit::Serve).count();
        assert_eq!(served, PAGES_FOR_OUTSIDERS_PER_S as usize);
        assert_eq!(gate.admit(PeerId::random(), true, now), Admit::Serve, "a validator has its own allowance");
    }

    #[test]
    fn outsider_cursors_are_bounded() {
        let mut cursors = OutsiderCursors::default();
        let now = Instant::now();
        let first = PeerId::random();
        cursors.set(first, at(1, 5), now);
        for i in 0..OUTSIDER_CURSORS as u32 * 2 {
            cursors.set(PeerId::random(), at(1, 1), now + Duration::from_millis(u64::from(i) + 1));
        }
        assert_eq!(cursors.len(), OUTSIDER_CURSORS);
        assert_eq!(cursors.get(&first, now), SyncCursor::default(), "the oldest was forgotten");
    }

    #[test]
    fn validator_peer_ids_are_their_keys() {
        let spec = ChainSpec::devnet();
        let peers = validator_peers(&spec);
        assert_eq!(peers.len(), spec.validators.len());
        let key = poi_chain_spec::devnet_keypair(0);
        let identity = libp2p::identity::Keypair::ed25519_from_bytes(key.secret()).unwrap();
        assert!(peers.contains(&identity.public().to_peer_id()));
    }
}
