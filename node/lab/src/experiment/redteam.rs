//! The red team (DESIGN §7b, §9): a miner who reads the code, on the real
//! model. Each attack instance is built from the matrix's cached generations
//! (the honest artifact and the cheap models' for the same request), run
//! through the replay check and then the node's full check, and recorded
//! with the rule that rejected it, or as accepted. "Changed" means the
//! artifact's tokens are not the ones the run seed gives on the pinned
//! model: the goal is that every changed seeded artifact is rejected.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use anyhow::Context;
use poi_artifact::{Artifact, ArtifactBody, Candidate, FinishReason, Generation, History, Keypair};
use poi_chain_spec::{devnet_requester, ChainSpec};
use poi_model::generate::{prefill_proof, teacher_forced_top_k};
use poi_verifier::attacks::{seeded_pick, steer_generation, steer_list, Positions};
use poi_verifier::full_check::compare;
use poi_verifier::replay::{ReplayChecker, ReplayError};
use poi_verifier::topk::logged_candidates;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::attack::{repaired_prefill, Repair};
use super::matrix::{Decoding, NATIVE, RUNS};
use super::run::{append_to, read_lines, Engine, Prompt};

/// Best-of-N for the uuid-grinding miner.
pub const GRIND_TRIES: u64 = 1024;
const CHEAP: [&str; 2] = ["requant-q4_0-cpu", "requant-q2k-cpu"];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttackRecord {
    pub attack: String,
    pub id: String,
    pub seeding: String,
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
    pub tried: usize,
    pub changed: usize,
    pub rejected: usize,
    pub changed_accepted: usize,
    pub by_rule: BTreeMap<String, usize>,
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
                    tried: 0,
                    changed: 0,
                    rejected: 0,
                    changed_accepted: 0,
                    by_rule: BTreeMap::new(),
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

struct Judge<'a> {
    engine: &'a Engine,
    spec: ChainSpec,
    checker: ReplayChecker,
    miner: &'a Keypair,
}

impl Judge<'_> {
    /// The replay check, then the node's full check on what it admits.
    fn judge(&mut self, artifact: &Artifact) -> anyhow::Result<Option<String>> {
        if let Err(error) = self.checker.check(artifact) {
            return Ok(Some(replay_rule(&error)));
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
        Ok(report.mismatch.map(|m| format!("full check: {}", rule_name(&m.difference))))
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
) -> anyhow::Result<Vec<AttackRecord>> {
    let path = engine.records_dir().join("redteam.jsonl");
    let mut records: Vec<AttackRecord> = read_lines(&path)?;
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
        changed,
        rejected_by,
        note: None,
    }
}

