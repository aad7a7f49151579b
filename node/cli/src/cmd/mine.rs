//! `poi mine`: generate with the pinned model and sampler v1, then build and
//! sign the artifact.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use poi_artifact::{Keypair, Request};
use poi_model::chat::Message;
use poi_model::generate::{generate, Draws};
use poi_model::runtime::Runtime;

use poi_cli::{ChainArg, ModelArgs};

use crate::keyfile;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "chat", "raw"])))]
pub struct Args {
    /// A user message, wrapped in the model's chat template.
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// A chat as JSON: `[{"role": "user", "content": "…"}, …]`.
    #[arg(long, value_name = "FILE")]
    chat: Option<PathBuf>,
    /// Plain text to continue, without the chat template.
    #[arg(long, value_name = "TEXT")]
    raw: Option<String>,
    /// The requester's seed; random when omitted. The run seed is
    /// SHA256(seed || uuid), so replay is exact.
    #[arg(long)]
    seed: Option<u64>,
    /// The request uuid; random when omitted.
    #[arg(long)]
    uuid: Option<uuid::Uuid>,
    /// Sample from fresh randomness instead of the run seed: the artifact is
    /// unseeded and gets only the surprisal test.
    #[arg(long, conflicts_with = "seed")]
    unseeded: bool,
    /// Most tokens to generate (stops earlier at end of sequence).
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Miner key file (`poi keys generate`); a throwaway key when omitted.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Requester key file: signs (uuid, seed, prompt) so nodes know the miner
    /// did not choose the seed.
    #[arg(long, value_name = "FILE")]
    requester_key: Option<PathBuf>,
    /// Where to write the artifact.
    #[arg(long, short, default_value = "artifact.bin")]
    out: PathBuf,
    /// Write the JSON view instead of canonical binary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    chain: ChainArg,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let spec = args.chain.load()?;
    if args.max_tokens == 0 || args.max_tokens > spec.limits.max_generated_tokens as usize {
        bail!("--max-tokens must be between 1 and the chain's limit of {}", spec.limits.max_generated_tokens);
    }
    let miner = match &args.key {
        Some(path) => keyfile::read(path)?,
        None => {
            tracing::warn!("no --key: signing with a throwaway miner key");
            Keypair::generate()
        }
    };
    let runtime = args.model.load(&spec)?;
    let prompt_tokens = prompt_tokens(&args, &runtime)?;
    if prompt_tokens.len() > spec.limits.max_prompt_tokens as usize {
        bail!("the prompt is {} tokens, the chain's limit is {}", prompt_tokens.len(), spec.limits.max_prompt_tokens);
    }
    let user_seed = if args.unseeded { None } else { Some(args.seed.unwrap_or_else(rand::random)) };
    let mut request = Request {
        request_uuid: *args.uuid.unwrap_or_else(uuid::Uuid::new_v4).as_bytes(),
        user_seed,
        prompt_tokens,
        binding: None,
    };
    let chain_id = spec.chain_id();
    if let Some(path) = &args.requester_key {
        request.bind(&chain_id, &keyfile::read(path)?);
    }

    let progress = ProgressBar::new(args.max_tokens as u64).with_style(
        ProgressStyle::with_template("{spinner} generating {pos}/{len} tokens [{elapsed}] {per_sec}")
            .expect("constant template"),
    );
    let mut external = rand::random::<u64>;
    let draws = match request.run_seed() {
        Some(seed) => Draws::Seeded(seed),
        None => Draws::External(&mut external),
    };
    let started = Instant::now();
    let generated = generate(
        &runtime.model,
        &request.prompt_tokens,
        &spec.sampling,
        spec.logged_k,
        args.max_tokens,
        draws,
        |_| progress.inc(1),
    )?;
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();

    let created_at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let body = generated.body(&spec, miner.public(), request, created_at_ms)?;
    let artifact = body.sign(&miner);
    let bytes = if args.json { artifact.to_json_string().into_bytes() } else { artifact.encode() };
    std::fs::write(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;

    let text = runtime.tokenizer.decode(&generated.tokens)?;
    let mut err = std::io::stderr().lock();
    writeln!(err, "artifact   {} -> {} ({} bytes)", artifact.id(), args.out.display(), bytes.len())?;
    writeln!(
        err,
        "generated  {} tokens in {seconds:.2} s ({:.1} tokens/s), finish: {}",
        generated.tokens.len(),
        generated.tokens.len() as f64 / seconds,
        generated.finish_reason.as_str()
    )?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn prompt_tokens(args: &Args, runtime: &Runtime) -> anyhow::Result<Vec<u32>> {
    let tokens = if let Some(text) = &args.raw {
        runtime.tokenizer.encode(text, false)
    } else if let Some(text) = &args.prompt {
        runtime.chat_tokens(&[Message { role: "user".into(), content: text.clone() }])?
    } else {
        let path = args.chat.as_ref().expect("clap requires one input");
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let messages: Vec<Message> = serde_json::from_str(&text)
            .with_context(|| format!("{}: expected [{{\"role\", \"content\"}}, …]", path.display()))?;
        runtime.chat_tokens(&messages)?
    };
    if tokens.is_empty() {
        bail!("the prompt is empty");
    }
    Ok(tokens)
}
