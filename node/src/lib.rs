//! poi's node: the parts the `poi` binary and the multi-node tests share.

pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod rpc;
pub mod scheduler;
pub mod service;
pub mod store;
