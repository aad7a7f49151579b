//! `poi-lab bench model`: DESIGN §10's full-check speed goals, measured.

use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context};
use poi_model::chat::Message;
use poi_model::generate::{generate, teacher_forced_top_k, Draws, StopRules};
use serde::Deserialize;

use poi_cli::ChainArg;
use poi_cli::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Tokens to generate (and then prefill).
    #[arg(long, default_value_t = 256)]
    tokens: usize,
    /// Repetitions of each measurement; the best is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also run scripts/bench-llama-cpp.py (needs `pip install llama-cpp-python`)
    /// on the same GGUF and token count, and print the ratios.
    #[arg(long)]
    llama_cpp: bool,
    #[command(flatten)]
    chain: ChainArg,
    #[command(flatten)]
    model: ModelArgs,
}

const PROMPT: &str = "Write a long story about a lighthouse keeper who finds a message in a bottle.";

#[derive(Deserialize)]
struct LlamaCpp {
    prefill_tokens_per_s: f64,
    generate_tokens_per_s: f64,
    threads: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let spec = args.chain.load()?;
    let runtime = args.model.load(&spec)?;
    let prompt = runtime.chat_tokens(&[Message { role: "user".into(), content: PROMPT.into() }])?;
    // The sampler must not stop early: greedy without eos would still stop,
    // so generate with the chain's sampling and a fixed seed, then measure
    // whatever length came out.
    let mut best_generate = f64::INFINITY;
    let mut tokens = Vec::new();
    for _ in 0..args.runs.max(1) {
        let started = Instant::now();
        let stop = StopRules { max_tokens: args.tokens, tokens: &[] };
        let out =
            generate(&runtime.model, &prompt, &spec.sampling, spec.logged_k, &stop, Draws::Seeded([7; 32]), |_| {})?;
        best_generate = best_generate.min(started.elapsed().as_secs_f64());
        tokens = out.tokens;
    }
    let mut best_prefill = f64::INFINITY;
    for _ in 0..args.runs.max(1) {
        let started = Instant::now();
        teacher_forced_top_k(&runtime.model, &prompt, &tokens, &spec.sampling, spec.logged_k)?;
        best_prefill = best_prefill.min(started.elapsed().as_secs_f64());
    }
    let n = tokens.len() as f64;
    let total = (prompt.len() + tokens.len()) as f64;
    let generate_rate = n / best_generate;
    let prefill_rate = total / best_prefill;
    println!(
        "model      {} under {} ({} threads)",
        spec.model.name,
        runtime.model.profile().id,
        rayon::current_num_threads()
    );
    println!("sequence   {} prompt + {} generated tokens, best of {} runs", prompt.len(), tokens.len(), args.runs);
    println!("generate   {best_generate:.3} s  {generate_rate:>8.1} tokens/s  (miner: prompt prefill + KV-cache decode, top-k logging)");
    println!(
        "full check {best_prefill:.3} s  {prefill_rate:>8.1} tokens/s  (validator: teacher-forced prefill + top-k)"
    );
    println!(
        "ratio      full check is {:.2}x faster than generating the same tokens (goal >= 10x)",
        best_generate / best_prefill
    );
    if args.llama_cpp {
        let path = args.model.model.clone().unwrap_or_else(|| poi_model::runtime::default_model_path(&spec));
        let reference = llama_cpp(&path, prompt.len() + tokens.len(), tokens.len())?;
        println!(
            "llama.cpp  prompt processing {:.1} tokens/s, generation {:.1} tokens/s ({} threads)",
            reference.prefill_tokens_per_s, reference.generate_tokens_per_s, reference.threads
        );
        println!(
            "ratio      full check vs llama.cpp prompt processing: {:.2}x (goal >= 1.0x); generation vs llama.cpp: {:.2}x",
            prefill_rate / reference.prefill_tokens_per_s,
            generate_rate / reference.generate_tokens_per_s
        );
    }
    match crate::stats::peak_rss_mib() {
        Some(mib) => println!("peak RSS   {mib:.0} MiB"),
        None => println!("peak RSS   unknown (no /proc/self/status)"),
    }
    Ok(ExitCode::SUCCESS)
}

fn llama_cpp(model: &std::path::Path, prefill: usize, generate: usize) -> anyhow::Result<LlamaCpp> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/bench-llama-cpp.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(model)
        .args(["--prefill", &prefill.to_string(), "--generate", &generate.to_string()])
        .args(["--threads", &rayon::current_num_threads().to_string()])
        .output()
        .context("running python3 scripts/bench-llama-cpp.py")?;
    if !output.status.success() {
        bail!("bench-llama-cpp.py failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    serde_json::from_slice(&output.stdout).context("bench-llama-cpp.py printed no JSON result")
}
