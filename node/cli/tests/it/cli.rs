//! The `poi` binary end to end: real processes, real files.

use poi_verifier::simulate as common;

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::poi;
use common::Chooser;
use poi_artifact::{Artifact, Generation};
use poi_chain_spec::ChainSpec;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// An honest artifact with one chosen index changed and re-signed: the
/// signature is valid, the replay is not.
fn tampered(artifact: &Artifact, position: usize) -> Artifact {
    let mut body = artifact.body.clone();
    let mut positions = body.generation.to_positions();
    positions[position].1 = if positions[position].1 == 0 { 1 } else { 0 };
    body.generation = Generation::new(body.generation.k(), &positions).unwrap();
    body.sign(&common::miner())
}

/// The README's demo artifacts are regenerated only on purpose (`POI_BLESS=1`).
#[test]
fn example_artifacts_verify_as_documented() {
    let spec = ChainSpec::devnet();
    let honest_path = examples().join("honest-seeded.json");
    let tampered_path = examples().join("tampered-replay.json");
    if std::env::var_os("POI_BLESS").is_some() {
        let honest = common::build(&spec, 32, 2024, Chooser::Seeded).artifact;
        std::fs::write(&honest_path, honest.to_json_string() + "\n").unwrap();
        std::fs::write(&tampered_path, tampered(&honest, 0).to_json_string() + "\n").unwrap();
    }
    let out = poi(&["verify", honest_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("verdict    PASS"));

    let out = poi(&["verify", tampered_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("REJECT: position 0: seeded sampling chooses"), "{}", stdout(&out));
}

#[test]
fn verify_reads_binary_and_json_and_reports_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ChainSpec::devnet();
    let built = common::build(&spec, 40, 5, Chooser::Seeded);
    let bin = dir.path().join("a.poi");
    std::fs::write(&bin, &built.bytes).unwrap();

    let out = poi(&["verify", bin.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "pass");
    assert_eq!(report["artifact_id"], built.artifact.id().to_hex());
    assert_eq!(report["positions"], 40);

    // Convert to JSON and back: same id, same bytes.
    let json = dir.path().join("a.json");
    let back = dir.path().join("b.poi");
    assert!(poi(&["convert", bin.to_str().unwrap(), json.to_str().unwrap()]).status.success());
    assert!(poi(&["convert", json.to_str().unwrap(), back.to_str().unwrap()]).status.success());
    assert_eq!(std::fs::read(&back).unwrap(), built.bytes);

    let bad = tampered(&built.artifact, 3);
    let bad_path = dir.path().join("bad.poi");
    std::fs::write(&bad_path, bad.encode()).unwrap();
    let out = poi(&["verify", bad_path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "reject");
    assert_eq!(report["position"], 3);

    // Garbage is a rejection with a reason, not a crash.
    let garbage = dir.path().join("garbage.poi");
    std::fs::write(&garbage, [1u8, 2, 3]).unwrap();
    let out = poi(&["verify", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("cannot decode artifact"));

    // A missing file is an operator error (exit 2), named.
    let out = poi(&["verify", dir.path().join("missing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
}

#[test]
fn verify_uses_the_given_chain_spec() {
    let dir = tempfile::tempdir().unwrap();
    let mut other = ChainSpec::devnet();
    other.name = "other-chain".into();
    let spec_path = dir.path().join("other.json");
    std::fs::write(&spec_path, other.to_json_string()).unwrap();
    let built = common::build(&ChainSpec::devnet(), 8, 6, Chooser::Seeded);
    let bin = dir.path().join("a.poi");
    std::fs::write(&bin, &built.bytes).unwrap();
    let out = poi(&["verify", bin.to_str().unwrap(), "--chain", spec_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("is for chain"));

    std::fs::write(&spec_path, "{\"name\": 1}").unwrap();
    let out = poi(&["verify", bin.to_str().unwrap(), "--chain", spec_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn keys_generate_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.key");
    let out = poi(&["keys", "generate", "--out", key.to_str().unwrap()]);
    assert!(out.status.success());
    let public = stdout(&out).trim().to_string();
    let entry: serde_json::Value = serde_json::from_str(&public).unwrap();
    assert_eq!(entry["public_key"].as_str().unwrap().len(), 64, "{public}");
    assert_eq!(entry["vrf_key"].as_str().unwrap().len(), 64, "{public}");
    assert_eq!(entry["weight"], 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert_eq!(stdout(&poi(&["keys", "show", key.to_str().unwrap()])).trim(), public);
    // Never overwrite a key silently.
    let out = poi(&["keys", "generate", "--out", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&poi(&["keys", "show", key.to_str().unwrap()])).trim(), public);
}

#[test]
fn compare_two_openai_responses() {
    let dir = tempfile::tempdir().unwrap();
    let chat = |lps: [f64; 2]| {
        serde_json::json!({"choices": [{"logprobs": {"content": [
            {"token": "Hi", "logprob": lps[0], "top_logprobs": [{"token": "Hi", "logprob": lps[0]}, {"token": "Yo", "logprob": lps[1]}]},
        ]}}]})
        .to_string()
    };
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    std::fs::write(&a, chat([-0.5, -1.5])).unwrap();
    std::fs::write(&b, chat([-0.5, -1.5])).unwrap();
    let out = poi(&["compare", a.to_str().unwrap(), b.to_str().unwrap(), "--json"]);
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Identical, n = 1, k = 2: (0 + 1) / (100 * 2 + 1).
    assert!((result["distance2"].as_f64().unwrap() - 1.0 / 201.0).abs() < 1e-15);
    assert_eq!(result["match_ratio"], 1.0);

    // The text-completion form: maps of token -> log-prob.
    let text =
        serde_json::json!({"choices": [{"logprobs": {"tokens": ["Hi"], "top_logprobs": [{"Yo": -1.5, "Hi": -0.5}]}}]});
    std::fs::write(&b, text.to_string()).unwrap();
    let out = poi(&["compare", a.to_str().unwrap(), b.to_str().unwrap(), "--json"]);
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!((result["distance2"].as_f64().unwrap() - 1.0 / 201.0).abs() < 1e-15);

    std::fs::write(&b, "{\"choices\": [{}]}").unwrap();
    let out = poi(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no choices[0].logprobs"));
}
