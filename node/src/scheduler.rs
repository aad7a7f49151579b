//! The full-check scheduler: a bounded queue and a fixed pool of worker
//! threads that run the model, off the event loop. When the queue is full a
//! selected artifact goes unchecked (counted in the metrics) rather than
//! growing memory: selection is a right to vote, not a duty.

use std::collections::HashSet;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use poi_artifact::{Artifact, ArtifactId, Keypair, Signature, Verdict, Vote, VoteBody, VoteFigures, SELECT_DOMAIN};
use poi_chain_spec::{ChainSpec, Thresholds};
use poi_model::runtime::Runtime;
use poi_verifier::verdict::{committee, is_selected, Status};
use poi_verifier::{ReplayChecker, SeedingClass};
use tokio::sync::mpsc;

use crate::clock::now_ms;
use crate::metrics::{Metrics, OutcomeLabel};

/// Re-runs the model over an artifact. Implemented by the real model; the
/// trait lets a node run without one (relay and store only) and keeps the
/// scheduler independent of candle. It always answers: a check that could
/// not be made is an inconclusive verdict with the reason (DESIGN §5), so a
/// selected artifact never goes silently unchecked.
pub trait FullChecker: Send + Sync {
    fn check(&self, artifact: &Artifact) -> (Verdict, VoteFigures);
}

/// The figures of an inconclusive vote: nothing was compared (the seed's
/// `-1, -1`), and the reason says why.
pub fn inconclusive(profile_id: String, reason: &str) -> (Verdict, VoteFigures) {
    let figures = VoteFigures {
        distance: -1.0,
        match_ratio: -1.0,
        surprisal_z: 0.0,
        profile_id,
        reason: VoteFigures::bounded_reason(reason),
    };
    (Verdict::Inconclusive, figures)
}

/// The pinned model under the chain's profile and thresholds.
pub struct ModelChecker {
    runtime: Arc<Runtime>,
    thresholds: Thresholds,
    spec: ChainSpec,
}

impl ModelChecker {
    pub fn new(runtime: Arc<Runtime>, spec: &ChainSpec) -> Self {
        Self { runtime, thresholds: spec.thresholds.clone(), spec: spec.clone() }
    }
}

