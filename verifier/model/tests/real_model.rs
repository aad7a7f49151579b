//! The real pinned model, SmolLM2-135M-Instruct (fetched by
//! `scripts/fetch-model.sh`, which the test command runs first), against
//! llama.cpp's reference (`scripts/llama-cpp-reference.py`) and through
//! generate → replay → full check.

use std::sync::OnceLock;

use poi_artifact::{
    candidate_order, logged_half, Artifact, Candidate, FinishReason, Generation, History, Keypair, Request,
};
use poi_chain_spec::{devnet_requester, ChainSpec};
use poi_model::builtin_profile;
use poi_model::chat::Message;
use poi_model::full_check::full_check;
use poi_model::generate::{generate, logged_candidates, teacher_forced, teacher_forced_top_k, Draws, StopRules};
use poi_model::runtime::{default_model_path, Runtime};
use poi_verifier::full_check::rejection;
use poi_verifier::{draw, ReplayChecker, Sampler, SeedingClass};
use serde::Deserialize;

fn pinned(profile: Option<&str>) -> Runtime {
    let spec = ChainSpec::devnet();
    let path = default_model_path(&spec);
    assert!(path.exists(), "{} is missing: run scripts/fetch-model.sh", path.display());
    let profile = profile.map(|id| builtin_profile(id).unwrap());
    Runtime::load_pinned(&spec, &path, profile.as_ref()).expect("pinned model loads")
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| pinned(None))
}

#[derive(Deserialize)]
struct Reference {
    cases: Vec<TokenizerCase>,
    greedy: Greedy,
}

#[derive(Deserialize)]
struct TokenizerCase {
    text: String,
    special: bool,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Greedy {
    prompt: Vec<u32>,
    tokens: Vec<u32>,
    /// llama.cpp's five most likely tokens and their log-probs at each step.
    top: Vec<Vec<(u32, f32)>>,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("data/llama-cpp-reference.json")).unwrap()
}

#[test]
fn tokenizer_matches_llama_cpp() {
    let tok = &runtime().tokenizer;
    let cases = reference().cases;
    for case in &cases {
        assert_eq!(tok.encode(&case.text, case.special), case.ids, "{:?} (special: {})", case.text, case.special);
        if !case.special {
            assert_eq!(tok.decode(&case.ids).unwrap(), case.text);
        }
    }
    assert!(cases.len() >= 20);
}

/// How far `model`'s log-probs are from llama.cpp's, teacher-forced on
/// llama.cpp's greedy answer: the mean gap over llama.cpp's five most likely
/// tokens at every step, or the first step where llama.cpp's greedy token is
/// not among `model`'s two most likely.
fn gap_to_llama_cpp(model: &poi_model::Llama, greedy: &Greedy) -> Result<f32, String> {
    let (mut total, mut count, mut misranked) = (0f32, 0, None);
    teacher_forced(model, &greedy.prompt, &greedy.tokens, |step, row| {
        for &(token, theirs) in &greedy.top[step] {
            total += (row[token as usize] - theirs).abs();
            count += 1;
        }
        let pick = row[greedy.tokens[step] as usize];
        let rank = 1 + row.iter().filter(|&&lp| lp > pick).count();
        if rank > 2 && misranked.is_none() {
            misranked = Some(format!("step {step}: llama.cpp's greedy token is our number {rank}"));
        }
    })
    .unwrap();
    misranked.map_or(Ok(total / count as f32), Err)
}

/// Our forward pass against llama.cpp's on the same GGUF. The two engines
/// round differently (llama.cpp also rounds queries and attention weights to
/// f16 and blocks its sums its own way), and through the q8 activations
/// between layers that reaches tenths of a nat: at the first step llama.cpp's
/// top two are 0.35 apart and ours rank them the other way, so the greedy
/// answers differ from there. Measured (numerics v3): a mean gap of 0.14
/// nats, 0.13 for `dequant-f32-cpu`; the cheaper `requant-q4_0-cpu` ranks
/// llama.cpp's pick sixth at step 2, and a wrong forward pass (rotary, norm,
/// template) is off by nats.
#[test]
fn chat_template_and_log_probs_match_llama_cpp() {
    const MAX_MEAN_GAP: f32 = 0.25;
    let rt = runtime();
    let greedy = reference().greedy;
    let messages = [Message { role: "user".into(), content: "What is the capital of France?".into() }];
    assert_eq!(rt.chat_tokens(&messages).unwrap(), greedy.prompt);
    assert_eq!(greedy.top.len(), greedy.tokens.len());

    let gap = gap_to_llama_cpp(&rt.model, &greedy).unwrap();
    assert!(gap <= MAX_MEAN_GAP, "log-probs {gap} nats from llama.cpp's on average");
    let cheaper = pinned(Some("requant-q4_0-cpu"));
    let cheaper_gap = gap_to_llama_cpp(&cheaper.model, &greedy);
    assert!(!matches!(cheaper_gap, Ok(g) if g <= MAX_MEAN_GAP), "a cheaper model passes: {cheaper_gap:?}");
}

