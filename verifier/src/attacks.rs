//! A miner's edits of DESIGN §7b, built from the pinned model's top-k (the
//! miner may run the pinned model over any tokens): the experiment's red team
//! and the tests build attacks with them; nothing on a validator's path does.

use poi_artifact::{candidate_order, f16, Candidate, History, SamplingParams};

use crate::topk::{logged_candidates, TopCandidate};
use crate::Sampler;

/// Per position, the logged list and the chosen index.
pub type Positions = Vec<(Vec<Candidate>, u8)>;

/// Sampler v1's pick (an index into `list`) at `position`.
pub fn seeded_pick(
    list: &[Candidate],
    history: &History,
    params: &SamplingParams,
    run_seed: &[u8; 32],
    position: u32,
) -> Option<usize> {
    Sampler::new().choose(list.iter().map(|c| (c.token, c.logprob.to_f64())), history, params, run_seed, position)
}

/// Edits `list` so that sampler v1 with `run_seed` picks `wanted` at
/// `position`, keeping every figure the seed's checks look at: a wanted token
/// the model did not list takes the last slot at the last slot's value; then,
/// while the seeded pick is another token, that token is dropped and a filler
/// appended at the value `distance2` imputes for a missing candidate (one
/// step below the lowest); if the draws keep missing, every other candidate
/// is replaced by a filler at the lowest half value, which leaves `wanted`
/// the only token the sampler keeps. The replay check passes the result;
/// only an exact comparison with the model's list sees it. `None` only when
/// `fillers` runs out.
pub fn steer_list(
    list: &[Candidate],
    history: &History,
    params: &SamplingParams,
    run_seed: &[u8; 32],
    position: u32,
    wanted: u32,
    fillers: &mut impl Iterator<Item = u32>,
) -> Option<(Vec<Candidate>, u8)> {
    let mut list = list.to_vec();
    let score = |c: &Candidate| (history.penalised(c.token, c.logprob.to_f64(), params), c.token);
    if !list.iter().any(|c| c.token == wanted) {
        let last = list.last_mut()?;
        *last = Candidate { token: wanted, logprob: last.logprob };
        list.sort_by(|a, b| candidate_order(score(a), score(b)));
    }
    for _ in 0..2 * list.len() {
        let picked = seeded_pick(&list, history, params, run_seed, position)?;
        if list[picked].token == wanted {
            return Some((list, picked as u8));
        }
        let mut values: Vec<f64> = list.iter().map(|c| c.logprob.to_f64()).collect();
        values.sort_by(f64::total_cmp);
        let (lowest, next) = (values[0], values.get(1).copied().unwrap_or(values[0]));
        // Still a valid half log-prob (finite, not above 0).
        let stand_in = f16::from_f64((lowest - (next - lowest)).max(-60_000.0));
        list.remove(picked);
        list.push(Candidate { token: fillers.next()?, logprob: stand_in });
        list.sort_by(|a, b| candidate_order(score(a), score(b)));
    }
    for candidate in list.iter_mut().filter(|c| c.token != wanted) {
        *candidate = Candidate { token: fillers.next()?, logprob: f16::MIN };
    }
    list.sort_by(|a, b| candidate_order(score(a), score(b)));
    let picked = seeded_pick(&list, history, params, run_seed, position)?;
    (list[picked].token == wanted).then_some((list, picked as u8))
}

/// A whole generation steered onto `wanted` tokens: at every position the
/// list an honest miner would log from `tops` (the pinned model over `prompt`
/// and `wanted`), edited with `steer_list` wherever the seeded pick is not
/// the wanted token. Returns the positions and how many lists were edited;
/// `None` if some position cannot be steered.
pub fn steer_generation(
    tops: &[Vec<TopCandidate>],
    prompt: &[u32],
    wanted: &[u32],
    params: &SamplingParams,
    run_seed: &[u8; 32],
    vocab: u32,
) -> Option<(Positions, usize)> {
    let mut history = History::new(prompt);
    let mut used: std::collections::HashSet<u32> = prompt.iter().chain(wanted).copied().collect();
    let mut positions = Vec::with_capacity(wanted.len());
    let mut edited = 0;
    for (position, (top, &token)) in tops.iter().zip(wanted).enumerate() {
        let list = logged_candidates(top, &history, params);
        used.extend(list.iter().map(|c| c.token));
        let honest_pick = seeded_pick(&list, &history, params, run_seed, position as u32)?;
        let entry = if list[honest_pick].token == token {
            (list, honest_pick as u8)
        } else {
            edited += 1;
            // Fillers the model never ranked here and the history does not
            // hold, so no penalty moves them.
            let mut fillers = (0..vocab).rev().filter(|t| !used.contains(t));
            steer_list(&list, &history, params, run_seed, position as u32, token, &mut fillers)?
        };
        used.extend(entry.0.iter().map(|c| c.token));
        history.push(token);
        positions.push(entry);
    }
    Some((positions, edited))
}
