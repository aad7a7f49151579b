//! The node's two thread pools: validation (gossip and synced pages:
//! decoding, signatures, the replay check, RocksDB) and sync serving (pages
//! of this node's log for peers), each fed by a bounded queue of its own so
//! that peers asking for pages cannot crowd out gossip. A job that panics is
//! logged and counted and answered as [`Job::fallback`] says; its thread
//! takes the next job, so no input can kill a pool.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};

use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::request_response::ResponseChannel;
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::sync::{self, PageOutcome};
use crate::metrics::Metrics;
use crate::network::{SyncResponse, Topic, SYNC_PAGE_BYTES, SYNC_PAGE_ENTRIES};
use crate::pipeline::{IngestError, Pipeline, Source};
use crate::store::SyncCursor;

pub(super) enum Job {
    Gossip {
        topic: Topic,
        message_id: MessageId,
        source: PeerId,
        data: Vec<u8>,
    },
    /// A page of a peer's log, asked for at `cursor`; a validator's
    /// (`trusted`) is exempt from the admission window.
    SyncPage {
        peer: PeerId,
        cursor: SyncCursor,
        trusted: bool,
        page: SyncResponse,
    },
    ServeSync {
        peer: PeerId,
        from: u64,
        channel: ResponseChannel<SyncResponse>,
    },
}

pub(super) enum Done {
    Gossip {
        message_id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
        bytes: usize,
    },
    SyncPage {
        peer: PeerId,
        outcome: PageOutcome,
    },
    ServeSync {
        peer: PeerId,
        /// `None` when the page could not be made: the request is dropped.
        answer: Option<(ResponseChannel<SyncResponse>, SyncResponse)>,
    },
}

impl Job {
    /// What the router is told when the job panics: gossip is ignored, a
    /// synced page is tried again later, a peer's request is dropped.
    fn fallback(&self) -> Done {
        match self {
            Self::Gossip { message_id, source, data, .. } => Done::Gossip {
                message_id: message_id.clone(),
                source: *source,
                acceptance: MessageAcceptance::Ignore,
                bytes: data.len(),
            },
            Self::SyncPage { peer, .. } => Done::SyncPage { peer: *peer, outcome: PageOutcome::Retry },
            Self::ServeSync { peer, .. } => Done::ServeSync { peer: *peer, answer: None },
        }
    }
}

/// What a pool's threads do with a job.
pub(super) type Handler = Arc<dyn Fn(Job) -> Done + Send + Sync>;

/// The handler of both pools: the pipeline's.
pub(super) fn handler(pipeline: Arc<Pipeline>) -> Handler {
    Arc::new(move |job| handle(&pipeline, job))
}

pub(super) fn spawn(
    name: &str,
    count: usize,
    handler: Handler,
    jobs: mpsc::Receiver<Job>,
    done: mpsc::Sender<Done>,
    metrics: Arc<Metrics>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let jobs = Arc::new(Mutex::new(jobs));
    (0..count.max(1))
        .map(|index| {
            let (handler, jobs, done, metrics) = (handler.clone(), jobs.clone(), done.clone(), metrics.clone());
            std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || run(&*handler, &jobs, &done, &metrics))
        })
        .collect()
}

fn run(
    handler: &(dyn Fn(Job) -> Done + Send + Sync),
    jobs: &Mutex<mpsc::Receiver<Job>>,
    done: &mpsc::Sender<Done>,
    metrics: &Metrics,
) {
    loop {
        let Some(job) = jobs.lock().unwrap_or_else(PoisonError::into_inner).blocking_recv() else { return };
        let fallback = job.fallback();
        let result = catch_unwind(AssertUnwindSafe(|| handler(job))).unwrap_or_else(|panic| {
            metrics.validation_panics.inc();
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(%message, "a validation job panicked; its worker carries on");
            fallback
        });
        if done.blocking_send(result).is_err() {
            return;
        }
    }
}

