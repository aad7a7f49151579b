//! Crash safety: `poi node` as a child process, killed with SIGKILL while
//! clients submit artifacts over JSON-RPC. After a restart on the same data
//! dir, every acknowledged artifact is there with its verdict unchanged, and
//! everything stored is whole.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonrpsee::http_client::HttpClientBuilder;
use poi_chain_spec::ChainSpec;
use poi_node::clock::now_ms;
use poi_rpc_api::{HistoryFilter, PoiApiClient, SubmitResult};
use poi_verifier::simulate::{build_at, Chooser};

/// Starts a model-less node and returns it with its RPC address, read from
/// its startup banner; a thread keeps draining its stderr.
fn start_node(dir: &Path) -> (Child, String) {
    let key = dir.join("node.key");
    if !key.exists() {
        let out = Command::new(env!("CARGO_BIN_EXE_poi"))
            .args(["keys", "generate", "--out"])
            .arg(&key)
            .output()
            .expect("poi runs");
        assert!(out.status.success());
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_poi"))
        .args([
            "node",
            "--dev",
            "--no-model",
            "--rpc",
            "127.0.0.1:0",
            "--rpc-rate",
            "0",
            "--rpc-rate-per-connection",
            "0",
        ])
        .arg("--key")
        .arg(&key)
        .arg("--data")
        .arg(dir.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("poi node starts");
    let (sender, receiver) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split_once("http://").map(|(_, rest)| rest) {
                let _ = sender.send(rest.split_whitespace().next().unwrap_or_default().to_string());
            }
        }
    });
    let addr = receiver.recv_timeout(Duration::from_secs(60)).expect("the node prints its RPC address");
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_artifacts_survive_kill_9_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ChainSpec::devnet();
    let (mut child, addr) = start_node(dir.path());

    let acked: Arc<Mutex<Vec<SubmitResult>>> = Arc::default();
    let mut clients = Vec::new();
    for client_index in 0..4u64 {
        let (acked, spec, addr) = (acked.clone(), spec.clone(), addr.clone());
        clients.push(tokio::spawn(async move {
            let client = HttpClientBuilder::default().build(format!("http://{addr}")).unwrap();
            for n in 0.. {
                let artifact = build_at(&spec, 64, client_index * 1_000_000 + n, Chooser::Seeded, now_ms()).artifact;
                match client.submit_artifact(hex::encode(artifact.encode())).await {
                    Ok(result) => acked.lock().unwrap().push(result),
                    // The node is gone: stop.
                    Err(_) => return,
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL: no shutdown code runs
    child.wait().unwrap();
    for client in clients {
        client.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let (mut child, addr) = start_node(dir.path());
    let client = HttpClientBuilder::default().build(format!("http://{addr}")).unwrap();
    for before in &acked {
        let after = client.get_verdict(before.artifact_id.clone()).await.unwrap();
        let after = after.unwrap_or_else(|| panic!("acknowledged artifact {} lost", before.artifact_id));
        assert_eq!(after.status, before.verdict.status);
        assert_eq!(after.received_at_ms, before.verdict.received_at_ms);
    }
    // Whatever else was stored before the kill is whole: every row's
    // artifact reads back and passes the replay check again.
    let mut cursor: Option<String> = None;
    let mut rows = 0;
    loop {
        let filter = HistoryFilter { limit: Some(1000), cursor: cursor.take(), ..HistoryFilter::default() };
        let page = client.verdict_history(Some(filter)).await.unwrap();
        for row in &page.rows {
            let view = client.get_artifact(row.artifact_id.clone()).await.unwrap().expect("stored");
            let artifact = poi_artifact::Artifact::from_json_str(&view.to_string()).unwrap();
            poi_verifier::replay::ReplayChecker::new(spec.clone()).check(&artifact).unwrap();
        }
        rows += page.rows.len();
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert!(rows >= acked.len(), "{rows} stored, {} acknowledged", acked.len());
    child.kill().unwrap();
    child.wait().unwrap();
}
