//! JSON-RPC over real HTTP and WebSocket on 127.0.0.1.

use poi_verifier::simulate as common;

use std::sync::Arc;

use common::Chooser;
use jsonrpsee::core::client::ClientT;
use jsonrpsee::http_client::HttpClientBuilder;
use jsonrpsee::rpc_params;
use jsonrpsee::ws_client::WsClientBuilder;
use poi_artifact::Keypair;
use poi_chain_spec::ChainSpec;
use poi_node::config::Settings;
use poi_node::metrics::Metrics;
use poi_node::pipeline::{Admission, Pipeline};
use poi_node::rpc::{max_request_bytes, serve, Rate, Rpc, RpcConfig, RpcLimits};
use poi_node::store::Store;
use poi_rpc_api::error_code::RATE_LIMITED;
use poi_rpc_api::{HistoryFilter, HistoryPage, NodeStatus, PoiApiClient, Status, SubmitResult};
use poi_verifier::miner_test::MinerTest;

/// A node with the default RPC settings.
async fn node(dir: &std::path::Path) -> (String, jsonrpsee::server::ServerHandle) {
    configured_node(dir, Settings::default().rpc_config()).await.0
}

async fn limited_node(
    dir: &std::path::Path,
    limits: RpcLimits,
) -> ((String, jsonrpsee::server::ServerHandle), Arc<Metrics>) {
    configured_node(dir, RpcConfig { limits, ..RpcConfig::default() }).await
}

async fn configured_node(
    dir: &std::path::Path,
    config: RpcConfig,
) -> ((String, jsonrpsee::server::ServerHandle), Arc<Metrics>) {
    let spec = ChainSpec::devnet();
    let store = Arc::new(Store::open(dir, spec.clone()).unwrap());
    let metrics = Arc::new(Metrics::default());
    // Fixture artifacts carry fixed, long-past creation times.
    let pipeline = Pipeline::new(store, spec, metrics.clone(), None, Admission::ANY_AGE);
    let rpc = Rpc::new(Arc::new(pipeline), None);
    let (addr, handle) = serve("127.0.0.1:0".parse().unwrap(), rpc, config).await.unwrap();
    ((addr.to_string(), handle), metrics)
}

#[tokio::test]
async fn submit_query_and_subscribe_over_http_and_ws() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, handle) = node(dir.path()).await;
    let http = HttpClientBuilder::default().build(format!("http://{addr}")).unwrap();
    let ws = WsClientBuilder::default().build(format!("ws://{addr}")).await.unwrap();
    let mut verdicts = ws.subscribe_verdicts().await.unwrap();

    let artifact = common::build(&ChainSpec::devnet(), 24, 3, Chooser::Seeded).artifact;
    let hex = hex::encode(artifact.encode());
    let submitted: SubmitResult = http.submit_artifact(hex.clone()).await.unwrap();
    assert!(submitted.stored);
    assert_eq!(submitted.artifact_id, artifact.id().to_hex());
    assert_eq!(submitted.verdict.status, Status::AcceptedReplayOnly);
    let again: SubmitResult = http.submit_artifact(hex).await.unwrap();
    assert!(!again.stored);

    let pushed =
        tokio::time::timeout(std::time::Duration::from_secs(5), verdicts.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(pushed.artifact_id, artifact.id().to_hex());

    let view = ws.get_artifact(artifact.id().to_hex()).await.unwrap().unwrap();
    assert_eq!(poi_artifact::Artifact::from_json_str(&view.to_string()).unwrap(), artifact);
    let page = http.verdict_history(Some(HistoryFilter { limit: Some(10), ..HistoryFilter::default() })).await.unwrap();
    assert_eq!(page.rows.len(), 1);
    let status: NodeStatus = http.status().await.unwrap();
    assert_eq!(status.chain_id, ChainSpec::devnet().chain_id().to_hex());
    let missing = http.get_verdict("00".repeat(32)).await.unwrap();
    assert!(missing.is_none());
    handle.stop().unwrap();
}

