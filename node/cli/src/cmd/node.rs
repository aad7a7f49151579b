//! `poi node`: run a validator node until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use poi_cli::{ChainArg, ModelArgs};
use poi_node::config::{NodeConfig, Settings};
use poi_node::network::Multiaddr;
use poi_node::scheduler::{FullChecker, ModelChecker};
use poi_node::service;

use crate::keyfile;

#[derive(clap::Args)]
pub struct Args {
    /// TOML file with any of the options below (same names, `-` as `_`,
    /// `listen` and `bootnodes` as arrays); flags given here win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Chain spec JSON. Required unless --dev.
    #[arg(long, value_name = "SPEC")]
    chain: Option<PathBuf>,
    /// A development node: without --chain, run the embedded devnet spec;
    /// with it, allow a spec whose validator keys are the well-known devnet
    /// keys (`poi devnet`'s). Without --dev such specs are refused: anyone
    /// can derive those keys and sign as those validators.
    #[arg(long)]
    dev: bool,
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
    /// JSON-RPC calls per second from one client IP; 0 turns the limit off
    /// [default: 1000].
    #[arg(long, value_name = "N")]
    rpc_rate_per_ip: Option<u32>,
    /// JSON-RPC calls per second on one connection (HTTP keep-alive or
    /// WebSocket); 0 turns the limit off [default: 500].
    #[arg(long, value_name = "N")]
    rpc_rate_per_connection: Option<u32>,
    /// JSON-RPC request bytes per second across all clients, in MiB; 0 turns
    /// the limit off [default: 64]. A submit costs its size.
    #[arg(long, value_name = "MIB")]
    rpc_mib_rate: Option<u32>,
    /// The same from one client IP [default: 32].
    #[arg(long, value_name = "MIB")]
    rpc_mib_rate_per_ip: Option<u32>,
    /// The same on one connection [default: 16].
    #[arg(long, value_name = "MIB")]
    rpc_mib_rate_per_connection: Option<u32>,
    /// Open JSON-RPC sockets one client may hold (an IPv4 address, or an
    /// IPv6 /64) of the node's 256, so that one client cannot lock the
    /// others out; 0 lets one client take them all [default: 32].
    #[arg(long, value_name = "N")]
    rpc_sockets_per_ip: Option<u32>,
    /// A web origin (e.g. https://app.example) whose pages may call the node
    /// from a browser, repeatable; `*` allows any. None by default: requests
    /// carrying an `Origin` header (WebSocket handshakes and cross-site
    /// requests from web pages) are refused, so a page cannot drive a node
    /// on its visitor's machine.
    #[arg(long = "rpc-allow-origin", value_name = "ORIGIN")]
    rpc_allow_origins: Vec<String>,
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
    /// of the process); costs a disk round trip per write (`poi-lab bench store`).
    #[arg(long)]
    sync_writes: bool,
    /// The chain's GGUF file; default: where scripts/fetch-model.sh puts it
    /// ($POI_MODEL_DIR or ~/.cache/poi/models).
    #[arg(long, value_name = "GGUF")]
    model: Option<PathBuf>,
    /// Refused: a validator runs the chain's numerics profile or does not
    /// start (votes under any other profile would not count).
    #[arg(long, value_name = "ID", hide = true)]
    profile: Option<String>,
}

