//! `poi-lab experiment --quick` on the real model: the whole matrix on one prompt
//! of each kind, then a second run that must come entirely from the cache.

use std::process::{Command, Output};

fn experiment(out: &std::path::Path, cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_poi-lab"))
        .args(["experiment", "--quick", "--out"])
        .arg(out)
        .arg("--cache")
        .arg(cache)
        .output()
        .expect("poi-lab runs")
}

fn row<'a>(rows: &'a [serde_json::Value], decoding: &str, pair: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["decoding"] == decoding && r["pair"] == pair)
        .unwrap_or_else(|| panic!("no {decoding} {pair} row"))
}

fn row_named<'a>(rows: &'a [serde_json::Value], attack: &str) -> &'a serde_json::Value {
    rows.iter().find(|r| r["attack"] == attack).unwrap_or_else(|| panic!("no {attack} row"))
}

#[test]
fn quick_matrix_writes_the_report_separates_honest_from_fraud_and_resumes_from_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (out_dir, cache) = (dir.path().join("docs"), dir.path().join("cache"));
    let out = experiment(&out_dir, &cache);
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");

    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("results/results.json")).unwrap()).unwrap();
    let pairs = results["pairs"].as_array().unwrap();
    for decoding in ["sampled", "greedy"] {
        for honest in ["honest", "honest-1-thread"] {
            let r = row(pairs, decoding, honest);
            assert_eq!(r["n"], 4, "{r}");
            assert_eq!(r["rejected_chain"], 0.0, "honest rejected: {r}");
            assert_eq!(r["rejected_exact"], 0.0, "honest rejected by the exact full check: {r}");
        }
        assert_eq!(row(pairs, decoding, "cheap-q2k")["rejected_exact"], 1.0);
        // A cheap model's own log-probs are far from the pinned model's.
        let cheap = row(pairs, decoding, "cheap-q2k");
        assert_eq!(cheap["auc_distance2"], 1.0, "{cheap}");
        assert!(
            cheap["median_distance2"].as_f64().unwrap()
                > row(pairs, decoding, "honest")["max_distance2"].as_f64().unwrap()
        );
    }
    // The pre-fill proof is the pinned model's own top-k, so its distance is
    // honest-like; the seeded replay check is what catches it.
    let prefixes = results["prefixes"].as_array().unwrap();
    let replay = |decoding: &str, pair: &str| row(prefixes, decoding, pair)["replay_rejected"].as_f64().unwrap();
    assert_eq!(replay("sampled", "honest"), 0.0);
    assert!(replay("sampled", "prefill-q2k") > 0.5, "{prefixes:?}");
    assert_eq!(replay("greedy", "prefill-q2k"), 1.0, "{prefixes:?}");
    // The adaptive attacker repairs its drafts until the kept-set rule has
    // nothing left to reject.
    for pair in ["repaired-q4_0-unseeded", "repaired-q2k-unseeded"] {
        assert_eq!(row(pairs, "sampled", pair)["n"], 4);
        for p in prefixes.iter().filter(|p| p["pair"] == pair) {
            assert_eq!(p["outside_kept_set"], 0.0, "{p}");
        }
    }
    assert!(row(pairs, "sampled", "repaired-q2k-unseeded")["median_replaced_tokens"].as_f64().unwrap() >= 1.0);

    // The honest population: every one accepted by both checks.
    let honest = &results["honest_checks"];
    assert_eq!(honest["checks"], 8, "{honest}");
    assert_eq!(honest["rejected"], 0, "{honest}");
    // The red team: no changed seeded artifact accepted, the steered lists
    // caught by the full check after passing replay.
    let red_team = results["red_team"].as_array().unwrap();
    for attack in red_team.iter().filter(|r| r["seeding"] != "unseeded") {
        assert_eq!(attack["changed_accepted"], 0, "{attack}");
    }
    let steered = row_named(red_team, "steer lists to q4_0's tokens");
    assert_eq!(steered["tried"], 4);
    assert_eq!(steered["by_rule"]["full check: Omitted"], 4, "{steered}");
    let cut = row_named(red_team, "forced early stop: cut short, no eos");
    assert_eq!(cut["by_rule"]["replay: structure StoppedEarly"], 4, "{cut}");
    // The sequential test: evidence for every tilt and both launderers.
    let rows = results["miner_test"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 12, "{rows:?}");
    assert!(rows.iter().all(|r| r["honest_looks"] == 8 && r["honest_flagged_looks"] == 0), "{rows:?}");

    let report = std::fs::read_to_string(out_dir.join("RESULTS.md")).unwrap();
    let png = std::fs::read(out_dir.join(results["miner_test_plot"].as_str().unwrap())).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    assert!(
        report.contains("| steer lists to q4_0's tokens | requester-bound | 4 | 4 | 4 | 0 | `full check: Omitted` 4 |"),
        "{report}"
    );
    for (key, file) in results["plots"].as_object().unwrap() {
        let png = std::fs::read(out_dir.join(file.as_str().unwrap())).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{key} is not a PNG");
        assert!(report.contains(file.as_str().unwrap()), "RESULTS.md does not show {file}");
    }
    assert!(results["plots"].as_object().unwrap().contains_key("sampled/swap-f32"));
    assert!(report.contains("| sampled | `cheap-q2k` | 4 |"), "{report}");

    // Everything again from the cache: the same results, nothing rewritten.
    let before = modified_times(&cache);
    assert!(before.len() > 40, "{} cached files", before.len());
    let again_dir = dir.path().join("again");
    let out = experiment(&again_dir, &cache);
    assert!(out.status.success());
    let again: serde_json::Value =
        serde_json::from_slice(&std::fs::read(again_dir.join("results/results.json")).unwrap()).unwrap();
    assert_eq!(again["pairs"], results["pairs"]);
    assert_eq!(modified_times(&cache), before);
}

fn modified_times(dir: &std::path::Path) -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                out.push((entry.path(), entry.metadata().unwrap().modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}