#[tokio::test]
async fn bad_requests_get_errors_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, handle) = node(dir.path()).await;
    let http = HttpClientBuilder::default().build(format!("http://{addr}")).unwrap();
    let spec = ChainSpec::devnet();
    let valid = common::build(&spec, 24, 5, Chooser::Seeded).bytes;
    let before: SubmitResult = http.submit_artifact(hex::encode(&valid)).await.unwrap();

    let forged = common::forged(&spec, 24, 4);
    for (what, param) in
        [("not hex", "zz".to_string()), ("garbage", "00ff".into()), ("bad signature", hex::encode(&forged))]
    {
        let err = http.submit_artifact(param).await.unwrap_err();
        assert!(err.to_string().contains("rejected") || err.to_string().contains("not hex"), "{what}: {err}");
    }
    // A status no typed client can send.
    let err = http
        .request::<HistoryPage, _>("poi_verdictHistory", rpc_params![serde_json::json!({"status": "maybe"})])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown status"), "{err}");
    let err = http.get_verdict("xyz".into()).await.unwrap_err();
    assert!(err.to_string().contains("artifact id"), "{err}");

    // The largest artifact the chain allows fits, in hex, in a request ...
    let limit = max_request_bytes(ChainSpec::devnet().limits.max_artifact_bytes) as usize;
    let largest = "00".repeat(ChainSpec::devnet().limits.max_artifact_bytes as usize);
    let response = reqwest_free_post(
        &addr,
        &format!(r#"{{"jsonrpc":"2.0","id":1,"method":"poi_submitArtifact","params":["{largest}"]}}"#),
    )
    .await;
    assert!(response.contains("artifact rejected"), "parsed and refused on its merits: {}", &response[..200]);
    // ... an oversized request is refused by the server, not parsed.
    let huge = "0".repeat(limit + 10);
    let client = reqwest_free_post(
        &addr,
        &format!(r#"{{"jsonrpc":"2.0","id":1,"method":"poi_submitArtifact","params":["{huge}"]}}"#),
    )
    .await;
    assert!(
        client.contains("413") || client.to_lowercase().contains("too large"),
        "{}",
        &client[..client.len().min(200)]
    );

    let page = http.verdict_history(None).await.unwrap();
    assert_eq!(page.rows, vec![before.verdict], "nothing invalid was stored, nothing stored was changed");
    let stored: Option<serde_json::Value> = http.get_artifact(before.artifact_id.clone()).await.unwrap();
    let stored = poi_artifact::Artifact::from_json_str(&stored.unwrap().to_string()).unwrap();
    assert_eq!(stored.encode(), valid);
    handle.stop().unwrap();
}

#[tokio::test]
async fn malformed_json_big_batches_and_subscription_floods_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, handle) = node(dir.path()).await;

    let response = reqwest_free_post(&addr, r#"{"jsonrpc":"2.0","id":1,"method":"#).await;
    assert!(response.contains("-32700"), "parse error expected: {response}");

    let call = r#"{"jsonrpc":"2.0","id":1,"method":"poi_status","params":[]}"#;
    let batch = |n: u32| format!("[{}]", vec![call; n as usize].join(","));
    let response = reqwest_free_post(&addr, &batch(poi_node::rpc::MAX_BATCH)).await;
    assert_eq!(response.matches("chain_id").count(), poi_node::rpc::MAX_BATCH as usize, "{response}");
    let response = reqwest_free_post(&addr, &batch(poi_node::rpc::MAX_BATCH + 1)).await;
    assert!(response.contains("-32010") && !response.contains("chain_id"), "batch limit: {response}");

    let ws = WsClientBuilder::default().build(format!("ws://{addr}")).await.unwrap();
    let mut subscriptions = Vec::new();
    for _ in 0..poi_node::rpc::MAX_SUBSCRIPTIONS_PER_CONNECTION {
        subscriptions.push(ws.subscribe_verdicts().await.unwrap());
    }
    let refused = ws.subscribe_verdicts().await;
    assert!(refused.is_err_and(|e| e.to_string().contains("Too many subscriptions")));

    // The node goes on serving everyone, this connection included.
    let _: NodeStatus = ws.status().await.unwrap();
    let http = HttpClientBuilder::default().build(format!("http://{addr}")).unwrap();
    let _: NodeStatus = http.status().await.unwrap();
    handle.stop().unwrap();
}

