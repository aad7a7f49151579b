//! The model's thread: one continuous batch fed from a bounded queue.
//!
//! Requests wait in a queue of at most `queue` entries (a full queue is the
//! caller's 503, never an unbounded backlog); the engine takes them into the
//! batch while it has fewer than `max_batch` members, prefilling each on
//! joining (one per step once others are decoding, so a burst of arrivals
//! does not hold up the streams already running), then runs one decoding
//! step for all members at a time. Each
//! request's updates go back on its own channel, at most one per generated
//! token; a request whose receiver is gone (the client left) is dropped from
//! the batch before the next step.

use std::sync::Arc;

use poi_artifact::{Candidate, Request, SamplingParams};
use poi_model::batch::{Batch, Event};
use poi_model::generate::{Draws, Generated, Sequence, StopRules};
use poi_model::runtime::Runtime;
use tokio::sync::mpsc;

pub struct Job {
    /// Its prompt, seed and stop rules; the run seed must be set.
    pub request: Request,
    pub updates: mpsc::UnboundedSender<Update>,
}

pub enum Update {
    Token { candidates: Vec<Candidate>, chosen: u8 },
    Done(Result<Generated, String>),
}

#[derive(Debug)]
pub enum Refused {
    /// The queue is full: come back later.
    Busy,
    /// The engine thread has stopped (it logged why).
    Stopped,
}

#[derive(Clone)]
pub struct EngineHandle {
    jobs: mpsc::Sender<Job>,
}

impl EngineHandle {
    /// Starts the engine thread, which runs until every handle is dropped.
    pub fn start(runtime: Arc<Runtime>, sampling: SamplingParams, k: u16, queue: usize, max_batch: usize) -> Self {
        let (jobs, receiver) = mpsc::channel(queue);
        std::thread::Builder::new()
            .name("poi-engine".into())
            .spawn(move || run(&runtime, sampling, k, receiver, max_batch.max(1)))
            .expect("spawning the engine thread");
        Self { jobs }
    }

    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        self.jobs.try_send(job).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => Refused::Busy,
            mpsc::error::TrySendError::Closed(_) => Refused::Stopped,
        })
    }
}

type Tag = mpsc::UnboundedSender<Update>;

fn run(runtime: &Runtime, sampling: SamplingParams, k: u16, mut jobs: mpsc::Receiver<Job>, max_batch: usize) {
    let model = &runtime.model;
    let mut batch: Batch<'_, Tag> = Batch::new(model);
    let on_event = |updates: &mut Tag, event: Event<'_>| {
        // A closed channel is dropped from the batch before the next step.
        let _ = updates.send(match event {
            Event::Token { candidates, chosen } => Update::Token { candidates: candidates.to_vec(), chosen },
            Event::Done(generated) => Update::Done(Ok(generated)),
        });
    };
    loop {
        let decoding = !batch.is_empty();
        while batch.len() < max_batch {
            let job = if batch.is_empty() {
                match jobs.blocking_recv() {
                    Some(job) => job,
                    None => return,
                }
            } else {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            if job.updates.is_closed() {
                continue;
            }
            let Some(seed) = job.request.run_seed() else {
                let _ = job.updates.send(Update::Done(Err("the request has no run seed".into())));
                continue;
            };
            let stop = StopRules::of(&job.request);
            let joined =
                Sequence::new(model.config(), &job.request.prompt_tokens, sampling, k, &stop, Draws::Seeded(seed))
                    .and_then(|sequence| {
                        batch.join(&job.request.prompt_tokens, sequence, job.updates.clone(), on_event)
                    });
            if let Err(err) = joined {
                let _ = job.updates.send(Update::Done(Err(err.to_string())));
            }
            if decoding {
                break;
            }
        }
        batch.retain(|updates| !updates.is_closed());
        if batch.is_empty() {
            continue;
        }
        if let Err(err) = batch.step(on_event) {
            tracing::error!(%err, members = batch.len(), "a decoding step failed; failing its requests");
            batch.retain(|updates| {
                let _ = updates.send(Update::Done(Err(err.to_string())));
                false
            });
        }
    }
}
