//! The red team (DESIGN §7b, §9): a miner who reads the code, on the real
//! model. Each attack instance is built from the matrix's cached generations
//! (the honest artifact and the cheap models' for the same request), run
//! through the replay check and then the node's full check, and recorded
//! with the rule that rejected it, or as accepted. "Changed" means the
//! artifact's tokens are not the ones the run seed gives on the pinned
//! model: the goal is that every changed seeded artifact is rejected.

mod attacks;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use anyhow::Context;
use poi_artifact::{Artifact, ArtifactBody, Keypair};
use poi_chain_spec::{devnet_requester, ChainSpec};
use poi_model::generate::teacher_forced_top_k;
use poi_verifier::full_check::compare;
use poi_verifier::replay::{ReplayChecker, ReplayError};
use serde::{Deserialize, Serialize};

use super::llama_cpp::LlamaCpp;
use super::matrix::{short_name, Decoding, RUNS};
use super::run::{append_to, read_lines, Engine, Prompt};
use attacks::{attacks_on, llama_cpp_miner, malformed, seeded_laundering};

/// Best-of-N for the uuid-grinding miner.
pub const GRIND_TRIES: u64 = 1024;
const CHEAP: [&str; 2] = ["requant-q4_0-cpu", "requant-q2k-cpu"];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttackRecord {
    pub attack: String,
    pub id: String,
    pub seeding: String,
    /// An honest miner (another engine), shown for operators: not an attack.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub honest: bool,
    /// The tokens differ from the run seed's on the pinned model.
    pub changed: bool,
    /// The rule that rejected it (`replay: …`, `full check: …`), or `None`.
    pub rejected_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AttackRow {
    pub attack: String,
    pub seeding: String,
    pub honest: bool,
    pub tried: usize,
    pub changed: usize,
    pub rejected: usize,
    pub changed_accepted: usize,
    pub by_rule: BTreeMap<String, usize>,
    /// The first instance's note (how far grinding got, an engine's
    /// `distance2`), as an example.
    pub example: Option<String>,
}

pub fn rows(records: &[AttackRecord]) -> Vec<AttackRow> {
    let mut rows: Vec<AttackRow> = Vec::new();
    for r in records {
        let row = match rows.iter_mut().position(|row| row.attack == r.attack) {
            Some(i) => &mut rows[i],
            None => {
                rows.push(AttackRow {
                    attack: r.attack.clone(),
                    seeding: r.seeding.clone(),
                    honest: r.honest,
                    tried: 0,
                    changed: 0,
                    rejected: 0,
                    changed_accepted: 0,
                    by_rule: BTreeMap::new(),
                    example: r.note.clone(),
                });
                rows.last_mut().expect("just pushed")
            }
        };
        row.tried += 1;
        row.changed += usize::from(r.changed);
        match &r.rejected_by {
            Some(rule) => {
                row.rejected += 1;
                *row.by_rule.entry(rule.clone()).or_default() += 1;
            }
            None => {
                row.changed_accepted += usize::from(r.changed);
                *row.by_rule.entry("accepted".into()).or_default() += 1;
            }
        }
    }
    rows
}

/// The variant name of an error, which names the rule.
fn rule_name(value: &impl std::fmt::Debug) -> String {
    let text = format!("{value:?}");
    text.split([' ', '{', '(']).next().unwrap_or_default().to_string()
}

pub fn replay_rule(error: &ReplayError) -> String {
    match error {
        ReplayError::Structure { rule, .. } => format!("replay: structure {}", rule_name(rule)),
        other => format!("replay: {}", rule_name(other)),
    }
}

/// The full check's `distance2` and match ratio, when it ran.
type Figures = Option<(f64, f64)>;

struct Judge<'a> {
    engine: &'a Engine,
    spec: ChainSpec,
    checker: ReplayChecker,
    miner: &'a Keypair,
}

