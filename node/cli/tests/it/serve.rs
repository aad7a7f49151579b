//! `poi serve` as requesters use it: the official `openai` Python SDK
//! (`tests/openai_client.py`, from the virtual environment that
//! scripts/test.sh makes) against a server that submits every answer to a
//! `poi node` process. The answers must be on the node, pass the full
//! check, carry exactly the artifact's candidates as logprobs, compare as
//! identical when repeated, and be the same batched as alone; bad requests
//! get OpenAI's error shape and the server keeps serving.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use poi_artifact::Artifact;
use poi_chain_spec::{devnet_keypair, devnet_requester, ChainSpec};
use poi_model::runtime::{default_model_path, Runtime};
use poi_rpc_api::PoiApiClient;
use serde_json::Value;

use crate::process::{field, node, write_key, Process};

/// The SDK's interpreter: `$POI_PYTHON`, else scripts/test.sh's venv.
fn python() -> PathBuf {
    let path = std::env::var_os("POI_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".cache/poi/venv/bin/python")
    });
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh (it installs the openai SDK) or set POI_PYTHON",
        path.display()
    );
    path
}

async fn stored_artifact(rpc: &HttpClient, id: &str) -> Artifact {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(view) = rpc.get_artifact(id.to_string()).await.expect("RPC answers") {
            return Artifact::from_json_str(&view.to_string()).expect("a valid JSON view");
        }
        assert!(Instant::now() < deadline, "artifact {id} never reached the node");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn poi(args: &[&str], files: &[&Path]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_poi")).args(args).args(files).output().expect("poi runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_answers_are_signed_artifacts_that_the_node_stores_and_the_full_check_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ChainSpec::local_devnet(1, 0.5).unwrap();
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_json_string()).unwrap();
    let (validator_key, miner_key) = (dir.path().join("validator.key"), dir.path().join("miner.key"));
    write_key(&validator_key, &devnet_keypair(0));
    write_key(&miner_key, &poi_artifact::Keypair::from_secret([8; 32]));

    let validator = node(&spec_path, &validator_key, &dir.path().join("data"), None, &["--no-model"]);
    let started = validator.wait_for("node started", Duration::from_secs(60));
    let rpc_url = format!("http://{}", field(&started, "rpc=Some("));
    let mut command = Command::new(env!("CARGO_BIN_EXE_poi"));
    command.args(["serve", "--listen", "127.0.0.1:0", "--max-batch", "4", "--queue", "4", "--node", &rpc_url]);
    command.arg("--chain").arg(&spec_path).arg("--key").arg(&miner_key);
    let server = Process::spawn(command);
    let serving = server.wait_for("serving OpenAI-compatible completions", Duration::from_secs(60));
    let base = format!("http://{}", field(&serving, "addr="));

    let client = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py"))
            .arg(&base)
            .arg(hex::encode(devnet_requester().secret()))
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    assert!(client.status.success(), "the SDK client failed:\n{}", String::from_utf8_lossy(&client.stderr));
    let out: Value = serde_json::from_slice(&client.stdout).expect("one JSON object");

    let rpc = HttpClientBuilder::default().build(&rpc_url).unwrap();
    let runtime = Runtime::load_pinned(&spec, &default_model_path(&spec), None).expect("the pinned model");
    let tokenizer = &runtime.tokenizer;

    // The chat answer: its id in the header and the body, stored on the node,
    // its logprobs exactly the artifact's candidates at every position.
    let chat = &out["chat"];
    let id = chat["poi_artifact_id"].as_str().expect("poi_artifact_id");
    assert_eq!(out["chat_header_id"].as_str(), Some(id), "x-poi-artifact-id");
    let artifact = stored_artifact(&rpc, id).await;
    assert_eq!(artifact.id().to_hex(), id);
    let content = chat["choices"][0]["logprobs"]["content"].as_array().expect("logprobs.content");
    let positions = artifact.body.generation.to_positions();
    assert_eq!(content.len(), positions.len());
    for (i, (entry, (candidates, chosen))) in content.iter().zip(&positions).enumerate() {
        let tops = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(tops.len(), candidates.len(), "position {i}: all k candidates");
        for (top, candidate) in tops.iter().zip(candidates) {
            assert_eq!(top["logprob"].as_f64(), Some(candidate.logprob.to_f64()), "position {i}");
            let bytes: Vec<u8> = serde_json::from_value(top["bytes"].clone()).unwrap();
            assert_eq!(bytes, tokenizer.token_bytes(candidate.token).unwrap(), "position {i}");
        }
        assert_eq!(entry["logprob"], tops[usize::from(*chosen)]["logprob"], "position {i}: the chosen one");
    }
    let text = chat["choices"][0]["message"]["content"].as_str().unwrap();
    let tokens = artifact.body.generation.chosen_tokens();
    let ends_on_eos = tokens.last() == Some(&tokenizer.eos());
    assert_eq!(text, tokenizer.decode(&tokens[..tokens.len() - usize::from(ends_on_eos)]).unwrap());

    // It passes the full check, and two answers to one request compare equal.
    let file = dir.path().join("chat.bin");
    std::fs::write(&file, artifact.encode()).unwrap();
    let verified = poi(&["verify", "--full", "--chain"], &[&spec_path, &file]);
    assert!(verified.status.success(), "poi verify --full: {}", String::from_utf8_lossy(&verified.stdout));
    let (first, second) = (dir.path().join("first.json"), dir.path().join("second.json"));
    std::fs::write(&first, chat.to_string()).unwrap();
    std::fs::write(&second, out["chat_again"].to_string()).unwrap();
    let compared = poi(&["compare", "--json"], &[&first, &second]);
    assert!(compared.status.success(), "{}", String::from_utf8_lossy(&compared.stderr));
    let compared: Value = serde_json::from_slice(&compared.stdout).unwrap();
    // distance2 is smoothed: with no difference at any entry it is 1 / (max(100, n) k + 1).
    let floor = 1.0 / ((positions.len().max(100) * positions[0].0.len()) as f64 + 1.0);
    assert_eq!((compared["distance2"].as_f64(), compared["match_ratio"].as_f64()), (Some(floor), Some(1.0)));

    // The streamed completion: its final chunk names a stored artifact whose
    // tokens are the streamed text and log-probs.
    let stream = &out["stream"];
    let artifact = stored_artifact(&rpc, stream["artifact_id"].as_str().expect("id in the final chunk")).await;
    let tokens = artifact.body.generation.chosen_tokens();
    assert!(stream["chunks"].as_u64().unwrap() as usize > tokens.len(), "a chunk per token, then the final one");
    let chosen: Vec<f64> = artifact
        .body
        .generation
        .to_positions()
        .iter()
        .map(|(candidates, chosen)| candidates[usize::from(*chosen)].logprob.to_f64())
        .collect();
    assert_eq!(stream["token_logprobs"], serde_json::json!(chosen));
    let ends_on_eos = tokens.last() == Some(&tokenizer.eos());
    assert_eq!(
        stream["text"].as_str().unwrap(),
        tokenizer.decode(&tokens[..tokens.len() - usize::from(ends_on_eos)]).unwrap()
    );

    // The requester's binding makes it requester-bound; a signature over
    // another request is refused by name.
    let bound = &out["bound"];
    assert_eq!(bound["seeding"], "requester-bound");
    let artifact = stored_artifact(&rpc, bound["id"].as_str().unwrap()).await;
    let binding = artifact.body.request.binding.expect("bound");
    assert_eq!(binding.requester, devnet_requester().public());
    assert_eq!(serde_json::json!(artifact.body.request.prompt_tokens), bound["prompt_token_ids"]);
    assert_eq!(out["forged"], "x-poi-requester-signature");

    assert_eq!(out["batched_equal"], serde_json::json!([true, true, true, true]), "batched = alone");

    let refused = &out["refused"];
    for param in ["temperature", "n", "top_logprobs", "stop", "logit_bias"] {
        assert_eq!(refused[param], serde_json::json!([400, param]), "{param}");
    }
    assert_eq!(refused["model"], serde_json::json!([404, "model_not_found"]));
    assert_eq!(out["oversized"], serde_json::json!([413, true]));
    assert_eq!(out["long_word"], serde_json::json!([400, "messages"]), "a long word is tokenized in time");
    assert_eq!(out["control_tokens"], serde_json::json!([400, "messages"]));

    // 24 at once against a batch of 4 and a queue of 4: the overflow is told
    // to come back, the rest are served, and so is the next request.
    let flood: Vec<(u64, Value)> = serde_json::from_value(out["flood"].clone()).unwrap();
    let served = flood.iter().filter(|(status, _)| *status == 200).count();
    let busy = flood.iter().filter(|(status, retry)| *status == 503 && retry == "1").count();
    assert_eq!(served + busy, flood.len(), "only 200 or 503 with Retry-After: {flood:?}");
    assert!(served >= 4 && busy >= 1, "{served} served, {busy} told to retry");
    assert_eq!(out["after_flood"], true);
    drop(server);
}