fn mine(rt: &Runtime, spec: &ChainSpec, content: &str, seed: u64, max_tokens: usize) -> Artifact {
    let prompt = rt.chat_tokens(&[Message { role: "user".into(), content: content.into() }]).unwrap();
    let mut request = Request::new([3; 16], Some(seed), prompt, max_tokens as u32);
    request.bind(&spec.chain_id(), &devnet_requester());
    let draws = Draws::Seeded(request.run_seed().unwrap());
    let stop = StopRules::of(&request);
    let out = generate(&rt.model, &request.prompt_tokens, &spec.sampling, spec.logged_k, &stop, draws, |_| {}).unwrap();
    let miner = Keypair::from_secret([8; 32]);
    out.body(spec, miner.public(), request, 1).unwrap().sign(&miner)
}

#[test]
fn honest_artifact_passes_replay_and_full_check() {
    let spec = ChainSpec::devnet();
    let rt = runtime();
    let artifact = mine(rt, &spec, "Write a short poem about the sea.", 11, 48);
    let (decoded, report) = ReplayChecker::new(spec.clone()).check_bytes(&artifact.encode()).unwrap();
    assert_eq!(report.seeding, SeedingClass::RequesterBound);
    let full = full_check(&rt.model, &decoded, &spec.thresholds).unwrap();
    println!("honest: distance2 {:.6}, match {:.4}", full.distance2, full.match_ratio);
    assert!(full.accepted, "{:?}", full.reason);
    assert_eq!(full.match_ratio, 1.0, "decode and prefill are bit-exact under gguf-native");
    assert!(full.positions.iter().all(|p| p.exact));
}

/// The attack that passed before: log the pinned model's lists, but at one
/// position drop the seeded pick and append a filler at the value `distance2`
/// imputes for a missing token, until the seeded draw lands on another token;
/// the miner then continues honestly from its token. It passes the replay
/// check and the seed's thresholds; the exact comparison names the position.
#[test]
fn a_steered_pick_on_the_real_model_is_rejected_where_it_was_made() {
    let spec = ChainSpec::devnet();
    let rt = runtime();
    let honest = mine(rt, &spec, "Name three colours.", 5, 24);
    let n = honest.body.generation.len();
    let mut steered = 0;
    for target in [0, n / 2, n - 1] {
        let Some(edited) = steer(rt, &spec, &honest, target) else { continue };
        steered += 1;
        ReplayChecker::new(spec.clone()).check(&edited).expect("the edited list replays");
        let full = full_check(&rt.model, &edited, &spec.thresholds).unwrap();
        println!("steered at {target}: distance2 {:.6}, match {:.4}", full.distance2, full.match_ratio);
        assert!(rejection(full.distance2, full.match_ratio, &spec.thresholds).is_none(), "the seed's rule passes it");
        assert!(!full.accepted);
        assert_eq!(full.mismatch.as_ref().map(|m| m.position), Some(target), "{:?}", full.reason);
    }
    assert!(steered >= 2, "only {steered} positions could be steered");
}

