//! The validation pipeline: every artifact and vote, whichever way it came
//! (gossip, RPC, catch-up sync, this node's own full check), goes through
//! here: decode within limits, check, store in one batch, publish the new
//! verdict, and hand selected artifacts to the full-check scheduler.
//! Everything here blocks (RocksDB, signatures, the replay check), so callers
//! run it on worker threads, never on the swarm's event loop.

mod admission;
mod pending;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, PoisonError};

use poi_artifact::{Artifact, ArtifactId, Keypair, PublicKey, Vote, VrfKeypair, MAX_VOTE_BYTES};
use poi_chain_spec::ChainSpec;
use poi_verifier::verdict::{selection, tally, CheckedVote, Status};
use poi_verifier::{ReplayChecker, ReplayError, ReplayReport};
use thiserror::Error;
use tokio::sync::broadcast;

use admission::describe_age;
pub use admission::{Admission, RELAY_GRACE};

use crate::clock::now_ms;
use crate::metrics::{Metrics, SourceLabel};
use crate::scheduler::DutyQueue;
use crate::store::{Duty, DutyClass, Store, StoreError, VerdictRecord};
use pending::{Offer, PendingVotes};
pub use pending::{PENDING_TTL, PENDING_VOTES};

#[derive(Debug, Error)]
pub enum IngestError {
    /// The sender's fault: decoding, signature or the replay check failed.
    #[error("artifact rejected: {0}")]
    InvalidArtifact(#[from] ReplayError),
    #[error("vote rejected: {0}")]
    InvalidVote(String),
    /// A valid artifact whose `created_at_ms` lies outside this node's
    /// admission window; `age_ms` is negative for one from the future.
    #[error(
        "artifact created {} is outside this node's admission window (at most {} s old, {} s ahead of its clock)",
        describe_age(*age_ms), max_age_ms / 1000, max_ahead_ms / 1000
    )]
    OutsideWindow { age_ms: i64, max_age_ms: u64, max_ahead_ms: u64 },
    /// The artifact is stored with other signature bytes; an honest relay
    /// may carry either copy, so this is no fault of the peer's.
    #[error("artifact {id} is stored already with another signature; the first one stored stays")]
    SignedAgain { id: String },
    /// This node's fault, not the sender's.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IngestError {
    /// Whether the peer that sent it deserves a penalty. An honest relay
    /// forwards an artifact within seconds of admitting it, so one just past
    /// the window (or a relay whose clock is slightly off) is not a fault;
    /// one far past it is.
    pub fn is_peer_fault(&self) -> bool {
        match self {
            Self::Store(_) | Self::SignedAgain { .. } => false,
            Self::OutsideWindow { age_ms, max_age_ms, max_ahead_ms } => {
                let grace = RELAY_GRACE.as_millis() as i64;
                *age_ms > (*max_age_ms as i64).saturating_add(grace)
                    || -*age_ms > (*max_ahead_ms as i64).saturating_add(grace)
            }
            _ => true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Gossip,
    Rpc,
    /// Catch-up sync from a validator: exempt from the admission window (a
    /// node away for longer than it must still converge).
    Sync,
    /// Catch-up sync from a peer outside the validator set: admitted by the
    /// window like gossip, so that nobody can pass off an old artifact that
    /// was never published as new work by feeding it through sync.
    Relay,
    Local,
}

impl Source {
    fn label(self) -> SourceLabel {
        SourceLabel {
            source: match self {
                Self::Gossip => "gossip",
                Self::Rpc => "rpc",
                Self::Sync | Self::Relay => "sync",
                Self::Local => "local",
            },
        }
    }
}

#[derive(Clone, Debug)]
pub struct Ingested {
    pub id: ArtifactId,
    /// False when it was already stored (nothing rewritten).
    pub new: bool,
    pub verdict: VerdictRecord,
}

/// What became of a vote.
#[derive(Clone, Debug, PartialEq)]
pub enum VoteIngested {
    /// It was stored (or is waiting) already; nothing changed.
    Duplicate,
    /// Its validator has two votes on the artifact already (the first and
    /// proof of equivocation): ignored before any signature work, and not
    /// forwarded.
    OverLimit,
    /// The artifact is not here yet: the vote waits for it in a bounded,
    /// expiring buffer (`pending`), or was refused there (`held: false`)
    /// because its validator's share is full.
    Pending { held: bool },
    /// Stored; the artifact's new verdict.
    Stored(VerdictRecord),
}

impl VoteIngested {
    /// Whether gossip should carry the vote on.
    pub fn forward(&self) -> bool {
        matches!(self, Self::Stored(_) | Self::Pending { held: true })
    }
}

/// This node as a validator: its keys and the scheduler that runs the full
/// checks it owes (which the pipeline writes to the store).
pub struct Validator {
    pub key: Arc<Keypair>,
    pub vrf: Arc<VrfKeypair>,
    pub duties: Arc<dyn DutyQueue>,
}

pub struct Pipeline {
    store: Arc<Store>,
    spec: ChainSpec,
    /// Replay checkers hold per-vocabulary scratch space; reused, one per
    /// concurrent caller.
    checkers: Mutex<Vec<ReplayChecker>>,
    /// Held from reading an artifact's votes to writing its new verdict, so
    /// that an artifact and a vote for it stored at once cannot each miss
    /// the other; it guards the votes waiting for their artifacts.
    ledger: Mutex<PendingVotes>,
    verdicts: broadcast::Sender<VerdictRecord>,
    metrics: Arc<Metrics>,
    /// Absent on a node that only relays and stores.
    validator: Option<Validator>,
    admission: Admission,
}

impl Pipeline {
    pub fn new(
        store: Arc<Store>,
        spec: ChainSpec,
        metrics: Arc<Metrics>,
        validator: Option<Validator>,
        admission: Admission,
    ) -> Self {
        let (verdicts, _) = broadcast::channel(1024);
        let ledger = Mutex::new(PendingVotes::new(spec.validators.len()));
        Self { store, spec, checkers: Mutex::new(Vec::new()), ledger, verdicts, metrics, validator, admission }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn spec(&self) -> &ChainSpec {
        &self.spec
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Verdicts as they change, for RPC subscribers.
    pub fn subscribe(&self) -> broadcast::Receiver<VerdictRecord> {
        self.verdicts.subscribe()
    }

    fn replay_check(&self, artifact: &Artifact) -> Result<ReplayReport, ReplayError> {
        let mut checker = self.checkers.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let result = checker.get_or_insert_with(|| ReplayChecker::new(self.spec.clone())).check(artifact);
        self.checkers.lock().unwrap_or_else(PoisonError::into_inner).push(checker.expect("set above"));
        result
    }

    /// The answer for an artifact that was already stored.
    fn duplicate(&self, id: ArtifactId, label: &SourceLabel) -> Result<Ingested, IngestError> {
        self.metrics.artifacts_duplicate.get_or_create(label).inc();
        let verdict = self
            .store
            .verdict(&id)?
            .ok_or(StoreError::Corrupt { what: "verdict", detail: "artifact without verdict".into() })?;
        Ok(Ingested { id, new: false, verdict })
    }

    /// Checks and stores an artifact in canonical bytes.
    pub fn ingest_artifact(&self, bytes: &[u8], source: Source) -> Result<Ingested, IngestError> {
        let label = source.label();
        let rejected = |err: ReplayError| {
            self.metrics.artifacts_rejected.get_or_create(&label).inc();
            IngestError::InvalidArtifact(err)
        };
        let artifact =
            Artifact::decode(bytes, self.spec.limits.max_artifact_bytes as usize).map_err(|e| rejected(e.into()))?;
        let id = artifact.id();
        // A stored id needs no second check. A copy with other signature
        // bytes is the same body re-signed (ed25519 accepts a signature made
        // with any nonce): the first one stored stays, and the copy is
        // neither checked nor forwarded, so re-signing costs the network
        // nothing.
        match self.store.artifact_bytes(&id)? {
            Some(stored) if stored == bytes => return self.duplicate(id, &label),
            Some(_) => {
                self.metrics.artifacts_duplicate.get_or_create(&label).inc();
                return Err(IngestError::SignedAgain { id: id.to_hex() });
            }
            None => {}
        }
        // The replay check comes first so that a forged artifact is
        // penalised as forged whatever time it claims.
        let report = self.replay_check(&artifact).map_err(rejected)?;
        let now = now_ms();
        if matches!(source, Source::Rpc | Source::Gossip | Source::Relay) {
            self.admission.check(artifact.body.created_at_ms, now).inspect_err(|_| {
                self.metrics.artifacts_outside_window.get_or_create(&label).inc();
            })?;
        }
        let Some((verdict, waiting)) = self.store_artifact(&artifact, &report, now)? else {
            return self.duplicate(id, &label);
        };
        self.metrics.artifacts_stored.get_or_create(&label).inc();
        let _ = self.verdicts.send(verdict.clone());
        let mut latest = verdict;
        for vote in waiting {
            if let VoteIngested::Stored(record) = self.store_vote(vote, now)? {
                self.metrics.votes_stored.get_or_create(&Source::Local.label()).inc();
                let _ = self.verdicts.send(record.clone());
                latest = record;
            }
        }
        Ok(Ingested { id, new: true, verdict: latest })
    }

    /// The artifact with an empty tally and the check it makes this
    /// validator owe, and the votes that were waiting for it; `None` if it
    /// was already stored.
    fn store_artifact(
        &self,
        artifact: &Artifact,
        report: &ReplayReport,
        now: u64,
    ) -> Result<Option<(VerdictRecord, Vec<CheckedVote>)>, StoreError> {
        let seeding = report.seeding;
        let id = artifact.id();
        let mut pending = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        if self.store.has_artifact(&id)? {
            return Ok(None);
        }
        let outcome = tally(&self.spec, &id, seeding, &[]);
        let record = VerdictRecord::new(&id, &artifact.body.miner, seeding, &outcome, &[], now, now)
            .with_evidence(report.evidence);
        let duty = self.validator.as_ref().and_then(|v| {
            let selected = selection(&v.vrf, &id, seeding.full_check_rate(&self.spec)).0;
            selected.then(|| self.duty(&id, &artifact.body.miner, DutyClass::Selected, now))
        });
        if !self.store.put_artifact(artifact, &record, duty.as_ref())? {
            return Ok(None);
        }
        self.wake_scheduler(duty.as_ref());
        let waiting = pending.take(&id);
        self.metrics.votes_pending.set(pending.len() as i64);
        Ok(Some((record, waiting)))
    }

    fn duty(&self, id: &ArtifactId, miner: &PublicKey, class: DutyClass, now: u64) -> Duty {
        Duty { artifact_id: *id, miner: *miner, class, queued_at_ms: now, vote_at_ms: now }
    }

    fn wake_scheduler(&self, duty: Option<&Duty>) {
        if let (Some(validator), Some(_)) = (&self.validator, duty) {
            validator.duties.wake();
        }
    }

    /// Checks and stores a vote: at most two per validator and artifact
    /// (counted before any signature work), then chain, validator, profile,
    /// signature and VRF proof, once; a vote for an artifact not stored yet
    /// waits for it.
    pub fn ingest_vote(&self, bytes: &[u8], source: Source) -> Result<VoteIngested, IngestError> {
        let rejected = |err: IngestError| {
            self.metrics.votes_rejected.get_or_create(&source.label()).inc();
            err
        };
        if bytes.len() > MAX_VOTE_BYTES {
            return Err(rejected(IngestError::InvalidVote(format!("{} bytes, limit {MAX_VOTE_BYTES}", bytes.len()))));
        }
        let vote = Vote::decode(bytes).map_err(|e| rejected(IngestError::InvalidVote(e.to_string())))?;
        let stored = self.store.votes_by(&vote.body.artifact_id, &vote.body.validator)?;
        if stored.iter().any(|v| v.id() == vote.id()) {
            return Ok(VoteIngested::Duplicate);
        }
        if stored.len() >= 2 {
            self.metrics.votes_over_limit.inc();
            return Ok(VoteIngested::OverLimit);
        }
        if stored.is_empty() && self.pending_share_full(&vote)? {
            self.metrics.votes_pending_refused.inc();
            return Ok(VoteIngested::Pending { held: false });
        }
        let checked =
            CheckedVote::check(&self.spec, vote).map_err(|e| rejected(IngestError::InvalidVote(e.to_string())))?;
        let outcome = self.store_vote(checked, now_ms())?;
        match &outcome {
            VoteIngested::Stored(record) => {
                self.metrics.votes_stored.get_or_create(&source.label()).inc();
                let _ = self.verdicts.send(record.clone());
            }
            VoteIngested::OverLimit => drop(self.metrics.votes_over_limit.inc()),
            VoteIngested::Pending { held: false } => drop(self.metrics.votes_pending_refused.inc()),
            VoteIngested::Pending { held: true } | VoteIngested::Duplicate => {}
        }
        Ok(outcome)
    }

    /// Whether `vote` is for an artifact not stored here from a validator
    /// whose share of the waiting buffer is full (checked before signature
    /// work, so that a validator's flood of such votes costs little).
    fn pending_share_full(&self, vote: &Vote) -> Result<bool, StoreError> {
        if self.store.has_artifact(&vote.body.artifact_id)? {
            return Ok(false);
        }
        let mut pending = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(pending.is_full_for(&vote.body.validator, std::time::Instant::now()))
    }

    fn store_vote(&self, checked: CheckedVote, now: u64) -> Result<VoteIngested, StoreError> {
        let body = &checked.vote().body;
        let (id, validator) = (body.artifact_id, body.validator);
        let mut pending = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        let stored = self.store.votes_by(&id, &validator)?;
        if stored.iter().any(|v| v.id() == checked.vote().id()) {
            return Ok(VoteIngested::Duplicate);
        }
        if stored.len() >= 2 {
            return Ok(VoteIngested::OverLimit);
        }
        let Some(previous) = self.store.verdict(&id)? else {
            let offer = pending.offer(checked, std::time::Instant::now());
            self.metrics.votes_pending.set(pending.len() as i64);
            return Ok(match offer {
                Offer::Held => VoteIngested::Pending { held: true },
                Offer::Refused => VoteIngested::Pending { held: false },
                Offer::Duplicate => VoteIngested::Duplicate,
            });
        };
        let (record, votes) = self.tally_with(&previous, &checked, now)?;
        let duty = self.dispute_duty(&record, &votes, now)?;
        if !self.store.put_vote(checked.vote(), &record, duty.as_ref())? {
            return Ok(VoteIngested::Duplicate);
        }
        self.wake_scheduler(duty.as_ref());
        Ok(VoteIngested::Stored(record))
    }

    /// The artifact's verdict with `vote` added to its stored votes (checked
    /// at their ingest: no signature work here), and those votes.
    fn tally_with(
        &self,
        previous: &VerdictRecord,
        vote: &CheckedVote,
        now: u64,
    ) -> Result<(VerdictRecord, Vec<Vote>), StoreError> {
        let id = vote.vote().body.artifact_id;
        let mut votes = self.store.votes(&id)?;
        votes.push(vote.vote().clone());
        let checked: Vec<CheckedVote> = votes
            .iter()
            .map(|v| {
                CheckedVote::checked_before(&self.spec, v.clone())
                    .map_err(|e| StoreError::Corrupt { what: "vote", detail: e.to_string() })
            })
            .collect::<Result<_, _>>()?;
        let outcome = tally(&self.spec, &id, previous.seeding, &checked);
        let record = VerdictRecord::new(
            &id,
            &previous.miner()?,
            previous.seeding,
            &outcome,
            &votes,
            previous.received_at_ms,
            now,
        )
        .with_evidence(previous.evidence);
        Ok((record, votes))
    }

    /// A disputed artifact, not final yet, calls every validator that has not
    /// voted on it: this one too.
    fn dispute_duty(&self, record: &VerdictRecord, votes: &[Vote], now: u64) -> Result<Option<Duty>, StoreError> {
        let Some(validator) = &self.validator else { return Ok(None) };
        let me = validator.key.public();
        if record.status != Status::Disputed || record.is_final || votes.iter().any(|v| v.body.validator == me) {
            return Ok(None);
        }
        let id = ArtifactId::from_hex(&record.artifact_id)
            .map_err(|detail| StoreError::Corrupt { what: "verdict", detail })?;
        Ok(Some(self.duty(&id, &record.miner()?, DutyClass::Dispute, now)))
    }

    /// Stores this validator's own vote, fsynced, with the duty it
    /// discharges, unless it already voted on the artifact: a second,
    /// different vote would be equivocation. Returns whether it was stored
    /// (and so may be gossiped: only a vote that is durable leaves the node).
    pub fn ingest_own_vote(&self, vote: &Vote) -> Result<bool, IngestError> {
        let checked =
            CheckedVote::check(&self.spec, vote.clone()).map_err(|e| IngestError::InvalidVote(e.to_string()))?;
        let id = vote.body.artifact_id;
        let _pending = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.store.votes_by(&id, &vote.body.validator)?.is_empty() {
            self.store.discharge_duty(&id)?;
            return Ok(false);
        }
        let previous = self
            .store
            .verdict(&id)?
            .ok_or(StoreError::Corrupt { what: "verdict", detail: "own vote on an artifact not stored".into() })?;
        let (record, _) = self.tally_with(&previous, &checked, now_ms())?;
        let stored = self.store.put_own_vote(vote, &record)?;
        if stored {
            self.metrics.votes_stored.get_or_create(&Source::Local.label()).inc();
            let _ = self.verdicts.send(record);
        }
        Ok(stored)
    }
}
