//! Votes for artifacts this node has not stored yet: gossip can carry a vote
//! ahead of its artifact. They wait here, checked, in memory that is bounded
//! in total and per validator (one validator flooding votes on ids that do
//! not exist fills only its own share), and expire. Nothing here needs to
//! survive a restart: the peers that stored the artifact serve its votes
//! after it in their logs.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use poi_artifact::{ArtifactId, PublicKey};
use poi_verifier::verdict::CheckedVote;

/// Votes waiting in all, across validators.
pub const PENDING_VOTES: usize = 16_384;
/// How long a vote waits for its artifact.
pub const PENDING_TTL: Duration = Duration::from_secs(600);

pub(super) struct PendingVotes {
    per_validator: usize,
    by_artifact: HashMap<ArtifactId, Vec<CheckedVote>>,
    /// Arrival order, for expiry.
    arrivals: VecDeque<(Instant, ArtifactId, PublicKey)>,
    held_by: HashMap<PublicKey, usize>,
}

/// What became of a vote offered to the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Offer {
    Held,
    /// Its validator already has a vote with this id, or two, on the artifact.
    Duplicate,
    /// Its validator's share is full.
    Refused,
}

impl PendingVotes {
    pub(super) fn new(validators: usize) -> Self {
        Self {
            per_validator: (PENDING_VOTES / validators.max(1)).max(1),
            by_artifact: HashMap::new(),
            arrivals: VecDeque::new(),
            held_by: HashMap::new(),
        }
    }

    pub(super) fn offer(&mut self, vote: CheckedVote, now: Instant) -> Offer {
        self.expire(now);
        let body = &vote.vote().body;
        let (artifact, validator) = (body.artifact_id, body.validator);
        let waiting = self.by_artifact.get(&artifact).map_or(&[][..], Vec::as_slice);
        let mine: Vec<&CheckedVote> = waiting.iter().filter(|v| v.vote().body.validator == validator).collect();
        if mine.len() >= 2 || mine.iter().any(|v| v.vote().id() == vote.vote().id()) {
            return Offer::Duplicate;
        }
        let held = self.held_by.entry(validator).or_default();
        if *held >= self.per_validator {
            return Offer::Refused;
        }
        *held += 1;
        self.arrivals.push_back((now, artifact, validator));
        self.by_artifact.entry(artifact).or_default().push(vote);
        Offer::Held
    }

    /// Whether `validator`'s share is full: its next vote would be refused.
    pub(super) fn is_full_for(&mut self, validator: &PublicKey, now: Instant) -> bool {
        self.expire(now);
        self.held_by.get(validator).is_some_and(|held| *held >= self.per_validator)
    }

    /// The votes waiting for `artifact`, removed.
    pub(super) fn take(&mut self, artifact: &ArtifactId) -> Vec<CheckedVote> {
        let votes = self.by_artifact.remove(artifact).unwrap_or_default();
        if !votes.is_empty() {
            // So that `arrivals` holds only votes still waiting: bounded too.
            self.arrivals.retain(|(_, waiting_for, _)| waiting_for != artifact);
        }
        for vote in &votes {
            self.release(&vote.vote().body.validator);
        }
        votes
    }

    pub(super) fn len(&self) -> usize {
        self.by_artifact.values().map(Vec::len).sum()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, artifact, validator)) = self.arrivals.front().copied() {
            if now.duration_since(at) < PENDING_TTL {
                break;
            }
            self.arrivals.pop_front();
            let Some(votes) = self.by_artifact.get_mut(&artifact) else { continue };
            // The oldest of this validator's votes on the artifact is the one
            // that arrived at `at`.
            let index = votes.iter().position(|v| v.vote().body.validator == validator);
            if let Some(index) = index {
                votes.remove(index);
            }
            if votes.is_empty() {
                self.by_artifact.remove(&artifact);
            }
            if index.is_some() {
                self.release(&validator);
            }
        }
    }

    fn release(&mut self, validator: &PublicKey) {
        if let Some(held) = self.held_by.get_mut(validator) {
            *held = held.saturating_sub(1);
        }
    }
}
