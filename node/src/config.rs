//! Node configuration. [`Settings`] is what an operator writes (the TOML file
//! of `poi node --config`, overlaid by its flags), with every default in its
//! `Default`; [`NodeConfig`] is what `service::start` takes: the
//! settings resolved against a loaded chain spec, key and model.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use poi_artifact::Keypair;
use poi_chain_spec::ChainSpec;
use serde::{Deserialize, Serialize};

use crate::pipeline::Admission;
use crate::rpc::{Rate, RpcConfig, RpcLimits};
use crate::scheduler::FullChecker;

/// An operator's settings; absent keys take the defaults of [`Default`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Chain spec JSON; the embedded devnet spec when absent.
    pub chain: Option<PathBuf>,
    /// Validator key file.
    pub key: Option<PathBuf>,
    /// Data directory (RocksDB).
    pub data: Option<PathBuf>,
    /// The chain's GGUF file; where `scripts/fetch-model.sh` puts it when absent.
    pub model: Option<PathBuf>,
    /// Replay-check, store and relay, never vote.
    pub no_model: bool,
    #[serde(with = "multiaddrs")]
    pub listen: Vec<Multiaddr>,
    #[serde(with = "multiaddrs")]
    pub bootnodes: Vec<Multiaddr>,
    pub rpc: SocketAddr,
    /// JSON-RPC calls per second across all clients; 0 is unlimited.
    pub rpc_rate: u32,
    /// JSON-RPC calls per second from one client IP; 0 is unlimited.
    pub rpc_rate_per_ip: u32,
    /// JSON-RPC calls per second on one connection; 0 is unlimited.
    pub rpc_rate_per_connection: u32,
    /// JSON-RPC request MiB per second across all clients; 0 is unlimited.
    pub rpc_mib_rate: u32,
    pub rpc_mib_rate_per_ip: u32,
    pub rpc_mib_rate_per_connection: u32,
    /// Open JSON-RPC sockets one client source may hold; 0 is unlimited.
    pub rpc_sockets_per_ip: u32,
    /// Web origins whose pages may call the node (the `Origin` header of a
    /// WebSocket handshake or cross-site request); `"*"` allows any. None by
    /// default: a request carrying an `Origin` is refused.
    pub rpc_allow_origins: Vec<String>,
    pub metrics: Option<SocketAddr>,
    pub full_check_workers: usize,
    /// Seconds an artifact's signed creation time may lie before this node's
    /// clock (RPC, gossip); 0 turns the admission window off.
    pub max_artifact_age: u64,
    /// Seconds it may lie after it.
    pub max_clock_ahead: u64,
    /// fsync every stored batch before acknowledging it.
    pub sync_writes: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            chain: None,
            key: None,
            data: None,
            model: None,
            no_model: false,
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")],
            bootnodes: Vec::new(),
            rpc: SocketAddr::from(([127, 0, 0, 1], 8545)),
            // Well above what honest tooling needs (a replay check costs
            // ~0.1 ms), low enough that one client cannot take the node's CPU.
            rpc_rate: 2000,
            rpc_rate_per_ip: 1000,
            rpc_rate_per_connection: 500,
            // An artifact of 256 tokens is ~25 KB in hex: 64 MiB/s is over
            // 2500 submits a second, and one client IP gets half of it.
            rpc_mib_rate: 64,
            rpc_mib_rate_per_ip: 32,
            rpc_mib_rate_per_connection: 16,
            // An eighth of the node's sockets: the local miner and tools
            // need a few, and eight remote sources are needed to fill it.
            rpc_sockets_per_ip: 32,
            rpc_allow_origins: Vec::new(),
            metrics: None,
            full_check_workers: 1,
            // A miner submits what it generated at once, and gossip relays it
            // in seconds: an hour is generous; five minutes covers clocks
            // that NTP keeps roughly right.
            max_artifact_age: 3600,
            max_clock_ahead: 300,
            sync_writes: false,
        }
    }
}

impl Settings {
    pub fn rpc_limits(&self) -> RpcLimits {
        let rate = |calls: u32, mib: u32| Rate {
            calls_per_s: (calls > 0).then_some(calls),
            bytes_per_s: (mib > 0).then_some(mib.saturating_mul(1 << 20)),
        };
        RpcLimits {
            node: rate(self.rpc_rate, self.rpc_mib_rate),
            ip: rate(self.rpc_rate_per_ip, self.rpc_mib_rate_per_ip),
            connection: rate(self.rpc_rate_per_connection, self.rpc_mib_rate_per_connection),
        }
    }

    pub fn rpc_config(&self) -> RpcConfig {
        RpcConfig {
            limits: self.rpc_limits(),
            allowed_origins: self.rpc_allow_origins.clone(),
            max_sockets_per_ip: (self.rpc_sockets_per_ip > 0).then_some(self.rpc_sockets_per_ip as usize),
        }
    }

    pub fn admission(&self) -> Admission {
        match self.max_artifact_age {
            0 => Admission::ANY_AGE,
            age => Admission {
                max_age: Some(Duration::from_secs(age)),
                max_ahead: Duration::from_secs(self.max_clock_ahead),
            },
        }
    }
}

/// Multiaddrs as the strings operators write.
mod multiaddrs {
    use libp2p::Multiaddr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(addrs: &[Multiaddr], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(addrs.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Multiaddr>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|text| text.parse().map_err(|e| serde::de::Error::custom(format!("{text:?} is not a multiaddr: {e}"))))
            .collect()
    }
}

