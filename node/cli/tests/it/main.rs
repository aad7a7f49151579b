//! `poi` driven as a user drives it: the binary's commands end to end, and a
//! node process killed with SIGKILL. One test binary (tests that need the
//! `poi` executable must live in its package, where cargo builds it for
//! them); the multi-node and RPC tests on the library are `poi-tests`.

mod cli;
mod crash;
mod devnet;
mod mine;
mod recheck;

use std::process::{Command, Output};

/// Runs the `poi` binary this package built, to completion.
fn poi(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_poi")).args(args).output().expect("poi runs")
}
