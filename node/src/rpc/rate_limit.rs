//! Call-rate limits for JSON-RPC: one token bucket per connection and one for
//! the whole node, both refilled continuously with one second of burst. A
//! refused call gets [`RATE_LIMITED`] at once instead of queueing, so a busy
//! client can neither hold memory nor starve the others.
//!
//! jsonrpsee builds the RPC service once per WebSocket connection and once
//! per HTTP request, so "per connection" is per WebSocket; plain HTTP callers
//! share the node-wide bucket.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use jsonrpsee::server::middleware::rpc::RpcServiceT;
use jsonrpsee::server::MethodResponse;
use jsonrpsee::types::{ErrorObject, Request};

use poi_rpc_api::error_code::RATE_LIMITED;

use crate::metrics::Metrics;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RpcLimits {
    /// Calls per second across all clients; `None` is unlimited.
    pub node_calls_per_s: Option<u32>,
    /// Calls per second on one WebSocket connection; `None` is unlimited.
    pub connection_calls_per_s: Option<u32>,
}

#[derive(Debug)]
struct TokenBucket {
    per_s: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(per_s: u32) -> Self {
        Self { per_s: f64::from(per_s), tokens: f64::from(per_s), refilled: Instant::now() }
    }

    fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_s).min(self.per_s);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Builds the per-connection middleware; holds the node-wide bucket.
#[derive(Clone)]
pub struct RateLimitLayer {
    limits: RpcLimits,
    node: Option<Arc<Mutex<TokenBucket>>>,
    metrics: Arc<Metrics>,
}

impl RateLimitLayer {
    pub fn new(limits: RpcLimits, metrics: Arc<Metrics>) -> Self {
        let node = limits.node_calls_per_s.map(|rate| Arc::new(Mutex::new(TokenBucket::new(rate))));
        Self { limits, node, metrics }
    }

    pub fn wrap<S>(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            connection: self.limits.connection_calls_per_s.map(|rate| Arc::new(Mutex::new(TokenBucket::new(rate)))),
            node: self.node.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    connection: Option<Arc<Mutex<TokenBucket>>>,
    node: Option<Arc<Mutex<TokenBucket>>>,
    metrics: Arc<Metrics>,
}

impl<S> RateLimit<S> {
    /// The connection's bucket goes first so that a client over its own
    /// limit does not also drain the node's.
    fn admit(&self) -> bool {
        let now = Instant::now();
        let take = |bucket: &Option<Arc<Mutex<TokenBucket>>>| {
            bucket.as_ref().is_none_or(|b| b.lock().unwrap_or_else(|e| e.into_inner()).try_take(now))
        };
        take(&self.connection) && take(&self.node)
    }
}

impl<'a, S> RpcServiceT<'a> for RateLimit<S>
where
    S: RpcServiceT<'a> + Send + Sync,
{
    type Future = futures::future::Either<S::Future, std::future::Ready<MethodResponse>>;

    fn call(&self, request: Request<'a>) -> Self::Future {
        if self.admit() {
            futures::future::Either::Left(self.inner.call(request))
        } else {
            self.metrics.rpc_rate_limited.inc();
            let error = ErrorObject::borrowed(RATE_LIMITED, "rate limited: retry later", None);
            futures::future::Either::Right(std::future::ready(MethodResponse::error(request.id, error)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_one_second_of_burst_then_refills_at_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket { per_s: 10.0, tokens: 10.0, refilled: start };
        assert_eq!((0..20).filter(|_| bucket.try_take(start)).count(), 10);
        assert!(!bucket.try_take(start + Duration::from_millis(50)));
        assert!(bucket.try_take(start + Duration::from_millis(160)));
        // A long idle period refills to the burst, not beyond it.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| bucket.try_take(later)).count(), 10);
    }
}
