//! `poi` driven as a user drives it: the binary's commands end to end, and a
//! node process killed with SIGKILL. One test binary (tests that need the
//! `poi` executable must live in its package, where cargo builds it for
//! them); the multi-node and RPC tests on the library are `poi-tests`.

mod cli;
mod crash;
mod devnet;
mod import;
mod mine;
mod process;
mod recheck;
mod serve;

use std::process::{Command, Output};

/// The artifact's middle candidate list with one real candidate (not the
/// chosen one) replaced by a token the model never ranked there, at the same
/// value and in the same place of sampler v1's order (ties go to the lower
/// id, and penalties apply to tokens already seen), so that the replay check
/// cannot see it: the steering edit the full check must catch. Returns the
/// edited body, the position and the token that was replaced.
fn edit_middle_list(artifact: &poi_artifact::Artifact) -> (poi_artifact::ArtifactBody, usize, u32) {
    use poi_artifact::{candidate_order, History};
    let mut body = artifact.body.clone();
    let mut positions = body.generation.to_positions();
    let position = positions.len() / 2;
    let mut history = History::new(&body.request.prompt_tokens);
    for (list, chosen) in &positions[..position] {
        history.push(list[usize::from(*chosen)].token);
    }
    let (list, chosen) = &mut positions[position];
    let slot = if *chosen == 19 { 18 } else { 19 };
    let replaced = list[slot].token;
    let vocab = poi_chain_spec::ChainSpec::devnet().model.vocab_size;
    let ordered = |token: u32| {
        let mut edited = list.clone();
        edited[slot].token = token;
        let score =
            |c: &poi_artifact::Candidate| (history.penalised(c.token, c.logprob.to_f64(), &body.sampling), c.token);
        edited.windows(2).all(|pair| candidate_order(score(&pair[0]), score(&pair[1])).is_lt())
    };
    list[slot].token = (40_000..vocab)
        .chain(0..40_000)
        .find(|&t| list.iter().all(|c| c.token != t) && ordered(t))
        .expect("some unlisted token keeps the order");
    body.generation = poi_artifact::Generation::new(body.generation.k(), &positions).unwrap();
    (body, position, replaced)
}

/// Runs the `poi` binary this package built, to completion.
fn poi(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_poi")).args(args).output().expect("poi runs")
}
