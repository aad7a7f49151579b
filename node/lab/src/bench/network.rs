//! `poi-lab bench network` (DESIGN §10): nodes on loopback in this process, each
//! replay-checking and storing every artifact; artifacts are submitted over
//! JSON-RPC to the nodes in turn, and each node's verdict feed timestamps
//! when it stored each one. Reports sustained artifacts/s and the latency
//! from submit to stored on every node; with `--flood` or `--attack`, the
//! same again on fresh nodes under attack, side by side, with each run's
//! peak resident memory. On a machine with more than one CPU the nodes run
//! on all but the last, in every run, and an attacker in its own process on
//! the last (see `attacks`).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::ValueEnum;
use futures::StreamExt;
use jsonrpsee::http_client::HttpClientBuilder;
use libp2p::PeerId;
use poi_chain_spec::{devnet_keypair, ChainSpec};
use poi_node::config::{NodeConfig, Settings};
use poi_node::metrics::SourceLabel;
use poi_node::network::{join_as_outsider, GRAYLIST_THRESHOLD};
use poi_node::pipeline::Admission;
use poi_node::service::{self, NodeHandle};
use poi_rpc_api::PoiApiClient;
use poi_rpc_api::SubmitResult;
use poi_verifier::simulate::{build, forged, Chooser};
use rayon::prelude::*;
use tokio::sync::broadcast::error::RecvError;

use super::attacks::Attack;
use super::cpus;
use crate::stats::quantile;

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
    /// Run a second time, on fresh nodes, with one more peer publishing
    /// this many forged artifacts to node 0 meanwhile: prints both runs and
    /// whether the flooder was graylisted.
    #[arg(long, value_name = "N", default_value_t = 0)]
    flood: usize,
    /// Run once more per attack given (repeatable), each on fresh nodes.
    #[arg(long, value_enum)]
    attack: Vec<Attack>,
    /// Rounds of the unattacked run, then each flood or attack followed by
    /// another unattacked run; each attacked run is compared with the mean
    /// of the two beside it (a machine whose speed drifts needs several
    /// rounds, and the median of the ratios).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

/// Who else is on the network during a run.
enum Adversary {
    None,
    Flood(Vec<Vec<u8>>),
    Attack(Attack),
}

struct Figures {
    submit_seconds: f64,
    seconds: f64,
    /// Submit to stored on every node, per artifact stored everywhere.
    latencies: Vec<f64>,
    lagged: u64,
    /// With a flood: forged artifacts that reached node 0's replay check,
    /// and whether the flooder fell below the graylist threshold.
    flood: Option<(u64, bool)>,
    /// Under an attack: node 0's view of it.
    attacked: Option<Attacked>,
    peak_rss_mib: Option<f64>,
}

struct Attacked {
    attack: Attack,
    answered: u64,
    sync_refused: u64,
    banned: u64,
    gossip_checked: u64,
    gossip_ignored: u64,
    rpc_refused: u64,
}

impl Figures {
    /// Artifacts stored on every node per second.
    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds
    }
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
    let forged: Vec<Vec<u8>> =
        (0..args.flood as u64).into_par_iter().map(|seed| forged(&spec, 16, (1 << 40) + seed)).collect();
    let cpus = cpus::split();
    if let Some((node_cpus, _)) = &cpus {
        // Before the runtime: its threads inherit the mask.
        cpus::pin_to(node_cpus)?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    println!("nodes                      {}", args.nodes);
    println!("artifacts                  {} of {} tokens, k = {}", args.artifacts, args.tokens, spec.logged_k);
    let rounds = args.rounds.max(1);
    // Per flood or attack, its throughput over its round's unattacked run.
    let mut ratios: Vec<(String, Vec<f64>)> = Vec::new();
    let mut note = |name: String, ratio: f64| match ratios.iter_mut().find(|(n, _)| *n == name) {
        Some((_, list)) => list.push(ratio),
        None => ratios.push((name, vec![ratio])),
    };
    for round in 1..=rounds {
        if rounds > 1 {
            println!("round {round} of {rounds}:");
        }
        let mut before = runtime.block_on(measure(&spec, &args, &artifacts, Adversary::None))?;
        report("", &before, args.artifacts);
        let flood = (args.flood > 0).then(|| ("flood".to_string(), Adversary::Flood(forged.clone())));
        let attacks = args.attack.iter().map(|&attack| (format!("{attack:?}"), Adversary::Attack(attack)));
        for (name, adversary) in flood.into_iter().chain(attacks) {
            let attacked = runtime.block_on(measure(&spec, &args, &artifacts, adversary))?;
            match &attacked.attacked {
                Some(_) => println!("under attack {name}:"),
                None => println!("with a peer flooding {} forged artifacts to node 0:", args.flood),
            }
            report("  ", &attacked, args.artifacts);
            // The attacked run between two without: the machine's drift
            // (and any advantage of running first) cancels out.
            let after = runtime.block_on(measure(&spec, &args, &artifacts, Adversary::None))?;
            println!("without attack again:");
            report("  ", &after, args.artifacts);
            let ratio = attacked.throughput() / ((before.throughput() + after.throughput()) / 2.0);
            println!("  honest throughput        {ratio:.2}× the mean of the runs without attack on either side");
            note(name, ratio);
            before = after;
        }
    }
    if rounds > 1 {
        println!("honest throughput over {rounds} rounds, each against the runs without attack on either side:");
        for (name, list) in &ratios {
            let each: Vec<String> = list.iter().map(|r| format!("{r:.2}")).collect();
            let median = quantile(list, 0.5).unwrap_or(f64::NAN);
            println!("  {name:24} median {median:.2}× (rounds: {})", each.join(", "));
        }
    }
    match &cpus {
        Some((node_cpus, attacker_cpu)) => println!(
            "cpus                       nodes and honest clients on {node_cpus:?}, an attacker (own process) on {attacker_cpu}"
        ),
        None => println!("cpus                       1, shared by the nodes, their clients and any attacker"),
    }
    Ok(ExitCode::SUCCESS)
}