impl Judge<'_> {
    /// The replay check, then the node's full check on what it admits.
    fn judge(&mut self, artifact: &Artifact) -> anyhow::Result<Option<String>> {
        Ok(self.judge_with_figures(artifact)?.0)
    }

    /// `judge`, with the full check's `distance2` and match ratio when it ran.
    fn judge_with_figures(&mut self, artifact: &Artifact) -> anyhow::Result<(Option<String>, Figures)> {
        if let Err(error) = self.checker.check(artifact) {
            return Ok((Some(replay_rule(&error)), None));
        }
        let body = &artifact.body;
        let pinned = &self.engine.pinned()?.model;
        let tokens = body.generation.chosen_tokens();
        let tops = teacher_forced_top_k(
            pinned,
            &body.request.prompt_tokens,
            &tokens,
            &self.spec.sampling,
            self.spec.logged_k,
        )?;
        let report = compare(&self.spec.numerics, artifact, &tops, &self.spec.thresholds);
        let rule = report.mismatch.map(|m| format!("full check: {}", rule_name(&m.difference)));
        Ok((rule, Some((report.distance2, report.match_ratio))))
    }

    /// `body` with its request bound by the chain's requester, signed.
    fn bound(&self, mut body: ArtifactBody) -> Artifact {
        body.request.bind(&self.spec.chain_id(), &devnet_requester());
        body.sign(self.miner)
    }

    fn cached(&self, miner: &str, prompt: &Prompt) -> anyhow::Result<Artifact> {
        let run = RUNS
            .iter()
            .find(|r| r.miner == miner && r.seeded && r.validator_threads.is_none())
            .with_context(|| format!("no seeded run of {miner}"))?;
        self.engine.generation(&self.spec, Decoding::Sampled, run, prompt)
    }
}

/// Runs (or resumes) every attack over `prompts`; the seeded laundering
/// attacker, which re-drafts after every repair (a minute or more per
/// artifact on two cores), over the first `laundering_prompts` of them only,
/// one of each kind.
pub fn run(
    engine: &Engine,
    base: &ChainSpec,
    prompts: &[Prompt],
    laundering_prompts: usize,
    mut llama_cpp: Option<LlamaCpp>,
) -> anyhow::Result<Vec<AttackRecord>> {
    let path = engine.records_dir().join("redteam.jsonl");
    let mut records: Vec<AttackRecord> = read_lines(&path)?;
    if !engine.computes() {
        return Ok(records);
    }
    let done: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
    let spec = Decoding::Sampled.spec(base);
    let mut judge = Judge { engine, checker: ReplayChecker::new(spec.clone()), spec, miner: engine.miner() };
    let mut out = append_to(&path)?;
    let bar = engine.progress_bar(prompts.len(), "red team".into());
    let mut kinds = HashSet::new();
    for prompt in prompts {
        let first_of_kind = kinds.len() < laundering_prompts && kinds.insert(prompt.kind.clone());
        let fresh = |variant: &str| !done.contains(&format!("{}/{variant}", prompt.id));
        // Records are written per prompt, so the first one marks the rest.
        let mut new = Vec::new();
        if fresh(&format!("steer/{}", CHEAP[0])) {
            attacks_on(&mut judge, prompt, &mut new)?;
        }
        if first_of_kind && fresh("launder-seeded") {
            new.push(seeded_laundering(&mut judge, prompt)?);
        }
        if let Some(llama_cpp) = llama_cpp.as_mut().filter(|_| fresh("llama-cpp")) {
            new.push(llama_cpp_miner(&mut judge, prompt, llama_cpp)?);
        }
        for entry in new {
            writeln!(out, "{}", serde_json::to_string(&entry)?)?;
            records.push(entry);
        }
        out.flush()?;
        bar.inc(1);
    }
    bar.finish();
    records.extend(malformed(&mut judge, &done, &mut out)?);
    Ok(records)
}

fn record(
    prompt: &Prompt,
    attack: &str,
    variant: &str,
    seeding: &str,
    changed: bool,
    rejected_by: Option<String>,
) -> AttackRecord {
    AttackRecord {
        attack: attack.into(),
        id: format!("{}/{variant}", prompt.id),
        seeding: seeding.into(),
        honest: false,
        changed,
        rejected_by,
        note: None,
    }
}

/// The laundering miner's artifacts as red-team records: each is judged on
/// its own here; the per-miner test is what flags the miner.
pub fn laundered_record(drafts: &str, r: &super::population::LaunderedRecord) -> AttackRecord {
    AttackRecord {
        attack: format!("adaptive laundering, unseeded ({} drafts)", short_name(drafts)),
        id: format!("launder-unseeded/{drafts}/{}", r.id),
        seeding: "unseeded".into(),
        honest: false,
        changed: true,
        rejected_by: r.rejected_by.clone(),
        note: Some(format!("{} tokens repaired", r.replaced)),
    }
}