/// Every attack built from this prompt's cached generations.
fn attacks_on(c: &mut Judge<'_>, prompt: &Prompt, out: &mut Vec<AttackRecord>) -> anyhow::Result<()> {
    let mut add = |entry: AttackRecord| out.push(entry);
    let honest = c.cached(NATIVE, prompt)?;
    let honest_tokens = honest.body.generation.chosen_tokens();
    let run_seed = honest.body.request.run_seed().context("the matrix's artifacts are seeded")?;
    let (params, vocab) = (c.spec.sampling, c.spec.model.vocab_size);
    let pinned = &c.engine.pinned()?.model;
    let prompt_tokens = honest.body.request.prompt_tokens.clone();

    for cheap_profile in CHEAP {
        let cheap = c.cached(cheap_profile, prompt)?;
        let wanted = cheap.body.generation.chosen_tokens();
        let tops = teacher_forced_top_k(pinned, &prompt_tokens, &wanted, &params, c.spec.logged_k)?;
        let short = cheap_profile.trim_start_matches("requant-").trim_end_matches("-cpu");

        // Candidate-list editing: every list steered so that the seed picks
        // the cheap model's token.
        let attack = format!("steer lists to {short}'s tokens");
        let variant = format!("steer/{cheap_profile}");
        match steer_generation(&tops, &prompt_tokens, &wanted, &params, &run_seed, vocab) {
            Some((positions, _)) => {
                let mut body = cheap.body.clone();
                body.generation = Generation::new(c.spec.logged_k, &positions)?;
                let artifact = c.bound(body);
                let verdict = c.judge(&artifact)?;
                add(record(prompt, &attack, &variant, "requester-bound", wanted != honest_tokens, verdict));
            }
            None => add(AttackRecord {
                note: Some("ran out of filler tokens".into()),
                ..record(prompt, &attack, &variant, "requester-bound", true, Some("unsteerable".into()))
            }),
        }

        // Outputs of 1 to 8 tokens: the cheap model's first n tokens with
        // the pinned model's lists as proof.
        for n in 1..=8.min(wanted.len()) {
            let proof = prefill_proof(&tops[..n], &prompt_tokens, &wanted[..n], FinishReason::MaxTokens, &params);
            let mut body = cheap.body.clone();
            body.request.max_tokens = n as u32;
            body.generation = Generation::new(c.spec.logged_k, &proof.positions)?;
            body.finish_reason = finish_for(&wanted[..n], c.spec.model.eos_token_id);
            let artifact = c.bound(body);
            let honest_prefix = &honest_tokens[..n.min(honest_tokens.len())];
            let verdict = c.judge(&artifact)?;
            let attack = format!("{short} pre-fill, N = 1..8");
            add(record(
                prompt,
                &attack,
                &format!("short/{cheap_profile}/{n}"),
                "requester-bound",
                wanted[..n] != *honest_prefix,
                verdict,
            ));
        }

        // uuid grinding: the miner binds its own requests (a key the chain
        // does not know: miner-seeded) and keeps the uuid whose seed agrees
        // best with the cheap tokens.
        let lists = honest_lists(&tops, &prompt_tokens, &wanted, &params);
        let mut best = (0usize, honest.body.request.request_uuid);
        for attempt in 0..GRIND_TRIES {
            let digest: [u8; 32] = Sha256::digest(format!("poi/experiment/grind/{}/{attempt}", prompt.id)).into();
            let uuid: [u8; 16] = digest[..16].try_into().expect("16 bytes");
            let mut request = cheap.body.request.clone();
            request.request_uuid = uuid;
            let seed = request.run_seed().expect("seeded");
            let agree = agreeing_positions(&lists, &prompt_tokens, &wanted, &params, &seed);
            if agree > best.0 {
                best = (agree, uuid);
            }
        }
        let proof = prefill_proof(&tops, &prompt_tokens, &wanted, cheap.body.finish_reason, &params);
        let mut body = cheap.body.clone();
        body.request.request_uuid = best.1;
        body.request.bind(&c.spec.chain_id(), c.miner);
        body.generation = Generation::new(c.spec.logged_k, &proof.positions)?;
        let artifact = body.sign(c.miner);
        let verdict = c.judge(&artifact)?;
        add(AttackRecord {
            note: Some(format!("best of {GRIND_TRIES}: the seed picks {} of {} tokens", best.0, wanted.len())),
            ..record(
                prompt,
                &format!("uuid grinding, {short} (self-signed binding)"),
                &format!("grind/{cheap_profile}"),
                "miner-seeded",
                best.0 < wanted.len(),
                verdict,
            )
        });
    }

    // Forced early EOS on the honest artifact, at its middle position.
    if honest_tokens.len() >= 4 {
        let m = honest_tokens.len() / 2;
        let eos = c.spec.model.eos_token_id;
        let positions = honest.body.generation.to_positions();
        let history = History::with_generated(&prompt_tokens, &honest_tokens[..m]);
        let mut variants: Vec<(&str, Positions, FinishReason, u32)> = Vec::new();
        // eos chosen where the seed picked another token.
        let mut list = positions[m].0.clone();
        let index = match list.iter().position(|t| t.token == eos) {
            Some(i) => i,
            None => {
                let last = list.len() - 1;
                list[last].token = eos;
                last
            }
        };
        variants.push((
            "eos logged as chosen",
            [&positions[..m], &[(list, index as u8)]].concat(),
            FinishReason::Eos,
            honest.body.request.max_tokens,
        ));
        // The list edited so that the seed picks eos.
        let mut fillers =
            (0..c.spec.model.vocab_size).rev().filter(|t| !honest_tokens.contains(t) && !prompt_tokens.contains(t));
        if let Some(steered) = steer_list(&positions[m].0, &history, &params, &run_seed, m as u32, eos, &mut fillers) {
            variants.push((
                "list steered to eos",
                [&positions[..m], &[steered]].concat(),
                FinishReason::Eos,
                honest.body.request.max_tokens,
            ));
        }
        // Cut short, claiming the budget ran out.
        variants.push((
            "cut short, no eos",
            positions[..m].to_vec(),
            FinishReason::MaxTokens,
            honest.body.request.max_tokens,
        ));
        // Cut short with the budget lowered to match (the binding covers it).
        variants.push(("cut short, max_tokens lowered", positions[..m].to_vec(), FinishReason::MaxTokens, m as u32));
        for (name, positions, finish_reason, max_tokens) in variants {
            let mut body = honest.body.clone();
            body.request.bind(&c.spec.chain_id(), &devnet_requester());
            body.request.max_tokens = max_tokens;
            body.generation = Generation::new(c.spec.logged_k, &positions)?;
            body.finish_reason = finish_reason;
            let artifact = body.sign(c.miner);
            let verdict = c.judge(&artifact)?;
            add(record(
                prompt,
                &format!("forced early stop: {name}"),
                &format!("eos/{name}"),
                "requester-bound",
                true,
                verdict,
            ));
        }
    }
    Ok(())
}

fn finish_for(tokens: &[u32], eos: u32) -> FinishReason {
    if tokens.last() == Some(&eos) {
        FinishReason::Eos
    } else {
        FinishReason::MaxTokens
    }
}

/// The lists an honest miner logs over `tokens`.
fn honest_lists(
    tops: &[Vec<poi_verifier::topk::TopCandidate>],
    prompt: &[u32],
    tokens: &[u32],
    params: &poi_artifact::SamplingParams,
) -> Vec<Vec<Candidate>> {
    let mut history = History::new(prompt);
    tops.iter()
        .zip(tokens)
        .map(|(top, &token)| {
            let list = logged_candidates(top, &history, params);
            history.push(token);
            list
        })
        .collect()
}