/// One run on fresh nodes: submit everything, wait until every node stored
/// it (or 120 s), with `forged` published by an extra peer meanwhile.
async fn measure(
    spec: &ChainSpec,
    args: &Args,
    artifacts: &[(String, Vec<u8>)],
    adversary: Adversary,
) -> anyhow::Result<Figures> {
    crate::stats::reset_peak_rss();
    let dir = tempfile::tempdir()?;
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for i in 0..args.nodes {
        let mut config = NodeConfig::new(spec.clone(), devnet_keypair(i), dir.path().join(format!("node{i}")));
        config.bootnodes = nodes.iter().map(NodeHandle::dial_addr).collect();
        // The default limits, as an operator runs them: the honest load
        // stays under them, and an RPC attacker meets them.
        config.rpc_config.limits = Settings::default().rpc_limits();
        // Simulated artifacts carry fixed, long-past creation times.
        config.admission = Admission::ANY_AGE;
        nodes.push(service::start(config).await.with_context(|| format!("starting node {i}"))?);
    }
    // A full mesh before the clock starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes.iter().any(|n| n.metrics.peers.get() < i64::from(args.nodes) - 1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (flooder, attack) = match adversary {
        Adversary::None => (None, None),
        Adversary::Flood(forged) => (Some(start_flood(spec, &nodes[0], forged).await?), None),
        Adversary::Attack(attack) => {
            (None, Some((attack, AttackerProcess::start(attack, args.nodes, &nodes[0]).await?)))
        }
    };
    let flooder_peer = flooder.as_ref().map(|(peer, _)| *peer);
    let mut graylisted = false;
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        graylisted |= is_graylisted(&nodes[0], flooder_peer).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

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
    let queue = Arc::new(Mutex::new(Vec::from(artifacts).into_iter().enumerate()));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (queue, clients, submitted_at) = (queue.clone(), clients.clone(), submitted_at.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let Some((i, (id, bytes))) = queue.lock().expect("queue").next() else { return Ok(()) };
                submitted_at.lock().expect("map").insert(id, Instant::now());
                let _: SubmitResult = clients[i % clients.len()].submit_artifact(hex::encode(bytes)).await?;
            }
        }));
    }
    for worker in workers {
        worker.await?.map_err(|e: jsonrpsee::core::ClientError| anyhow::anyhow!("submit: {e}"))?;
    }
    let submit_seconds = started.elapsed().as_secs_f64();
    let everywhere = |map: &HashMap<String, (usize, Instant)>| map.values().filter(|(n, _)| *n == nodes.len()).count();
    let deadline = Instant::now() + Duration::from_secs(120);
    while everywhere(&stored_at.lock().expect("map")) < args.artifacts && Instant::now() < deadline {
        graylisted |= is_graylisted(&nodes[0], flooder_peer).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let map = stored_at.lock().expect("map").clone();
    let submitted = submitted_at.lock().expect("map").clone();
    let latencies: Vec<f64> = map
        .iter()
        .filter(|(_, (n, _))| *n == nodes.len())
        .filter_map(|(id, (_, at))| submitted.get(id).map(|s| at.duration_since(*s).as_secs_f64()))
        .collect();
    let last = map.values().filter(|(n, _)| *n == nodes.len()).map(|(_, at)| *at).max().unwrap_or(started);
    let seconds = last.duration_since(started).as_secs_f64();
    let flood = match flooder {
        Some((_, task)) => {
            task.abort();
            Some((
                nodes[0].metrics.artifacts_rejected.get_or_create(&SourceLabel { source: "gossip" }).get(),
                graylisted,
            ))
        }
        None => None,
    };
    let attacked = match attack {
        Some((attack, process)) => Some((attack, process.finish().await?)),
        None => None,
    };
    let attacked = attacked.map(|(attack, answered)| {
        let metrics = &nodes[0].metrics;
        Attacked {
            attack,
            answered,
            sync_refused: metrics.sync_requests_refused.get(),
            banned: metrics.peers_banned.get(),
            gossip_checked: metrics.artifacts_rejected.get_or_create(&SourceLabel { source: "gossip" }).get(),
            gossip_ignored: metrics.gossip_dropped.get(),
            rpc_refused: metrics.rpc_rate_limited.get(),
        }
    });
    let peak_rss_mib = crate::stats::peak_rss_mib();
    let lagged = *lagged.lock().expect("lagged");
    for feed in feeds {
        feed.abort();
    }
    for node in nodes {
        node.stop().await;
    }
    Ok(Figures { submit_seconds, seconds, latencies, lagged, flood, attacked, peak_rss_mib })
}

