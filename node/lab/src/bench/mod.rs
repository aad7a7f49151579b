//! Measurements printed as figures. `poi-lab bench size` answers DESIGN §3's size
//! goal and the effect of half log-probs on distance2.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{ensure, Context};
use clap::Subcommand;

mod attacks;
mod cpus;
mod history;
mod model;
mod network;
mod serve;
mod store;
mod votes;
use poi_artifact::{f16, ArtifactBody, Candidate, FinishReason, Generation, Keypair, Request};
use poi_chain_spec::ChainSpec;
use poi_verifier::{distance2, TopLogprobs};
use serde::Deserialize;
use serde_json::json;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Canonical artifact size per generated token at the chain's k, against
    /// naive and OpenAI-style encodings, and the distance2 error of half
    /// log-probs, on the candidate lists of a distance2 vector file.
    Size {
        /// distance2 reference vectors (realistic top-k lists).
        #[arg(long, default_value = "../shared/vectors/distance2.json")]
        vectors: PathBuf,
        /// Generated tokens per artifact.
        #[arg(long, default_value_t = 256)]
        positions: usize,
    },
    /// Model speed on this machine, side by side in one run: generating N
    /// tokens with the KV cache (the miner) against the teacher-forced prefill
    /// of the same tokens (the full check), optionally against llama.cpp's
    /// prompt processing and generation on the same GGUF; peak memory.
    Model(model::Args),
    /// `poi serve` throughput (tokens/s, requests/s) at several numbers of
    /// concurrent clients, side by side with `poi mine` run once per request.
    Serve(serve::Args),
    /// Network throughput (DESIGN §10): nodes on loopback replay-check and
    /// store every artifact; sustained artifacts/s and submit-to-stored-
    /// everywhere latency.
    Network(network::Args),
    /// Store writes (one batch per artifact, as the node writes them) without
    /// and with an fsync per batch (`poi node --sync-writes`), side by side.
    Store(store::Args),
    /// One verdict-history page per filter (time, miner, status, validator,
    /// a time range, a combination) in a store of many artifacts: rows,
    /// index keys examined, latency.
    History(history::Args),
    /// Vote floods against one node's pipeline (DESIGN §7b), side by side
    /// with no flood: votes kept, store size, time spent, honest verdict
    /// latency.
    Votes(votes::Args),
    /// One attacker of `bench network --attack`, in its own process (which
    /// `bench network` starts).
    #[command(hide = true)]
    Attacker(attacks::AttackerArgs),
}

#[derive(Deserialize)]
struct VectorFile {
    cases: Vec<VectorCase>,
}

#[derive(Deserialize)]
struct VectorCase {
    name: String,
    inference: Side,
    validation: Side,
}

#[derive(Deserialize)]
struct Side {
    tokens: Vec<i64>,
    positions: Vec<Vec<Entry>>,
}

#[derive(Deserialize, Clone, Copy)]
struct Entry {
    token: i64,
    logprob: f64,
}

impl Side {
    fn top_logprobs(&self, round: impl Fn(f64) -> f64) -> Vec<TopLogprobs<i64>> {
        self.tokens
            .iter()
            .zip(&self.positions)
            .map(|(&chosen, entries)| TopLogprobs {
                chosen,
                entries: entries.iter().map(|e| (e.token, round(e.logprob))).collect(),
            })
            .collect()
    }
}

pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    let (vectors, positions) = match command {
        BenchCommand::Size { vectors, positions } => (vectors, positions),
        BenchCommand::Model(args) => return model::run(args),
        BenchCommand::Serve(args) => return serve::run(args),
        BenchCommand::Network(args) => return network::run(args),
        BenchCommand::Store(args) => return store::run(args),
        BenchCommand::History(args) => return history::run(args),
        BenchCommand::Votes(args) => return votes::run(args),
        BenchCommand::Attacker(args) => return attacks::run_attacker(args),
    };
    let text = std::fs::read_to_string(&vectors).with_context(|| format!("reading {}", vectors.display()))?;
    let file: VectorFile = serde_json::from_str(&text).context("not a distance2 vector file")?;
    let spec = ChainSpec::devnet();
    let k = usize::from(spec.logged_k);
    let pool: Vec<Vec<Entry>> = file
        .cases
        .iter()
        .filter(|c| !c.name.starts_with("sequence-mismatch"))
        .flat_map(|c| c.inference.positions.iter().cloned())
        .filter(|p| p.len() == k && p.iter().all(|e| (0..i64::from(spec.model.vocab_size)).contains(&e.token)))
        .collect();
    ensure!(!pool.is_empty(), "no k = {k} positions in {}", vectors.display());

    let size = |n: usize| artifact_bytes(&spec, &pool, n);
    let total = size(positions);
    let marginal = (size(2 * positions) - total) as f64 / positions as f64;
    let openai = openai_json_bytes(&pool, positions) as f64 / positions as f64;
    println!(
        "canonical artifact, k = {k}, {positions} generated tokens, 32-token prompt ({} realistic positions as data)",
        pool.len()
    );
    println!("  total                     {total} bytes");
    println!("  per generated token       {:.1} bytes (total / tokens; goal <= 96)", total as f64 / positions as f64);
    println!("  marginal per token        {marginal:.1} bytes (size(2n) - size(n)) / n");
    println!("  naive (u32, f32) pairs    {} bytes per token", k * 8);
    println!("  OpenAI-style JSON         {openai:.0} bytes per token (top_logprobs = {k}, token_id:N strings, no bytes arrays)");

    let (cases, max_delta, max_entry) = half_effect(&file);
    println!("half log-probs and distance2 ({cases} non-mismatch cases, prover side rounded, validator exact):");
    println!("  max |distance2(half) - distance2(exact)|   {max_delta:.3e}");
    println!("  max per-entry contribution error           {max_entry:.3e} (entries with |logprob| >= 6.1e-5)");
    Ok(ExitCode::SUCCESS)
}

fn artifact_bytes(spec: &ChainSpec, pool: &[Vec<Entry>], n: usize) -> usize {
    let positions: Vec<(Vec<Candidate>, u8)> = (0..n)
        .map(|i| {
            let entries = &pool[i % pool.len()];
            let candidates = entries
                .iter()
                .map(|e| Candidate { token: e.token as u32, logprob: poi_artifact::logged_half(e.logprob) })
                .collect();
            (candidates, (i % 3) as u8)
        })
        .collect();
    let body = ArtifactBody {
        chain_id: spec.chain_id(),
        miner: Keypair::from_secret([1; 32]).public(),
        request: Request::new([7; 16], Some(42), (0..32).map(|i| 1000 + 997 * i).collect(), n as u32),
        sampling: spec.sampling,
        generation: Generation::new(spec.logged_k, &positions).expect("k entries per position"),
        finish_reason: FinishReason::MaxTokens,
        created_at_ms: 0,
    };
    body.sign(&Keypair::from_secret([1; 32])).encode().len()
}

fn openai_json_bytes(pool: &[Vec<Entry>], n: usize) -> usize {
    let content: Vec<_> = (0..n)
        .map(|i| {
            let entries = &pool[i % pool.len()];
            json!({
                "token": format!("token_id:{}", entries[0].token),
                "logprob": entries[0].logprob,
                "top_logprobs": entries.iter().map(|e| json!({"token": format!("token_id:{}", e.token), "logprob": e.logprob})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"logprobs": {"content": content}}).to_string().len()
}

fn half_effect(file: &VectorFile) -> (usize, f64, f64) {
    let half = |x: f64| f16::from_f64(x).to_f64();
    let contribution = |a: f64, b: f64| (a - b).abs() / (1e-10 + a.abs() + b.abs()) / 2.0;
    let (mut cases, mut max_delta, mut max_entry) = (0, 0.0f64, 0.0f64);
    for case in &file.cases {
        let validation = case.validation.top_logprobs(|x| x);
        let (exact, _) = distance2(&case.inference.top_logprobs(|x| x), &validation);
        if exact < 0.0 {
            continue;
        }
        let (rounded, _) = distance2(&case.inference.top_logprobs(half), &validation);
        cases += 1;
        max_delta = max_delta.max((rounded - exact).abs());
        for (inf, val) in case.inference.positions.iter().zip(&case.validation.positions) {
            for e in inf.iter().filter(|e| e.logprob.abs() >= 6.1e-5) {
                if let Some(v) = val.iter().find(|v| v.token == e.token) {
                    let error = (contribution(half(e.logprob), v.logprob) - contribution(e.logprob, v.logprob)).abs();
                    max_entry = max_entry.max(error);
                }
            }
        }
    }
    (cases, max_delta, max_entry)
}
