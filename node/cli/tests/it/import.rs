//! `poi import` on real responses of other engines: llama.cpp's chat
//! completion (through llama-cpp-python, committed fixtures that
//! scripts/llama-cpp-fixture.py regenerates) and vLLM's token-id form.

use std::path::Path;

use poi_artifact::{logged_half, Artifact};
use poi_chain_spec::ChainSpec;
use poi_model::runtime::{default_model_path, Runtime};
use serde_json::{json, Value};

use crate::poi;
use crate::process::write_key;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn import(response: &Path, prompt: &[&str], key: &Path, out: &Path) -> std::process::Output {
    let mut args = vec!["import", response.to_str().unwrap()];
    args.extend_from_slice(prompt);
    args.extend(["--key", key.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    poi(&args)
}

fn verify(artifact: &Path) -> Value {
    let out = poi(&["verify", artifact.to_str().unwrap(), "--json"]);
    serde_json::from_slice(&out.stdout).expect("verify prints JSON")
}

#[test]
fn a_llama_cpp_response_imports_as_an_unseeded_artifact_with_its_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("importer.key");
    write_key(&key, &poi_artifact::Keypair::from_secret([3; 32]));
    let response_path = Path::new(FIXTURES).join("llama-cpp-chat.json");
    let chat = Path::new(FIXTURES).join("llama-cpp-chat.messages.json");
    let out = dir.path().join("imported.bin");
    let imported = import(&response_path, &["--chat", chat.to_str().unwrap()], &key, &out);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));

    let artifact = Artifact::decode(&std::fs::read(&out).unwrap(), 1 << 20).unwrap();
    assert_eq!(artifact.body.request.user_seed, None, "no run seed was logged");
    let spec = ChainSpec::devnet();
    let runtime = Runtime::load_pinned(&spec, &default_model_path(&spec), None).unwrap();
    let messages: Vec<poi_model::chat::Message> =
        serde_json::from_str(&std::fs::read_to_string(&chat).unwrap()).unwrap();
    assert_eq!(artifact.body.request.prompt_tokens, runtime.chat_tokens(&messages).unwrap());
    // Each position's candidates are the response's top 20, resolved in the
    // pinned vocabulary, at the response's values rounded to half.
    let response: Value = serde_json::from_str(&std::fs::read_to_string(&response_path).unwrap()).unwrap();
    let content = response["choices"][0]["logprobs"]["content"].as_array().unwrap();
    let positions = artifact.body.generation.to_positions();
    assert_eq!(positions.len(), content.len());
    for (i, ((candidates, chosen), entry)) in positions.iter().zip(content).enumerate() {
        let mut logged: Vec<(String, u16)> = candidates
            .iter()
            .map(|c| (String::from_utf8(runtime.tokenizer.token_bytes(c.token).unwrap()).unwrap(), c.logprob.to_bits()))
            .collect();
        let mut given: Vec<(String, u16)> = entry["top_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["token"].as_str().unwrap().to_string(), logged_half(t["logprob"].as_f64().unwrap()).to_bits()))
            .collect();
        logged.sort();
        given.sort();
        assert_eq!(logged, given, "position {i}");
        let chosen = runtime.tokenizer.token_bytes(candidates[usize::from(*chosen)].token).unwrap();
        assert_eq!(String::from_utf8(chosen).unwrap(), entry["token"].as_str().unwrap(), "position {i}");
    }

    // llama.cpp samples differently from sampler v1 (temperature after
    // top-p, penalties on logits over a window): some of its picks fall
    // outside v1's kept set, and the replay check names the first.
    let report = verify(&out);
    assert_eq!(report["seeding"], "unseeded");
    assert_eq!(report["verdict"], "reject");
    assert!(report["reason"].as_str().unwrap().contains("outside the sampler's kept set"), "{report}");

    // llama-cpp-python prints control tokens as "": not representable.
    let refused = import(
        &Path::new(FIXTURES).join("llama-cpp-chat-control-token.json"),
        &["--chat", Path::new(FIXTURES).join("llama-cpp-chat-control-token.messages.json").to_str().unwrap()],
        &key,
        &dir.path().join("refused.bin"),
    );
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("position 33: token \"\" is not one token"), "{stderr}");
    assert!(!dir.path().join("refused.bin").exists());
}

#[test]
fn a_vllm_token_id_response_imports_with_exactly_its_candidates_and_gets_the_surprisal_test() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("miner.key");
    write_key(&key, &poi_artifact::Keypair::from_secret([4; 32]));
    let mined = dir.path().join("mined.bin");
    let out = poi(&[
        "mine",
        "--prompt",
        "Describe a lighthouse at night.",
        "--unseeded",
        "--max-tokens",
        "24",
        "--key",
        key.to_str().unwrap(),
        "-o",
        mined.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let original = Artifact::decode(&std::fs::read(&mined).unwrap(), 1 << 20).unwrap();

    // The response vLLM gives with return_tokens_as_token_ids and the
    // prompt's ids, for the same generation.
    let token = |id: u32| format!("token_id:{id}");
    let content: Vec<Value> = original
        .body
        .generation
        .to_positions()
        .iter()
        .map(|(candidates, chosen)| {
            let pick = candidates[usize::from(*chosen)];
            json!({
                "token": token(pick.token),
                "logprob": pick.logprob.to_f64(),
                "top_logprobs": candidates.iter().map(|c| json!({"token": token(c.token), "logprob": c.logprob.to_f64()})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let finish = if original.body.finish_reason == poi_artifact::FinishReason::MaxTokens { "length" } else { "stop" };
    let response = json!({
        "object": "chat.completion",
        "prompt_token_ids": original.body.request.prompt_tokens,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ""}, "logprobs": {"content": content}, "finish_reason": finish}],
    });
    let response_path = dir.path().join("vllm.json");
    std::fs::write(&response_path, response.to_string()).unwrap();
    let imported_path = dir.path().join("imported.bin");
    let imported = import(&response_path, &[], &key, &imported_path);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    let imported = Artifact::decode(&std::fs::read(&imported_path).unwrap(), 1 << 20).unwrap();
    assert_eq!(imported.body.generation, original.body.generation, "the same candidates, values and order");
    assert_eq!(imported.body.request.prompt_tokens, original.body.request.prompt_tokens);

    let report = verify(&imported_path);
    assert_eq!(report["verdict"], "pass", "{report}");
    assert_eq!(report["seeding"], "unseeded");
    assert!(report["surprisal_z"].as_f64().unwrap().is_finite());
}
