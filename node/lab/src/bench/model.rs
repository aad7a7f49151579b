//! `poi-lab bench model`: DESIGN §10's full-check speed goals, measured, and
//! side by side with llama.cpp on the same GGUF in the same run.

use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context};
use poi_model::chat::Message;
use poi_model::generate::{generate, teacher_forced_top_k, Draws, StopRules};
use poi_model::runtime::Runtime;
use serde::{Deserialize, Serialize};

use poi_chain_spec::ChainSpec;
use poi_cli::ChainArg;
use poi_cli::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Tokens to generate (and then check), one measurement per value:
    /// `--tokens 256,1024`.
    #[arg(long, value_delimiter = ',', default_value = "256")]
    tokens: Vec<usize>,
    /// Thread counts to measure at, each in its own pool: `--threads 1,2`
    /// (default: one per core).
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Repetitions of each measurement; the best is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also run scripts/bench-llama-cpp.py (needs `pip install llama-cpp-python`)
    /// on the same GGUF, token counts and threads, and print the ratios.
    #[arg(long)]
    llama_cpp: bool,
    /// End with one JSON object on the last line: every measurement, peak
    /// RSS, and the worst ratios against llama.cpp.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    chain: ChainArg,
    #[command(flatten)]
    model: ModelArgs,
}

const PROMPT: &str = "Write a long story about a lighthouse keeper who finds a message in a bottle.";

#[derive(Deserialize, Serialize, Clone, Copy)]
struct LlamaCpp {
    prefill_tokens_per_s: f64,
    generate_tokens_per_s: f64,
}

/// One (threads, tokens) measurement.
#[derive(Serialize)]
struct Measurement {
    threads: usize,
    prompt_tokens: usize,
    generated_tokens: usize,
    /// Prompt prefill and decoding together, as `poi mine` runs them.
    generate_tokens_per_s: f64,
    /// Decoding only, after the first token: what llama.cpp's generation
    /// figure measures.
    decode_tokens_per_s: f64,
    /// Teacher-forced prefill of prompt and generation with the top-k.
    full_check_tokens_per_s: f64,
    llama_cpp: Option<LlamaCpp>,
    full_check_vs_llama_cpp_pp: Option<f64>,
    generate_vs_llama_cpp_tg: Option<f64>,
}

