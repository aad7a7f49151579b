//! The red team's attacks, each built on the real model from the matrix's
//! cached generations and judged as a node would.

use std::collections::HashSet;
use std::io::Write;

use anyhow::Context;
use poi_artifact::{Artifact, ArtifactBody, Candidate, FinishReason, Generation, History};
use poi_chain_spec::devnet_requester;
use poi_model::generate::{generate_from, prefill_proof, teacher_forced_top_k, Draws, StopRules};
use poi_verifier::attacks::{seeded_pick, steer_generation, steer_list, Positions};
use poi_verifier::topk::{logged_candidates, TopCandidate};
use rand::SeedableRng;
use sha2::{Digest, Sha256};

use super::{record, AttackRecord, Judge, CHEAP, GRIND_TRIES};
use crate::experiment::attack::{repaired_prefill, Repair};
use crate::experiment::llama_cpp::LlamaCpp;
use crate::experiment::matrix::{short_name, NATIVE};
use crate::experiment::run::Prompt;

/// What every attack on one prompt starts from: the matrix's honest
/// artifact for the prompt's request.
struct Base {
    honest: Artifact,
    tokens: Vec<u32>,
    prompt_tokens: Vec<u32>,
    run_seed: [u8; 32],
}

/// Every attack built from this prompt's cached generations.
pub(super) fn attacks_on(c: &mut Judge<'_>, prompt: &Prompt, out: &mut Vec<AttackRecord>) -> anyhow::Result<()> {
    let honest = c.cached(NATIVE, prompt)?;
    let base = Base {
        tokens: honest.body.generation.chosen_tokens(),
        prompt_tokens: honest.body.request.prompt_tokens.clone(),
        run_seed: honest.body.request.run_seed().context("the matrix's artifacts are seeded")?,
        honest,
    };
    let pinned = &c.engine.pinned()?.model;
    for cheap_profile in CHEAP {
        let cheap = c.cached(cheap_profile, prompt)?;
        let wanted = cheap.body.generation.chosen_tokens();
        let tops = teacher_forced_top_k(pinned, &base.prompt_tokens, &wanted, &c.spec.sampling, c.spec.logged_k)?;
        let cheap = Cheap { profile: cheap_profile, artifact: &cheap, tokens: &wanted, tops: &tops };
        out.push(steer(c, prompt, &base, &cheap)?);
        out.extend(short_outputs(c, prompt, &base, &cheap)?);
        out.push(grind(c, prompt, &base, &cheap)?);
    }
    out.extend(early_stops(c, prompt, &base)?);
    Ok(())
}

/// A cheap model's artifact for the same request, and the pinned model's
/// top-k over its tokens.
struct Cheap<'a> {
    profile: &'a str,
    artifact: &'a Artifact,
    tokens: &'a [u32],
    tops: &'a [Vec<TopCandidate>],
}

/// Candidate-list editing: every list steered so that the seed picks the
/// cheap model's token.
fn steer(c: &mut Judge<'_>, prompt: &Prompt, base: &Base, cheap: &Cheap<'_>) -> anyhow::Result<AttackRecord> {
    let attack = format!("steer lists to {}'s tokens", short_name(cheap.profile));
    let variant = format!("steer/{}", cheap.profile);
    let (params, vocab) = (c.spec.sampling, c.spec.model.vocab_size);
    let Some((positions, _)) =
        steer_generation(cheap.tops, &base.prompt_tokens, cheap.tokens, &params, &base.run_seed, vocab)
    else {
        return Ok(AttackRecord {
            note: Some("ran out of filler tokens".into()),
            ..record(prompt, &attack, &variant, "requester-bound", true, Some("unsteerable".into()))
        });
    };
    let mut body = cheap.artifact.body.clone();
    body.generation = Generation::new(c.spec.logged_k, &positions)?;
    let artifact = c.bound(body);
    let verdict = c.judge(&artifact)?;
    Ok(record(prompt, &attack, &variant, "requester-bound", cheap.tokens != base.tokens, verdict))
}

