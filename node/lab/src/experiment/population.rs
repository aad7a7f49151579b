//! The honest population: honest artifacts over every committed prompt, each
//! request with its own seed, all fully checked. Its rejections measure the
//! honest false-positive rate (DESIGN §9 asks for ≥ 3000 checks, so that
//! 0.1 % is shown rather than observed), and its evidence, with the seeds
//! removed, is the honest miners' side of the per-miner sequential test.

use anyhow::Context;
use poi_artifact::Request;
use poi_chain_spec::ChainSpec;
use poi_model::chat::Message;
use poi_model::generate::{generate, teacher_forced_top_k, Draws, StopRules};
use poi_verifier::full_check::compare;
use poi_verifier::replay::ReplayChecker;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use rand::{RngCore, SeedableRng};

use super::attack::{repaired_prefill, Repair};
use super::run::{append_to, read_lines, unseeded_evidence, Engine, Prompt};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HonestRecord {
    /// `<prompt id>/<request number>`.
    pub id: String,
    pub kind: String,
    pub tokens: usize,
    /// The node's full check (exact under the bit-exact profile).
    pub full_check_accepted: bool,
    /// Why it was rejected, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub distance2: f64,
    pub match_ratio: f64,
    /// The replay check, seeded (the surprisal z included).
    pub replay_accepted: bool,
    /// As `run::PairRecord::evidence`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<f64>,
}

/// The population's `count` honest artifacts of at most `max_tokens`
/// tokens: request `j` asks prompt `j mod prompts.len()` again with a new
/// seed. Resumes from the records already written.
pub fn honest_population(
    engine: &Engine,
    spec: &ChainSpec,
    prompts: &[Prompt],
    count: usize,
    max_tokens: usize,
) -> anyhow::Result<Vec<HonestRecord>> {
    let path = engine.records_dir().join("population").join(format!("honest-{max_tokens}.jsonl"));
    let label = format!("honest population ({max_tokens} tokens)");
    let mut checker = ReplayChecker::new(spec.clone());
    resumed(
        engine,
        &path,
        label,
        round_robin(prompts, count),
        |r: &HonestRecord| &r.id,
        |id, prompt| check_one(engine, spec, &mut checker, id, prompt, max_tokens),
    )
}

/// `count` requests over `prompts` in turn, each with its id
/// `<prompt id>/<round>`.
fn round_robin(prompts: &[Prompt], count: usize) -> Vec<(String, &Prompt)> {
    (0..count)
        .map(|j| {
            let prompt = &prompts[j % prompts.len()];
            (format!("{}/{}", prompt.id, j / prompts.len()), prompt)
        })
        .collect()
}

/// The records of `wanted` from the JSON-lines file at `path`, computing
/// (with `make`) and appending the missing ones unless the engine only
/// reports.
fn resumed<T: Serialize + DeserializeOwned>(
    engine: &Engine,
    path: &Path,
    label: String,
    wanted: Vec<(String, &Prompt)>,
    id_of: impl Fn(&T) -> &String,
    mut make: impl FnMut(&str, &Prompt) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    let mut records: Vec<T> = read_lines(path)?;
    let done: HashSet<String> = records.iter().map(|r| id_of(r).clone()).collect();
    let todo: Vec<&(String, &Prompt)> = wanted.iter().filter(|(id, _)| !done.contains(id)).collect();
    if !todo.is_empty() && engine.computes() {
        let mut out = append_to(path)?;
        let bar = engine.progress_bar(todo.len(), label.clone());
        for (id, prompt) in todo {
            let record = make(id, prompt).with_context(|| format!("{label}: {id}"))?;
            writeln!(out, "{}", serde_json::to_string(&record)?)?;
            out.flush()?;
            records.push(record);
            bar.inc(1);
        }
        bar.finish();
    }
    let wanted: HashSet<&String> = wanted.iter().map(|(id, _)| id).collect();
    records.retain(|r| wanted.contains(id_of(r)));
    Ok(records)
}

fn check_one(
    engine: &Engine,
    spec: &ChainSpec,
    checker: &mut ReplayChecker,
    id: &str,
    prompt: &Prompt,
    max_tokens: usize,
) -> anyhow::Result<HonestRecord> {
    let pinned = engine.pinned()?;
    let prompt_tokens = pinned.chat_tokens(&[Message { role: "user".into(), content: prompt.prompt.clone() }])?;
    let digest: [u8; 32] = Sha256::digest(format!("poi/experiment/population/{id}")).into();
    let user_seed = u64::from_le_bytes(digest[16..24].try_into().expect("8 bytes"));
    let request =
        Request::new(digest[..16].try_into().expect("16 bytes"), Some(user_seed), prompt_tokens, max_tokens as u32);
    let seed = request.run_seed().expect("seeded");
    let generated = generate(
        &pinned.model,
        &request.prompt_tokens,
        &spec.sampling,
        spec.logged_k,
        &StopRules::of(&request),
        Draws::Seeded(seed),
        |_| {},
    )?;
    let artifact = generated.body(spec, engine.miner().public(), request, 0)?.sign(engine.miner());
    let body = &artifact.body;
    let tokens = body.generation.chosen_tokens();
    let tops =
        teacher_forced_top_k(&pinned.model, &body.request.prompt_tokens, &tokens, &spec.sampling, spec.logged_k)?;
    let report = compare(&spec.numerics, &artifact, &tops, &spec.thresholds);
    let replay_accepted = checker.check(&artifact).is_ok();
    Ok(HonestRecord {
        id: id.to_string(),
        kind: prompt.kind.clone(),
        tokens: tokens.len(),
        full_check_accepted: report.accepted,
        reason: report.reason.clone(),
        distance2: report.distance2,
        match_ratio: report.match_ratio,
        replay_accepted,
        evidence: unseeded_evidence(spec, &artifact, engine.miner()),
    })
}

