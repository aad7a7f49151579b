//! `poi mine` → `poi verify --full` on the real model, as the README shows it.
//! The model is fetched by the test command (`scripts/fetch-model.sh`).

use std::process::Output;

use crate::poi;
use poi_artifact::Artifact;

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn mine_then_verify_full_accepts_and_a_cheaper_miner_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("miner.key");
    assert!(poi(&["keys", "generate", "--out", keys.to_str().unwrap()]).status.success());
    let honest = dir.path().join("honest.bin");
    let cheap = dir.path().join("cheap.json");
    let common = ["--prompt", "Name three colours.", "--seed", "42", "--max-tokens", "32", "--key"];

    let out = poi(&[&["mine"][..], &common, &[keys.to_str().unwrap(), "-o", honest.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let artifact = Artifact::decode(&std::fs::read(&honest).unwrap(), 1 << 20).unwrap();
    assert_eq!(artifact.body.request.user_seed, Some(42));
    assert!(artifact.body.generation.len() <= 32);

    let out = poi(&["verify", "--full", "--json", honest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "pass");
    assert_eq!(report["full_check"]["accepted"], true);
    assert_eq!(report["full_check"]["match_ratio"], 1.0);

    // Same request, generated under a cheaper requantized model.
    let args = [&["mine"][..], &common, &[keys.to_str().unwrap(), "--json", "--profile", "requant-q2k-cpu"]].concat();
    let out = poi(&[&args[..], &["-o", cheap.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let out = poi(&["verify", "--full", cheap.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("verdict    PASS (replay check)"), "the replay check cannot see the model");
    assert!(text(&out).contains("REJECT (full check)"), "{}", text(&out));
}

#[test]
fn mine_reports_bad_input_clearly() {
    let out = poi(&["mine", "--prompt", "x", "--max-tokens", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--max-tokens must be between 1"), "{}", text(&out));
    let out = poi(&["mine", "--prompt", "x", "--profile", "fp4-dreams"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("unknown numerics profile"), "{}", text(&out));
    let out = poi(&["mine", "--prompt", "x", "--model", "/nonexistent.gguf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("not found"), "{}", text(&out));
}