/// Outputs of 1 to 8 tokens: the cheap model's first n tokens with the
/// pinned model's lists as proof, under a request for n tokens.
fn short_outputs(
    c: &mut Judge<'_>,
    prompt: &Prompt,
    base: &Base,
    cheap: &Cheap<'_>,
) -> anyhow::Result<Vec<AttackRecord>> {
    let mut out = Vec::new();
    for n in 1..=8.min(cheap.tokens.len()) {
        let tokens = &cheap.tokens[..n];
        let proof =
            prefill_proof(&cheap.tops[..n], &base.prompt_tokens, tokens, FinishReason::MaxTokens, &c.spec.sampling);
        let mut body = cheap.artifact.body.clone();
        body.request.max_tokens = n as u32;
        body.generation = Generation::new(c.spec.logged_k, &proof.positions)?;
        body.finish_reason =
            if tokens.last() == Some(&c.spec.model.eos_token_id) { FinishReason::Eos } else { FinishReason::MaxTokens };
        let artifact = c.bound(body);
        // What the honest miner gives for n tokens: its first n (fewer if
        // it stopped earlier).
        let changed = tokens != &base.tokens[..n.min(base.tokens.len())];
        let verdict = c.judge(&artifact)?;
        let attack = format!("{} pre-fill, N = 1..8", short_name(cheap.profile));
        out.push(record(prompt, &attack, &format!("short/{}/{n}", cheap.profile), "requester-bound", changed, verdict));
    }
    Ok(out)
}

/// uuid grinding: the miner binds its own requests (a key the chain does not
/// know: miner-seeded) and keeps the uuid, of `GRIND_TRIES`, whose seed
/// agrees best with the cheap tokens, then proves them with the pinned lists.
fn grind(c: &mut Judge<'_>, prompt: &Prompt, base: &Base, cheap: &Cheap<'_>) -> anyhow::Result<AttackRecord> {
    let params = c.spec.sampling;
    let lists = honest_lists(cheap.tops, &base.prompt_tokens, cheap.tokens, &params);
    let mut best = (0usize, base.honest.body.request.request_uuid);
    for attempt in 0..GRIND_TRIES {
        let digest: [u8; 32] = Sha256::digest(format!("poi/experiment/grind/{}/{attempt}", prompt.id)).into();
        let uuid: [u8; 16] = digest[..16].try_into().expect("16 bytes");
        let mut request = cheap.artifact.body.request.clone();
        request.request_uuid = uuid;
        let seed = request.run_seed().expect("seeded");
        let agree = agreeing_positions(&lists, &base.prompt_tokens, cheap.tokens, &params, &seed);
        if agree > best.0 {
            best = (agree, uuid);
        }
    }
    let proof =
        prefill_proof(cheap.tops, &base.prompt_tokens, cheap.tokens, cheap.artifact.body.finish_reason, &params);
    let mut body = cheap.artifact.body.clone();
    body.request.request_uuid = best.1;
    body.request.bind(&c.spec.chain_id(), c.miner);
    body.generation = Generation::new(c.spec.logged_k, &proof.positions)?;
    let artifact = body.sign(c.miner);
    let verdict = c.judge(&artifact)?;
    // Every token the seed's pick: then the artifact is the honest one for
    // the ground uuid.
    let changed = best.0 < cheap.tokens.len();
    let short = short_name(cheap.profile);
    Ok(AttackRecord {
        note: Some(format!("best of {GRIND_TRIES}: the seed picks {} of {} tokens", best.0, cheap.tokens.len())),
        ..record(
            prompt,
            &format!("uuid grinding, {short} (self-signed binding)"),
            &format!("grind/{}", cheap.profile),
            "miner-seeded",
            changed,
            verdict,
        )
    })
}