/// `target`'s list edited as the attack does, then an honest continuation
/// (the model's lists and seeded picks after the miner's token).
fn steer(rt: &Runtime, spec: &ChainSpec, honest: &Artifact, target: usize) -> Option<Artifact> {
    let body = &honest.body;
    let params = &spec.sampling;
    let seed = body.request.run_seed().unwrap();
    let prompt = &body.request.prompt_tokens;
    let mut tokens = body.generation.chosen_tokens();
    let mut positions = body.generation.to_positions();
    let tops = teacher_forced_top_k(&rt.model, prompt, &tokens, params, spec.logged_k).unwrap();
    let history = History::with_generated(prompt, &tokens[..target]);
    let mut list = logged_candidates(&tops[target], &history, params);
    let mut sampler = Sampler::new();
    let mut pick = |list: &[Candidate]| {
        let candidates = list.iter().map(|c| (c.token, c.logprob.to_f64()));
        sampler.choose(candidates, &history, params, &seed, target as u32).unwrap()
    };
    let original = list[pick(&list)].token;
    let mut filler = 30_000;
    while list[pick(&list)].token == original {
        let mut values: Vec<f64> = list.iter().map(|c| c.logprob.to_f64()).collect();
        values.sort_by(f64::total_cmp);
        let at = pick(&list);
        list.remove(at);
        while list.iter().any(|c| c.token == filler) {
            filler += 1;
        }
        list.push(Candidate { token: filler, logprob: logged_half(values[0] - (values[1] - values[0])) });
        filler += 1;
        let score = |c: &Candidate| history.penalised(c.token, c.logprob.to_f64(), params);
        list.sort_by(|a, b| candidate_order((score(a), a.token), (score(b), b.token)));
    }
    let chosen = pick(&list);
    if list[chosen].token >= 30_000 || list[chosen].token == spec.model.eos_token_id {
        return None;
    }
    tokens[target] = list[chosen].token;
    positions[target] = (list, chosen as u8);
    // The honest continuation after the miner's token, as `poi mine` would,
    // to the request's own stop rules.
    let max_tokens = body.request.max_tokens as usize;
    let mut finish = FinishReason::MaxTokens;
    positions.truncate(target + 1);
    if target + 1 < max_tokens {
        let mut context = prompt.clone();
        context.extend(&tokens[..=target]);
        let mut position = target as u32;
        let mut source = || {
            position += 1;
            draw(&seed, position)
        };
        let rest = StopRules { max_tokens: max_tokens - target - 1, tokens: &[] };
        let out = generate(&rt.model, &context, params, spec.logged_k, &rest, Draws::External(&mut source), |_| {});
        let out = out.ok()?;
        finish = out.finish_reason;
        positions.extend(out.positions);
    }
    let mut edited = body.clone();
    edited.generation = Generation::new(spec.logged_k, &positions).ok()?;
    edited.finish_reason = finish;
    let miner = Keypair::from_secret([8; 32]);
    Some(edited.sign(&miner))
}

#[test]
fn artifact_from_a_cheaper_profile_fails_the_full_check() {
    let spec = ChainSpec::devnet();
    let cheap = pinned(Some("requant-q2k-cpu"));
    // Built and signed like an honest one; only the model's numbers differ.
    let artifact = mine(&cheap, &spec, "Write a short poem about the sea.", 11, 48);
    ReplayChecker::new(spec.clone()).check(&artifact).expect("replay cannot see the model");
    let full = full_check(&runtime().model, &artifact, &spec.thresholds).unwrap();
    println!("requant-q2k miner: distance2 {:.6}, match {:.4}", full.distance2, full.match_ratio);
    assert!(!full.accepted, "distance2 {} match {}", full.distance2, full.match_ratio);
}

/// SHA-256 over the bits of every log-prob row of a teacher-forced pass.
fn rows_digest(model: &poi_model::Llama, prompt: &[u32], generated: &[u32]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    teacher_forced(model, prompt, generated, |_, row| {
        row.iter().for_each(|x| hasher.update(x.to_bits().to_le_bytes()))
    })
    .unwrap();
    hex::encode(hasher.finalize())
}

/// The pinned profile's numbers on the real model, pinned for this
/// `NUMERICS_VERSION`: every log-prob of a 600-token teacher-forced pass (two
/// prefill chunks), at 1 and 3 threads, and decode against prefill. A kernel
/// change that moves one bit fails here; a deliberate one is a new version
/// with a new digest.
#[test]
fn pinned_profile_numbers_do_not_drift() {
    const DIGEST: &str = "91725b576cb6490e005bfb512d9aa6012d3c9c42da6b06fb767d5760e7434625";
    let model = &runtime().model;
    assert_eq!(poi_model::NUMERICS_VERSION, 3, "a new version of the numbers needs a new digest here");
    let prompt = reference().greedy.prompt;
    let generated: Vec<u32> = (0..600u32).map(|i| (i * 7919) % 49000 + 17).collect();
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let digest = pool.install(|| rows_digest(model, &prompt, &generated));
        assert_eq!(digest, DIGEST, "{threads} threads");
    }
    let (short, mut prefill) = (&generated[..24], Vec::new());
    teacher_forced(model, &prompt, short, |_, row| prefill.push(row.to_vec())).unwrap();
    let mut cache = model.new_cache();
    let mut decode = vec![model.forward(&prompt, &mut cache, prompt.len() - 1).unwrap()];
    for &token in &short[..short.len() - 1] {
        decode.push(model.forward(&[token], &mut cache, 0).unwrap());
    }
    let bits = |rows: &[Vec<f32>]| rows.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(bits(&prefill) == bits(&decode), "decode and prefill differ");
}
