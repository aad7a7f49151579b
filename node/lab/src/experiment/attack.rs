//! The adaptive pre-fill attacker. Plain pre-fill fails even without a seed,
//! because the cheap model soon picks a token that the pinned sampler could
//! never pick (outside its kept set). This attacker repairs that, as a lax
//! form of speculative decoding: the cheap model drafts, one batched prefill
//! of the pinned model proves the draft, the first unsampleable token is
//! replaced by a draw from the pinned kept distribution there, and the cheap
//! model drafts on from the repaired prefix, until every token is sampleable.
//! It pays cheap decoding and a few pinned prefills instead of the pinned
//! decode, and leaves the surprisal test as the only check that can catch it.
//!
//! Seeded, the same attacker must repair every token the run seed would not
//! pick into the seeded pick: what it ends with is the pinned model's own
//! seeded output, computed as speculative decoding.

use poi_artifact::{FinishReason, History};
use poi_chain_spec::ChainSpec;
use poi_model::generate::{generate, prefill_proof, teacher_forced_top_k, Draws, Generated, StopRules};
use poi_model::{Llama, TopCandidate};
use poi_verifier::{choose_from, pick, Sampler};
use rand::RngCore;

/// What counts as a token that needs no repair, and what replaces one.
pub enum Repair<'a, R: RngCore> {
    /// Unseeded: a token inside the pinned kept set stays; another is
    /// replaced by a draw from the kept distribution.
    IntoKeptSet(&'a mut R),
    /// Seeded: only the seeded pick stays, and replaces any other token.
    ToSeededPick { run_seed: [u8; 32], drafts: &'a mut R },
}

pub struct Repaired {
    pub proof: Generated,
    /// The pinned model's top-k over the repaired tokens: what a validator's
    /// full check computes.
    pub tops: Vec<Vec<TopCandidate>>,
    /// Tokens replaced (each followed by a new cheap draft).
    pub replaced: usize,
}

/// Repairs the cheap model's `draft` (tokens and finish reason) after
/// `prompt`, up to `max_tokens` in all.
pub fn repaired_prefill(
    pinned: &Llama,
    cheap: &Llama,
    prompt: &[u32],
    draft: (&[u32], FinishReason),
    max_tokens: usize,
    spec: &ChainSpec,
    mut repair: Repair<'_, impl RngCore>,
) -> anyhow::Result<Repaired> {
    let params = &spec.sampling;
    let eos = pinned.config().eos_token_id;
    let (mut tokens, mut finish_reason) = (draft.0.to_vec(), draft.1);
    let mut sampler = Sampler::new();
    // Every pass but the last replaces one token and fixes its position for
    // good (its prefix no longer changes, so its draw stays sampleable).
    let passes = max_tokens + 1;
    for replaced in 0..passes {
        let tops = teacher_forced_top_k(pinned, prompt, &tokens, params, spec.logged_k)?;
        let proof = prefill_proof(&tops, prompt, &tokens, finish_reason, params);
        let mut history = History::new(prompt);
        let mut to_repair = None;
        for (position, (candidates, chosen)) in proof.positions.iter().enumerate() {
            let listed = candidates.iter().map(|c| (c.token, c.logprob.to_f64()));
            let kept = sampler.distribution(listed, &history, params);
            let replacement = match &mut repair {
                Repair::IntoKeptSet(rng) => (!kept.iter().any(|k| k.index == usize::from(*chosen)))
                    .then(|| choose_from(kept, rng.next_u64()).expect("the kept set is never empty")),
                Repair::ToSeededPick { run_seed, .. } => {
                    let picked = pick(kept, run_seed, position as u32).expect("the kept set is never empty");
                    (picked != usize::from(*chosen)).then_some(picked)
                }
            };
            if let Some(index) = replacement {
                to_repair = Some((position, candidates[index].token));
                break;
            }
            history.push(tokens[position]);
        }
        let Some((position, token)) = to_repair else { return Ok(Repaired { proof, tops, replaced }) };
        tokens.truncate(position);
        tokens.push(token);
        finish_reason = if token == eos { FinishReason::Eos } else { FinishReason::MaxTokens };
        if token != eos && tokens.len() < max_tokens {
            let context = [prompt, &tokens].concat();
            let rng = match &mut repair {
                Repair::IntoKeptSet(rng) => &mut **rng,
                Repair::ToSeededPick { drafts, .. } => &mut **drafts,
            };
            let mut draw = || rng.next_u64();
            let rest = StopRules { max_tokens: max_tokens - tokens.len(), tokens: &[] };
            let draft = generate(cheap, &context, params, spec.logged_k, &rest, Draws::External(&mut draw), |_| {})?;
            tokens.extend(draft.tokens);
            finish_reason = draft.finish_reason;
        }
    }
    anyhow::bail!("the repaired tokens did not settle in {passes} passes")
}
