//! `poi bench network` (DESIGN §10): nodes on loopback in this process, each
//! replay-checking and storing every artifact; artifacts are submitted over
//! JSON-RPC to the nodes in turn, and each node's verdict feed timestamps
//! when it stored each one. Reports sustained artifacts/s and the latency
//! from submit to stored on every node.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use jsonrpsee::core::client::ClientT;
use jsonrpsee::http_client::HttpClientBuilder;
use jsonrpsee::rpc_params;
use poi_chain_spec::{devnet_keypair, ChainSpec};
use poi_node::rpc::SubmitResult;
use poi_node::service::{self, NodeConfig, NodeHandle};
use poi_verifier::simulate::{build, Chooser};
use rayon::prelude::*;
use tokio::sync::broadcast::error::RecvError;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 5)]
    nodes: u32,
    #[arg(long, default_value_t = 2000)]
    artifacts: usize,
    /// Generated tokens per artifact (k from the devnet spec).
    #[arg(long, default_value_t = 256)]
    tokens: usize,
    /// Submissions in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.nodes < 2 || args.artifacts == 0 {
        bail!("need at least 2 nodes and 1 artifact");
    }
    let spec = ChainSpec::local_devnet(args.nodes, 0.25)?;
    eprintln!("building {} synthetic artifacts of {} tokens", args.artifacts, args.tokens);
    let artifacts: Vec<(String, Vec<u8>)> = (0..args.artifacts as u64)
        .into_par_iter()
        .map(|seed| {
            let built = build(&spec, args.tokens, seed, Chooser::Seeded);
            (built.artifact.id().to_hex(), built.bytes)
        })
        .collect();
    let dir = tempfile::tempdir()?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let mut nodes: Vec<NodeHandle> = Vec::new();
        for i in 0..args.nodes {
            let mut config = NodeConfig::new(spec.clone(), devnet_keypair(i), dir.path().join(format!("node{i}")));
            config.bootnodes = nodes.iter().map(NodeHandle::dial_addr).collect();
            nodes.push(service::start(config).await.with_context(|| format!("starting node {i}"))?);
        }
        // A full mesh before the clock starts.
        let deadline = Instant::now() + Duration::from_secs(20);
        while nodes.iter().any(|n| n.metrics.peers.get() < i64::from(args.nodes) - 1) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;

        let stored_at: Arc<Mutex<HashMap<String, (usize, Instant)>>> = Arc::default();
        let lagged = Arc::new(Mutex::new(0u64));
        let mut feeds = Vec::new();
        for node in &nodes {
            let (stored_at, lagged) = (stored_at.clone(), lagged.clone());
            let mut verdicts = node.pipeline.subscribe();
            feeds.push(tokio::spawn(async move {
                loop {
                    match verdicts.recv().await {
                        Ok(record) => {
                            let mut map = stored_at.lock().expect("map");
                            let entry = map.entry(record.artifact_id).or_insert((0, Instant::now()));
                            entry.0 += 1;
                            entry.1 = Instant::now();
                        }
                        Err(RecvError::Lagged(n)) => *lagged.lock().expect("lagged") += n,
                        Err(RecvError::Closed) => return,
                    }
                }
            }));
        }

        let clients: Vec<_> = nodes
            .iter()
            .map(|n| HttpClientBuilder::default().build(format!("http://{}", n.rpc_addr.expect("RPC on"))))
            .collect::<Result<_, _>>()?;
        let started = Instant::now();
        let submitted_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let queue = Arc::new(Mutex::new(artifacts.into_iter().enumerate()));
        let mut workers = Vec::new();
        for _ in 0..args.concurrency {
            let (queue, clients, submitted_at) = (queue.clone(), clients.clone(), submitted_at.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let Some((i, (id, bytes))) = queue.lock().expect("queue").next() else { return Ok(()) };
                    submitted_at.lock().expect("map").insert(id, Instant::now());
                    let _: SubmitResult = clients[i % clients.len()]
                        .request("poi_submitArtifact", rpc_params![hex::encode(bytes)])
                        .await?;
                }
            }));
        }
        for worker in workers {
            worker.await?.map_err(|e: jsonrpsee::core::ClientError| anyhow::anyhow!("submit: {e}"))?;
        }
        let submit_seconds = started.elapsed().as_secs_f64();
        let everywhere =
            |map: &HashMap<String, (usize, Instant)>| map.values().filter(|(n, _)| *n == nodes.len()).count();
        let deadline = Instant::now() + Duration::from_secs(120);
        while everywhere(&stored_at.lock().expect("map")) < args.artifacts && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let map = stored_at.lock().expect("map").clone();
        let submitted = submitted_at.lock().expect("map").clone();
        let mut latencies: Vec<f64> = map
            .iter()
            .filter(|(_, (n, _))| *n == nodes.len())
            .filter_map(|(id, (_, at))| submitted.get(id).map(|s| at.duration_since(*s).as_secs_f64()))
            .collect();
        latencies.sort_by(f64::total_cmp);
        let last = map.values().filter(|(n, _)| *n == nodes.len()).map(|(_, at)| *at).max().unwrap_or(started);
        let seconds = last.duration_since(started).as_secs_f64();
        let quantile = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        };
        println!("nodes                      {}", nodes.len());
        println!("artifacts                  {} of {} tokens, k = {}", args.artifacts, args.tokens, spec.logged_k);
        println!("stored on every node       {}", latencies.len());
        println!(
            "submit phase               {submit_seconds:.2} s ({:.0} artifacts/s accepted by RPC)",
            args.artifacts as f64 / submit_seconds
        );
        println!("sustained, stored everywhere {:.0} artifacts/s ({seconds:.2} s)", latencies.len() as f64 / seconds);
        println!(
            "submit → stored everywhere p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            quantile(0.5) * 1e3,
            quantile(0.99) * 1e3,
            latencies.last().copied().unwrap_or(f64::NAN) * 1e3
        );
        println!(
            "threads                    {} cores shared by all nodes",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        let lost = *lagged.lock().expect("lagged");
        if lost > 0 {
            println!("verdict feed lagged        {lost} events (those artifacts are not timed)");
        }
        for feed in feeds {
            feed.abort();
        }
        for node in nodes {
            node.stop().await;
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
