//! `poi-lab`: poi's laboratory. The detection matrix of DESIGN §9
//! (`experiment`) and the measurements of §10 (`bench …`), with their plots;
//! none of it is needed to run a node, so it stays out of `poi`.

mod bench;
mod experiment;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "poi-lab",
    version,
    about = "poi's laboratory: the detection matrix on the real model and the benchmarks",
    after_help = "The node, the miner and the checks: poi --help"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the detection matrix (DESIGN §9) on the real model: honest,
    /// numerics swap, cheaper model and pre-fill miners, sampled and greedy;
    /// writes RESULTS.md with tables, plots and calibrated thresholds.
    Experiment(experiment::Args),
    /// Measurements that print figures (not pass/fail tests).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    poi_cli::run_main(|| match cli.command {
        Command::Experiment(args) => experiment::run(args),
        Command::Bench(command) => bench::run(command),
    })
}