impl Args {
    /// The file's settings (or the defaults) with the flags given here on top.
    fn settings(&self) -> anyhow::Result<Settings> {
        let mut settings = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<Settings>(&text).with_context(|| format!("config file {}", path.display()))?
            }
            None => Settings::default(),
        };
        // A flag given replaces the file's value (`into` makes `T` the
        // `Option<T>` of optional settings).
        macro_rules! overlay {
            ($($flag:ident),*) => {$(
                if let Some(value) = &self.$flag {
                    settings.$flag = value.clone().into();
                }
            )*};
        }
        overlay!(chain, key, data, rpc, rpc_rate, rpc_rate_per_ip, rpc_rate_per_connection, metrics);
        overlay!(rpc_mib_rate, rpc_mib_rate_per_ip, rpc_mib_rate_per_connection, rpc_sockets_per_ip);
        overlay!(full_check_workers, max_artifact_age, max_clock_ahead);
        if !self.rpc_allow_origins.is_empty() {
            settings.rpc_allow_origins = self.rpc_allow_origins.clone();
        }
        if let Some(model) = &self.model {
            settings.model = Some(model.clone());
        }
        if !self.listen.is_empty() {
            settings.listen = self.listen.clone();
        }
        if !self.bootnodes.is_empty() {
            settings.bootnodes = self.bootnodes.clone();
        }
        settings.no_model |= self.no_model;
        settings.sync_writes |= self.sync_writes;
        Ok(settings)
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = args.settings()?;
    let spec = ChainArg { chain: settings.chain.clone() }.load()?;
    if let Some(profile) = &args.profile {
        bail!(
            "--profile {profile:?} refused: a validator runs the chain's numerics profile ({}) or does not start, \
             since votes under any other profile do not count (`poi verify --full --profile` compares profiles)",
            spec.numerics.label()
        );
    }
    if settings.chain.is_none() && !args.dev {
        bail!("--chain SPEC is required (or --dev, for the embedded devnet spec, whose validator keys are public)");
    }
    if spec.lists_devnet_keys() && !args.dev {
        bail!(
            "chain {:?} lists the well-known devnet validator keys, which anyone can derive and sign with: \
             refused without --dev",
            spec.name
        );
    }
    let key_path =
        settings.key.clone().context("--key is required (create one with `poi keys generate --out FILE`)")?;
    let key = keyfile::read(&key_path)?;
    if spec.validator(&key.public()).is_none() {
        tracing::warn!(key = %key.public(), "this key is not in the chain's validator set: the node relays and stores, its votes will not count");
    }
    let data_dir = settings.data.clone().context("--data is required")?;
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let mut config = NodeConfig::from_settings(spec.clone(), key, data_dir, &settings);
    if !settings.no_model {
        let model = ModelArgs { model: settings.model.clone(), profile: None };
        let checker: Arc<dyn FullChecker> = Arc::new(ModelChecker::new(Arc::new(model.load(&spec)?), &spec));
        config.checker = Some(checker);
    }

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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: Args,
    }

    fn settings(argv: &[&str]) -> anyhow::Result<Settings> {
        Command::try_parse_from([&["node"][..], argv].concat())?.args.settings()
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "rpc_rate = 10\nrpc_rate_per_connection = 20\nsync_writes = true\nkey = \"a.key\"\n")
            .unwrap();
        let file = file.to_str().unwrap();
        let from_file = settings(&["--config", file]).unwrap();
        assert_eq!((from_file.rpc_rate, from_file.rpc_rate_per_connection), (10, 20));
        assert_eq!(from_file.key, Some("a.key".into()));
        assert!(from_file.sync_writes);
        assert_eq!(from_file.max_artifact_age, Settings::default().max_artifact_age);

        let flagged =
            settings(&["--config", file, "--rpc-rate", "0", "--key", "b.key", "--max-artifact-age", "5"]).unwrap();
        assert_eq!((flagged.rpc_rate, flagged.rpc_rate_per_connection), (0, 20));
        assert_eq!(flagged.key, Some("b.key".into()));
        assert_eq!(flagged.max_artifact_age, 5);
        assert_eq!(settings(&[]).unwrap(), Settings::default());
    }

    #[test]
    fn a_bad_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "rpc_rates = 10\n").unwrap();
        let err = format!("{:#}", settings(&["--config", file.to_str().unwrap()]).unwrap_err());
        assert!(err.contains("node.toml") && err.contains("rpc_rates"), "{err}");
        let err = format!("{:#}", settings(&["--config", "/nonexistent/node.toml"]).unwrap_err());
        assert!(err.contains("reading /nonexistent/node.toml"), "{err}");
    }
}
