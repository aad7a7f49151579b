//! This validator's own votes: the scheduler signs them, this task alone
//! stores them and then gossips them, so that a vote leaves the node only
//! once it is stored, and never a second one for the same artifact.

use std::sync::Arc;

use poi_artifact::Vote;
use tokio::sync::mpsc;

use crate::network::{NetworkClient, Topic};
use crate::pipeline::Pipeline;

pub(super) struct OwnVotes {
    pub pipeline: Arc<Pipeline>,
    pub network: NetworkClient,
}

impl OwnVotes {
    pub(super) async fn run(self, mut votes: mpsc::Receiver<Vote>) {
        while let Some(vote) = votes.recv().await {
            let bytes = vote.encode();
            let stored = {
                let (pipeline, bytes) = (self.pipeline.clone(), bytes.clone());
                tokio::task::spawn_blocking(move || pipeline.ingest_own_vote(&bytes)).await
            };
            match stored {
                Ok(Ok(true)) => {
                    if self.network.publish(Topic::Votes, bytes).await.is_err() {
                        return;
                    }
                }
                Ok(Ok(false)) => {}
                Ok(Err(err)) => tracing::error!(%err, "storing own vote"),
                Err(err) => tracing::error!(%err, "vote task"),
            }
        }
    }
}