/// Fires `calls` status requests as fast as the client goes; returns how many
/// were answered, after checking that every refusal is a rate-limit error.
async fn burst(client: &(impl PoiApiClient + Sync), calls: usize) -> (usize, std::time::Duration) {
    let start = std::time::Instant::now();
    let mut answered = 0;
    for _ in 0..calls {
        match client.status().await {
            Ok(_) => answered += 1,
            Err(jsonrpsee::core::ClientError::Call(e)) => assert_eq!(e.code(), RATE_LIMITED, "{e}"),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    (answered, start.elapsed())
}

/// At most one second of burst plus the refill over the elapsed time.
fn allowed(per_s: u32, elapsed: std::time::Duration) -> usize {
    (f64::from(per_s) * (1.0 + elapsed.as_secs_f64())).ceil() as usize + 1
}

fn calls(per_s: u32) -> Rate {
    Rate { calls_per_s: Some(per_s), bytes_per_s: None }
}

#[tokio::test]
async fn call_rate_is_limited_per_connection_and_per_node() {
    let dir = tempfile::tempdir().unwrap();
    let limits = RpcLimits { node: calls(30), ip: Rate::NONE, connection: calls(10) };
    let ((addr, handle), metrics) = limited_node(dir.path(), limits).await;

    // One WebSocket connection is held to its own bucket ...
    let ws = WsClientBuilder::default().build(format!("ws://{addr}")).await.unwrap();
    let (answered, elapsed) = burst(&ws, 40).await;
    assert!(answered >= 10 && answered <= allowed(10, elapsed), "ws: {answered} in {elapsed:?}");
    // ... while another connection still gets through.
    let other = WsClientBuilder::default().build(format!("ws://{addr}")).await.unwrap();
    let _: NodeStatus = other.status().await.unwrap();

    // So is an HTTP keep-alive connection; many of them meet the node's bucket.
    let mut http_answered = 0;
    let mut http_elapsed = std::time::Duration::ZERO;
    for _ in 0..5 {
        let http = HttpClientBuilder::default().build(format!("http://{addr}")).unwrap();
        let (n, took) = burst(&http, 20).await;
        assert!(n <= allowed(10, took), "http connection: {n} in {took:?}");
        http_answered += n;
        http_elapsed += took;
    }
    let total = answered + 1 + http_answered;
    assert!(total <= allowed(30, elapsed + http_elapsed), "node: {total} in {:?}", elapsed + http_elapsed);
    assert_eq!(metrics.rpc_rate_limited.get() as usize, 40 - answered + 100 - http_answered);
    handle.stop().unwrap();
}

/// A raw HTTP POST, as [`reqwest_free_post`], sent from the local address
/// `from` (any loopback address: 127.0.0.2 plays a remote client).
async fn post_from(from: std::net::IpAddr, addr: &str, body: &str) -> String {
    raw_post(Some(from), addr, "", body).await
}

/// The attack: a remote client calls as fast as it can. Before, HTTP
/// callers shared only the node-wide bucket, so it locked the local miner
/// out; now each client IP has its own allowance inside the node's.
#[tokio::test]
async fn one_client_ip_cannot_lock_out_another() {
    let dir = tempfile::tempdir().unwrap();
    let limits = RpcLimits { node: calls(40), ip: calls(15), connection: Rate::NONE };
    let ((addr, handle), _) = limited_node(dir.path(), limits).await;
    let status = r#"{"jsonrpc":"2.0","id":1,"method":"poi_status","params":[]}"#;
    let remote: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut remote_answered = 0;
    for _ in 0..60 {
        if post_from(remote, &addr, status).await.contains("chain_id") {
            remote_answered += 1;
        }
    }
    assert!(remote_answered < 30, "the remote IP got {remote_answered} of 60 calls through");
    let local = HttpClientBuilder::default().build(format!("http://{addr}")).unwrap();
    let (local_answered, _) = burst(&local, 10).await;
    assert_eq!(local_answered, 10, "the local client was locked out");
    handle.stop().unwrap();
}

/// The attack: a remote client opens every socket the server will hold and
/// sends nothing (or one request, then idles on keep-alive). Before, the
/// sockets were shared by all clients and a silent one was held for ever,
/// so the local miner's connection was closed on accept; now one source
/// holds at most its share, and a socket that sends no request head in
/// time is closed.
#[tokio::test]
async fn one_client_ip_cannot_hold_every_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (addr, handle) = node(dir.path()).await;
    let remote: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut silent = Vec::new();
    for i in 0..300 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::new(remote, 0)).unwrap();
        let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
        if i % 2 == 0 {
            // One request, then an idle keep-alive connection.
            let body = r#"{"jsonrpc":"2.0","id":1,"method":"poi_status","params":[]}"#;
            let request = format!(
                "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(request.as_bytes()).await;
        }
        silent.push(stream);
    }
    let local = HttpClientBuilder::default().build(format!("http://{addr}")).unwrap();
    for _ in 0..10 {
        let status: Result<NodeStatus, _> = local.status().await;
        status.expect("the local client was locked out by idle sockets");
    }

    // Every socket the remote holds is closed within the header timeout.
    let deadline = std::time::Instant::now() + poi_node::rpc::HEADER_TIMEOUT * 3;
    for stream in &mut silent {
        let mut sink = Vec::new();
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let closed = tokio::time::timeout(left, stream.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "a silent socket was still held after {:?}", poi_node::rpc::HEADER_TIMEOUT * 3);
    }
    handle.stop().unwrap();
}