impl FullChecker for ModelChecker {
    fn check(&self, artifact: &Artifact) -> (Verdict, VoteFigures) {
        let profile = self.runtime.model.profile().label();
        let report = match poi_model::full_check::full_check(&self.runtime.model, artifact, &self.thresholds) {
            Ok(report) => report,
            Err(err) => return inconclusive(profile, &format!("the model could not run: {err}")),
        };
        // The vote carries the surprisal z too. The replay check (which
        // applies the z limit where it is the test) passed before the
        // artifact was stored, so this repeats it only for the figure.
        let replay = ReplayChecker::new(self.spec.clone()).check(artifact);
        let z = replay.as_ref().map_or(0.0, |r| r.z());
        let verdict = match (&replay, report.accepted) {
            (_, false) => Verdict::Reject,
            (Ok(_), true) => Verdict::Accept,
            // Stored artifacts passed the replay check at ingest; if it fails
            // here (another spec?), the vote cannot vouch for the artifact.
            (Err(err), true) => return inconclusive(profile, &format!("the replay check fails here: {err}")),
        };
        let figures = VoteFigures {
            distance: report.distance2,
            match_ratio: report.match_ratio,
            surprisal_z: z,
            profile_id: report.profile_id,
            reason: VoteFigures::bounded_reason(report.reason.as_deref().unwrap_or("")),
        };
        (verdict, figures)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckReason {
    /// This validator's selection proof selected it.
    Selected,
    /// A vote disputed the artifact and this validator sits on its committee.
    Committee,
}

pub struct FullCheckJob {
    pub artifact: Artifact,
    pub selection_proof: Signature,
    pub reason: CheckReason,
}

/// What the validation pipeline hands full checks to: the scheduler on a
/// validator, a plain list in tests.
pub trait FullCheckQueue: Send + Sync {
    /// Queues the check; refused when the queue is full.
    fn offer(&self, job: FullCheckJob) -> Result<(), QueueFull>;
}

/// What made the pipeline ask whether a full check is owed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The artifact was just stored, with this verdict (votes may have
    /// arrived before it).
    Arrived(Status),
    /// A new vote made the stored artifact disputed.
    Disputed,
}

/// Whether validator `key` owes `artifact` (of seeding class `seeding`) a
/// full check, and why: on arrival its selection proof selects it (always,
/// for artifacts the miner seeded); on a dispute it sits on the committee and
/// has not voted yet. Pure: the pipeline asks, the queue runs it.
pub fn duty(
    spec: &ChainSpec,
    key: &Keypair,
    artifact: &Artifact,
    seeding: SeedingClass,
    trigger: Trigger,
    has_voted: impl FnOnce() -> bool,
) -> Option<FullCheckJob> {
    let id = artifact.id();
    let proof = key.sign(SELECT_DOMAIN, &id);
    let rate = seeding.full_check_rate(spec);
    let selected = matches!(trigger, Trigger::Arrived(_)) && is_selected(&key.public(), &id, &proof, rate);
    let disputed = matches!(trigger, Trigger::Disputed | Trigger::Arrived(Status::Disputed));
    let reason = if selected {
        CheckReason::Selected
    } else if disputed && committee(spec, &id).contains(&key.public()) && !has_voted() {
        CheckReason::Committee
    } else {
        return None;
    };
    Some(FullCheckJob { artifact: artifact.clone(), selection_proof: proof, reason })
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    jobs: SyncSender<FullCheckJob>,
    /// Queued or running artifacts: a validator never checks one twice, so
    /// it can never sign two different votes for it.
    pending: Arc<Mutex<HashSet<ArtifactId>>>,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
pub struct QueueFull;

impl Scheduler {
    /// Starts `workers` threads that check and sign; signed votes go to
    /// `votes` for the node to store and gossip.
    pub fn start(
        workers: usize,
        capacity: usize,
        checker: Arc<dyn FullChecker>,
        key: Arc<Keypair>,
        spec: &ChainSpec,
        metrics: Arc<Metrics>,
        votes: mpsc::Sender<Vote>,
    ) -> Self {
        let (jobs, receiver) = sync_channel(capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        let pending = Arc::new(Mutex::new(HashSet::new()));
        for index in 0..workers.max(1) {
            let worker = Worker {
                jobs: receiver.clone(),
                checker: checker.clone(),
                key: key.clone(),
                chain_id: spec.chain_id(),
                pending: pending.clone(),
                metrics: metrics.clone(),
                votes: votes.clone(),
            };
            std::thread::Builder::new()
                .name(format!("full-check-{index}"))
                .spawn(move || worker.run())
                .expect("spawning a full-check worker");
        }
        Self { jobs, pending, metrics }
    }
}

impl FullCheckQueue for Scheduler {
    fn offer(&self, job: FullCheckJob) -> Result<(), QueueFull> {
        let id = job.artifact.id();
        if !self.pending.lock().expect("pending set").insert(id) {
            return Ok(());
        }
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.metrics.full_check_queue.inc();
                Ok(())
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.pending.lock().expect("pending set").remove(&id);
                Err(QueueFull)
            }
        }
    }
}

struct Worker {
    jobs: Arc<Mutex<Receiver<FullCheckJob>>>,
    checker: Arc<dyn FullChecker>,
    key: Arc<Keypair>,
    chain_id: poi_artifact::ChainId,
    pending: Arc<Mutex<HashSet<ArtifactId>>>,
    metrics: Arc<Metrics>,
    votes: mpsc::Sender<Vote>,
}

impl Worker {
    fn run(self) {
        loop {
            let job = match self.jobs.lock().expect("job queue").recv() {
                Ok(job) => job,
                Err(_) => return,
            };
            self.metrics.full_check_queue.dec();
            let id = job.artifact.id();
            let (verdict, figures) = self.checker.check(&job.artifact);
            self.metrics.full_checks.get_or_create(&OutcomeLabel { outcome: verdict.as_str() }).inc();
            if verdict == Verdict::Inconclusive {
                tracing::error!(artifact = %id.to_hex(), reason = %figures.reason, "full check could not be made");
            }
            tracing::info!(artifact = %id.to_hex(), verdict = verdict.as_str(), distance2 = figures.distance,
                match_ratio = figures.match_ratio, why = %figures.reason, trigger = ?job.reason, "full check");
            let vote = VoteBody {
                chain_id: self.chain_id,
                artifact_id: id,
                validator: self.key.public(),
                selection_proof: job.selection_proof,
                verdict,
                figures,
                created_at_ms: now_ms(),
            }
            .sign(&self.key);
            if self.votes.blocking_send(vote).is_err() {
                return;
            }
            self.pending.lock().expect("pending set").remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use poi_chain_spec::devnet_keypair;
    use poi_verifier::simulate::{build, Chooser};

    use super::*;

    fn spec(rate: f64) -> ChainSpec {
        let mut spec = ChainSpec::devnet();
        spec.full_check_rate = rate;
        spec
    }

    #[test]
    fn a_selected_validator_checks_on_arrival_and_only_then() {
        let (spec, key) = (spec(1.0), devnet_keypair(0));
        let artifact = build(&spec, 8, 1, Chooser::Seeded).artifact;
        let job = duty(
            &spec,
            &key,
            &artifact,
            SeedingClass::RequesterBound,
            Trigger::Arrived(Status::AcceptedReplayOnly),
            || false,
        )
        .unwrap();
        assert_eq!(job.reason, CheckReason::Selected);
        assert_eq!(job.selection_proof, key.sign(SELECT_DOMAIN, &artifact.id()));
        assert!(is_selected(&key.public(), &artifact.id(), &job.selection_proof, spec.full_check_rate));
        assert!(
            duty(&spec, &key, &artifact, SeedingClass::RequesterBound, Trigger::Disputed, || true).is_none(),
            "a dispute does not make a validator that voted check again"
        );
    }

    #[test]
    fn a_dispute_calls_committee_members_that_have_not_voted() {
        let spec = spec(0.0);
        let artifact = build(&spec, 8, 2, Chooser::Seeded).artifact;
        let members = committee(&spec, &artifact.id());
        let (member, other) = (0..4).map(devnet_keypair).partition::<Vec<_>, _>(|k| members.contains(&k.public()));
        assert!(!member.is_empty());
        for key in &member {
            assert!(duty(
                &spec,
                key,
                &artifact,
                SeedingClass::RequesterBound,
                Trigger::Arrived(Status::Accepted),
                || false
            )
            .is_none());
            let job = duty(&spec, key, &artifact, SeedingClass::RequesterBound, Trigger::Disputed, || false).unwrap();
            assert_eq!(job.reason, CheckReason::Committee);
            let job =
                duty(&spec, key, &artifact, SeedingClass::RequesterBound, Trigger::Arrived(Status::Disputed), || false)
                    .unwrap();
            assert_eq!(job.reason, CheckReason::Committee, "votes that came first disputed it");
            assert!(
                duty(&spec, key, &artifact, SeedingClass::RequesterBound, Trigger::Disputed, || true).is_none(),
                "voted already"
            );
        }
        for key in &other {
            assert!(duty(&spec, key, &artifact, SeedingClass::RequesterBound, Trigger::Disputed, || false).is_none());
        }
    }

    /// An artifact the miner seeded is fully checked by every validator,
    /// whatever the chain's sample rate: the miner could have ground its seed.
    #[test]
    fn every_validator_checks_what_the_miner_seeded() {
        let spec = spec(0.0);
        let artifact = build(&spec, 8, 3, Chooser::Seeded).artifact;
        let arrived = Trigger::Arrived(Status::AcceptedReplayOnly);
        for key in (0..4).map(devnet_keypair) {
            assert!(duty(&spec, &key, &artifact, SeedingClass::RequesterBound, arrived, || false).is_none());
            for class in [SeedingClass::MinerSeeded, SeedingClass::Unseeded] {
                let job = duty(&spec, &key, &artifact, class, arrived, || false).expect("selected at rate 1");
                assert_eq!(job.reason, CheckReason::Selected);
            }
        }
    }

    #[test]
    fn an_inconclusive_vote_says_why_within_the_vote_limit() {
        let (verdict, figures) = inconclusive("gguf-native-cpu/v2".into(), &"é".repeat(400));
        assert_eq!(verdict, Verdict::Inconclusive);
        assert!(figures.reason.len() <= poi_artifact::MAX_REASON_LEN && figures.reason.starts_with('é'));
        let vote = VoteBody {
            chain_id: spec(0.0).chain_id(),
            artifact_id: poi_artifact::sha256(b"a"),
            validator: devnet_keypair(0).public(),
            selection_proof: devnet_keypair(0).sign(SELECT_DOMAIN, &poi_artifact::sha256(b"a")),
            verdict,
            figures,
            created_at_ms: 1,
        }
        .sign(&devnet_keypair(0));
        assert_eq!(Vote::decode(&vote.encode()).unwrap(), vote, "the longest reason still makes a valid vote");
    }
}
