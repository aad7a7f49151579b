//! `poi`: the proof-of-inference validator node's and miner's command line.
//! Experiments and benchmarks are `poi-lab`'s.

mod cmd;
mod keyfile;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "poi",
    version,
    about = "Proof-of-inference validator node: mine, check and compare LLM inference artifacts",
    after_help = "Experiments and benchmarks: poi-lab --help"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a validator node: libp2p gossip, replay checks, sampled full
    /// checks and votes, the RocksDB ledger and JSON-RPC.
    Node(cmd::node::Args),
    /// Start a local devnet of validators in this process, submit honest and
    /// fraudulent artifacts, and show the verdicts.
    Devnet(cmd::devnet::Args),
    /// Check an artifact file (canonical binary or JSON view): the replay check,
    /// and with --full the model re-run. Exit status 0: accepted; 1: rejected.
    Verify(cmd::verify::Args),
    /// Generate with the pinned model and sampler v1, then write a signed
    /// inference artifact.
    Mine(cmd::mine::Args),
    /// Serve OpenAI-compatible completions (chat, text, streaming, logprobs)
    /// from the pinned model: every answer is a signed artifact, submitted to
    /// the given nodes, its id in `poi_artifact_id`.
    Serve(cmd::serve::Args),
    /// Compare two OpenAI-compatible responses with logprobs (e.g. two vLLM
    /// servers given the same prompt and tokens): distance2 and match ratio.
    Compare(cmd::compare::Args),
    /// Turn an OpenAI-compatible chat completion with logprobs from another
    /// engine (vLLM, llama.cpp) into a signed, unseeded artifact.
    Import(cmd::import::Args),
    /// Generate or show a node / miner key file.
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Convert an artifact between the canonical binary form and its JSON view.
    Convert(cmd::convert::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    poi_cli::run_main(|| match cli.command {
        Command::Node(args) => cmd::node::run(args),
        Command::Devnet(args) => cmd::devnet::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Compare(args) => cmd::compare::run(args),
        Command::Import(args) => cmd::import::run(args),
        Command::Mine(args) => cmd::mine::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Keys(command) => cmd::keys::run(command),
        Command::Convert(args) => cmd::convert::run(args),
    })
}