fn handle(pipeline: &Pipeline, job: Job) -> Done {
    match job {
        Job::Gossip { topic, message_id, source, data } => {
            let acceptance = match ingest(pipeline, topic, &data, Source::Gossip) {
                Ok(true) => MessageAcceptance::Accept,
                Ok(false) => MessageAcceptance::Ignore,
                Err(err) if err.is_peer_fault() => {
                    tracing::debug!(%source, %err, "invalid gossip");
                    MessageAcceptance::Reject
                }
                Err(IngestError::Store(err)) => {
                    tracing::error!(%err, "storing gossip");
                    MessageAcceptance::Ignore
                }
                Err(err) => {
                    tracing::debug!(%source, %err, "gossip not admitted");
                    MessageAcceptance::Ignore
                }
            };
            Done::Gossip { message_id, source, acceptance, bytes: data.len() }
        }
        Job::SyncPage { peer, cursor, trusted, page } => {
            let source = if trusted { Source::Sync } else { Source::Relay };
            let outcome = sync::take_page(pipeline, &peer, cursor, trusted, page, |topic, bytes| {
                ingest(pipeline, topic, bytes, source)
            });
            Done::SyncPage { peer, outcome }
        }
        Job::ServeSync { peer, from, channel } => {
            let answer = match pipeline.store().log_page(from, SYNC_PAGE_ENTRIES, SYNC_PAGE_BYTES) {
                Ok(page) => Some((channel, SyncResponse::from(page))),
                Err(err) => {
                    tracing::error!(%err, "reading the log for a peer");
                    None
                }
            };
            Done::ServeSync { peer, answer }
        }
    }
}

/// Checks and stores an object; `Ok(true)` if it is new here and gossip
/// should carry it on (not a duplicate, nor a vote over the bound of two
/// per validator or refused by the waiting buffer).
fn ingest(pipeline: &Pipeline, topic: Topic, bytes: &[u8], source: Source) -> Result<bool, IngestError> {
    match topic {
        Topic::Artifacts => pipeline.ingest_artifact(bytes, source).map(|ingested| ingested.new),
        Topic::Votes => pipeline.ingest_vote(bytes, source).map(|outcome| outcome.forward()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gossip(data: &[u8]) -> Job {
        let message_id = MessageId::new(data);
        Job::Gossip { topic: Topic::Artifacts, message_id, source: PeerId::random(), data: data.to_vec() }
    }

    /// A job that panics (no input should, but a bug may) is answered
    /// `Ignore`, counted, and the pool goes on: before this, the thread died
    /// silently and, once all had, gossip was ignored for good.
    #[test]
    fn a_panicking_job_is_counted_and_its_worker_takes_the_next() {
        let handler: Handler = Arc::new(|job| match job {
            Job::Gossip { data, .. } if data == b"boom" => panic!("a bug in validation"),
            Job::Gossip { message_id, source, data, .. } => {
                Done::Gossip { message_id, source, acceptance: MessageAcceptance::Accept, bytes: data.len() }
            }
            _ => unreachable!("only gossip here"),
        });
        let metrics = Arc::new(Metrics::default());
        let (jobs_tx, jobs) = mpsc::channel(16);
        let (done, mut done_rx) = mpsc::channel(16);
        // One thread: the job after the panic can only be done by the same
        // worker.
        let threads = spawn("test", 1, handler, jobs, done, metrics.clone()).unwrap();
        for data in [&b"boom"[..], b"fine", b"boom", b"fine"] {
            jobs_tx.blocking_send(gossip(data)).unwrap();
        }
        let answers: Vec<_> = (0..4)
            .map(|_| match done_rx.blocking_recv().unwrap() {
                Done::Gossip { acceptance, .. } => matches!(acceptance, MessageAcceptance::Accept),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(answers, [false, true, false, true], "panics are ignored, the rest accepted");
        assert_eq!(metrics.validation_panics.get(), 2);
        drop(jobs_tx);
        threads.into_iter().for_each(|t| t.join().expect("the worker ends cleanly"));
    }

    /// Before: a duplicate was answered `Accept`, so gossipsub forwarded it
    /// again at any age. Now only a new artifact is forwarded.
    #[test]
    fn a_duplicate_is_ignored_not_forwarded_again() {
        use crate::pipeline::Admission;
        use crate::store::Store;
        let spec = poi_chain_spec::ChainSpec::devnet();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), spec.clone()).unwrap());
        let pipeline = Arc::new(Pipeline::new(store, spec.clone(), Arc::default(), None, Admission::ANY_AGE));
        let bytes = poi_verifier::simulate::build(&spec, 16, 1, poi_verifier::simulate::Chooser::Seeded).bytes;
        let answers: Vec<_> = (0..2)
            .map(|_| match handle(&pipeline, gossip(&bytes)) {
                Done::Gossip { acceptance, .. } => format!("{acceptance:?}"),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(answers, ["Accept", "Ignore"]);
    }
}
