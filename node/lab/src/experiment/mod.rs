//! `poi-lab experiment`: DESIGN §9's detection matrix on the real model. Mines
//! artifacts over a fixed prompt set under each miner profile, validates them
//! with the pinned profile, and writes `RESULTS.md`, `results/results.json`
//! and one distance histogram per pair.

mod attack;
mod llama_cpp;
mod matrix;
mod plot;
mod population;
mod redteam;
mod report;
mod run;
mod sequential;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use plotters::style::RGBColor;
use poi_model::builtin_profile;
use poi_model::runtime::{cache_dir, default_model_path, Runtime};

use matrix::{Class, Decoding, RUNS};
use poi_cli::ChainArg;
use report::{PairData, Recommended, Results};

#[derive(clap::Args)]
pub struct Args {
    /// Prompts as JSON lines `{"id", "kind", "prompt"}`; default: the 200
    /// committed prompts (50 each of chat, code, list, long).
    #[arg(long, value_name = "FILE")]
    prompts: Option<PathBuf>,
    /// Use at most this many prompts of each kind.
    #[arg(long, value_name = "N", default_value_t = usize::MAX, hide_default_value = true)]
    per_kind: usize,
    /// Most tokens each miner generates.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// A run CI can afford: one prompt per kind, 32 tokens.
    #[arg(long)]
    quick: bool,
    /// Generated artifacts and check results, reused by later runs
    /// [default: ~/.cache/poi/experiments].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Where check results are kept (JSON lines, one directory per
    /// configuration); the report is computed from them alone, so keeping
    /// them (`scripts/experiments.sh` commits them under docs/results/checks)
    /// lets a run resume on another machine [default: in the cache].
    #[arg(long, value_name = "DIR")]
    records: Option<PathBuf>,
    /// Write the report from the check records alone, computing nothing
    /// that is missing (what a run has so far; the report gives each n).
    #[arg(long)]
    from_records: bool,
    /// Honest artifacts in the false-positive population: every prompt
    /// asked again with new seeds, each artifact fully checked.
    #[arg(long, value_name = "N", default_value_t = 3000)]
    honest_artifacts: usize,
    /// Most tokens of each artifact in the honest population (and of the
    /// laundering miner's).
    #[arg(long, value_name = "N", default_value_t = 32)]
    honest_tokens: usize,
    /// Artifacts of the laundering miner (the adaptive unseeded attacker,
    /// drafting with the q4_0 model) for the per-miner sequential test.
    #[arg(long, value_name = "N", default_value_t = 60)]
    laundering_artifacts: usize,
    /// Where RESULTS.md and results/ (JSON, PNG plots) are written.
    #[arg(long, value_name = "DIR", default_value = "docs")]
    out: PathBuf,
    /// The chain's GGUF file; default: where scripts/fetch-model.sh puts it.
    #[arg(long, value_name = "GGUF")]
    model: Option<PathBuf>,
    /// The honest false-positive rate the recommended thresholds aim at.
    #[arg(long, default_value_t = 0.001)]
    fpr_target: f64,
    #[command(flatten)]
    chain: ChainArg,
}

