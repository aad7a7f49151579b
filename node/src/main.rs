//! `poi`: the proof-of-inference validator node's command line.

mod cmd;
mod keyfile;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "poi",
    version,
    about = "Proof-of-inference validator node: mine, check and compare LLM inference artifacts"
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
    /// Compare two OpenAI-compatible responses with logprobs (e.g. two vLLM
    /// servers given the same prompt and tokens): distance2 and match ratio.
    Compare(cmd::compare::Args),
    /// Run the detection matrix (DESIGN §9) on the real model: honest,
    /// numerics swap, cheaper model and pre-fill miners, sampled and greedy;
    /// writes RESULTS.md with tables, plots and calibrated thresholds.
    Experiment(cmd::experiment::Args),
    /// Generate or show a node / miner key file.
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Convert an artifact between the canonical binary form and its JSON view.
    Convert(cmd::convert::Args),
    /// Measurements that print figures (not pass/fail tests).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
}

/// Where a chain spec comes from: a file, or the devnet spec built into poi.
#[derive(clap::Args, Clone)]
pub struct ChainArg {
    /// Chain spec JSON; the embedded devnet spec when omitted.
    #[arg(long, value_name = "SPEC")]
    pub chain: Option<PathBuf>,
}

impl ChainArg {
    pub fn load(&self) -> anyhow::Result<poi_chain_spec::ChainSpec> {
        Ok(match &self.chain {
            Some(path) => poi_chain_spec::ChainSpec::load(path)?,
            None => poi_chain_spec::ChainSpec::devnet(),
        })
    }
}

/// The build enables these features for candle's kernels (`.cargo/config.toml`);
/// say so plainly rather than die of an illegal instruction.
fn check_cpu() -> Result<(), &'static str> {
    #[cfg(target_arch = "x86_64")]
    for (name, present) in [
        ("avx2", std::arch::is_x86_feature_detected!("avx2")),
        ("fma", std::arch::is_x86_feature_detected!("fma")),
        ("f16c", std::arch::is_x86_feature_detected!("f16c")),
        ("pclmulqdq", std::arch::is_x86_feature_detected!("pclmulqdq")),
        ("sse4.2", std::arch::is_x86_feature_detected!("sse4.2")),
        ("popcnt", std::arch::is_x86_feature_detected!("popcnt")),
    ] {
        if !present {
            return Err(name);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(missing) = check_cpu() {
        eprintln!("error: this CPU lacks {missing}, which poi's x86-64 build requires (see .cargo/config.toml)");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Node(args) => cmd::node::run(args),
        Command::Devnet(args) => cmd::devnet::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Compare(args) => cmd::compare::run(args),
        Command::Mine(args) => cmd::mine::run(args),
        Command::Experiment(args) => cmd::experiment::run(args),
        Command::Keys(command) => cmd::keys::run(command),
        Command::Convert(args) => cmd::convert::run(args),
        Command::Bench(command) => cmd::bench::run(command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
