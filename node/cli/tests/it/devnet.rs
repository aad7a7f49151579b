//! `poi devnet`, the README's main job, end to end on the real model: three
//! validators on loopback, every one selected, a miner submitting one
//! artifact of each kind over JSON-RPC.

use std::process::Command;

#[test]
fn devnet_accepts_honest_rejects_fraud_and_every_node_agrees() {
    let out = Command::new(env!("CARGO_BIN_EXE_poi"))
        .args(["devnet", "--nodes", "3", "--full-check-rate", "1", "--max-tokens", "24", "--rpc-port", "0", "--exit"])
        .output()
        .expect("poi runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{all}");
    let summary = stdout.split_once("\nartifact").map(|(_, table)| table).expect("a summary table");
    let row =
        |kind: &str| summary.lines().find(|l| l.starts_with(kind)).unwrap_or_else(|| panic!("no {kind} row in\n{all}"));
    // Three counted votes on every node.
    assert_eq!(row("honest ").matches("accepted (3)").count(), 3, "{all}");
    assert_eq!(row("cheap model").matches("rejected (3)").count(), 3, "{all}");
    assert!(row("pre-fill, seeded").contains("refused at submit by the replay check"), "{all}");
    assert!(stdout.contains("every node agrees: yes"), "{all}");
}
