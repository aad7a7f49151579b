//! The validation pipeline: every artifact and vote, whichever way it came
//! (gossip, RPC, catch-up sync, this node's own full check), goes through
//! here: decode within limits, check, store in one batch, publish the new
//! verdict, and hand selected artifacts to the full-check scheduler.
//! Everything here blocks (RocksDB, signatures, the replay check), so callers
//! run it on worker threads, never on the swarm's event loop.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use poi_artifact::{Artifact, ArtifactId, Keypair, Vote, MAX_VOTE_BYTES, SELECT_DOMAIN};
use poi_chain_spec::ChainSpec;
use poi_verifier::verdict::{committee, is_selected, Status};
use poi_verifier::{ReplayChecker, ReplayError};
use thiserror::Error;
use tokio::sync::broadcast;

use crate::metrics::{Metrics, SourceLabel};
use crate::scheduler::{CheckReason, Job, Scheduler};
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

/// How far past the admission window a relayed artifact may be before its
/// sender is penalised for it.
pub const RELAY_GRACE: Duration = Duration::from_secs(60);

fn describe_age(age_ms: i64) -> String {
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
/// is exempt: a node that was away for longer than the window must still
/// converge, and what it pulls was admitted fresh by the peer that logged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// `None`: no window at all, past or future (a node replaying an
    /// archive, or test fixtures with fixed timestamps).
    pub max_age: Option<Duration>,
    pub max_ahead: Duration,
}

impl Admission {
    pub const ANY_AGE: Admission = Admission { max_age: None, max_ahead: Duration::MAX };

    fn check(&self, created_at_ms: u64, now_ms: u64) -> Result<(), IngestError> {
        let Some(max_age) = self.max_age else { return Ok(()) };
        let age_ms = now_ms as i64 - created_at_ms.min(i64::MAX as u64) as i64;
        let (max_age_ms, max_ahead_ms) = (millis(max_age), millis(self.max_ahead));
        if age_ms > max_age_ms as i64 || -age_ms > max_ahead_ms as i64 {
            return Err(IngestError::OutsideWindow { age_ms, max_age_ms, max_ahead_ms });
        }
        Ok(())
    }
}

impl Default for Admission {
    /// A miner submits what it generated at once, and gossip relays it in
    /// seconds: an hour is generous; five minutes covers clocks that NTP
    /// keeps roughly right.
    fn default() -> Self {
        Self { max_age: Some(Duration::from_secs(3600)), max_ahead: Duration::from_secs(300) }
    }
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().min(i64::MAX as u128) as u64
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

pub struct Pipeline {
    store: Arc<Store>,
    spec: ChainSpec,
    /// Replay checkers hold per-vocabulary scratch space; reused, one per
    /// concurrent caller.
    checkers: Mutex<Vec<ReplayChecker>>,
    verdicts: broadcast::Sender<VerdictRecord>,
    metrics: Arc<Metrics>,
    /// This node's validator key and its model queue; absent on a node that
    /// only relays and stores.
    validator: Option<(Arc<Keypair>, Scheduler)>,
    admission: Admission,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Pipeline {
    pub fn new(
        store: Arc<Store>,
        spec: ChainSpec,
        metrics: Arc<Metrics>,
        validator: Option<(Arc<Keypair>, Scheduler)>,
        admission: Admission,
    ) -> Self {
        let (verdicts, _) = broadcast::channel(1024);
        Self { store, spec, checkers: Mutex::new(Vec::new()), verdicts, metrics, validator, admission }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn spec(&self) -> &ChainSpec {
        &self.spec
    }

    /// Verdicts as they change, for RPC subscribers.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn subscribe(&self) -> broadcast::Receiver<VerdictRecord> {
        self.verdicts.subscribe()
    }

    fn replay_check(&self, artifact: &Artifact) -> Result<(), ReplayError> {
        let mut checker = self.checkers.lock().expect("checker pool").pop();
        let result = checker.get_or_insert_with(|| ReplayChecker::new(self.spec.clone())).check(artifact).map(|_| ());
        self.checkers.lock().expect("checker pool").push(checker.expect("set above"));
        result
    }

    fn stored_verdict(&self, id: &ArtifactId) -> Result<VerdictRecord, StoreError> {
        self.store
            .verdict(id)?
            .ok_or(StoreError::Corrupt { what: "verdict", detail: "artifact without verdict".into() })
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
            self.metrics.artifacts_duplicate.get_or_create(&label).inc();
            return Ok(Ingested { id, new: false, verdict: self.stored_verdict(&id)? });
        }
        // The replay check comes first so that a forged artifact is
        // penalised as forged whatever time it claims.
        self.replay_check(&artifact).map_err(rejected)?;
        let now = now_ms();
        if matches!(source, Source::Rpc | Source::Gossip) {
            self.admission.check(artifact.body.created_at_ms, now).inspect_err(|_| {
                self.metrics.artifacts_outside_window.get_or_create(&label).inc();
            })?;
        }
        let new = self.store.put_artifact(&artifact, now)?;
        let verdict = self.stored_verdict(&id)?;
        if new {
            self.metrics.artifacts_stored.get_or_create(&label).inc();
            let _ = self.verdicts.send(verdict.clone());
            self.consider_full_check(&artifact, &verdict);
        } else {
            self.metrics.artifacts_duplicate.get_or_create(&label).inc();
        }
        Ok(Ingested { id, new, verdict })
    }

