use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use poi_artifact::Artifact;
use poi_model::full_check::full_check;
use poi_verifier::full_check::FullCheckReport;
use poi_verifier::{ReplayChecker, ReplayError, ReplayReport, SeedingClass};
use serde_json::json;

use poi_cli::{ChainArg, ModelArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Artifact file: canonical binary, or the JSON view.
    #[arg(value_name = "ARTIFACT")]
    artifact: PathBuf,
    #[command(flatten)]
    chain: ChainArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also run the full check: re-run the pinned model over the artifact's
    /// tokens; under the chain's bit-exact profile every logged list must be
    /// exactly the model's and every chosen token the seeded pick from it.
    #[arg(long)]
    full: bool,
    /// With --full: print every position's distance and ranks.
    #[arg(long, requires = "full")]
    positions: bool,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let spec = args.chain.load()?;
    let bytes = std::fs::read(&args.artifact).with_context(|| format!("reading {}", args.artifact.display()))?;
    let mut checker = ReplayChecker::new(spec);
    let outcome = if super::looks_like_json(&bytes) {
        let text = std::str::from_utf8(&bytes).context("JSON artifact is not UTF-8")?;
        Artifact::from_json_str(text)
            .map_err(|e| Rejection::Unreadable(e.to_string()))
            .and_then(|artifact| checker.check(&artifact).map(|r| (artifact, r)).map_err(Rejection::Replay))
    } else {
        checker.check_bytes(&bytes).map_err(Rejection::Replay)
    };
    let spec = checker.spec();
    let full = match (&outcome, args.full) {
        (Ok((artifact, _)), true) => {
            let runtime = args.model.load(spec)?;
            Some(full_check(&runtime.model, artifact, &spec.thresholds).context("full check")?)
        }
        _ => None,
    };
    // A rejected artifact that still decodes says what kind it was.
    let seeding = match &outcome {
        Ok((_, report)) => Some(report.seeding),
        Err(_) => super::read_artifact(&args.artifact, poi_artifact::MAX_WIRE_BYTES)
            .ok()
            .and_then(|artifact| SeedingClass::of(&artifact, spec, &spec.chain_id()).ok()),
    };
    if args.json {
        let mut value = as_json(&outcome);
        value["seeding"] = json!(seeding);
        if let Some(report) = &full {
            value["full_check"] = full_json(report, args.positions)?;
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_text(&outcome, seeding, spec.thresholds.max_surprisal_z);
        if let Some(report) = &full {
            print_full(report, args.positions);
        }
    }
    let accepted = outcome.is_ok() && full.as_ref().is_none_or(|r| r.accepted);
    Ok(if accepted { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn full_json(report: &FullCheckReport, positions: bool) -> anyhow::Result<serde_json::Value> {
    let mut value = serde_json::to_value(report)?;
    if !positions {
        value.as_object_mut().expect("a struct").remove("positions");
    }
    Ok(value)
}

fn print_full(report: &FullCheckReport, positions: bool) {
    if positions {
        println!("position  token  exact  distance  matches  validator rank of chosen");
        for p in &report.positions {
            let rank = p.validator_rank.map_or("-".to_string(), |r| r.to_string());
            let exact = if p.exact { "yes" } else { "NO" };
            println!(
                "{:>8}  {:>5}  {exact:>5}  {:>8.5}  {:>7}  {rank:>4}",
                p.position, p.chosen, p.distance, p.matches
            );
        }
    }
    let rule = if report.bit_exact { "bit-exact: lists must equal the model's" } else { "tolerance" };
    println!("profile    {} ({rule})", report.profile_id);
    let exact = report.positions.iter().filter(|p| p.exact).count();
    println!("exact      {exact} of {} positions", report.positions.len());
    println!("distance2  {:.6}", report.distance2);
    println!("match      {:.4}", report.match_ratio);
    match &report.reason {
        None => println!("verdict    ACCEPT (full check)"),
        Some(reason) => println!("verdict    REJECT (full check): {reason}"),
    }
}

enum Rejection {
    Unreadable(String),
    Replay(ReplayError),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreadable(e) => write!(f, "unreadable JSON view: {e}"),
            Self::Replay(e) => write!(f, "{e}"),
        }
    }
}

fn as_json(outcome: &Result<(Artifact, ReplayReport), Rejection>) -> serde_json::Value {
    match outcome {
        Ok((artifact, report)) => json!({
            "verdict": "pass",
            "artifact_id": artifact.id().to_hex(),
            "miner": artifact.body.miner.to_hex(),
            "positions": report.positions,
            "k": artifact.body.generation.k(),
            "surprisal_z": report.z(),
        }),
        Err(rejection) => json!({
            "verdict": "reject",
            "reason": rejection.to_string(),
            "position": match rejection { Rejection::Replay(e) => e.position(), Rejection::Unreadable(_) => None },
        }),
    }
}

fn print_text(outcome: &Result<(Artifact, ReplayReport), Rejection>, seeding: Option<SeedingClass>, threshold: f64) {
    let seeding = seeding.map(|class| match class {
        SeedingClass::RequesterBound => "requester-bound (a requester the chain knows fixed the seed)",
        SeedingClass::MinerSeeded => "miner-seeded (no binding by a known requester: every validator checks it)",
        SeedingClass::Unseeded => "unseeded (surprisal test only; every validator checks it)",
    });
    match outcome {
        Ok((artifact, report)) => {
            println!("artifact   {}", artifact.id());
            println!("miner      {}", artifact.body.miner);
            println!("positions  {} (k = {})", report.positions, artifact.body.generation.k());
            println!("seeding    {}", seeding.unwrap_or_default());
            println!("surprisal  z = {:.3} (threshold {threshold})", report.z());
            println!("verdict    PASS (replay check)");
        }
        Err(rejection) => {
            if let Some(seeding) = seeding {
                println!("seeding    {seeding}");
            }
            println!("verdict    REJECT: {rejection}");
        }
    }
}