/// `poi-lab bench attacker` in a child process, on the CPU `cpus::split`
/// leaves it.
struct AttackerProcess {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl AttackerProcess {
    /// Starts it and waits until every identity has joined.
    async fn start(attack: Attack, nodes: u32, target: &NodeHandle) -> anyhow::Result<Self> {
        let rpc = target.rpc_addr.context("node 0 has no RPC")?;
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.args(["bench", "attacker", "--attack"]).arg(attack.to_possible_value().expect("named").get_name());
        command.args(["--nodes", &nodes.to_string(), "--dial", &target.dial_addr().to_string()]);
        command.args(["--peer", &target.peer_id.to_string(), "--rpc", &rpc.to_string()]);
        if let Some((_, cpu)) = cpus::split() {
            command.args(["--cpu", &cpu.to_string()]);
        }
        let mut child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting poi-lab bench attacker")?;
        let stdout = std::io::BufReader::new(child.stdout.take().context("attacker stdout")?);
        let mut process = Self { child, stdout };
        let line = tokio::task::block_in_place(|| process.line())?;
        anyhow::ensure!(line == "ready", "the attacker did not start: {line:?}");
        Ok(process)
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.stdout, &mut line).context("reading the attacker's output")?;
        Ok(line.trim().to_string())
    }

    /// Stops it (closing its stdin): what it got from the node.
    async fn finish(mut self) -> anyhow::Result<u64> {
        drop(self.child.stdin.take());
        tokio::task::block_in_place(|| {
            let answered = self.line()?.parse().context("the attacker's count")?;
            self.child.wait()?;
            Ok(answered)
        })
    }
}

/// Whether `node` scores `peer` below the graylist threshold now.
async fn is_graylisted(node: &NodeHandle, peer: Option<PeerId>) -> bool {
    let Some(peer) = peer else { return false };
    let peers = node.network.peers().await.unwrap_or_default();
    peers.iter().any(|p| p.peer_id == peer && p.score.is_some_and(|s| s < GRAYLIST_THRESHOLD))
}

/// An outside peer in node 0's artifact topic, publishing `forged` as fast as
/// its connection takes them.
async fn start_flood(
    spec: &ChainSpec,
    target: &NodeHandle,
    forged: Vec<Vec<u8>>,
) -> anyhow::Result<(PeerId, tokio::task::JoinHandle<()>)> {
    let (mut swarm, topics) = join_as_outsider(spec, target.dial_addr(), Duration::from_secs(20)).await?;
    let peer = *swarm.local_peer_id();
    let task = tokio::spawn(async move {
        for bytes in forged {
            let _ = swarm.behaviour_mut().gossipsub.publish(topics.artifacts.clone(), bytes);
            let _ = tokio::time::timeout(Duration::from_millis(1), swarm.select_next_some()).await;
        }
        loop {
            swarm.select_next_some().await;
        }
    });
    Ok((peer, task))
}

fn report(indent: &str, figures: &Figures, artifacts: usize) {
    let latencies = &figures.latencies;
    let at = |q: f64| quantile(latencies, q).unwrap_or(f64::NAN);
    println!("{indent}stored on every node       {}", latencies.len());
    println!(
        "{indent}submit phase               {:.2} s ({:.0} artifacts/s accepted by RPC)",
        figures.submit_seconds,
        artifacts as f64 / figures.submit_seconds
    );
    println!("{indent}sustained, stored everywhere {:.0} artifacts/s ({:.2} s)", figures.throughput(), figures.seconds);
    println!(
        "{indent}submit → stored everywhere p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.5) * 1e3,
        at(0.99) * 1e3,
        at(1.0) * 1e3
    );
    if figures.lagged > 0 {
        println!("{indent}verdict feed lagged        {} events (those artifacts are not timed)", figures.lagged);
    }
    if let Some((checked, graylisted)) = figures.flood {
        println!("{indent}forged artifacts checked   {checked} (the rest dropped by gossipsub); flooder graylisted: {graylisted}");
    }
    if let Some(a) = &figures.attacked {
        match a.attack {
            Attack::SyncFlood => println!(
                "{indent}node 0 served the attackers {} pages, refused {} requests, banned {} peers",
                a.answered, a.sync_refused, a.banned
            ),
            Attack::Sybils => println!(
                "{indent}node 0 checked {} forgeries, ignored {} gossip messages (queue full)",
                a.gossip_checked, a.gossip_ignored
            ),
            Attack::RpcScan => println!(
                "{indent}node 0 answered {} history scans, refused {} calls (rate limits)",
                a.answered, a.rpc_refused
            ),
        }
    }
    if let Some(rss) = figures.peak_rss_mib {
        println!("{indent}peak RSS (this run)        {rss:.0} MiB, all nodes and honest clients in one process");
    }
}