/// The laundering miners' draft models: the cheap model nearest the pinned
/// one, which needs few repairs, and a farther one, whose drafts are
/// repaired so often that most of its tokens are the pinned model's draws.
const LAUNDERING_DRAFTS: [&str; 2] = ["requant-q4_0-cpu", "requant-q2k-cpu"];

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let spec = args.chain.load()?;
    let (per_kind, max_tokens) = if args.quick { (1, 32) } else { (args.per_kind, args.max_tokens) };
    let (honest_artifacts, honest_tokens, laundering_artifacts) =
        if args.quick { (8, 16, 4) } else { (args.honest_artifacts, args.honest_tokens, args.laundering_artifacts) };
    anyhow::ensure!(
        (1..=spec.limits.max_generated_tokens as usize).contains(&honest_tokens),
        "--honest-tokens must be between 1 and the chain's limit of {}",
        spec.limits.max_generated_tokens
    );
    anyhow::ensure!(
        (1..=spec.limits.max_generated_tokens as usize).contains(&max_tokens),
        "--max-tokens must be between 1 and the chain's limit of {}",
        spec.limits.max_generated_tokens
    );
    anyhow::ensure!((0.0..1.0).contains(&args.fpr_target), "--fpr-target must be in [0, 1)");
    let prompts = run::load_prompts(args.prompts.as_deref(), per_kind)?;
    let every_prompt = run::load_prompts(args.prompts.as_deref(), usize::MAX)?;
    let cache_root = args.cache.unwrap_or_else(|| cache_dir().join("experiments"));
    let key = run::cache_key(&spec, max_tokens);
    let cache = cache_root.join(&key);
    let records = args.records.map_or_else(|| cache.join("checks"), |dir| dir.join(&key));
    let model_path = args.model.unwrap_or_else(|| default_model_path(&spec));
    anyhow::ensure!(
        model_path.exists(),
        "model file {} not found: run scripts/fetch-model.sh (or pass --model)",
        model_path.display()
    );
    anyhow::ensure!(
        spec.numerics.id == matrix::NATIVE,
        "the experiment validates with {}, the chain pins {}",
        matrix::NATIVE,
        spec.numerics.id
    );

    // The pinned load checks the file's hash and shape once; the other
    // profiles read the same, already checked file.
    let pinned = Runtime::load_pinned(&spec, &model_path, None)
        .with_context(|| format!("loading {} under {}", model_path.display(), spec.numerics.id))?;
    let mut runtimes = HashMap::from([(spec.numerics.id.clone(), pinned)]);
    for run in RUNS {
        if runtimes.contains_key(run.miner) {
            continue;
        }
        let profile = builtin_profile(run.miner).with_context(|| format!("no built-in profile {}", run.miner))?;
        let runtime = Runtime::load(&model_path, &profile)
            .with_context(|| format!("loading {} under {}", model_path.display(), profile.id))?;
        runtimes.insert(run.miner.to_string(), runtime);
    }
    eprintln!(
        "{} prompts, {max_tokens} tokens at most, cache {}, output {}",
        prompts.len(),
        cache.display(),
        args.out.display()
    );
    let engine = run::Engine::new(spec.clone(), cache, records, max_tokens, runtimes, !args.from_records);
    let mut data = Vec::new();
    for decoding in Decoding::ALL {
        for run in RUNS.iter().filter(|r| r.applies_to(decoding)) {
            let records = engine.run(decoding, run, &prompts)?;
            for pair in run.pairs {
                let records = records.iter().flat_map(|r| &r.pairs).filter(|p| p.pair == pair.name).cloned().collect();
                data.push(PairData { decoding, pair: *pair, records });
            }
        }
    }

    let llama_cpp = match args.from_records {
        true => None,
        false => llama_cpp::LlamaCpp::spawn(&model_path, spec.model.vocab_size as usize)?,
    };
    if llama_cpp.is_none() && !args.from_records {
        eprintln!("llama-cpp-python is not installed: the llama.cpp miner's row is left out");
    }
    let mut attacks = redteam::run(&engine, &spec, &prompts, if args.quick { 1 } else { 4 }, llama_cpp)?;
    let sampled = Decoding::Sampled.spec(&spec);
    // The near launderer, then the honest population (the false-positive
    // figure), then the far launderer, which costs the most per artifact.
    let mut laundered = Vec::new();
    let mut population = Vec::new();
    for drafts in LAUNDERING_DRAFTS {
        let records = population::laundering_population(
            &engine,
            &sampled,
            &every_prompt,
            laundering_artifacts,
            honest_tokens,
            drafts,
        )?;
        attacks.extend(records.iter().map(|r| redteam::laundered_record(drafts, r)));
        laundered.push((drafts, records));
        if population.is_empty() {
            population =
                population::honest_population(&engine, &sampled, &every_prompt, honest_artifacts, honest_tokens)?;
        }
    }

    let chain = &spec.thresholds;
    let recommended = Recommended::derive(&data, chain, args.fpr_target);
    let pairs = report::pair_rows(&data, chain, &recommended);
    let prefixes = report::prefix_rows(&data, chain.max_surprisal_z);
    let honest_checks = population::HonestSummary::new(&population, honest_artifacts, honest_tokens);
    let red_team = redteam::rows(&attacks);
    let miner_test = sequential::summarise(&population, &laundered, &spec.miner_test, honest_tokens);
    let goals = report::goals(&pairs, &prefixes, &honest_checks, &red_team, &miner_test);
    let findings = report::Findings::new(&pairs, &prefixes, &recommended);
    let results_dir = args.out.join("results");
    std::fs::create_dir_all(&results_dir).with_context(|| format!("creating {}", results_dir.display()))?;
    let plots = plots(&data, &results_dir, chain.max_distance2, recommended.max_distance2)?;
    let (honest_curves, laundering_curves) = sequential::curves(&population, &laundered, &spec.miner_test);
    let labels: Vec<String> =
        LAUNDERING_DRAFTS.iter().map(|d| format!("laundering, {} drafts", matrix::short_name(d))).collect();
    let colors = [RGBColor(210, 60, 40), RGBColor(230, 150, 30)];
    let mut families =
        vec![plot::Curves { label: "honest miners", curves: &honest_curves, color: RGBColor(40, 90, 200) }];
    for ((label, curves), color) in labels.iter().zip(&laundering_curves).zip(colors) {
        families.push(plot::Curves { label, curves, color });
    }
    plot::curves(
        &results_dir.join("miner-test.png"),
        &format!("per-miner test at tilt {} (artifacts of {honest_tokens} tokens)", spec.miner_test.tilt),
        &families,
        plot::Marker { label: "threshold ln(1/α)", value: spec.miner_test.threshold(), color: RGBColor(0, 0, 0) },
    )?;
    let miner_test_plot = "results/miner-test.png".to_string();
    let command = if args.quick {
        "poi-lab experiment --quick".to_string()
    } else {
        let per_kind = if per_kind == usize::MAX { String::new() } else { format!("--per-kind {per_kind} ") };
        format!(
            "poi-lab experiment {per_kind}--max-tokens {max_tokens} --honest-artifacts {honest_artifacts} \
             --honest-tokens {honest_tokens} --laundering-artifacts {laundering_artifacts}"
        )
    };
    let results = Results {
        command,
        prompts: prompts.len(),
        max_tokens,
        model_sha256: spec.model.file_sha256.to_hex(),
        chain_thresholds: chain.clone(),
        recommended,
        pairs,
        findings,
        adaptive_per_kind: matrix::ADAPTIVE_PER_KIND.min(per_kind),
        prefixes,
        goals,
        plots,
        honest_checks,
        red_team,
        miner_test,
        miner_test_plot,
    };
    report::write(&results, &args.out)?;
    for goal in &results.goals {
        let mark = goal.status.label();
        eprintln!("{mark:<9} {}: {}", goal.goal, goal.measured);
    }
    eprintln!("wrote {}", args.out.join("RESULTS.md").display());
    Ok(ExitCode::SUCCESS)
}