    /// Checks and stores a vote: chain, a validator of the spec, signature,
    /// and the right to vote (selection proof or committee seat). Returns the
    /// new verdict when the vote was new.
    pub fn ingest_vote(&self, bytes: &[u8], source: Source) -> Result<Option<VerdictRecord>, IngestError> {
        let vote = self.check_vote(bytes).inspect_err(|_| {
            self.metrics.votes_rejected.get_or_create(&source.label()).inc();
        })?;
        let Some(record) = self.store.put_vote(&vote, now_ms())? else { return Ok(None) };
        self.metrics.votes_stored.get_or_create(&source.label()).inc();
        if record.received_at_ms == 0 {
            // The artifact has not arrived yet; its verdict comes with it.
            return Ok(Some(record));
        }
        let _ = self.verdicts.send(record.clone());
        if record.status == Status::Disputed.as_str() {
            if let Some(artifact) = self.store.artifact(&vote.body.artifact_id)? {
                self.consider_committee_check(&artifact);
            }
        }
        Ok(Some(record))
    }

    /// Stores this validator's own vote unless it already has one on the
    /// artifact: a second, different vote would be equivocation. Returns
    /// whether it was stored (and so should be gossiped).
    pub fn ingest_own_vote(&self, bytes: &[u8]) -> Result<bool, IngestError> {
        let vote = Vote::decode(bytes).map_err(|e| IngestError::InvalidVote(e.to_string()))?;
        let stored = self.store.votes(&vote.body.artifact_id)?;
        if stored.iter().any(|v| v.body.validator == vote.body.validator) {
            return Ok(false);
        }
        Ok(self.ingest_vote(bytes, Source::Local)?.is_some())
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
        vote.verify_signature().map_err(|e| invalid(e.to_string()))?;
        let selected =
            is_selected(&body.validator, &body.artifact_id, &body.selection_proof, self.spec.full_check_rate);
        if !selected && !committee(&self.spec, &body.artifact_id).contains(&body.validator) {
            return Err(invalid("validator was neither selected nor on the dispute committee".into()));
        }
        Ok(vote)
    }

    fn consider_full_check(&self, artifact: &Artifact, verdict: &VerdictRecord) {
        let Some((key, scheduler)) = &self.validator else { return };
        let id = artifact.id();
        let proof = key.sign(SELECT_DOMAIN, &id);
        if is_selected(&key.public(), &id, &proof, self.spec.full_check_rate) {
            self.enqueue(scheduler, artifact, proof, CheckReason::Selected);
        } else if verdict.status == Status::Disputed.as_str() {
            // Votes that arrived before the artifact already dispute it.
            self.consider_committee_check(artifact);
        }
    }

    fn consider_committee_check(&self, artifact: &Artifact) {
        let Some((key, scheduler)) = &self.validator else { return };
        let id = artifact.id();
        if !committee(&self.spec, &id).contains(&key.public()) {
            return;
        }
        match self.store.votes(&id) {
            Ok(votes) if votes.iter().any(|v| v.body.validator == key.public()) => {}
            Ok(_) => self.enqueue(scheduler, artifact, key.sign(SELECT_DOMAIN, &id), CheckReason::Committee),
            Err(err) => tracing::error!(%err, "reading votes for the committee check"),
        }
    }

    fn enqueue(&self, scheduler: &Scheduler, artifact: &Artifact, proof: poi_artifact::Signature, reason: CheckReason) {
        let job = Job { artifact: artifact.clone(), selection_proof: proof, reason };
        if scheduler.try_submit(job).is_err() {
            self.metrics.full_checks_skipped.inc();
            tracing::warn!(artifact = %artifact.id().to_hex(), ?reason, "full-check queue full; not checking");
        }
    }
}
