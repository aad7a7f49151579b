//! Key files: JSON with the hex secret and public key, written owner-only.

use std::path::Path;

use anyhow::{bail, Context};
use poi_artifact::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    public_key: String,
    secret_key: String,
}

pub fn write(path: &Path, keypair: &Keypair, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        bail!("{} exists; refusing to overwrite a key (pass --force to replace it)", path.display());
    }
    let file = KeyFile { public_key: keypair.public().to_hex(), secret_key: hex::encode(keypair.secret()) };
    let text = serde_json::to_string_pretty(&file)? + "\n";
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing key file {}", path.display()))
}

pub fn read(path: &Path) -> anyhow::Result<Keypair> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading key file {}", path.display()))?;
    let file: KeyFile = serde_json::from_str(&text).with_context(|| format!("key file {}", path.display()))?;
    let secret: [u8; 32] = hex::decode(&file.secret_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("key file {}: secret_key is not 32 bytes of hex", path.display()))?;
    let keypair = Keypair::from_secret(secret);
    let stated = PublicKey::from_hex(&file.public_key)
        .map_err(|e| anyhow::anyhow!("key file {}: public_key {e}", path.display()))?;
    if stated != keypair.public() {
        bail!("key file {}: public_key does not belong to secret_key", path.display());
    }
    Ok(keypair)
}
