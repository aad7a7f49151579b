//! `poi-lab bench votes`: the vote floods of DESIGN §7b against one node's
//! pipeline on a real RocksDB store, side by side in one run with no flood.
//! A validator (its key in an attacker's hands) sends N different votes on
//! one stored artifact, or M votes on ids that do not exist. Printed per
//! case: votes kept, store size on disk, the time the node spends ingesting
//! the flood (one thread, so its CPU time), and an honest artifact's verdict
//! latency afterwards (the artifact, then three validators' votes, to a
//! final verdict).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context};
use poi_artifact::{sha256, Keypair, Verdict};
use poi_chain_spec::{devnet_keypair, ChainSpec};
use poi_node::metrics::Metrics;
use poi_node::pipeline::{Admission, Pipeline, Source};
use poi_node::store::Store;
use poi_verifier::simulate::{self, build, Chooser};

use crate::stats::quantile;

#[derive(clap::Args)]
pub struct Args {
    /// Votes from one validator on one artifact.
    #[arg(long, default_value_t = 10_000)]
    one_artifact: u64,
    /// Votes from one validator on ids that do not exist.
    #[arg(long, default_value_t = 100_000)]
    random_ids: u64,
    /// Honest artifacts timed after each flood.
    #[arg(long, default_value_t = 50)]
    honest: u64,
    /// Where the stores are made; a temporary directory when omitted.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Every validator selected, so three accepts make a verdict final.
    let spec = ChainSpec::local_devnet(4, 1.0)?;
    let flooder = devnet_keypair(3);
    let target = build(&spec, 64, 1, Chooser::Seeded);
    eprintln!("signing the floods ({} + {} votes)…", args.one_artifact, args.random_ids);
    let on_one: Vec<Vec<u8>> = {
        let template = simulate::vote(&spec, &flooder, &target.artifact.id(), Verdict::Accept, 0);
        (0..args.one_artifact)
            .map(|at| {
                let mut body = template.body.clone();
                body.created_at_ms = at;
                body.sign(&flooder).encode()
            })
            .collect()
    };
    let nowhere: Vec<Vec<u8>> = (0..args.random_ids)
        .map(|i| simulate::vote(&spec, &flooder, &sha256(&i.to_le_bytes()), Verdict::Reject, i).encode())
        .collect();
    let honest_keys: Vec<Keypair> = (0..3).map(devnet_keypair).collect();
    let honest: Vec<(Vec<u8>, Vec<Vec<u8>>)> = (0..args.honest)
        .map(|seed| {
            let built = build(&spec, 64, 1000 + seed, Chooser::Seeded);
            let votes =
                honest_keys.iter().map(|k| simulate::vote(&spec, k, &built.artifact.id(), Verdict::Accept, 1).encode());
            (built.bytes, votes.collect())
        })
        .collect();

    let parent = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .context("creating a directory for the stores")?;
    println!(
        "{:<34} {:>10} {:>12} {:>12} {:>14} {:>14}",
        "case", "votes kept", "store bytes", "flood s", "honest p50 ms", "honest p99 ms"
    );
    let cases: [(&str, &[Vec<u8>]); 3] =
        [("no flood", &[]), ("flood on one artifact", &on_one), ("flood on ids that do not exist", &nowhere)];
    for (index, (name, flood)) in cases.into_iter().enumerate() {
        let dir = parent.path().join(format!("case-{index}"));
        let store = Arc::new(Store::open(&dir, spec.clone())?);
        let pipeline = Pipeline::new(store, spec.clone(), Arc::new(Metrics::default()), None, Admission::ANY_AGE);
        pipeline.ingest_artifact(&target.bytes, Source::Rpc)?;
        let started = Instant::now();
        for bytes in flood {
            pipeline.ingest_vote(bytes, Source::Gossip)?;
        }
        let flood_s = started.elapsed().as_secs_f64();
        let mut latencies = Vec::new();
        for (artifact, votes) in &honest {
            let started = Instant::now();
            let id = pipeline.ingest_artifact(artifact, Source::Gossip)?.id;
            for vote in votes {
                pipeline.ingest_vote(vote, Source::Gossip)?;
            }
            ensure!(pipeline.store().verdict(&id)?.is_some_and(|v| v.is_final), "the honest verdict is not final");
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let kept = pipeline.store().votes(&target.artifact.id())?.len() as i64 + pipeline.metrics().votes_pending.get();
        let at = |q: f64| quantile(&latencies, q).unwrap_or(f64::NAN);
        println!("{name:<34} {kept:>10} {:>12} {flood_s:>12.3} {:>14.3} {:>14.3}", dir_bytes(&dir), at(0.5), at(0.99));
    }
    println!("(votes kept: stored on the flooded artifact plus waiting for unknown ones; one thread)");
    Ok(ExitCode::SUCCESS)
}
