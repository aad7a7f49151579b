//! The full-check scheduler: a fixed pool of worker threads that run the
//! model, off the event loop, over the checks this validator owes. The
//! queue is the store's `duties` family, not memory: the pipeline writes a
//! duty in the batch of the artifact (selected) or vote (disputed) that
//! creates it, and the own vote that discharges it deletes it in its own
//! fsynced batch. So nothing is skipped when many arrive at once, a restart
//! resumes where it stopped, and memory holds only the checks in progress.
//!
//! Order: every dispute before any selected check (a dispute is where a
//! verdict is decided); within a class, round-robin over miners, oldest
//! first, so one miner's flood of artifacts waits behind every other
//! miner's next one. A duty whose verdict became final is dropped unrun.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use poi_artifact::{Artifact, ArtifactId, Keypair, PublicKey, Verdict, Vote, VoteBody, VoteFigures, VrfKeypair};
use poi_chain_spec::{ChainSpec, Thresholds};
use poi_model::runtime::Runtime;
use poi_verifier::ReplayChecker;

use crate::metrics::{Metrics, OutcomeLabel};
use crate::store::{Duty, DutyClass, Store, StoreError};

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

/// What the pipeline tells when it wrote a duty: the scheduler on a
/// validator.
pub trait DutyQueue: Send + Sync {
    fn wake(&self);
}

/// Where a signed vote goes: stored durably (the call returns after the
/// fsync), then gossiped.
pub trait VoteSink: Send + Sync {
    fn cast(&self, vote: Vote);
}

/// Owed checks are counted up to this many for the metrics gauge, so that
/// counting stays cheap under a backlog.
const COUNT_LIMIT: usize = 10_000;

pub struct SchedulerConfig {
    pub workers: usize,
    pub checker: Arc<dyn FullChecker>,
    pub key: Arc<Keypair>,
    pub vrf: Arc<VrfKeypair>,
    pub spec: ChainSpec,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
}

/// The handle the pipeline wakes; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

