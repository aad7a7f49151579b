//! `poi mine` → `poi verify --full` on the real model, as the README shows it.
//! The model is fetched by the test command (`scripts/fetch-model.sh`).

use std::process::Output;

use crate::poi;
use poi_artifact::{Artifact, Keypair};

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

/// The sound-checks issue's "done when": an honest `poi mine` artifact with
/// one candidate list edited (a real candidate swapped for another token at
/// the same value, which the replay check cannot see) is rejected by
/// `poi verify --full`, naming the position; the untouched one is accepted.
#[test]
fn verify_full_rejects_one_edited_candidate_list_and_accepts_the_untouched_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("miner.key");
    assert!(poi(&["keys", "generate", "--out", key_path.to_str().unwrap()]).status.success());
    let honest = dir.path().join("honest.bin");
    let args = ["mine", "--prompt", "Name three colours.", "--seed", "7", "--max-tokens", "16", "--devnet-requester"];
    let out = poi(&[&args[..], &["--key", key_path.to_str().unwrap(), "-o", honest.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("seeding    requester-bound"), "{}", text(&out));
    let out = poi(&["verify", "--full", honest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ACCEPT (full check)"), "{}", text(&out));

    let artifact = Artifact::decode(&std::fs::read(&honest).unwrap(), 1 << 20).unwrap();
    let (body, position, replaced) = crate::edit_middle_list(&artifact);
    let key = poi_cli_key(&key_path);
    let edited = dir.path().join("edited.bin");
    std::fs::write(&edited, body.sign(&key).encode()).unwrap();

    let out = poi(&["verify", "--full", edited.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("verdict    PASS (replay check)"), "{}", text(&out));
    let expected = format!("position {position}: the model ranks token {replaced} at");
    assert!(text(&out).contains(&expected), "{}", text(&out));
}

/// A validator cannot be started under another profile than the chain's.
#[test]
fn a_node_refuses_another_numerics_profile() {
    let out = poi(&["node", "--profile", "dequant-f32-cpu"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--profile \"dequant-f32-cpu\" refused"), "{}", text(&out));
    assert!(text(&out).contains("gguf-native-cpu/v3"), "{}", text(&out));
}

/// The devnet's validator keys are public: a node that ran its spec by
/// default, or any spec listing one of them, would take votes anyone can
/// sign. Refused unless `--dev`.
#[test]
fn a_node_refuses_the_devnet_keys_unless_dev() {
    let out = poi(&["node", "--key", "absent.key", "--data", "absent"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--chain SPEC is required (or --dev"), "{}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("chain.json");
    let local = poi_chain_spec::ChainSpec::local_devnet(2, 0.5).unwrap();
    std::fs::write(&spec, serde_json::to_string(&local).unwrap()).unwrap();
    let out = poi(&["node", "--chain", spec.to_str().unwrap(), "--key", "absent.key", "--data", "absent"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("lists the well-known devnet validator keys"), "{}", text(&out));
    // With --dev it gets past the check: to the missing key file.
    let out = poi(&["node", "--dev", "--chain", spec.to_str().unwrap(), "--key", "absent.key", "--data", "absent"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!text(&out).contains("devnet validator keys") && text(&out).contains("absent.key"), "{}", text(&out));
}

/// The miner key `poi keys generate` wrote (JSON with the hex secret).
fn poi_cli_key(path: &std::path::Path) -> Keypair {
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let secret = hex::decode(file["secret_key"].as_str().unwrap()).unwrap();
    Keypair::from_secret(secret.try_into().unwrap())
}