/// Positions where the seed picks the wanted token from the honest list.
fn agreeing_positions(
    lists: &[Vec<Candidate>],
    prompt: &[u32],
    wanted: &[u32],
    params: &poi_artifact::SamplingParams,
    seed: &[u8; 32],
) -> usize {
    let mut history = History::new(prompt);
    let mut agree = 0;
    for (position, (list, &token)) in lists.iter().zip(wanted).enumerate() {
        let picked = seeded_pick(list, &history, params, seed, position as u32);
        agree += usize::from(picked.is_some_and(|i| list[i].token == token));
        history.push(token);
    }
    agree
}

/// The adaptive laundering attacker, seeded: cheap drafts repaired to the
/// seeded pick until the seed picks every token.
fn seeded_laundering(c: &mut Judge<'_>, prompt: &Prompt) -> anyhow::Result<AttackRecord> {
    let honest = c.cached(NATIVE, prompt)?;
    let cheap = c.cached(CHEAP[0], prompt)?;
    let run_seed = honest.body.request.run_seed().context("seeded")?;
    let digest: [u8; 32] = Sha256::digest(format!("poi/experiment/launder/{}", prompt.id)).into();
    let mut drafts = rand::rngs::StdRng::from_seed(digest);
    let pinned = &c.engine.pinned()?.model;
    let cheap_model = &c.engine.runtime(CHEAP[0])?.model;
    let tokens = cheap.body.generation.chosen_tokens();
    let repaired = repaired_prefill(
        pinned,
        cheap_model,
        &cheap.body.request.prompt_tokens,
        (&tokens, cheap.body.finish_reason),
        cheap.body.request.max_tokens as usize,
        &c.spec,
        Repair::ToSeededPick { run_seed, drafts: &mut drafts },
    )?;
    let mut body = cheap.body.clone();
    body.generation = Generation::new(c.spec.logged_k, &repaired.proof.positions)?;
    body.finish_reason = repaired.proof.finish_reason;
    let artifact = c.bound(body);
    let changed = artifact.body.generation.chosen_tokens() != honest.body.generation.chosen_tokens();
    let verdict = c.judge(&artifact)?;
    Ok(AttackRecord {
        note: Some(format!("{} tokens repaired", repaired.replaced)),
        ..record(
            prompt,
            "adaptive laundering, seeded (q4_0 drafts)",
            "launder-seeded",
            "requester-bound",
            changed,
            verdict,
        )
    })
}

/// Artifacts built so that the full check cannot run: each must be refused
/// by the replay check first, with the rule named.
fn malformed(c: &mut Judge<'_>, done: &HashSet<String>, out: &mut std::fs::File) -> anyhow::Result<Vec<AttackRecord>> {
    use poi_verifier::simulate::{body_with, Chooser};
    let (limits, vocab) = (c.spec.limits.clone(), c.spec.model.vocab_size);
    let base = body_with(&c.spec, 4, 1, Chooser::HonestUnseeded);
    type Edit = Box<dyn Fn(&mut ArtifactBody)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("empty prompt", Box::new(|b: &mut ArtifactBody| b.request.prompt_tokens.clear())),
        (
            "prompt over the limit",
            Box::new(move |b: &mut ArtifactBody| {
                b.request.prompt_tokens = vec![100; limits.max_prompt_tokens as usize + 1]
            }),
        ),
        (
            "prompt token outside the vocabulary",
            Box::new(move |b: &mut ArtifactBody| b.request.prompt_tokens[0] = vocab),
        ),
        (
            "stop token outside the vocabulary",
            Box::new(|b: &mut ArtifactBody| b.request.stop_token_ids = vec![u32::MAX]),
        ),
        ("generation beyond max_tokens", Box::new(|b: &mut ArtifactBody| b.request.max_tokens = 2)),
    ];
    let mut records = Vec::new();
    for (name, change) in cases {
        let id = format!("malformed/{name}");
        if done.contains(&id) {
            continue;
        }
        let mut body = base.clone();
        change(&mut body);
        let artifact = body.sign(&poi_verifier::simulate::miner());
        let verdict = c.judge(&artifact)?;
        let entry = AttackRecord {
            attack: format!("full check made impossible: {name}"),
            id,
            seeding: "unseeded".into(),
            changed: true,
            rejected_by: verdict,
            note: None,
        };
        writeln!(out, "{}", serde_json::to_string(&entry)?)?;
        records.push(entry);
    }
    Ok(records)
}

/// The laundering miner's artifacts as red-team records: each is judged on
/// its own here; the per-miner test is what flags the miner.
pub fn laundered_record(r: &super::population::LaunderedRecord) -> AttackRecord {
    AttackRecord {
        attack: "adaptive laundering, unseeded (q4_0 drafts)".into(),
        id: format!("launder-unseeded/{}", r.id),
        seeding: "unseeded".into(),
        changed: true,
        rejected_by: r.rejected_by.clone(),
        note: Some(format!("{} tokens repaired", r.replaced)),
    }
}
