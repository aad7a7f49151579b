//! `poi import`: an OpenAI-compatible chat completion with logprobs from
//! another engine (vLLM, llama.cpp, OpenAI's API) becomes a signed, unseeded
//! artifact. No run seed was logged, so nodes give it the surprisal test and
//! the full check's lists, never the replay of the pick.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use poi_artifact::openai::{import_chat_completion, ImportContext};
use poi_model::chat::Message;
use poi_model::tokenizer::VocabResolver;

use poi_cli::{ChainArg, ModelArgs};

use crate::keyfile;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("prompt").args(["prompt_tokens", "chat"])))]
pub struct Args {
    /// The chat completion response (JSON, with `logprobs.content` and at
    /// least the chain's k `top_logprobs` per position).
    #[arg(value_name = "RESPONSE.json")]
    response: PathBuf,
    /// The prompt's token ids, a JSON array, when the response has no
    /// `prompt_token_ids`.
    #[arg(long, value_name = "FILE")]
    prompt_tokens: Option<PathBuf>,
    /// The chat the response answers, `[{"role", "content"}, …]`, tokenized
    /// with the pinned model's template, when the response has no
    /// `prompt_token_ids`.
    #[arg(long, value_name = "FILE")]
    chat: Option<PathBuf>,
    /// Key file of whoever submits the import: it signs the artifact.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The request uuid to record; random when omitted.
    #[arg(long)]
    uuid: Option<uuid::Uuid>,
    /// Where to write the artifact.
    #[arg(long, short)]
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
    let submitter = keyfile::read(&args.key)?;
    let response =
        std::fs::read_to_string(&args.response).with_context(|| format!("reading {}", args.response.display()))?;
    // The tokenizer and template come from the pinned file itself.
    let runtime = args.model.load(&spec)?;
    let prompt_tokens = match (&args.prompt_tokens, &args.chat) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let tokens: Vec<u32> = serde_json::from_str(&text)
                .with_context(|| format!("{}: expected a JSON array of ids", path.display()))?;
            Some(tokens)
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let messages: Vec<Message> = serde_json::from_str(&text)
                .with_context(|| format!("{}: expected [{{\"role\", \"content\"}}, …]", path.display()))?;
            Some(runtime.chat_tokens(&messages)?)
        }
        (None, None) => None,
    };
    if let Some(&token) = prompt_tokens.iter().flatten().find(|&&t| t >= spec.model.vocab_size) {
        bail!("prompt token {token} is outside the vocabulary of {}", spec.model.vocab_size);
    }
    let resolver = VocabResolver::new(&runtime.tokenizer);
    let ctx = ImportContext {
        chain_id: spec.chain_id(),
        sampling: spec.sampling,
        k: spec.logged_k,
        prompt_tokens,
        request_uuid: *args.uuid.unwrap_or_else(uuid::Uuid::new_v4).as_bytes(),
        submitter: submitter.public(),
        created_at_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        resolver: &resolver,
    };
    let body =
        import_chat_completion(&response, &ctx).with_context(|| format!("importing {}", args.response.display()))?;
    let artifact = body.sign(&submitter);
    let bytes = if args.json { artifact.to_json_string().into_bytes() } else { artifact.encode() };
    std::fs::write(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "artifact   {} -> {} ({} bytes, {} positions, unseeded)",
        artifact.id(),
        args.out.display(),
        bytes.len(),
        artifact.body.generation.len()
    );
    Ok(ExitCode::SUCCESS)
}
