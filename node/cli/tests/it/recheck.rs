//! A validator killed with SIGKILL in the middle of a dispute re-check: two
//! `poi node` processes with the real model; validator 1 is selected for a
//! fraudulent artifact and rejects it, which calls validator 0 (not
//! selected) to re-check; validator 0 is killed while its model runs. After
//! the restart it resumes the owed check from its store and votes once:
//! the verdict is final and nobody equivocated.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use jsonrpsee::http_client::HttpClientBuilder;
use poi_artifact::{Artifact, Keypair};
use poi_chain_spec::{devnet_keypair, devnet_requester, ChainSpec};
use poi_rpc_api::{PoiApiClient, Status, SubmitResult};
use poi_verifier::verdict::selection;

use crate::process::{field, write_key};

/// A requester-bound artifact with one candidate list edited (the replay
/// check passes it, the full check rejects it) whose id selects validator 1
/// and not validator 0. Ids carry the mining time, so which seed fits
/// varies from run to run.
fn fraud(spec: &ChainSpec, spec_path: &Path, dir: &Path) -> Artifact {
    let miner = Keypair::from_secret([5; 32]);
    let key_path = dir.join("miner.key");
    write_key(&key_path, &miner);
    let (validator0, validator1) = (devnet_keypair(0).vrf(), devnet_keypair(1).vrf());
    for seed in 0..64 {
        let out_path = dir.join(format!("mined-{seed}.bin"));
        let out = Command::new(env!("CARGO_BIN_EXE_poi"))
            .args(["mine", "--prompt", "Describe a lighthouse at night.", "--max-tokens", "96", "--devnet-requester"])
            .args(["--seed", &seed.to_string(), "--chain"])
            .arg(spec_path)
            .arg("--key")
            .arg(&key_path)
            .arg("-o")
            .arg(&out_path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let artifact = Artifact::decode(&std::fs::read(&out_path).unwrap(), 1 << 20).unwrap();
        let (body, _, _) = crate::edit_middle_list(&artifact);
        let edited = body.sign(&miner);
        let id = edited.id();
        let rate = spec.full_check_rate;
        // A swap can break the §4 order (ties, penalties): such an edit is
        // refused at the replay check, which is not the attack here.
        let passes_replay = poi_verifier::ReplayChecker::new(spec.clone()).check(&edited).is_ok();
        if passes_replay && selection(&validator1, &id, rate).0 && !selection(&validator0, &id, rate).0 {
            return edited;
        }
    }
    panic!("no seed of 64 selects validator 1 alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_killed_during_a_dispute_recheck_votes_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ChainSpec::local_devnet(2, 0.5).unwrap();
    assert!(spec.is_requester(&devnet_requester().public()));
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_json_string()).unwrap();
    let keys: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("validator-{i}.key"))).collect();
    for (i, path) in keys.iter().enumerate() {
        write_key(path, &devnet_keypair(i as u32));
    }
    let artifact = fraud(&spec, &spec_path, dir.path());
    let id = artifact.id();

    let checker = crate::process::node(&spec_path, &keys[1], &dir.path().join("data-1"), None, &[]);
    let started = checker.wait_for("node started", Duration::from_secs(120));
    let addr = field(&started, "addrs=[").to_string();
    let bootnode = format!("{addr}/p2p/{}", field(&started, "peer_id="));
    let rpc = format!("http://{}", field(&started, "rpc=Some("));
    let data0 = dir.path().join("data-0");
    let victim = crate::process::node(&spec_path, &keys[0], &data0, Some(&bootnode), &[]);
    victim.wait_for("node started", Duration::from_secs(120));

    let client = HttpClientBuilder::default().build(&rpc).unwrap();
    // Until the victim is connected, gossip has nobody to carry it to; the
    // victim also catches up by sync, but waiting keeps the test short.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let submitted: SubmitResult = client.submit_artifact(hex::encode(artifact.encode())).await.unwrap();
    assert!(submitted.stored);

    let line = victim.wait_for("full check started", Duration::from_secs(120));
    assert!(line.contains(&id.to_hex()) && line.contains("Dispute"), "{line}");
    let mut victim = victim;
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    {
        let store = poi_node::store::Store::open(&data0, spec.clone()).unwrap();
        assert!(store.duty(&id).unwrap().is_some(), "killed before its vote: the re-check is still owed");
        assert!(store.votes_by(&id, &devnet_keypair(0).public()).unwrap().is_empty());
    }

    let restarted = crate::process::node(&spec_path, &keys[0], &data0, Some(&bootnode), &[]);
    restarted.wait_for("full check started", Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(120);
    let verdict = loop {
        let verdict = client.get_verdict(id.to_hex()).await.unwrap();
        if let Some(verdict) = verdict.filter(|v| v.is_final) {
            break verdict;
        }
        assert!(Instant::now() < deadline, "no final verdict within 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(verdict.status, Status::Rejected);
    assert!(verdict.equivocators.is_empty(), "{verdict:?}");
    let votes = client.get_votes(id.to_hex()).await.unwrap();
    let from_victim = votes.iter().filter(|v| v.validator == devnet_keypair(0).public().to_hex()).count();
    assert_eq!((votes.len(), from_victim), (2, 1), "one vote each: {votes:?}");
}
