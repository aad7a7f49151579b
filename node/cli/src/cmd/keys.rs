use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use poi_artifact::Keypair;

use crate::keyfile;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Generate a new ed25519 key and write it to FILE (mode 0600).
    Generate {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print the public key of a key file.
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
            println!("{}", keypair.public());
        }
        KeysCommand::Show { file } => println!("{}", keyfile::read(&file)?.public()),
    }
    Ok(ExitCode::SUCCESS)
}
