//! Rate limits for JSON-RPC, in calls and in request bytes, at three levels:
//! each TCP connection (an HTTP keep-alive connection or a WebSocket), each
//! client IP, and the whole node; every bucket is refilled continuously
//! with one second of burst. A call must fit in all three, the narrowest
//! first, so a client over its own limit does not also drain the wider
//! ones. A refused call gets [`RATE_LIMITED`] at once instead of queueing,
//! so a busy client can neither hold memory nor starve the others: one
//! remote client cannot lock the local miner out (it has its own IP's
//! allowance), and a submit costs what it weighs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use jsonrpsee::server::middleware::rpc::RpcServiceT;
use jsonrpsee::server::MethodResponse;
use jsonrpsee::types::{ErrorObject, Request};

use poi_rpc_api::error_code::RATE_LIMITED;

use super::sockets::client_source;
use crate::metrics::Metrics;
use crate::rate::TokenBucket;

/// One level's allowance; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    pub calls_per_s: Option<u32>,
    pub bytes_per_s: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RpcLimits {
    pub node: Rate,
    pub ip: Rate,
    pub connection: Rate,
}

impl RpcLimits {
    pub const UNLIMITED: RpcLimits = RpcLimits { node: Rate::NONE, ip: Rate::NONE, connection: Rate::NONE };
}

impl Rate {
    pub const NONE: Rate = Rate { calls_per_s: None, bytes_per_s: None };
}

/// Client sources (IPv4 addresses, IPv6 /64s) whose buckets are kept while
/// no connection of theirs is open; past this, idle ones are forgotten.
const IDLE_IPS: usize = 1024;

#[derive(Debug)]
struct Buckets {
    calls: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

type Level = Arc<Mutex<Buckets>>;

fn level(rate: Rate) -> Level {
    Arc::new(Mutex::new(Buckets {
        calls: rate.calls_per_s.map(TokenBucket::new),
        bytes: rate.bytes_per_s.map(TokenBucket::new),
    }))
}

fn admit(level: &Level, bytes: usize, now: Instant) -> bool {
    let mut buckets = level.lock().unwrap_or_else(PoisonError::into_inner);
    let Buckets { calls, bytes: byte_bucket } = &mut *buckets;
    calls.as_mut().is_none_or(|b| b.try_take(now))
        && byte_bucket.as_mut().is_none_or(|b| b.try_take_n(bytes as f64, now))
}

/// Hands out each connection's middleware; holds the node's and the IPs'
/// buckets.
#[derive(Clone)]
pub struct RateLimiter {
    limits: RpcLimits,
    node: Level,
    ips: Arc<Mutex<HashMap<IpAddr, Level>>>,
    metrics: Arc<Metrics>,
}

impl RateLimiter {
    pub fn new(limits: RpcLimits, metrics: Arc<Metrics>) -> Self {
        Self { limits, node: level(limits.node), ips: Arc::default(), metrics }
    }

    /// The limits of a new connection from `ip` (its client source's).
    pub fn connection(&self, ip: IpAddr) -> ConnectionLimits {
        let ip = client_source(ip);
        let mut ips = self.ips.lock().unwrap_or_else(PoisonError::into_inner);
        if ips.len() >= IDLE_IPS && !ips.contains_key(&ip) {
            // Only this map holds an idle IP's level.
            ips.retain(|_, level| Arc::strong_count(level) > 1);
        }
        let ip_level = ips.entry(ip).or_insert_with(|| level(self.limits.ip)).clone();
        ConnectionLimits {
            levels: [level(self.limits.connection), ip_level, self.node.clone()],
            metrics: self.metrics.clone(),
        }
    }
}

/// The buckets one connection's calls draw on, narrowest first.
#[derive(Clone)]
pub struct ConnectionLimits {
    levels: [Level; 3],
    metrics: Arc<Metrics>,
}

impl ConnectionLimits {
    pub fn wrap<S>(&self, inner: S) -> RateLimit<S> {
        RateLimit { inner, limits: self.clone() }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limits: ConnectionLimits,
}

impl<'a, S> RpcServiceT<'a> for RateLimit<S>
where
    S: RpcServiceT<'a> + Send + Sync,
{
    type Future = futures::future::Either<S::Future, std::future::Ready<MethodResponse>>;

    fn call(&self, request: Request<'a>) -> Self::Future {
        let bytes = request.params.as_ref().map_or(0, |params| params.get().len()) + request.method.len();
        let now = Instant::now();
        if self.limits.levels.iter().all(|level| admit(level, bytes, now)) {
            futures::future::Either::Left(self.inner.call(request))
        } else {
            self.limits.metrics.rpc_rate_limited.inc();
            let error = ErrorObject::borrowed(RATE_LIMITED, "rate limited: retry later", None);
            futures::future::Either::Right(std::future::ready(MethodResponse::error(request.id, error)))
        }
    }
}
