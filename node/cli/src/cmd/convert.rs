use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use poi_artifact::MAX_WIRE_BYTES;

#[derive(clap::Args)]
pub struct Args {
    /// Input artifact, binary or JSON (detected).
    #[arg(value_name = "IN")]
    input: PathBuf,
    /// Output file: the JSON view if it ends in `.json`, canonical binary otherwise.
    #[arg(value_name = "OUT")]
    output: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let artifact = super::read_artifact(&args.input, MAX_WIRE_BYTES)?;
    let bytes = if args.output.extension().is_some_and(|e| e == "json") {
        (artifact.to_json_string() + "\n").into_bytes()
    } else {
        artifact.encode()
    };
    std::fs::write(&args.output, bytes).with_context(|| format!("writing {}", args.output.display()))?;
    println!("{}", artifact.id());
    Ok(ExitCode::SUCCESS)
}
