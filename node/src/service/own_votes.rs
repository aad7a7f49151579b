//! This validator's own votes: the scheduler's workers cast them here. The
//! vote is stored (fsynced, with the duty it discharges) on the worker's
//! thread before the cast returns, and only then handed to the task that
//! gossips it: a vote leaves the node only once a restart knows it was cast.

use std::sync::Arc;

use poi_artifact::Vote;
use tokio::sync::mpsc;

use crate::network::{NetworkClient, Topic};
use crate::pipeline::Pipeline;
use crate::scheduler::VoteSink;

pub(super) struct OwnVotes {
    pub pipeline: Arc<Pipeline>,
    pub gossip: mpsc::Sender<Vec<u8>>,
}

impl VoteSink for OwnVotes {
    fn cast(&self, vote: Vote) {
        match self.pipeline.ingest_own_vote(&vote) {
            // A full gossip queue waits: the worker has nothing better to do
            // than hand over what it just signed.
            Ok(true) => drop(self.gossip.blocking_send(vote.encode())),
            Ok(false) => {}
            Err(err) => tracing::error!(%err, "storing own vote"),
        }
    }
}

/// Publishes stored own votes until the network stops.
pub(super) async fn publish(network: NetworkClient, mut votes: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = votes.recv().await {
        if network.publish(Topic::Votes, bytes).await.is_err() {
            return;
        }
    }
}
