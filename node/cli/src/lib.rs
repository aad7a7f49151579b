//! What `poi` and `poi-lab` share: the chain and model options, the CPU
//! check, logging and the exit-code convention. The commands themselves live
//! in each binary.

use std::path::PathBuf;
use std::process::ExitCode;

mod model_args;

pub use model_args::ModelArgs;

/// Where a chain spec comes from: a file, or the devnet spec built into poi.
#[derive(clap::Args, Clone)]
pub struct ChainArg {
    /// Chain spec JSON; the embedded devnet spec when omitted.
    #[arg(long, value_name = "SPEC")]
    pub chain: Option<PathBuf>,
}

impl ChainArg {
    pub fn load(&self) -> anyhow::Result<poi_chain_spec::ChainSpec> {
        Ok(match &self.chain {
            Some(path) => poi_chain_spec::ChainSpec::load(path)?,
            None => poi_chain_spec::ChainSpec::devnet(),
        })
    }
}

/// The build enables these features for candle's kernels (`.cargo/config.toml`);
/// say so plainly rather than die of an illegal instruction.
fn check_cpu() -> Result<(), &'static str> {
    #[cfg(target_arch = "x86_64")]
    for (name, present) in [
        ("avx2", std::arch::is_x86_feature_detected!("avx2")),
        ("fma", std::arch::is_x86_feature_detected!("fma")),
        ("f16c", std::arch::is_x86_feature_detected!("f16c")),
        ("pclmulqdq", std::arch::is_x86_feature_detected!("pclmulqdq")),
        ("sse4.2", std::arch::is_x86_feature_detected!("sse4.2")),
        ("popcnt", std::arch::is_x86_feature_detected!("popcnt")),
    ] {
        if !present {
            return Err(name);
        }
    }
    Ok(())
}

/// Runs a binary's command: logs to stderr (`RUST_LOG`, `info` by default),
/// refuses CPUs the build cannot run on, and maps errors to exit status 2
/// (1 is a command's own "rejected").
pub fn run_main(command: impl FnOnce() -> anyhow::Result<ExitCode>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    if let Err(missing) = check_cpu() {
        eprintln!("error: this CPU lacks {missing}, which poi's x86-64 build requires (see .cargo/config.toml)");
        return ExitCode::from(2);
    }
    match command() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
