//! `poi-lab bench store`: what an fsync per stored batch costs, side by side in
//! one run: the same artifacts written one batch each (as the node does)
//! into a fresh store without and with `--sync-writes`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use poi_artifact::Artifact;
use poi_chain_spec::ChainSpec;
use poi_node::store::{Store, VerdictRecord};
use poi_verifier::simulate::{build, Chooser};
use poi_verifier::verdict::verdict;
use poi_verifier::SeedingClass;

use crate::stats::quantile;

#[derive(clap::Args)]
pub struct Args {
    /// Artifacts written in each mode.
    #[arg(long, default_value_t = 2000)]
    artifacts: usize,
    /// Generated tokens per artifact.
    #[arg(long, default_value_t = 256)]
    tokens: usize,
    /// Where the two stores are made (the disk being measured); a temporary
    /// directory under the system's when omitted.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let spec = ChainSpec::devnet();
    let artifacts: Vec<Artifact> =
        (0..args.artifacts as u64).map(|seed| build(&spec, args.tokens, seed, Chooser::Seeded).artifact).collect();
    let parent = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .context("creating a directory for the stores")?;
    println!(
        "{} artifacts of {} tokens, one write batch each, in {}",
        args.artifacts,
        args.tokens,
        parent.path().display()
    );
    let mut rates = Vec::new();
    for (name, sync) in [("no fsync (default)", false), ("fsync per batch (--sync-writes)", true)] {
        let store = Store::open(&parent.path().join(format!("sync-{sync}")), spec.clone())?.with_sync_writes(sync);
        let mut latencies = Vec::with_capacity(artifacts.len());
        let started = Instant::now();
        for (received_at, artifact) in artifacts.iter().enumerate() {
            let write = Instant::now();
            // As the pipeline does: the votes that came first, the verdict
            // over them, then one batch.
            let (id, at) = (artifact.id(), received_at as u64);
            let votes = store.votes(&id)?;
            let class = SeedingClass::RequesterBound;
            let outcome = verdict(&spec, &id, class, &votes);
            let record = VerdictRecord::new(&id, &artifact.body.miner, class, &outcome, &votes, at, at);
            store.put_artifact(artifact, &record, None)?;
            latencies.push(write.elapsed().as_secs_f64() * 1e3);
        }
        let rate = artifacts.len() as f64 / started.elapsed().as_secs_f64();
        let at = |q: f64| quantile(&latencies, q).unwrap_or(f64::NAN);
        println!(
            "  {name:32} {rate:8.0} artifacts/s   p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            at(0.5),
            at(0.99),
            at(1.0)
        );
        rates.push(rate);
    }
    println!("  fsync costs {:.1}x the throughput", rates[0] / rates[1]);
    Ok(ExitCode::SUCCESS)
}
