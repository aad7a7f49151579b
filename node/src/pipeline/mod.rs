//! The validation pipeline: every artifact and vote, whichever way it came
//! (gossip, RPC, catch-up sync, this node's own full check), goes through
//! here: decode within limits, check, store in one batch, publish the new
//! verdict, and hand selected artifacts to the full-check scheduler.
//! Everything here blocks (RocksDB, signatures, the replay check), so callers
//! run it on worker threads, never on the swarm's event loop.

mod admission;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

use poi_artifact::{Artifact, ArtifactId, Keypair, Vote, MAX_VOTE_BYTES};
use poi_chain_spec::ChainSpec;
use poi_verifier::verdict::{committee, is_selected, verdict, Status};
use poi_verifier::{ReplayChecker, ReplayError, ReplayReport, SeedingClass};
use thiserror::Error;
use tokio::sync::broadcast;

use admission::describe_age;
pub use admission::{Admission, RELAY_GRACE};

use crate::clock::now_ms;
use crate::metrics::{Metrics, SourceLabel};
use crate::scheduler::{duty, FullCheckQueue, Trigger};
use crate::store::{Store, StoreError, VerdictRecord};

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
            Self::Store(_) => false,
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
    Sync,
    Local,
}

impl Source {
    fn label(self) -> SourceLabel {
        SourceLabel {
            source: match self {
                Self::Gossip => "gossip",
                Self::Rpc => "rpc",
                Self::Sync => "sync",
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

/// What became of a checked vote.
#[derive(Clone, Debug, PartialEq)]
pub enum VoteIngested {
    /// It was stored before; nothing changed.
    Duplicate,
    /// Stored; the artifact's new verdict, or `None` while the artifact has
    /// not arrived (its verdict counts the vote when it does).
    Stored(Option<VerdictRecord>),
}

/// This node as a validator: its key and where its full checks go.
pub struct Validator {
    pub key: Arc<Keypair>,
    pub queue: Arc<dyn FullCheckQueue>,
}

pub struct Pipeline {
    store: Arc<Store>,
    spec: ChainSpec,
    /// Replay checkers hold per-vocabulary scratch space; reused, one per
    /// concurrent caller.
    checkers: Mutex<Vec<ReplayChecker>>,
    /// Held from reading an artifact's votes to writing its new verdict, so
    /// that an artifact and a vote for it stored at once cannot each miss
    /// the other.
    ledger: Mutex<()>,
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
        Self {
            store,
            spec,
            checkers: Mutex::new(Vec::new()),
            ledger: Mutex::new(()),
            verdicts,
            metrics,
            validator,
            admission,
        }
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
        let mut checker = self.checkers.lock().expect("checker pool").pop();
        let result = checker.get_or_insert_with(|| ReplayChecker::new(self.spec.clone())).check(artifact);
        self.checkers.lock().expect("checker pool").push(checker.expect("set above"));
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
        // A byte-identical copy of a stored artifact needs no second check:
        // the id covers the body, and strict ed25519 allows one valid
        // signature per body, so only an exact copy can be a valid duplicate.
        if self.store.artifact_bytes(&id)?.as_deref() == Some(bytes) {
            return self.duplicate(id, &label);
        }
        // The replay check comes first so that a forged artifact is
        // penalised as forged whatever time it claims.
        let report = self.replay_check(&artifact).map_err(rejected)?;
        let seeding = report.seeding;
        let now = now_ms();
        if matches!(source, Source::Rpc | Source::Gossip) {
            self.admission.check(artifact.body.created_at_ms, now).inspect_err(|_| {
                self.metrics.artifacts_outside_window.get_or_create(&label).inc();
            })?;
        }
        let Some(verdict) = self.store_artifact(&artifact, &report, now)? else { return self.duplicate(id, &label) };
        self.metrics.artifacts_stored.get_or_create(&label).inc();
        let _ = self.verdicts.send(verdict.clone());
        self.consider_full_check(&artifact, seeding, Trigger::Arrived(verdict.status));
        Ok(Ingested { id, new: true, verdict })
    }

    /// The artifact with the verdict of the votes that came before it;
    /// `None` if it was already stored.
    fn store_artifact(
        &self,
        artifact: &Artifact,
        report: &ReplayReport,
        now: u64,
    ) -> Result<Option<VerdictRecord>, StoreError> {
        let seeding = report.seeding;
        let id = artifact.id();
        let _ledger = self.ledger.lock().expect("ledger lock");
        if self.store.has_artifact(&id)? {
            return Ok(None);
        }
        let votes = self.store.votes(&id)?;
        let outcome = verdict(&self.spec, &id, seeding, &votes);
        let record = VerdictRecord::new(&id, &artifact.body.miner, seeding, &outcome, &votes, now, now)
            .with_evidence(report.evidence);
        Ok(self.store.put_artifact(artifact, &record)?.then_some(record))
    }

    /// Checks and stores a vote: chain, a validator of the spec, signature,
    /// and the right to vote (selection proof or committee seat).
    pub fn ingest_vote(&self, bytes: &[u8], source: Source) -> Result<VoteIngested, IngestError> {
        let vote = self.check_vote(bytes).inspect_err(|_| {
            self.metrics.votes_rejected.get_or_create(&source.label()).inc();
        })?;
        let outcome = self.store_vote(&vote, now_ms())?;
        if outcome == VoteIngested::Duplicate {
            return Ok(outcome);
        }
        self.metrics.votes_stored.get_or_create(&source.label()).inc();
        if let VoteIngested::Stored(Some(record)) = &outcome {
            let _ = self.verdicts.send(record.clone());
            if record.status == Status::Disputed {
                if let Some(artifact) = self.store.artifact(&vote.body.artifact_id)? {
                    self.consider_full_check(&artifact, record.seeding, Trigger::Disputed);
                }
            }
        }
        Ok(outcome)
    }

    fn store_vote(&self, vote: &Vote, now: u64) -> Result<VoteIngested, StoreError> {
        let id = vote.body.artifact_id;
        let _ledger = self.ledger.lock().expect("ledger lock");
        if self.store.has_vote(vote)? {
            return Ok(VoteIngested::Duplicate);
        }
        let record = match self.store.verdict(&id)? {
            Some(previous) => {
                let mut votes = self.store.votes(&id)?;
                votes.push(vote.clone());
                let outcome = verdict(&self.spec, &id, previous.seeding, &votes);
                let (miner, seeding, received) = (previous.miner()?, previous.seeding, previous.received_at_ms);
                Some(
                    VerdictRecord::new(&id, &miner, seeding, &outcome, &votes, received, now)
                        .with_evidence(previous.evidence),
                )
            }
            None => None,
        };
        Ok(if self.store.put_vote(vote, record.as_ref())? {
            VoteIngested::Stored(record)
        } else {
            VoteIngested::Duplicate
        })
    }

    /// Stores this validator's own vote unless it already has one on the
    /// artifact: a second, different vote would be equivocation. Returns
    /// whether it was stored (and so should be gossiped).
    pub fn ingest_own_vote(&self, bytes: &[u8]) -> Result<bool, IngestError> {
        let vote = Vote::decode(bytes).map_err(|e| IngestError::InvalidVote(e.to_string()))?;
        if self.has_voted(&vote.body.artifact_id, &vote.body.validator)? {
            return Ok(false);
        }
        Ok(matches!(self.ingest_vote(bytes, Source::Local)?, VoteIngested::Stored(_)))
    }

    fn has_voted(&self, artifact: &ArtifactId, validator: &poi_artifact::PublicKey) -> Result<bool, StoreError> {
        Ok(self.store.votes(artifact)?.iter().any(|v| v.body.validator == *validator))
    }

    fn check_vote(&self, bytes: &[u8]) -> Result<Vote, IngestError> {
        let invalid = |why: String| IngestError::InvalidVote(why);
        if bytes.len() > MAX_VOTE_BYTES {
            return Err(invalid(format!("{} bytes, limit {MAX_VOTE_BYTES}", bytes.len())));
        }
        let vote = Vote::decode(bytes).map_err(|e| invalid(e.to_string()))?;
        let body = &vote.body;
        if body.chain_id != self.spec.chain_id() {
            return Err(invalid(format!("chain {} is not this chain", body.chain_id.to_hex())));
        }
        if self.spec.validator(&body.validator).is_none() {
            return Err(invalid(format!("{} is not a validator of this chain", body.validator.to_hex())));
        }
        let profile = self.spec.numerics.label();
        if body.figures.profile_id != profile {
            return Err(invalid(format!(
                "cast under profile {:?}; this chain's votes are under {profile:?}",
                body.figures.profile_id
            )));
        }
        vote.verify_signature().map_err(|e| invalid(e.to_string()))?;
        // Every validator may check an artifact the miner seeded; before the
        // artifact is here its class is unknown, so only the proof's
        // signature can be checked, and the verdict rule applies the rate.
        let rate = self.store.verdict(&body.artifact_id)?.map_or(1.0, |r| r.seeding.full_check_rate(&self.spec));
        let selected = is_selected(&body.validator, &body.artifact_id, &body.selection_proof, rate);
        if !selected && !committee(&self.spec, &body.artifact_id).contains(&body.validator) {
            return Err(invalid("validator was neither selected nor on the dispute committee".into()));
        }
        Ok(vote)
    }

    fn consider_full_check(&self, artifact: &Artifact, seeding: SeedingClass, trigger: Trigger) {
        let Some(validator) = &self.validator else { return };
        let has_voted = || {
            self.has_voted(&artifact.id(), &validator.key.public()).unwrap_or_else(|err| {
                tracing::error!(%err, "reading votes for the committee check");
                true
            })
        };
        let Some(job) = duty(&self.spec, &validator.key, artifact, seeding, trigger, has_voted) else { return };
        let reason = job.reason;
        if validator.queue.offer(job).is_err() {
            self.metrics.full_checks_skipped.inc();
            tracing::warn!(artifact = %artifact.id().to_hex(), ?reason, "full-check queue full; not checking");
        }
    }
}