/// The attack: submits as large as the request limit allows, as fast as the
/// call rate allows. Before, only calls were counted (2000 calls of 1 MiB a
/// second); now a submit costs its bytes.
#[tokio::test]
async fn a_submit_costs_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mib = Rate { calls_per_s: None, bytes_per_s: Some(1 << 20) };
    let ((addr, handle), metrics) =
        limited_node(dir.path(), RpcLimits { connection: mib, ..RpcLimits::UNLIMITED }).await;
    let ws = WsClientBuilder::default().max_request_size(8 << 20).build(format!("ws://{addr}")).await.unwrap();
    let big = "00".repeat(300 << 10);
    let mut codes = Vec::new();
    for _ in 0..3 {
        match ws.submit_artifact(big.clone()).await {
            Err(jsonrpsee::core::ClientError::Call(e)) => codes.push(e.code()),
            other => panic!("garbage was not refused: {other:?}"),
        }
    }
    assert_eq!(codes[0], poi_rpc_api::error_code::REJECTED, "the first 600 KB fit the second's allowance");
    assert!(codes[1..].contains(&RATE_LIMITED), "{codes:?}");
    assert!(metrics.rpc_rate_limited.get() >= 1);
    // Small calls are cheap: a status call still passes once a little refilled.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let _: NodeStatus = ws.status().await.unwrap();
    handle.stop().unwrap();
}

/// The attack: a web page the node's operator visits opens a WebSocket to
/// 127.0.0.1 (browsers allow that, sending their page's `Origin`), and
/// drives the node. Refused unless the operator allowed that origin.
#[tokio::test]
async fn web_origins_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let config = RpcConfig { allowed_origins: vec!["https://app.example".into()], ..RpcConfig::default() };
    let ((addr, handle), _) = configured_node(dir.path(), config).await;
    let with_origin = |origin: &str| {
        let mut headers = jsonrpsee::http_client::HeaderMap::new();
        headers.insert("origin", origin.parse().unwrap());
        WsClientBuilder::default().set_headers(headers).build(format!("ws://{addr}"))
    };
    let refused = with_origin("https://evil.example").await;
    assert!(refused.is_err_and(|e| e.to_string().contains("403")), "a foreign page got a WebSocket");
    let _: NodeStatus = with_origin("https://app.example").await.unwrap().status().await.unwrap();
    // Tools send no Origin.
    let _: NodeStatus = WsClientBuilder::default().build(format!("ws://{addr}")).await.unwrap().status().await.unwrap();
    let post = reqwest_free_post_with(
        &addr,
        "Origin: https://evil.example\r\n",
        r#"{"jsonrpc":"2.0","id":1,"method":"poi_status","params":[]}"#,
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 403"), "a cross-site POST was served: {post}");
    handle.stop().unwrap();
}

/// A raw HTTP POST over a TCP socket, returning the status line and body.
async fn reqwest_free_post(addr: &str, body: &str) -> String {
    reqwest_free_post_with(addr, "", body).await
}

/// The same with extra header lines (each ending in CRLF).
async fn reqwest_free_post_with(addr: &str, headers: &str, body: &str) -> String {
    raw_post(None, addr, headers, body).await
}

