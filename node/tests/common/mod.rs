//! What the multi-node tests share.

use std::path::Path;
use std::time::Duration;

use poi_chain_spec::{devnet_keypair, ChainSpec};
use poi_node::pipeline::Admission;
use poi_node::service::{NodeConfig, NodeHandle};

/// Devnet validator `index` on loopback, its data under `dir`, joined to
/// `bootnodes`, asking peers for what it missed every 300 ms. Fixture
/// artifacts carry fixed, long-past creation times, so the admission window
/// is off.
pub fn node_config<'a>(
    spec: &ChainSpec,
    index: u32,
    dir: &Path,
    bootnodes: impl IntoIterator<Item = &'a NodeHandle>,
) -> NodeConfig {
    let mut config = NodeConfig::new(spec.clone(), devnet_keypair(index), dir.join(format!("node{index}")));
    config.admission = Admission::ANY_AGE;
    config.bootnodes = bootnodes.into_iter().map(NodeHandle::dial_addr).collect();
    config.sync_interval = Duration::from_millis(300);
    config
}
