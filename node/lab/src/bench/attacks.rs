//! The hostile peers and clients of `poi-lab bench network --attack`, each
//! as an attacker who read the code would run it (DESIGN §7b): within every
//! per-peer rule, with many identities where identities are free.
//!
//! An attacker runs in its own process (`poi-lab bench attacker`, which
//! `bench network` starts), pinned to its own core where the machine has
//! more than one: a real attacker spends its own machine's CPU, so the run
//! measures what the attack costs the nodes, not the attacker's encryption
//! and hashing competing with them for the same cores.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{request_response, Multiaddr, PeerId};
use poi_chain_spec::ChainSpec;
use poi_node::network::{join_as_outsider, BehaviourEvent, SyncRequest};
use poi_verifier::simulate::forged;
use rayon::prelude::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Attack {
    /// 8 outside identities asking node 0 for its whole log (`from: 0`),
    /// each one request in flight at just under the per-peer rate.
    SyncFlood,
    /// 8 outside identities publishing forgeries of the longest generation
    /// the spec allows (4096 tokens on the devnet) to node 0, 200 each, as
    /// fast as their connections take them.
    Sybils,
    /// A client on another loopback address (127.0.0.2) scanning node 0's
    /// history with rare filters (status `disputed`, 1000-row pages) from 8
    /// connections, as fast as the rate limit lets it.
    RpcScan,
}

const IDENTITIES: usize = 8;
/// Just under `service::sync`'s 20 pages per peer per second.
const SYNC_ASKS_PER_S: u64 = 19;

/// A running attack: its tasks and what it got.
struct Running {
    tasks: Vec<JoinHandle<()>>,
    /// Sync pages or RPC answers the attacker got.
    answered: Arc<AtomicU64>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// `poi-lab bench attacker`: what `bench network` starts for each attack.
#[derive(clap::Args)]
pub struct AttackerArgs {
    #[arg(long, value_enum)]
    attack: Attack,
    /// Nodes of the local devnet under attack (its spec is derived from it).
    #[arg(long)]
    nodes: u32,
    /// Node 0's address, with its peer id.
    #[arg(long)]
    dial: Multiaddr,
    #[arg(long)]
    peer: PeerId,
    /// Node 0's JSON-RPC address.
    #[arg(long)]
    rpc: SocketAddr,
    /// The one CPU this process runs on.
    #[arg(long)]
    cpu: Option<usize>,
}

/// Starts the attack, prints `ready` once every identity has joined, runs
/// until its standard input closes, then prints what the attacker got.
pub fn run_attacker(args: AttackerArgs) -> anyhow::Result<ExitCode> {
    if let Some(cpu) = args.cpu {
        super::cpus::pin_to(&[cpu])?;
    }
    let spec = ChainSpec::local_devnet(args.nodes, 0.25)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let target = Target { dial: args.dial, peer: args.peer, rpc: args.rpc };
    let running = runtime.block_on(start(args.attack, &spec, &target))?;
    println!("ready");
    // Until the parent closes our stdin (or dies).
    for line in std::io::stdin().lock().lines() {
        line.context("reading stdin")?;
    }
    println!("{}", running.answered.load(Ordering::Relaxed));
    drop(running);
    runtime.shutdown_background();
    Ok(ExitCode::SUCCESS)
}

/// The node an attack aims at.
pub struct Target {
    pub dial: Multiaddr,
    pub peer: PeerId,
    pub rpc: SocketAddr,
}

async fn start(attack: Attack, spec: &ChainSpec, target: &Target) -> anyhow::Result<Running> {
    let answered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    match attack {
        Attack::SyncFlood => {
            for _ in 0..IDENTITIES {
                tasks.push(sync_asker(spec, target, answered.clone()).await?);
            }
        }
        Attack::Sybils => {
            let tokens = spec.limits.max_generated_tokens as usize;
            let templates: Vec<Vec<u8>> =
                (0..IDENTITIES as u64).into_par_iter().map(|sybil| forged(spec, tokens, (2 << 40) + sybil)).collect();
            for template in templates {
                tasks.push(publisher(spec, target, template).await?);
            }
        }
        Attack::RpcScan => {
            for _ in 0..IDENTITIES {
                tasks.push(tokio::spawn(scan_history(target.rpc, answered.clone())));
            }
        }
    }
    Ok(Running { tasks, answered })
}

/// One outside identity asking for `from: 0`, one request at a time, paced.
async fn sync_asker(spec: &ChainSpec, target: &Target, answered: Arc<AtomicU64>) -> anyhow::Result<JoinHandle<()>> {
    let (mut swarm, _) = join_as_outsider(spec, target.dial.clone(), Duration::from_secs(20)).await?;
    let peer = target.peer;
    Ok(tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(1000 / SYNC_ASKS_PER_S));
        loop {
            pace.tick().await;
            let asked = swarm.behaviour_mut().sync.send_request(&peer, SyncRequest { from: 0 });
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                        message: request_response::Message::Response { request_id, .. },
                        ..
                    })) if request_id == asked => {
                        answered.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                        request_id,
                        ..
                    })) if request_id == asked => break,
                    _ => {}
                }
            }
        }
    }))
}

/// Forgeries one identity publishes: one body, its signature's first
/// bytes counting up, so each is a new gossip message that costs a check.
const FORGERIES_PER_IDENTITY: u32 = 200;

/// One outside identity publishing forgeries made from `template` as fast
/// as gossipsub takes them, then staying connected; one in memory at a
/// time, so the attacker adds little to the run's peak memory.
async fn publisher(spec: &ChainSpec, target: &Target, template: Vec<u8>) -> anyhow::Result<JoinHandle<()>> {
    let (mut swarm, topics) = join_as_outsider(spec, target.dial.clone(), Duration::from_secs(20)).await?;
    Ok(tokio::spawn(async move {
        let signature = template.len() - 64;
        for i in 0..FORGERIES_PER_IDENTITY {
            let mut bytes = template.clone();
            bytes[signature..signature + 4].copy_from_slice(&i.to_le_bytes());
            let _ = swarm.behaviour_mut().gossipsub.publish(topics.artifacts.clone(), bytes);
            let _ = tokio::time::timeout(Duration::from_millis(1), swarm.select_next_some()).await;
        }
        loop {
            swarm.select_next_some().await;
        }
    }))
}

/// History calls with a rare filter over one keep-alive HTTP connection
/// from 127.0.0.2, one after another; reconnects when the node closes it.
async fn scan_history(addr: std::net::SocketAddr, answered: Arc<AtomicU64>) {
    let body =
        r#"{"jsonrpc":"2.0","id":1,"method":"poi_verdictHistory","params":[{"status":"disputed","limit":1000}]}"#;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    loop {
        let Ok(socket) = tokio::net::TcpSocket::new_v4() else { return };
        if socket.bind("127.0.0.2:0".parse().expect("address")).is_err() {
            return;
        }
        let Ok(stream) = socket.connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mut stream = BufReader::new(stream);
        while let Ok(length) = exchange(&mut stream, &request).await {
            if length > 0 {
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Sends one request and reads the response; its body length.
async fn exchange(stream: &mut BufReader<tokio::net::TcpStream>, request: &str) -> std::io::Result<usize> {
    stream.get_mut().write_all(request.as_bytes()).await?;
    let mut length = None;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().ok();
        }
    }
    let length = length.ok_or(std::io::ErrorKind::InvalidData)?;
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    // A refused call is an error object, not a page.
    Ok(if body.windows(8).any(|w| w == b"\"error\":") { 0 } else { length })
}