/// Everything a node needs to start.
pub struct NodeConfig {
    pub spec: ChainSpec,
    pub key: Keypair,
    pub data_dir: PathBuf,
    pub listen: Vec<Multiaddr>,
    pub bootnodes: Vec<Multiaddr>,
    /// `None`: no RPC server.
    pub rpc: Option<SocketAddr>,
    pub rpc_config: RpcConfig,
    pub metrics: Option<SocketAddr>,
    /// The model; `None` runs a node that checks replay, stores and relays
    /// but never votes.
    pub checker: Option<Arc<dyn FullChecker>>,
    pub full_check_workers: usize,
    pub validation_workers: usize,
    /// How often each connected peer is asked for what this node missed,
    /// and lost bootnodes are dialled again.
    pub sync_interval: Duration,
    pub admission: Admission,
    /// fsync every stored batch (see `Store::with_sync_writes`).
    pub sync_writes: bool,
}

impl NodeConfig {
    /// A node under `settings` (its paths are the caller's to load).
    pub fn from_settings(spec: ChainSpec, key: Keypair, data_dir: PathBuf, settings: &Settings) -> Self {
        Self {
            spec,
            key,
            data_dir,
            listen: settings.listen.clone(),
            bootnodes: settings.bootnodes.clone(),
            rpc: Some(settings.rpc),
            rpc_config: settings.rpc_config(),
            metrics: settings.metrics,
            checker: None,
            full_check_workers: settings.full_check_workers,
            validation_workers: 2,
            sync_interval: Duration::from_secs(5),
            admission: settings.admission(),
            sync_writes: settings.sync_writes,
        }
    }

    /// The default settings on loopback with an RPC port of the system's
    /// choosing: a node in a test, a benchmark or the devnet.
    pub fn new(spec: ChainSpec, key: Keypair, data_dir: PathBuf) -> Self {
        let settings = Settings { rpc: SocketAddr::from(([127, 0, 0, 1], 0)), ..Settings::default() };
        Self::from_settings(spec, key, data_dir, &settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults_and_every_key_of_the_readme_reads() {
        assert_eq!(toml::from_str::<Settings>("").unwrap(), Settings::default());
        let text = r#"
            chain = "chain.json"
            key = "validator.key"
            data = "data/node0"
            listen = ["/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/udp/4001/quic-v1"]
            bootnodes = ["/ip4/127.0.0.1/tcp/4002"]
            rpc = "127.0.0.1:9545"
            rpc_rate = 0
            rpc_rate_per_ip = 9
            rpc_rate_per_connection = 7
            rpc_mib_rate = 0
            rpc_mib_rate_per_ip = 2
            rpc_mib_rate_per_connection = 1
            rpc_sockets_per_ip = 4
            rpc_allow_origins = ["https://app.example"]
            metrics = "127.0.0.1:9615"
            no_model = true
            full_check_workers = 3
            max_artifact_age = 0
            max_clock_ahead = 10
            sync_writes = true
            model = "m.gguf"
        "#;
        let settings: Settings = toml::from_str(text).unwrap();
        assert_eq!(settings.listen.len(), 2);
        assert_eq!(settings.rpc, SocketAddr::from(([127, 0, 0, 1], 9545)));
        let limits = settings.rpc_limits();
        assert_eq!(limits.node, Rate::NONE);
        assert_eq!(limits.ip, Rate { calls_per_s: Some(9), bytes_per_s: Some(2 << 20) });
        assert_eq!(limits.connection, Rate { calls_per_s: Some(7), bytes_per_s: Some(1 << 20) });
        assert_eq!(settings.rpc_config().allowed_origins, ["https://app.example"]);
        assert_eq!(settings.rpc_config().max_sockets_per_ip, Some(4));
        assert_eq!(settings.admission(), Admission::ANY_AGE, "age 0 turns the window off");
        assert!(settings.no_model && settings.sync_writes);
        let config = NodeConfig::from_settings(ChainSpec::devnet(), Keypair::generate(), "d".into(), &settings);
        assert_eq!((config.full_check_workers, config.rpc, config.metrics), (3, Some(settings.rpc), settings.metrics));
    }

    #[test]
    fn unknown_keys_and_bad_addresses_are_named() {
        let err = toml::from_str::<Settings>("rpc_rates = 5").unwrap_err().to_string();
        assert!(err.contains("rpc_rates"), "{err}");
        let err = toml::from_str::<Settings>(r#"listen = ["/ip4/nowhere"]"#).unwrap_err().to_string();
        assert!(err.contains("/ip4/nowhere") && err.contains("not a multiaddr"), "{err}");
    }

    #[test]
    fn the_default_window_and_limits() {
        let settings = Settings::default();
        let window = settings.admission();
        assert_eq!((window.max_age, window.max_ahead), (Some(Duration::from_secs(3600)), Duration::from_secs(300)));
        let limits = settings.rpc_limits();
        assert_eq!(limits.node, Rate { calls_per_s: Some(2000), bytes_per_s: Some(64 << 20) });
        assert_eq!(limits.ip, Rate { calls_per_s: Some(1000), bytes_per_s: Some(32 << 20) });
        assert_eq!(limits.connection, Rate { calls_per_s: Some(500), bytes_per_s: Some(16 << 20) });
        assert!(settings.rpc_allow_origins.is_empty(), "no web origin by default");
    }
}
