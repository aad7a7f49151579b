//! `poi node`: run a validator node until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use libp2p::Multiaddr;
use poi_node::pipeline::Admission;
use poi_node::rpc::RpcLimits;
use poi_node::scheduler::{FullChecker, ModelChecker};
use poi_node::service::{self, NodeConfig};
use serde::Deserialize;

use super::model::ModelArgs;
use crate::keyfile;

#[derive(clap::Args)]
pub struct Args {
    /// TOML file with any of the options below (same names, `-` as `_`,
    /// `listen` and `bootnodes` as arrays); flags given here win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Chain spec JSON; the embedded devnet spec when omitted.
    #[arg(long, value_name = "SPEC")]
    chain: Option<PathBuf>,
    /// Validator key file (`poi keys generate`). Required.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Data directory (RocksDB); created if missing. Required.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// libp2p listen address, repeatable [default: /ip4/127.0.0.1/tcp/0].
    /// QUIC works too: /ip4/127.0.0.1/udp/PORT/quic-v1.
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// A peer to join through, repeatable, e.g. /ip4/127.0.0.1/tcp/4001/p2p/12D3…
    #[arg(long = "bootnode", value_name = "MULTIADDR")]
    bootnodes: Vec<Multiaddr>,
    /// JSON-RPC address (HTTP and WebSocket) [default: 127.0.0.1:8545].
    #[arg(long, value_name = "ADDR")]
    rpc: Option<SocketAddr>,
    /// JSON-RPC calls per second across all clients; 0 turns the limit off
    /// [default: 2000].
    #[arg(long, value_name = "N")]
    rpc_rate: Option<u32>,
    /// JSON-RPC calls per second on one WebSocket connection; 0 turns the
    /// limit off [default: 500].
    #[arg(long, value_name = "N")]
    rpc_rate_per_connection: Option<u32>,
    /// Prometheus metrics address, serving GET /metrics; off when omitted.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Run without the model: replay-check, store and relay, never vote.
    #[arg(long)]
    no_model: bool,
    /// Threads that run the model for full checks [default: 1].
    #[arg(long, value_name = "N")]
    full_check_workers: Option<usize>,
    /// Refuse new artifacts (RPC, gossip) whose signed creation time is more
    /// than this many seconds before this node's clock; catch-up sync is
    /// exempt; 0 turns the rule off [default: 3600].
    #[arg(long, value_name = "SECONDS")]
    max_artifact_age: Option<u64>,
    /// Refuse new artifacts whose signed creation time is more than this many
    /// seconds after this node's clock; off with the age rule [default: 300].
    #[arg(long, value_name = "SECONDS")]
    max_clock_ahead: Option<u64>,
    /// fsync every stored artifact and vote before acknowledging it, so that
    /// acknowledged data also survives a power loss (without it, only a crash
    /// of the process); costs a disk round trip per write (`poi bench store`).
    #[arg(long)]
    sync_writes: bool,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    chain: Option<PathBuf>,
    key: Option<PathBuf>,
    data: Option<PathBuf>,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    bootnodes: Vec<String>,
    rpc: Option<SocketAddr>,
    rpc_rate: Option<u32>,
    rpc_rate_per_connection: Option<u32>,
    metrics: Option<SocketAddr>,
    #[serde(default)]
    no_model: bool,
    full_check_workers: Option<usize>,
    max_artifact_age: Option<u64>,
    max_clock_ahead: Option<u64>,
    #[serde(default)]
    sync_writes: bool,
    model: Option<PathBuf>,
}

fn addrs(flags: Vec<Multiaddr>, file: &[String], what: &str) -> anyhow::Result<Vec<Multiaddr>> {
    if !flags.is_empty() {
        return Ok(flags);
    }
    file.iter().map(|a| a.parse().with_context(|| format!("config {what}: {a:?} is not a multiaddr"))).collect()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<FileConfig>(&text).with_context(|| format!("config file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let chain = crate::ChainArg { chain: args.chain.or(file.chain) };
    let spec = chain.load()?;
    let key_path =
        args.key.or(file.key).context("--key is required (create one with `poi keys generate --out FILE`)")?;
    let key = keyfile::read(&key_path)?;
    if spec.validator(&key.public()).is_none() {
        tracing::warn!(key = %key.public(), "this key is not in the chain's validator set: the node relays and stores, its votes will not count");
    }
    let data_dir = args.data.or(file.data).context("--data is required")?;
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let mut config = NodeConfig::new(spec.clone(), key, data_dir);
    let listen = addrs(args.listen, &file.listen, "listen")?;
    if !listen.is_empty() {
        config.listen = listen;
    }
    config.bootnodes = addrs(args.bootnodes, &file.bootnodes, "bootnodes")?;
    config.rpc = Some(args.rpc.or(file.rpc).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8545))));
    let defaults = RpcLimits::default();
    let limit = |flag: Option<u32>, file: Option<u32>, default: Option<u32>| match flag.or(file) {
        Some(0) => None,
        Some(rate) => Some(rate),
        None => default,
    };
    config.rpc_limits = RpcLimits {
        node_calls_per_s: limit(args.rpc_rate, file.rpc_rate, defaults.node_calls_per_s),
        connection_calls_per_s: limit(
            args.rpc_rate_per_connection,
            file.rpc_rate_per_connection,
            defaults.connection_calls_per_s,
        ),
    };
    let window = Admission::default();
    config.admission = match args.max_artifact_age.or(file.max_artifact_age) {
        Some(0) => Admission::ANY_AGE,
        age => Admission {
            max_age: age.map(Duration::from_secs).or(window.max_age),
            max_ahead: args.max_clock_ahead.or(file.max_clock_ahead).map_or(window.max_ahead, Duration::from_secs),
        },
    };
    config.sync_writes = args.sync_writes || file.sync_writes;
    config.metrics = args.metrics.or(file.metrics);
    config.full_check_workers = args.full_check_workers.or(file.full_check_workers).unwrap_or(1);
    if !(args.no_model || file.no_model) {
        let model = ModelArgs { model: args.model.model.or(file.model), profile: args.model.profile };
        let checker: Arc<dyn FullChecker> = Arc::new(ModelChecker::new(Arc::new(model.load(&spec)?), &spec));
        config.checker = Some(checker);
    }
    config.sync_interval = Duration::from_secs(5);

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let node = service::start(config).await?;
        eprintln!("peer id   {}", node.peer_id);
        for addr in &node.listen_addrs {
            eprintln!("listening {addr}/p2p/{}", node.peer_id);
        }
        if let Some(rpc) = node.rpc_addr {
            eprintln!("rpc       http://{rpc} (WebSocket on the same port)");
        }
        if let Some(metrics) = node.metrics_addr {
            eprintln!("metrics   http://{metrics}/metrics");
        }
        tokio::signal::ctrl_c().await?;
        eprintln!("stopping");
        node.stop().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
