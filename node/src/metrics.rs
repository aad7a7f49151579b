//! Prometheus metrics (DESIGN §7), served as text at `GET /metrics` on their
//! own port so that scraping never competes with RPC limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// Where an object came from: `gossip`, `rpc`, `sync` or `local`.
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub artifacts_stored: Family<SourceLabel, Counter>,
    pub artifacts_rejected: Family<SourceLabel, Counter>,
    pub artifacts_duplicate: Family<SourceLabel, Counter>,
    pub artifacts_outside_window: Family<SourceLabel, Counter>,
    pub votes_stored: Family<SourceLabel, Counter>,
    pub votes_rejected: Family<SourceLabel, Counter>,
    /// Gossip messages dropped unchecked because the validation queue was full.
    pub gossip_dropped: Counter,
    /// Votes past the bound of two per validator and artifact, dropped
    /// before any signature work.
    pub votes_over_limit: Counter,
    /// Votes waiting for their artifact (bounded: `pipeline::PENDING_VOTES`).
    pub votes_pending: Gauge,
    /// Votes for an unknown artifact refused because their validator's share
    /// of the waiting buffer was full.
    pub votes_pending_refused: Counter,
    pub full_checks: Family<OutcomeLabel, Counter>,
    /// Full checks this validator owes (durable; disputes and selections).
    pub full_check_queue: Gauge,
    pub peers: Gauge,
    pub sync_entries: Counter,
    /// Sync requests from peers refused: one already in flight, over the
    /// peer's or the node's rate, or the serving queue full.
    pub sync_requests_refused: Counter,
    /// Peers banned for misbehaving (bad sync pages or request floods).
    pub peers_banned: Counter,
    /// Invalid gossip messages that outlived gossipsub's cache while they
    /// waited, their senders penalised directly.
    pub gossip_late_rejects: Counter,
    /// Validation jobs that panicked (their worker carries on).
    pub validation_panics: Counter,
    pub rpc_rate_limited: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("poi"),
            artifacts_stored: Family::default(),
            artifacts_rejected: Family::default(),
            artifacts_duplicate: Family::default(),
            artifacts_outside_window: Family::default(),
            votes_stored: Family::default(),
            votes_rejected: Family::default(),
            gossip_dropped: Counter::default(),
            votes_over_limit: Counter::default(),
            votes_pending: Gauge::default(),
            votes_pending_refused: Counter::default(),
            full_checks: Family::default(),
            full_check_queue: Gauge::default(),
            peers: Gauge::default(),
            sync_entries: Counter::default(),
            sync_requests_refused: Counter::default(),
            peers_banned: Counter::default(),
            gossip_late_rejects: Counter::default(),
            validation_panics: Counter::default(),
            rpc_rate_limited: Counter::default(),
        };
        let registry = &mut metrics.registry;
        registry.register(
            "artifacts_stored",
            "Artifacts that passed the replay check and were stored",
            metrics.artifacts_stored.clone(),
        );
        registry.register(
            "artifacts_rejected",
            "Artifacts that failed decoding or the replay check",
            metrics.artifacts_rejected.clone(),
        );
        registry.register(
            "artifacts_duplicate",
            "Artifacts received again after being stored",
            metrics.artifacts_duplicate.clone(),
        );
        registry.register(
            "artifacts_outside_window",
            "Valid artifacts refused because their creation time is outside the admission window",
            metrics.artifacts_outside_window.clone(),
        );
        registry.register("votes_stored", "Signed votes stored", metrics.votes_stored.clone());
        registry.register(
            "votes_rejected",
            "Votes refused (bad encoding, signature, chain or eligibility)",
            metrics.votes_rejected.clone(),
        );
        registry.register(
            "gossip_dropped",
            "Gossip messages ignored because validation was saturated",
            metrics.gossip_dropped.clone(),
        );
        registry.register("full_checks", "Full checks run by this validator, by verdict", metrics.full_checks.clone());
        registry.register(
            "votes_over_limit",
            "Votes ignored because their validator already has two on the artifact",
            metrics.votes_over_limit.clone(),
        );
        registry.register("votes_pending", "Votes waiting for their artifact", metrics.votes_pending.clone());
        registry.register(
            "votes_pending_refused",
            "Votes for unknown artifacts refused because their validator's share of the buffer was full",
            metrics.votes_pending_refused.clone(),
        );
        registry.register("full_check_queue", "Full checks this validator owes", metrics.full_check_queue.clone());
        registry.register("peers", "Connected peers", metrics.peers.clone());
        registry.register("sync_entries", "Objects received through catch-up sync", metrics.sync_entries.clone());
        registry.register(
            "sync_requests_refused",
            "Sync requests from peers refused (one in flight already, over a rate, or the queue full)",
            metrics.sync_requests_refused.clone(),
        );
        registry.register("peers_banned", "Peers banned for misbehaving", metrics.peers_banned.clone());
        registry.register(
            "gossip_late_rejects",
            "Invalid gossip messages that outlived gossipsub's cache; their senders were penalised directly",
            metrics.gossip_late_rejects.clone(),
        );
        registry.register(
            "validation_panics",
            "Validation jobs that panicked; the worker carried on",
            metrics.validation_panics.clone(),
        );
        registry.register(
            "rpc_rate_limited",
            "JSON-RPC calls refused by the per-connection or node-wide rate limit",
            metrics.rpc_rate_limited.clone(),
        );
        metrics
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// Scrapes served at once; more connections wait in the kernel's backlog.
const METRICS_CONNECTIONS: usize = 16;
/// A connection must send its request headers within this, so that idle or
/// trickling clients cannot hold the slots.
const METRICS_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` until the task is dropped; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(METRICS_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, say: retrying at once would
                    // spin on the same error.
                    tracing::warn!(%err, "accepting a metrics connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        let response = if request.uri().path() == "/metrics" {
                            Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(metrics.render())))
                        } else {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"not found\n")))
                        };
                        Ok::<_, hyper::http::Error>(response.expect("static response parts"))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(METRICS_HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                drop(slot);
            });
        }
    });
    Ok((local, task))
}