/// The honest false-positive figures of the population.
#[derive(Clone, Debug, Serialize)]
pub struct HonestSummary {
    /// The configured population, and the checks done so far.
    pub target: usize,
    pub checks: usize,
    pub positions: usize,
    pub tokens: usize,
    pub full_check_rejected: usize,
    pub replay_rejected: usize,
    /// Rejected by either: what an honest miner would suffer.
    pub rejected: usize,
    pub observed_rate: Option<f64>,
    /// The one-sided 95 % upper bound (Clopper–Pearson).
    pub upper_bound: Option<f64>,
    /// The first few reasons, for a reader to look into.
    pub reasons: Vec<String>,
}

impl HonestSummary {
    pub fn new(records: &[HonestRecord], target: usize, tokens: usize) -> Self {
        let rejected = records.iter().filter(|r| !(r.full_check_accepted && r.replay_accepted)).count();
        Self {
            target,
            checks: records.len(),
            positions: records.iter().map(|r| r.tokens).sum(),
            tokens,
            full_check_rejected: records.iter().filter(|r| !r.full_check_accepted).count(),
            replay_rejected: records.iter().filter(|r| !r.replay_accepted).count(),
            rejected,
            observed_rate: (!records.is_empty()).then(|| rejected as f64 / records.len() as f64),
            upper_bound: crate::stats::upper_bound_95(rejected, records.len()),
            reasons: records.iter().filter_map(|r| r.reason.clone()).take(5).collect(),
        }
    }
}

/// One artifact of the laundering miner: the adaptive unseeded attacker of
/// `attack.rs`, with drafts from a cheap model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LaunderedRecord {
    pub id: String,
    pub kind: String,
    pub tokens: usize,
    pub replaced: usize,
    /// The rule that rejected it on its own (so no node stores it), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<String>,
    /// As `run::PairRecord::evidence`; empty when rejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<f64>,
}

/// The laundering miner's `count` unseeded artifacts of at most
/// `max_tokens` tokens, drafted by `cheap` over the prompts round-robin.
pub fn laundering_population(
    engine: &Engine,
    spec: &ChainSpec,
    prompts: &[Prompt],
    count: usize,
    max_tokens: usize,
    cheap: &str,
) -> anyhow::Result<Vec<LaunderedRecord>> {
    let path = engine.records_dir().join("population").join(format!("laundered-{cheap}-{max_tokens}.jsonl"));
    let label = format!("laundering miner ({cheap})");
    let mut checker = ReplayChecker::new(spec.clone());
    resumed(
        engine,
        &path,
        label,
        round_robin(prompts, count),
        |r: &LaunderedRecord| &r.id,
        |id, prompt| launder_one(engine, spec, &mut checker, id, prompt, max_tokens, cheap),
    )
}

fn launder_one(
    engine: &Engine,
    spec: &ChainSpec,
    checker: &mut ReplayChecker,
    id: &str,
    prompt: &Prompt,
    max_tokens: usize,
    cheap: &str,
) -> anyhow::Result<LaunderedRecord> {
    let pinned = engine.pinned()?;
    let cheap_model = &engine.runtime(cheap)?.model;
    let prompt_tokens = pinned.chat_tokens(&[Message { role: "user".into(), content: prompt.prompt.clone() }])?;
    let digest: [u8; 32] = Sha256::digest(format!("poi/experiment/laundering/{cheap}/{id}")).into();
    let mut rng = rand::rngs::StdRng::from_seed(digest);
    let request = Request::new(digest[..16].try_into().expect("16 bytes"), None, prompt_tokens, max_tokens as u32);
    let mut draw = || rng.next_u64();
    let stop = StopRules::of(&request);
    let draft = generate(
        cheap_model,
        &request.prompt_tokens,
        &spec.sampling,
        spec.logged_k,
        &stop,
        Draws::External(&mut draw),
        |_| {},
    )?;
    let repaired = repaired_prefill(
        &pinned.model,
        cheap_model,
        &request.prompt_tokens,
        (&draft.tokens, draft.finish_reason),
        max_tokens,
        spec,
        Repair::IntoKeptSet(&mut rng),
    )?;
    let tokens = repaired.proof.tokens.len();
    let replaced = repaired.replaced;
    let artifact = repaired.proof.body(spec, engine.miner().public(), request, 0)?.sign(engine.miner());
    let rejected_by = checker.check(&artifact).err().map(|e| super::redteam::replay_rule(&e));
    let evidence = match rejected_by {
        None => unseeded_evidence(spec, &artifact, engine.miner()),
        Some(_) => Vec::new(),
    };
    Ok(LaunderedRecord { id: id.to_string(), kind: prompt.kind.clone(), tokens, replaced, rejected_by, evidence })
}
