//! `poi-lab bench history`: what one `poi_verdictHistory` page costs for
//! each filter in a store of many artifacts (DESIGN §10: a 100-row page in
//! under 5 ms at 1 M). The store is filled as a node fills it, one batch per
//! artifact: 16 miners in turn, one rare miner (one artifact in 10,000), and
//! one artifact in 10,000 disputed by a selected validator's reject.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use poi_artifact::{Artifact, Keypair, Verdict, Vote};
use poi_chain_spec::{devnet_keypair, ChainSpec};
use poi_node::store::{HistoryQuery, Store, VerdictRecord};
use poi_verifier::simulate::{body_with, vote, Chooser};
use poi_verifier::verdict::{selection, verdict, Status};
use poi_verifier::SeedingClass;

use crate::stats::quantile;

#[derive(clap::Args)]
pub struct Args {
    /// Artifacts in the store.
    #[arg(long, default_value_t = 1_000_000)]
    artifacts: u64,
    /// Rows per page.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Calls timed per filter.
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Where the store is made; a temporary directory under the system's
    /// when omitted.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// One artifact in this many is the rare miner's, and one is disputed.
const RARE: u64 = 10_000;
const MINERS: u8 = 16;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let spec = ChainSpec::devnet();
    let parent = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .context("creating a directory for the store")?;
    let store = Store::open(&parent.path().join("history"), spec.clone())?;
    let miners: Vec<Keypair> = (1..=MINERS).map(|i| Keypair::from_secret([i; 32])).collect();
    let rare_miner = Keypair::from_secret([200; 32]);
    let validators: Vec<Keypair> = (0..spec.validators.len() as u32).map(devnet_keypair).collect();

    let filling = Instant::now();
    let mut disputed_by = None;
    for i in 0..args.artifacts {
        let miner = if i % RARE == RARE / 2 { &rare_miner } else { &miners[(i % u64::from(MINERS)) as usize] };
        let artifact = artifact(&spec, miner, i);
        let id = artifact.id();
        let class = SeedingClass::RequesterBound;
        let record = |votes: &[Vote]| {
            let outcome = verdict(&spec, &id, class, votes);
            VerdictRecord::new(&id, &artifact.body.miner, class, &outcome, votes, i, i)
        };
        store.put_artifact(&artifact, &record(&[]), None)?;
        let disputer = validators.iter().find(|v| selection(&v.vrf(), &id, spec.full_check_rate).0);
        if let (0, Some(validator)) = (i % RARE, disputer) {
            let reject = vote(&spec, validator, &id, Verdict::Reject, i);
            store.put_vote(&reject, &record(std::slice::from_ref(&reject)), None)?;
            disputed_by.get_or_insert(validator.public());
        }
        if (i + 1) % 100_000 == 0 {
            eprintln!("  {} artifacts stored ({:.0} s)", i + 1, filling.elapsed().as_secs_f64());
        }
    }
    println!(
        "{} artifacts in {} ({:.0} s to fill); {}-row pages, {} calls per filter",
        args.artifacts,
        parent.path().display(),
        filling.elapsed().as_secs_f64(),
        args.limit,
        args.calls
    );

    let middle = args.artifacts / 2;
    let all = HistoryQuery { limit: args.limit, ..Default::default() };
    let mut filters = vec![
        ("no filter (time index)", all.clone()),
        (
            "from_ms..to_ms, mid-store",
            HistoryQuery { from_ms: Some(middle), to_ms: Some(middle + 1000), ..all.clone() },
        ),
        ("miner (1 in 16)", HistoryQuery { miner: Some(miners[3].public()), ..all.clone() }),
        ("miner (1 in 10,000)", HistoryQuery { miner: Some(rare_miner.public()), ..all.clone() }),
        ("status accepted-replay-only", HistoryQuery { status: Some(Status::AcceptedReplayOnly), ..all.clone() }),
        ("status disputed (1 in 10,000)", HistoryQuery { status: Some(Status::Disputed), ..all.clone() }),
        (
            "miner + status disputed",
            HistoryQuery { miner: Some(miners[0].public()), status: Some(Status::Disputed), ..all.clone() },
        ),
    ];
    if let Some(validator) = disputed_by {
        filters.push(("validator (its rejects)", HistoryQuery { validator: Some(validator), ..all.clone() }));
        let disputed = Some(Status::Disputed);
        filters.push((
            "validator + status disputed",
            HistoryQuery { validator: Some(validator), status: disputed, ..all.clone() },
        ));
        // The one pairing without its own index: the validator's, checked.
        let miner = Some(miners[0].public());
        filters.push(("validator + miner", HistoryQuery { validator: Some(validator), miner, ..all.clone() }));
    }
    println!("  {:32} {:>6} {:>9} {:>10} {:>10}", "filter", "rows", "examined", "p50 ms", "p99 ms");
    for (name, query) in filters {
        let mut latencies = Vec::with_capacity(args.calls);
        let mut page = None;
        for _ in 0..args.calls {
            let started = Instant::now();
            page = Some(store.history(&query)?);
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let page = page.context("--calls must be at least 1")?;
        let at = |q: f64| quantile(&latencies, q).unwrap_or(f64::NAN);
        println!("  {name:32} {:>6} {:>9} {:>10.3} {:>10.3}", page.rows.len(), page.examined, at(0.5), at(0.99));
    }
    Ok(ExitCode::SUCCESS)
}

/// A small artifact (4 generated tokens) by `miner`: history cost does not
/// depend on artifact size.
fn artifact(spec: &ChainSpec, miner: &Keypair, seed: u64) -> Artifact {
    let mut body = body_with(spec, 4, seed, Chooser::Seeded);
    body.miner = miner.public();
    body.sign(miner)
}
