//! The JSON-RPC server's accept loop, on jsonrpsee's tower service builder
//! so that every connection knows its client's IP: each TCP connection gets
//! its own rate-limit buckets and shares its IP's and the node's
//! ([`rate_limit`](super::rate_limit)). Requests carrying an `Origin` header
//! (what browsers send with a WebSocket handshake or a cross-site request)
//! are refused unless the origin is allowed, so a web page cannot drive a
//! node on the visitor's loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use jsonrpsee::server::{
    stop_channel, BatchRequestConfig, HttpBody, HttpRequest, HttpResponse, PingConfig, RpcServiceBuilder, Server,
    ServerHandle, StopHandle,
};
use jsonrpsee::Methods;
use poi_rpc_api::PoiApiServer;
use tokio::net::{TcpListener, TcpStream};

use super::rate_limit::{RateLimiter, RpcLimits};
use super::sockets::SocketPlaces;
use super::{Rpc, MAX_BATCH, MAX_CONNECTIONS, MAX_SUBSCRIPTIONS_PER_CONNECTION};

/// Open TCP connections at once (an HTTP request or WebSocket session also
/// needs one of jsonrpsee's `MAX_CONNECTIONS` places while it runs); past
/// this, or past the client's share, new connections are closed at once.
pub const MAX_SOCKETS: usize = 2 * MAX_CONNECTIONS as usize;

/// How long a socket may take to send a request's head, the first or the
/// next on a keep-alive connection, before it is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may reach the server and how much it takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RpcConfig {
    pub limits: RpcLimits,
    /// `Origin` values allowed (`"*"` allows any); empty: requests with an
    /// `Origin` header are refused.
    pub allowed_origins: Vec<String>,
    /// Sockets one client source (an IPv4 address, an IPv6 /64) may hold of
    /// the [`MAX_SOCKETS`]; `None`: no share, one client may hold them all.
    pub max_sockets_per_ip: Option<usize>,
}

/// The request size limit for `max_artifact_bytes`: an artifact travels in
/// hex, twice its size, plus the JSON around it.
pub fn max_request_bytes(max_artifact_bytes: u32) -> u32 {
    max_artifact_bytes.saturating_mul(2).saturating_add(64 << 10)
}

/// Starts the server; the handle stops it.
pub async fn serve(addr: SocketAddr, rpc: Rpc, config: RpcConfig) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let max_request = max_request_bytes(rpc.pipeline.spec().limits.max_artifact_bytes);
    let limiter = RateLimiter::new(config.limits, rpc.pipeline.metrics().clone());
    let methods: Methods = rpc.into_rpc().into();
    let builder = Server::builder()
        .max_request_body_size(max_request)
        .max_response_body_size(max_request.saturating_mul(2))
        .max_connections(MAX_CONNECTIONS)
        .max_subscriptions_per_connection(MAX_SUBSCRIPTIONS_PER_CONNECTION)
        .set_batch_request_config(BatchRequestConfig::Limit(MAX_BATCH))
        // A WebSocket gets no request heads to time out: a session that
        // stops answering pings is closed instead.
        .enable_ws_ping(PingConfig::new())
        .to_service_builder();
    let origins: Arc<[String]> = config.allowed_origins.into();
    let sockets = SocketPlaces::new(MAX_SOCKETS, config.max_sockets_per_ip);
    let (stop, handle) = stop_channel();
    tokio::spawn(async move {
        loop {
            let (socket, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors, say: retrying at once
                        // would spin on the same error.
                        tracing::warn!(%err, "accepting a JSON-RPC connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.clone().shutdown() => return,
            };
            let Some(place) = sockets.take(remote.ip()) else { continue };
            let limits = limiter.connection(remote.ip());
            let service = builder
                .clone()
                .set_rpc_middleware(RpcServiceBuilder::new().layer_fn(move |inner| limits.wrap(inner)))
                .build(methods.clone(), stop.clone());
            let origins = origins.clone();
            let service = tower::service_fn(move |request: HttpRequest<hyper::body::Incoming>| {
                let mut service = service.clone();
                let refused = refused_origin(&request, &origins);
                // A concrete error type: with jsonrpsee's boxed one the
                // spawned connection's future fails rustc's `Send` check
                // (rust-lang/rust#102211).
                async move {
                    match refused {
                        Some(response) => Ok(response),
                        None => tower::Service::call(&mut service, request)
                            .await
                            .map_err(|err| std::io::Error::other(err.to_string())),
                    }
                }
                .boxed()
            });
            let stop = stop.clone();
            tokio::spawn(async move {
                serve_connection(socket, service, stop).await;
                drop(place);
            });
        }
    });
    Ok((local, handle))
}

/// Serves one socket, HTTP/1.1 with WebSocket upgrades, until the client
/// closes it, it sends no request head within [`HEADER_TIMEOUT`], or the
/// server stops. (jsonrpsee's own `serve_with_graceful_shutdown` sets no
/// timer, so a silent socket would be held for ever.)
async fn serve_connection<S>(socket: TcpStream, service: S, stop: StopHandle)
where
    S: tower::Service<HttpRequest<hyper::body::Incoming>, Response = HttpResponse, Error = std::io::Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(socket), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.shutdown() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::trace!(%err, "JSON-RPC connection ended");
    }
}

/// `403` for a request whose `Origin` is not allowed; `None` lets it in.
fn refused_origin<B>(request: &HttpRequest<B>, allowed: &[String]) -> Option<HttpResponse> {
    let origin = request.headers().get(hyper::header::ORIGIN)?;
    let listed = allowed.iter().any(|a| a == "*" || origin.as_bytes() == a.as_bytes());
    if listed {
        return None;
    }
    tracing::debug!(?origin, "refused a request from a web origin");
    let body = HttpBody::from(format!(
        "origin {} is not allowed (poi node --rpc-allow-origin)\n",
        String::from_utf8_lossy(origin.as_bytes())
    ));
    Some(HttpResponse::builder().status(hyper::StatusCode::FORBIDDEN).body(body).expect("static response parts"))
}
