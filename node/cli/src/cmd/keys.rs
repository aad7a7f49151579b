use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use poi_artifact::Keypair;

use crate::keyfile;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Generate a new key and write it to FILE (mode 0600); print its
    /// chain-spec validator entry (the ed25519 public key and the VRF key
    /// derived from the same secret).
    Generate {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print a key file's chain-spec validator entry: `public_key` (ed25519,
    /// signs votes) and `vrf_key` (sr25519, proves selections).
    Show {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

pub fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Generate { out, force } => {
            let keypair = Keypair::generate();
            keyfile::write(&out, &keypair, force)?;
            println!("{}", spec_entry(&keypair));
        }
        KeysCommand::Show { file } => println!("{}", spec_entry(&keyfile::read(&file)?)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The key's entry in a chain spec's `validators`, weight 1.
fn spec_entry(keypair: &Keypair) -> String {
    let entry = poi_chain_spec::Validator::of(keypair, 1);
    serde_json::to_string(&entry).expect("a validator entry serialises")
}
