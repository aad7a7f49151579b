pub mod compare;
pub mod convert;
pub mod devnet;
pub mod import;
pub mod keys;
pub mod mine;
pub mod node;
pub mod serve;
pub mod verify;

use std::path::Path;

use anyhow::Context;
use poi_artifact::Artifact;

/// The JSON view starts with `{`; canonical binary starts with a version byte.
pub fn looks_like_json(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Reads an artifact file in either form, binary within `max_len` bytes.
pub fn read_artifact(path: &Path, max_len: usize) -> anyhow::Result<Artifact> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if looks_like_json(&bytes) {
        let text = std::str::from_utf8(&bytes).context("JSON artifact is not UTF-8")?;
        return Artifact::from_json_str(text)
            .with_context(|| format!("{} is not a valid artifact JSON view", path.display()));
    }
    Artifact::decode(&bytes, max_len).with_context(|| format!("{} is not a valid canonical artifact", path.display()))
}