#[derive(Serialize)]
struct Summary<'a> {
    model: &'a str,
    profile: &'a str,
    measurements: &'a [Measurement],
    peak_rss_mib: Option<f64>,
    /// The worst over all measurements: the goal must hold at each.
    full_check_vs_llama_cpp_pp: Option<f64>,
    generate_vs_llama_cpp_tg: Option<f64>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let spec = args.chain.load()?;
    let runtime = args.model.load(&spec)?;
    let prompt = runtime.chat_tokens(&[Message { role: "user".into(), content: PROMPT.into() }])?;
    let threads = if args.threads.is_empty() { vec![rayon::current_num_threads()] } else { args.threads.clone() };
    println!("model      {} under {}", spec.model.name, runtime.model.profile().id);
    let mut measurements = Vec::new();
    for &tokens in &args.tokens {
        for &threads in &threads {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
            let mut m = pool.install(|| measure(&runtime, &spec, &prompt, tokens, args.runs.max(1)))?;
            m.threads = threads;
            if args.llama_cpp {
                let path = args.model.model.clone().unwrap_or_else(|| poi_model::runtime::default_model_path(&spec));
                let reference = llama_cpp(&path, m.prompt_tokens + m.generated_tokens, m.generated_tokens, threads)?;
                m.full_check_vs_llama_cpp_pp = Some(m.full_check_tokens_per_s / reference.prefill_tokens_per_s);
                m.generate_vs_llama_cpp_tg = Some(m.decode_tokens_per_s / reference.generate_tokens_per_s);
                m.llama_cpp = Some(reference);
            }
            print(&m, args.runs);
            measurements.push(m);
        }
    }
    let peak_rss_mib = crate::stats::peak_rss_mib();
    match peak_rss_mib {
        Some(mib) => {
            println!("peak RSS   {mib:.0} MiB (the whole run, llama.cpp excluded: it runs in its own process)")
        }
        None => println!("peak RSS   unknown (no /proc/self/status)"),
    }
    if args.json {
        let worst = |ratio: fn(&Measurement) -> Option<f64>| {
            measurements.iter().map(ratio).collect::<Option<Vec<f64>>>().and_then(|r| r.into_iter().reduce(f64::min))
        };
        let summary = Summary {
            model: &spec.model.name,
            profile: &runtime.model.profile().id,
            measurements: &measurements,
            peak_rss_mib,
            full_check_vs_llama_cpp_pp: worst(|m| m.full_check_vs_llama_cpp_pp),
            generate_vs_llama_cpp_tg: worst(|m| m.generate_vs_llama_cpp_tg),
        };
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Best of `runs` for generation and for the full check of what was generated.
fn measure(
    runtime: &Runtime,
    spec: &ChainSpec,
    prompt: &[u32],
    tokens: usize,
    runs: usize,
) -> anyhow::Result<Measurement> {
    // The chain's sampling with a fixed seed: the sampler may still stop
    // at eos, so the full check measures whatever length came out.
    let (mut best_generate, mut best_decode) = (f64::INFINITY, f64::INFINITY);
    let mut generated = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let mut first_token = None;
        let stop = StopRules { max_tokens: tokens, tokens: &[] };
        let out =
            generate(&runtime.model, prompt, &spec.sampling, spec.logged_k, &stop, Draws::Seeded([7; 32]), |_| {
                first_token.get_or_insert_with(Instant::now);
            })?;
        best_generate = best_generate.min(started.elapsed().as_secs_f64());
        best_decode = best_decode.min(first_token.map_or(f64::INFINITY, |t| t.elapsed().as_secs_f64()));
        generated = out.tokens;
    }
    if generated.len() < 2 {
        bail!("the model stopped after {} tokens: nothing to measure", generated.len());
    }
    let mut best_check = f64::INFINITY;
    for _ in 0..runs {
        let started = Instant::now();
        teacher_forced_top_k(&runtime.model, prompt, &generated, &spec.sampling, spec.logged_k)?;
        best_check = best_check.min(started.elapsed().as_secs_f64());
    }
    let n = generated.len();
    Ok(Measurement {
        threads: rayon::current_num_threads(),
        prompt_tokens: prompt.len(),
        generated_tokens: n,
        generate_tokens_per_s: n as f64 / best_generate,
        decode_tokens_per_s: (n - 1) as f64 / best_decode,
        full_check_tokens_per_s: (prompt.len() + n) as f64 / best_check,
        llama_cpp: None,
        full_check_vs_llama_cpp_pp: None,
        generate_vs_llama_cpp_tg: None,
    })
}

fn print(m: &Measurement, runs: usize) {
    println!();
    println!(
        "sequence   {} prompt + {} generated tokens, {} threads, best of {runs} runs",
        m.prompt_tokens, m.generated_tokens, m.threads
    );
    println!(
        "generate   {:>8.1} tokens/s  (miner: prompt prefill + KV-cache decode, top-k logging); decode alone {:.1} tokens/s",
        m.generate_tokens_per_s, m.decode_tokens_per_s
    );
    println!("full check {:>8.1} tokens/s  (validator: teacher-forced prefill + top-k)", m.full_check_tokens_per_s);
    println!(
        "ratio      full check is {:.2}x faster than generating the same tokens",
        m.full_check_tokens_per_s * m.generated_tokens as f64
            / ((m.prompt_tokens + m.generated_tokens) as f64 * m.generate_tokens_per_s)
    );
    if let (Some(reference), Some(pp), Some(tg)) =
        (m.llama_cpp, m.full_check_vs_llama_cpp_pp, m.generate_vs_llama_cpp_tg)
    {
        println!(
            "llama.cpp  prompt processing {:.1} tokens/s, generation {:.1} tokens/s",
            reference.prefill_tokens_per_s, reference.generate_tokens_per_s
        );
        println!("ratio      full check vs llama.cpp prompt processing {pp:.2}x (goal >= 1.2x); decode vs llama.cpp generation {tg:.2}x (goal >= 1.0x)");
    }
}

fn llama_cpp(model: &std::path::Path, prefill: usize, generate: usize, threads: usize) -> anyhow::Result<LlamaCpp> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/bench-llama-cpp.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(model)
        .args(["--prefill", &prefill.to_string(), "--generate", &generate.to_string()])
        .args(["--threads", &threads.to_string()])
        .output()
        .context("running python3 scripts/bench-llama-cpp.py")?;
    if !output.status.success() {
        bail!("bench-llama-cpp.py failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    serde_json::from_slice(&output.stdout).context("bench-llama-cpp.py printed no JSON result")
}
