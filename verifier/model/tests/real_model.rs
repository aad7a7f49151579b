//! The real pinned model, SmolLM2-135M-Instruct (fetched by
//! `scripts/fetch-model.sh`, which the test command runs first), against
//! llama.cpp's reference (`scripts/llama-cpp-reference.py`) and through
//! generate → replay → full check.

use std::sync::OnceLock;

use poi_artifact::{Artifact, Keypair, Request};
use poi_chain_spec::ChainSpec;
use poi_model::builtin_profile;
use poi_model::chat::Message;
use poi_model::full_check::full_check;
use poi_model::generate::{generate, Draws};
use poi_model::runtime::{default_model_path, Runtime};
use poi_verifier::ReplayChecker;
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

#[test]
fn chat_template_and_greedy_answer_match_llama_cpp() {
    let rt = runtime();
    let greedy = reference().greedy;
    let messages = [Message { role: "user".into(), content: "What is the capital of France?".into() }];
    assert_eq!(rt.chat_tokens(&messages).unwrap(), greedy.prompt);

    let mut params = ChainSpec::devnet().sampling;
    (params.temperature, params.repetition_penalty) = (0.0, 1.0);
    let out =
        generate(&rt.model, &greedy.prompt, &params, 20, greedy.tokens.len(), Draws::Seeded([0; 32]), |_| {}).unwrap();
    assert_eq!(out.tokens, greedy.tokens, "{:?}", rt.tokenizer.decode(&out.tokens));
}

fn mine(rt: &Runtime, spec: &ChainSpec, content: &str, seed: u64, max_tokens: usize) -> Artifact {
    let prompt = rt.chat_tokens(&[Message { role: "user".into(), content: content.into() }]).unwrap();
    let request = Request { request_uuid: [3; 16], user_seed: Some(seed), prompt_tokens: prompt, binding: None };
    let draws = Draws::Seeded(request.run_seed().unwrap());
    let out =
        generate(&rt.model, &request.prompt_tokens, &spec.sampling, spec.logged_k, max_tokens, draws, |_| {}).unwrap();
    let miner = Keypair::from_secret([8; 32]);
    out.body(spec, miner.public(), request, 1).unwrap().sign(&miner)
}

#[test]
fn honest_artifact_passes_replay_and_full_check() {
    let spec = ChainSpec::devnet();
    let rt = runtime();
    let artifact = mine(rt, &spec, "Write a short poem about the sea.", 11, 48);
    let (decoded, report) = ReplayChecker::new(spec.clone()).check_bytes(&artifact.encode()).unwrap();
    assert!(report.seeded);
    let full = full_check(&rt.model, &decoded, &spec.thresholds).unwrap();
    println!("honest: distance2 {:.6}, match {:.4}", full.distance2, full.match_ratio);
    assert!(full.accepted, "{:?}", full.reason);
    assert_eq!(full.match_ratio, 1.0, "decode and prefill are bit-exact under gguf-native");
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
