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
use jsonrpsee::server::{
    serve_with_graceful_shutdown, stop_channel, BatchRequestConfig, HttpBody, HttpRequest, HttpResponse,
    RpcServiceBuilder, Server, ServerHandle,
};
use jsonrpsee::Methods;
use poi_rpc_api::PoiApiServer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::rate_limit::{RateLimiter, RpcLimits};
use super::{Rpc, MAX_BATCH, MAX_CONNECTIONS, MAX_SUBSCRIPTIONS_PER_CONNECTION};

/// Open TCP connections at once (an HTTP request or WebSocket session also
/// needs one of jsonrpsee's `MAX_CONNECTIONS` places while it runs); past
/// this, new connections are closed at once.
const MAX_SOCKETS: usize = 2 * MAX_CONNECTIONS as usize;

/// Who may reach the server and how much it takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RpcConfig {
    pub limits: RpcLimits,
    /// `Origin` values allowed (`"*"` allows any); empty: requests with an
    /// `Origin` header are refused.
    pub allowed_origins: Vec<String>,
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
        .to_service_builder();
    let origins: Arc<[String]> = config.allowed_origins.into();
    let sockets = Arc::new(Semaphore::new(MAX_SOCKETS));
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
            let Ok(place) = sockets.clone().try_acquire_owned() else { continue };
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
            let stopped = stop.clone().shutdown();
            tokio::spawn(async move {
                let _ = serve_with_graceful_shutdown(socket, service, stopped).await;
                drop(place);
            });
        }
    });
    Ok((local, handle))
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