/// One histogram per non-honest pair (and the 1-thread honest pair), each
/// against the honest pair of the same decoding; returns pair → file name.
fn plots(
    data: &[PairData],
    dir: &std::path::Path,
    chain_threshold: f64,
    recommended_threshold: f64,
) -> anyhow::Result<BTreeMap<String, String>> {
    plot::register_bundled_font();
    let mut files = BTreeMap::new();
    for d in data.iter().filter(|d| d.pair.name != "honest" && !d.records.is_empty()) {
        let Some(honest) = data.iter().find(|h| h.decoding == d.decoding && h.pair.name == "honest") else {
            continue;
        };
        let name = format!("{}-{}.png", d.decoding.name(), d.pair.name);
        let (honest_values, values) = (honest.distances(), d.distances());
        let color = if d.pair.class == Class::Honest { RGBColor(40, 160, 70) } else { RGBColor(210, 60, 40) };
        plot::histogram(
            &dir.join(&name),
            &format!("{} vs honest ({} decoding)", d.pair.name, d.decoding.name()),
            &[
                plot::Series { label: "honest", values: &honest_values, color: RGBColor(40, 90, 200) },
                plot::Series { label: d.pair.name, values: &values, color },
            ],
            &[
                plot::Marker { label: "chain threshold", value: chain_threshold, color: RGBColor(0, 0, 0) },
                plot::Marker { label: "recommended", value: recommended_threshold, color: RGBColor(150, 60, 170) },
            ],
        )?;
        files.insert(format!("{}/{}", d.decoding.name(), d.pair.name), format!("results/{name}"));
    }
    Ok(files)
}
