//! `poi mine`: generate with the pinned model and sampler v1, then build and
//! sign the artifact.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use poi_artifact::{Keypair, Request, MAX_STOP_TOKENS};
use poi_chain_spec::devnet_requester;
use poi_model::chat::Message;
use poi_model::generate::{generate, Draws, StopRules};
use poi_model::runtime::Runtime;
use poi_verifier::SeedingClass;

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
    /// Most tokens to generate (stops earlier at end of sequence or a stop
    /// token). Part of the request: an artifact that ends early without
    /// eos or a stop token is rejected.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// A token id that ends the generation (repeatable), e.g. `<|im_end|>`'s.
    #[arg(long = "stop-token", value_name = "ID")]
    stop_tokens: Vec<u32>,
    /// Miner key file (`poi keys generate`); a throwaway key when omitted.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Requester key file: signs (uuid, seed, prompt, stop rules). Only a key
    /// in the chain spec's requester set makes the artifact requester-bound;
    /// without one it is miner-seeded (every validator fully checks it).
    #[arg(long, value_name = "FILE", conflicts_with = "devnet_requester")]
    requester_key: Option<PathBuf>,
    /// Bind with the devnet's well-known requester key (devnet chains only).
    #[arg(long)]
    devnet_requester: bool,
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
    let context = spec.model.context_length as usize;
    if prompt_tokens.len() + args.max_tokens > context {
        bail!(
            "the prompt ({} tokens) and --max-tokens {} exceed the model's context of {context} tokens",
            prompt_tokens.len(),
            args.max_tokens
        );
    }
    if args.stop_tokens.len() > MAX_STOP_TOKENS {
        bail!("at most {MAX_STOP_TOKENS} stop tokens, got {}", args.stop_tokens.len());
    }
    if let Some(&token) = args.stop_tokens.iter().find(|&&t| t >= spec.model.vocab_size) {
        bail!("stop token {token} is outside the vocabulary of {}", spec.model.vocab_size);
    }
    let uuid = *args.uuid.unwrap_or_else(uuid::Uuid::new_v4).as_bytes();
    let mut request = Request::new(uuid, user_seed, prompt_tokens, args.max_tokens as u32);
    request.stop_token_ids = args.stop_tokens.clone();
    let chain_id = spec.chain_id();
    let requester = match &args.requester_key {
        Some(path) => Some(keyfile::read(path)?),
        None => args.devnet_requester.then(devnet_requester),
    };
    if let Some(requester) = requester {
        if !spec.is_requester(&requester.public()) {
            tracing::warn!("the requester key is not in the chain's requester set: the artifact is miner-seeded");
        }
        request.bind(&chain_id, &requester);
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
    let stop = StopRules::of(&request);
    let generated =
        generate(&runtime.model, &request.prompt_tokens, &spec.sampling, spec.logged_k, &stop, draws, |_| {
            progress.inc(1)
        })?;
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
    let seeding = SeedingClass::of(&artifact, &spec, &chain_id).context("checking the request binding")?;
    writeln!(err, "seeding    {seeding}")?;
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
