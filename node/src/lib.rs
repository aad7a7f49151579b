//! poi's validator node as a library (DESIGN §2): the network layer (a
//! client handle and one event loop that owns the swarm), the validation
//! pipeline, the full-check scheduler, the RocksDB store, the JSON-RPC server
//! and metrics; `service::start` puts them together. The `poi` binary, the
//! lab and the integration tests build on it.

pub mod clock;
pub mod config;
pub mod metrics;
pub mod network;
pub mod pipeline;
mod rate;
pub mod rpc;
pub mod scheduler;
pub mod service;
pub mod store;
