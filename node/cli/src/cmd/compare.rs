//! Compares two OpenAI-compatible logprob responses with distance2.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use poi_verifier::{distance2, TopLogprobs};
use serde::Deserialize;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// The inference (prover) response: chat or text completion with logprobs.
    #[arg(value_name = "INFERENCE.json")]
    inference: PathBuf,
    /// The validation response over the same tokens.
    #[arg(value_name = "VALIDATION.json")]
    validation: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Deserialize)]
struct Response {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    logprobs: Option<Logprobs>,
}

/// Chat completions put a list under `content`; text completions use
/// parallel `tokens` / `top_logprobs` arrays of token → log-prob maps.
#[derive(Deserialize)]
#[serde(untagged)]
enum Logprobs {
    Chat { content: Vec<ChatToken> },
    Text { tokens: Vec<String>, top_logprobs: Vec<Option<serde_json::Map<String, serde_json::Value>>> },
}

#[derive(Deserialize)]
struct ChatToken {
    token: String,
    #[serde(default)]
    top_logprobs: Vec<ChatTop>,
}

#[derive(Deserialize)]
struct ChatTop {
    token: String,
    logprob: f64,
}

fn load(path: &Path) -> anyhow::Result<Vec<TopLogprobs<String>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let response: Response = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an OpenAI-compatible response", path.display()))?;
    let Some(logprobs) = response.choices.into_iter().next().and_then(|c| c.logprobs) else {
        bail!("{}: no choices[0].logprobs (ask the server for logprobs and top_logprobs)", path.display());
    };
    Ok(match logprobs {
        Logprobs::Chat { content } => content
            .into_iter()
            .map(|t| TopLogprobs {
                chosen: t.token,
                entries: t.top_logprobs.into_iter().map(|e| (e.token, e.logprob)).collect(),
            })
            .collect(),
        Logprobs::Text { tokens, top_logprobs } => {
            if tokens.len() != top_logprobs.len() {
                bail!("{}: {} tokens but {} top_logprobs entries", path.display(), tokens.len(), top_logprobs.len());
            }
            let mut positions = Vec::with_capacity(tokens.len());
            for (index, (chosen, tops)) in tokens.into_iter().zip(top_logprobs).enumerate() {
                let mut entries = Vec::new();
                for (token, value) in tops.unwrap_or_default() {
                    let logprob = value.as_f64().with_context(|| {
                        format!("{}: position {index}: log-prob of {token:?} is not a number", path.display())
                    })?;
                    entries.push((token, logprob));
                }
                // Maps carry no order; distance2 wants highest first.
                entries.sort_by(|a, b| b.1.total_cmp(&a.1));
                positions.push(TopLogprobs { chosen, entries });
            }
            positions
        }
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let inference = load(&args.inference)?;
    let validation = load(&args.validation)?;
    let (distance, match_ratio) = distance2(&inference, &validation);
    let k = inference.first().map_or(0, |p| p.entries.len());
    if args.json {
        let same = distance >= 0.0;
        println!(
            "{}",
            json!({"positions": inference.len(), "k": k, "same_tokens": same, "distance2": distance, "match_ratio": match_ratio})
        );
    } else if distance < 0.0 {
        println!(
            "the two responses chose different tokens ({} vs {} positions): distance2 = -1, match ratio = -1",
            inference.len(),
            validation.len()
        );
    } else {
        println!("positions    {}", inference.len());
        println!("k            {k}");
        println!("distance2    {distance:.6}");
        println!("match ratio  {match_ratio:.4}");
    }
    Ok(ExitCode::SUCCESS)
}