/// Forced early stops on the honest artifact, at its middle position.
fn early_stops(c: &mut Judge<'_>, prompt: &Prompt, base: &Base) -> anyhow::Result<Vec<AttackRecord>> {
    if base.tokens.len() < 4 {
        return Ok(Vec::new());
    }
    let (m, eos, params) = (base.tokens.len() / 2, c.spec.model.eos_token_id, c.spec.sampling);
    let max_tokens = base.honest.body.request.max_tokens;
    let positions = base.honest.body.generation.to_positions();
    let history = History::with_generated(&base.prompt_tokens, &base.tokens[..m]);
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
    let eos_chosen = [&positions[..m], &[(list, index as u8)]].concat();
    variants.push(("eos logged as chosen", eos_chosen, FinishReason::Eos, max_tokens));
    // The list edited so that the seed picks eos.
    let used = |t: &u32| base.tokens.contains(t) || base.prompt_tokens.contains(t);
    let mut fillers = (0..c.spec.model.vocab_size).rev().filter(|t| !used(t));
    if let Some(steered) = steer_list(&positions[m].0, &history, &params, &base.run_seed, m as u32, eos, &mut fillers) {
        let steered = [&positions[..m], &[steered]].concat();
        variants.push(("list steered to eos", steered, FinishReason::Eos, max_tokens));
    }
    // Cut short, claiming the budget ran out.
    variants.push(("cut short, no eos", positions[..m].to_vec(), FinishReason::MaxTokens, max_tokens));
    // Cut short with the budget lowered to match, after the requester
    // signed (the binding covers it).
    variants.push(("cut short, max_tokens lowered", positions[..m].to_vec(), FinishReason::MaxTokens, m as u32));
    let mut out = Vec::new();
    for (name, positions, finish_reason, max_tokens) in variants {
        let mut body = base.honest.body.clone();
        body.request.bind(&c.spec.chain_id(), &devnet_requester());
        body.request.max_tokens = max_tokens;
        body.generation = Generation::new(c.spec.logged_k, &positions)?;
        body.finish_reason = finish_reason;
        let artifact = body.sign(c.miner);
        let verdict = c.judge(&artifact)?;
        let attack = format!("forced early stop: {name}");
        out.push(record(prompt, &attack, &format!("eos/{name}"), "requester-bound", true, verdict));
    }
    Ok(out)
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
pub(super) fn seeded_laundering(c: &mut Judge<'_>, prompt: &Prompt) -> anyhow::Result<AttackRecord> {
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

/// An honest miner on llama.cpp: poi's sampler and logging over llama.cpp's
/// log-probs for the same request as the matrix's honest artifact.
pub(super) fn llama_cpp_miner(
    c: &mut Judge<'_>,
    prompt: &Prompt,
    llama_cpp: &mut LlamaCpp,
) -> anyhow::Result<AttackRecord> {
    let honest = c.cached(NATIVE, prompt)?;
    let mut request = honest.body.request.clone();
    request.bind(&c.spec.chain_id(), &devnet_requester());
    let seed = request.run_seed().context("seeded")?;
    let config = c.engine.pinned()?.model.config().clone();
    let stop = StopRules::of(&request);
    let generated = generate_from(
        llama_cpp,
        &config,
        &request.prompt_tokens,
        &c.spec.sampling,
        c.spec.logged_k,
        &stop,
        Draws::Seeded(seed),
        |_| {},
    )?;
    let changed = generated.tokens != honest.body.generation.chosen_tokens();
    let artifact = generated.body(&c.spec, c.miner.public(), request, 0)?.sign(c.miner);
    let (rejected_by, figures) = c.judge_with_figures(&artifact)?;
    Ok(AttackRecord {
        honest: true,
        note: figures.map(|(d, m)| format!("distance2 {d:.2e}, match ratio {m:.4}")),
        ..record(prompt, "honest miner on llama.cpp (same GGUF)", "llama-cpp", "requester-bound", changed, rejected_by)
    })
}

/// Artifacts built so that the full check cannot run: each must be refused
/// by the replay check first, with the rule named.
pub(super) fn malformed(
    c: &mut Judge<'_>,
    done: &HashSet<String>,
    out: &mut std::fs::File,
) -> anyhow::Result<Vec<AttackRecord>> {
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
            honest: false,
            changed: true,
            rejected_by: verdict,
            note: None,
        };
        writeln!(out, "{}", serde_json::to_string(&entry)?)?;
        records.push(entry);
    }
    Ok(records)
}
