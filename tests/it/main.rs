//! poi's workspace integration tests, one binary on the test kit
//! (`poi_tests`): real RocksDB, real libp2p on loopback, real JSON-RPC over
//! HTTP and WebSocket, and the real model where a test says so.

mod byzantine;
mod dos;
mod network;
mod rpc;
mod store;
