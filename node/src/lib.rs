//! poi's node: the parts the `poi` binary and the multi-node tests share.

pub mod rpc;
pub mod store;