struct Shared {
    config: SchedulerConfig,
    state: Mutex<State>,
    wake: Condvar,
    /// Set when the workers start: the sink stores through the pipeline,
    /// which holds this scheduler.
    votes: std::sync::OnceLock<Arc<dyn VoteSink>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    /// Checks being run: never two workers on one artifact.
    in_flight: HashSet<ArtifactId>,
    /// The miner served last, per class, for the round-robin.
    last: [Option<PublicKey>; 2],
    stopped: bool,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        let votes = std::sync::OnceLock::new();
        let threads = Mutex::default();
        Self { shared: Arc::new(Shared { config, state: Mutex::default(), wake: Condvar::new(), votes, threads }) }
    }

    /// Starts the workers, which begin with the duties already stored and
    /// cast their votes into `votes`. Once only.
    pub fn start(&self, votes: Arc<dyn VoteSink>) -> std::io::Result<()> {
        if self.shared.votes.set(votes).is_err() {
            return Ok(());
        }
        for index in 0..self.shared.config.workers.max(1) {
            let shared = self.shared.clone();
            let thread = std::thread::Builder::new().name(format!("full-check-{index}")).spawn(move || shared.run())?;
            self.shared.threads.lock().expect("worker list").push(thread);
        }
        Ok(())
    }

    /// Workers finish the check at hand and stop; returns once they have
    /// (blocking), so nothing of theirs holds the store any more.
    pub fn stop(&self) {
        self.shared.state.lock().expect("scheduler state").stopped = true;
        self.shared.wake.notify_all();
        let threads = std::mem::take(&mut *self.shared.threads.lock().expect("worker list"));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl DutyQueue for Scheduler {
    fn wake(&self) {
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn run(&self) {
        while let Some(duty) = self.take() {
            if let Err(err) = self.discharge(&duty) {
                tracing::error!(%err, artifact = %duty.artifact_id.to_hex(), "running a full check");
            }
            self.state.lock().expect("scheduler state").in_flight.remove(&duty.artifact_id);
        }
    }

    /// The next duty in order, waiting while there is none.
    fn take(&self) -> Option<Duty> {
        let store = &self.config.store;
        let mut state = self.state.lock().expect("scheduler state");
        loop {
            if state.stopped {
                return None;
            }
            let owed: usize =
                DutyClass::BY_PRIORITY.iter().map(|c| store.duty_count(*c, COUNT_LIMIT).unwrap_or(0)).sum();
            self.config.metrics.full_check_queue.set(owed as i64);
            for class in DutyClass::BY_PRIORITY {
                match store.next_duty(class, state.last[class as usize].as_ref(), &state.in_flight) {
                    Ok(Some(duty)) => {
                        state.in_flight.insert(duty.artifact_id);
                        state.last[class as usize] = Some(duty.miner);
                        return Some(duty);
                    }
                    Ok(None) => {}
                    Err(err) => tracing::error!(%err, "reading owed full checks"),
                }
            }
            // The timeout covers a wake that came between the scan and the wait.
            state = self.wake.wait_timeout(state, Duration::from_secs(1)).expect("scheduler state").0;
        }
    }

    /// Runs the check and casts the vote, unless no vote is needed any more.
    fn discharge(&self, duty: &Duty) -> Result<(), StoreError> {
        let config = &self.config;
        let id = duty.artifact_id;
        let me = config.key.public();
        let settled = config.store.verdict(&id)?.is_none_or(|record| record.is_final);
        if settled || !config.store.votes_by(&id, &me)?.is_empty() {
            return config.store.discharge_duty(&id);
        }
        let Some(artifact) = config.store.artifact(&id)? else { return config.store.discharge_duty(&id) };
        tracing::info!(artifact = %id.to_hex(), class = ?duty.class, "full check started");
        let (verdict, figures) = config.checker.check(&artifact);
        config.metrics.full_checks.get_or_create(&OutcomeLabel { outcome: verdict.as_str() }).inc();
        if verdict == Verdict::Inconclusive {
            tracing::error!(artifact = %id.to_hex(), reason = %figures.reason, "full check could not be made");
        }
        tracing::info!(artifact = %id.to_hex(), verdict = verdict.as_str(), distance2 = figures.distance,
            match_ratio = figures.match_ratio, why = %figures.reason, class = ?duty.class, "full check");
        // Every field is a function of the duty and the check, so a check run
        // again after a crash signs this same vote, never a second one.
        let vote = VoteBody {
            chain_id: config.spec.chain_id(),
            artifact_id: id,
            validator: me,
            selection_proof: config.vrf.prove(&id),
            verdict,
            figures,
            created_at_ms: duty.vote_at_ms,
        }
        .sign(&config.key);
        self.votes.get().expect("set before the workers start").cast(vote);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use poi_chain_spec::devnet_keypair;
    use poi_verifier::simulate::{body_with, Chooser};

    use super::*;
    use crate::pipeline::{Admission, Pipeline, Source, Validator};

    /// Accepts everything and tells which artifact it checked, in order.
    struct Recorder(Mutex<mpsc::Sender<ArtifactId>>);

    impl FullChecker for Recorder {
        fn check(&self, artifact: &Artifact) -> (Verdict, VoteFigures) {
            self.0.lock().unwrap().send(artifact.id()).unwrap();
            let (_, mut figures) = inconclusive("gguf-native-cpu/v3".into(), "");
            figures.reason.clear();
            (Verdict::Accept, figures)
        }
    }

    struct StoreOwn(Arc<Pipeline>);

    impl VoteSink for StoreOwn {
        fn cast(&self, vote: Vote) {
            self.0.ingest_own_vote(&vote).unwrap();
        }
    }

    fn spec() -> ChainSpec {
        let mut spec = ChainSpec::devnet();
        spec.full_check_rate = 1.0;
        spec
    }

    /// A pipeline and a scheduler (not started) on the store in `dir`.
    fn node(spec: &ChainSpec, dir: &std::path::Path, checked: mpsc::Sender<ArtifactId>) -> (Arc<Pipeline>, Scheduler) {
        let store = Arc::new(Store::open(dir, spec.clone()).unwrap());
        let key = Arc::new(devnet_keypair(0));
        let vrf = Arc::new(key.vrf());
        let metrics = Arc::new(Metrics::default());
        let scheduler = Scheduler::new(SchedulerConfig {
            workers: 1,
            checker: Arc::new(Recorder(Mutex::new(checked))),
            key: key.clone(),
            vrf: vrf.clone(),
            spec: spec.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
        });
        let validator = Validator { key, vrf, duties: Arc::new(scheduler.clone()) };
        let pipeline = Arc::new(Pipeline::new(store, spec.clone(), metrics, Some(validator), Admission::ANY_AGE));
        (pipeline, scheduler)
    }

    fn artifact_of(spec: &ChainSpec, miner: &Keypair, seed: u64) -> Vec<u8> {
        let mut body = body_with(spec, 8, seed, Chooser::Seeded);
        body.miner = miner.public();
        body.sign(miner).encode()
    }

    fn checked_in_order(received: &mpsc::Receiver<ArtifactId>, n: usize) -> Vec<ArtifactId> {
        (0..n).map(|_| received.recv_timeout(Duration::from_secs(30)).expect("a check ran")).collect()
    }

    /// Duties written before a stop are run after the restart, and each once:
    /// the vote that discharges a duty deletes it in the same batch.
    #[test]
    fn owed_checks_survive_a_restart_and_run_once() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec();
        let miner = Keypair::from_secret([9; 32]);
        let (sender, received) = mpsc::channel();
        let ids: Vec<ArtifactId> = {
            let (pipeline, _never_started) = node(&spec, dir.path(), sender.clone());
            (0..3)
                .map(|seed| pipeline.ingest_artifact(&artifact_of(&spec, &miner, seed), Source::Rpc).unwrap().id)
                .collect()
        };
        let (pipeline, scheduler) = node(&spec, dir.path(), sender);
        assert_eq!(pipeline.store().duty_count(DutyClass::Selected, 10).unwrap(), 3, "durable");
        scheduler.start(Arc::new(StoreOwn(pipeline.clone()))).unwrap();
        let mut checked = checked_in_order(&received, 3);
        checked.sort();
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(checked, expected);
        scheduler.stop();
        assert!(received.try_recv().is_err(), "nothing checked twice");
        assert_eq!(pipeline.store().duty_count(DutyClass::Selected, 10).unwrap(), 0);
        for id in &ids {
            assert_eq!(pipeline.store().votes_by(id, &devnet_keypair(0).public()).unwrap().len(), 1);
        }
    }

    /// One miner floods 50 artifacts, then another submits one: the second
    /// miner's artifact is checked second, not 51st; a dispute goes first.
    #[test]
    fn a_flooding_miner_does_not_crowd_out_another_and_disputes_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec();
        let (flooder, other) = (Keypair::from_secret([1; 32]), Keypair::from_secret([2; 32]));
        let (sender, received) = mpsc::channel();
        let (pipeline, scheduler) = node(&spec, dir.path(), sender);
        for seed in 0..50 {
            pipeline.ingest_artifact(&artifact_of(&spec, &flooder, seed), Source::Rpc).unwrap();
        }
        let fraud = pipeline.ingest_artifact(&artifact_of(&spec, &other, 100), Source::Rpc).unwrap().id;
        // A dispute on one of the flood: validator 1 rejects it.
        let disputed = pipeline.ingest_artifact(&artifact_of(&spec, &flooder, 200), Source::Rpc).unwrap().id;
        let reject = VoteBody {
            chain_id: spec.chain_id(),
            artifact_id: disputed,
            validator: devnet_keypair(1).public(),
            selection_proof: devnet_keypair(1).vrf().prove(&disputed),
            verdict: Verdict::Reject,
            figures: inconclusive(spec.numerics.label(), "").1,
            created_at_ms: 1,
        }
        .sign(&devnet_keypair(1));
        pipeline.ingest_vote(&reject.encode(), Source::Gossip).unwrap();
        assert_eq!(pipeline.store().duty(&disputed).unwrap().unwrap().class, DutyClass::Dispute);

        scheduler.start(Arc::new(StoreOwn(pipeline.clone()))).unwrap();
        let order = checked_in_order(&received, 3);
        scheduler.stop();
        assert_eq!(order[0], disputed, "the dispute first");
        assert!(order[1..].contains(&fraud), "the other miner's artifact within the first two: {order:?}");
    }

    #[test]
    fn an_inconclusive_vote_says_why_within_the_vote_limit() {
        let (verdict, figures) = inconclusive("gguf-native-cpu/v3".into(), &"é".repeat(400));
        assert_eq!(verdict, Verdict::Inconclusive);
        assert!(figures.reason.len() <= poi_artifact::MAX_REASON_LEN && figures.reason.starts_with('é'));
        let id = poi_artifact::sha256(b"a");
        let vote = VoteBody {
            chain_id: spec().chain_id(),
            artifact_id: id,
            validator: devnet_keypair(0).public(),
            selection_proof: devnet_keypair(0).vrf().prove(&id),
            verdict,
            figures,
            created_at_ms: 1,
        }
        .sign(&devnet_keypair(0));
        assert_eq!(Vote::decode(&vote.encode()).unwrap(), vote, "the longest reason still makes a valid vote");
    }
}