async fn raw_post(from: Option<std::net::IpAddr>, addr: &str, headers: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(from) = from {
        socket.bind(std::net::SocketAddr::new(from, 0)).unwrap();
    }
    let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// Connections past the limit are refused while every open one keeps being
/// served; closing one frees its place. (All from 127.0.0.1: without a
/// share per IP, one client reaches the node's limit.)
#[tokio::test]
async fn connections_past_the_limit_are_refused_and_freed_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let config = RpcConfig { max_sockets_per_ip: None, ..Settings::default().rpc_config() };
    let ((addr, handle), _) = configured_node(dir.path(), config).await;
    let mut open = Vec::new();
    for _ in 0..poi_node::rpc::MAX_CONNECTIONS {
        open.push(WsClientBuilder::default().build(format!("ws://{addr}")).await.unwrap());
    }
    let refused = WsClientBuilder::default().build(format!("ws://{addr}")).await;
    assert!(refused.is_err(), "connection {} was accepted", poi_node::rpc::MAX_CONNECTIONS + 1);
    for ws in [open.first().unwrap(), open.last().unwrap()] {
        let _: NodeStatus = ws.status().await.unwrap();
    }

    drop(open.pop());
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(ws) = WsClientBuilder::default().build(format!("ws://{addr}")).await {
            reopened = Some(ws);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _: NodeStatus = reopened.expect("a closed connection frees its place").status().await.unwrap();
    handle.stop().unwrap();
}

/// An unseeded miner's artifacts from `chooser`, signed by `miner`.
fn unseeded(spec: &ChainSpec, miner: &Keypair, seed: u64, chooser: Chooser) -> Vec<u8> {
    let mut body = common::body_with(spec, 64, seed, chooser);
    body.miner = miner.public();
    body.sign(miner).encode()
}

/// The laundering attack: a miner whose every token is inside the sampler's
/// kept set, drawn from another model's distribution. Every artifact passes
/// the checks on its own; the per-miner test over the stored artifacts flags
/// the miner, and not an honest one beside it.
#[tokio::test]
async fn a_laundering_miner_passes_every_artifact_check_and_is_flagged_by_the_miner_test() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, handle) = node(dir.path()).await;
    let http = HttpClientBuilder::default().build(format!("http://{addr}")).unwrap();
    let spec = ChainSpec::devnet();
    let (honest, launderer) = (Keypair::from_secret([21; 32]), Keypair::from_secret([22; 32]));
    let mut stored = 0;
    for seed in 0..150 {
        let honest_bytes = unseeded(&spec, &honest, 1_000 + seed, Chooser::HonestUnseeded);
        let laundered = unseeded(&spec, &launderer, 5_000 + seed, Chooser::OtherModelInKept(1.0));
        for bytes in [honest_bytes, laundered] {
            // The surprisal test rejects a few on their own; the rest pass.
            if let Ok(result) = http.submit_artifact(hex::encode(bytes)).await {
                assert_eq!(result.verdict.status, Status::AcceptedReplayOnly);
                assert!(result.verdict.evidence.is_some(), "unseeded artifacts carry evidence");
                stored += 1;
            }
        }
    }
    assert!(stored >= 280, "only {stored} of 300 passed the per-artifact checks");

    let honest_test = http.miner_test(honest.public().to_hex()).await.unwrap();
    let laundering_test = http.miner_test(launderer.public().to_hex()).await.unwrap();
    assert!(!honest_test.flagged, "{honest_test:?}");
    assert!(laundering_test.flagged, "{laundering_test:?}");
    assert_eq!(laundering_test.threshold, spec.miner_test.threshold());
    let at = laundering_test.first_flagged_at.unwrap();
    eprintln!("laundering miner flagged after {at} of {} artifacts", laundering_test.artifacts);

    // Deterministic from stored data: the statistic again from the history
    // rows' evidence, in creation order.
    let mut rows = Vec::new();
    let mut cursor = None;
    loop {
        let filter = HistoryFilter { miner: Some(launderer.public().to_hex()), cursor, ..Default::default() };
        let page = http.verdict_history(Some(filter)).await.unwrap();
        rows.extend(page.rows);
        let Some(next) = page.next_cursor else { break };
        cursor = Some(next);
    }
    let mut evidence: Vec<(u64, f64)> = Vec::new();
    for row in &rows {
        let artifact: serde_json::Value = http.get_artifact(row.artifact_id.clone()).await.unwrap().unwrap();
        let artifact = poi_artifact::Artifact::from_json_str(&artifact.to_string()).unwrap();
        evidence.push((artifact.body.created_at_ms, row.evidence.unwrap()));
    }
    evidence.sort_by_key(|e| e.0);
    let recomputed = MinerTest::over(evidence.iter().map(|e| e.1), &spec.miner_test);
    assert_eq!(recomputed.statistic, laundering_test.statistic);
    assert_eq!(recomputed.artifacts, laundering_test.artifacts);

    let err = http.miner_test("zz".into()).await.unwrap_err();
    assert!(err.to_string().contains("miner"), "{err}");
    handle.stop().unwrap();
}
