//! The validation pool: a fixed number of threads that take jobs from one
//! bounded queue and do the blocking work (decoding, signatures, the replay
//! check, RocksDB), then hand the outcome back to the router.

use std::sync::{Arc, Mutex};

use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::request_response::ResponseChannel;
use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::network::{SyncEntry, SyncResponse, Topic, SYNC_PAGE_BYTES, SYNC_PAGE_ENTRIES};
use crate::pipeline::{IngestError, Pipeline, Source};

pub(super) enum Job {
    Gossip {
        topic: Topic,
        message_id: MessageId,
        source: PeerId,
        data: Vec<u8>,
    },
    /// A page of a peer's log, from its sequence `from`.
    SyncPage {
        peer: PeerId,
        from: u64,
        page: SyncResponse,
    },
    ServeSync {
        from: u64,
        channel: ResponseChannel<SyncResponse>,
    },
}

pub(super) enum Done {
    Gossip {
        message_id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
    },
    /// `bad` entries were invalid; with none, the cursor moved on to `next`.
    SyncPage {
        peer: PeerId,
        more: bool,
        bad: usize,
    },
    ServeSync {
        channel: ResponseChannel<SyncResponse>,
        page: SyncResponse,
    },
}

pub(super) fn spawn(
    count: usize,
    pipeline: &Arc<Pipeline>,
    jobs: mpsc::Receiver<Job>,
    done: mpsc::Sender<Done>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let jobs = Arc::new(Mutex::new(jobs));
    (0..count.max(1))
        .map(|index| {
            let (pipeline, jobs, done) = (pipeline.clone(), jobs.clone(), done.clone());
            std::thread::Builder::new().name(format!("validate-{index}")).spawn(move || run(&pipeline, &jobs, &done))
        })
        .collect()
}

fn run(pipeline: &Pipeline, jobs: &Mutex<mpsc::Receiver<Job>>, done: &mpsc::Sender<Done>) {
    loop {
        let Some(job) = jobs.lock().expect("job queue").blocking_recv() else { return };
        let result = match job {
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
                Done::Gossip { message_id, source, acceptance }
            }
            Job::SyncPage { peer, from, page } => sync_page(pipeline, peer, from, page),
            Job::ServeSync { from, channel } => {
                let page = pipeline
                    .store()
                    .log_page(from, SYNC_PAGE_ENTRIES, SYNC_PAGE_BYTES)
                    .map(SyncResponse::from)
                    .unwrap_or_else(|err| {
                        tracing::error!(%err, "reading the log for a peer");
                        SyncResponse { entries: Vec::new(), next: from, more: false }
                    });
                Done::ServeSync { channel, page }
            }
        };
        if done.blocking_send(result).is_err() {
            return;
        }
    }
}

/// Checks and stores an object; `Ok(true)` if gossip should carry it on (a
/// vote over the bound of two per validator, or refused by the waiting
/// buffer, is not).
fn ingest(pipeline: &Pipeline, topic: Topic, bytes: &[u8], source: Source) -> Result<bool, IngestError> {
    match topic {
        Topic::Artifacts => pipeline.ingest_artifact(bytes, source).map(|_| true),
        Topic::Votes => pipeline.ingest_vote(bytes, source).map(|outcome| outcome.forward()),
    }
}

/// Checks and stores every entry; the cursor moves past the page only when
/// the peer sent nothing invalid (a peer that did is penalised instead).
fn sync_page(pipeline: &Pipeline, peer: PeerId, from: u64, page: SyncResponse) -> Done {
    let mut bad = 0;
    for entry in &page.entries {
        let (topic, bytes) = match entry {
            SyncEntry::Artifact(bytes) => (Topic::Artifacts, bytes),
            SyncEntry::Vote(bytes) => (Topic::Votes, bytes),
        };
        match ingest(pipeline, topic, bytes, Source::Sync) {
            Err(err) if err.is_peer_fault() => {
                tracing::warn!(%peer, %err, "invalid sync entry");
                bad += 1;
            }
            Err(err) => tracing::error!(%err, "storing synced entry"),
            Ok(_) => {}
        }
    }
    if bad == 0 && page.next != from {
        if let Err(err) = pipeline.store().set_sync_cursor(&peer.to_bytes(), page.next) {
            tracing::error!(%err, "saving sync cursor");
        }
    }
    Done::SyncPage { peer, more: page.more, bad }
}
