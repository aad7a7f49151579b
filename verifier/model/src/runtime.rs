//! One pinned model file, loaded once: the forward pass, the tokenizer and the
//! chat template all come from the same GGUF.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;
use poi_artifact::Hash32;
use poi_chain_spec::{ChainSpec, NumericsProfile};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::chat::{ChatError, ChatTemplate, Message};
use crate::tokenizer::{Tokenizer, TokenizerError};
use crate::{Llama, ModelError};

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Chat(#[from] ChatError),
}

pub struct Runtime {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub chat: ChatTemplate,
}

impl Runtime {
    /// Loads the file the chain spec pins, after checking its SHA-256 and
    /// shape, under `profile` (the spec's own when `None`).
    pub fn load_pinned(spec: &ChainSpec, path: &Path, profile: Option<&NumericsProfile>) -> Result<Self, RuntimeError> {
        let found = file_sha256(path)?;
        if found != spec.model.file_sha256 {
            return Err(ModelError::WrongFile {
                path: path.display().to_string(),
                expected: spec.model.file_sha256.to_hex(),
                found: found.to_hex(),
            }
            .into());
        }
        let runtime = Self::load(path, profile.unwrap_or(&spec.numerics))?;
        runtime.model.config().check_against(&spec.model)?;
        Ok(runtime)
    }

    /// Loads any llama GGUF without checking it against a spec (tests,
    /// experiments with cheaper models).
    pub fn load(path: &Path, profile: &NumericsProfile) -> Result<Self, RuntimeError> {
        let io = |source| ModelError::Io { path: path.display().to_string(), source };
        let mut reader = BufReader::new(File::open(path).map_err(io)?);
        let content = Content::read(&mut reader).map_err(|e| ModelError::Metadata(e.to_string()))?;
        let model = Llama::from_gguf(&content, &mut reader, profile)?;
        let tokenizer = Tokenizer::from_gguf(&content)?;
        let text = |id| tokenizer.decode(&[id]).unwrap_or_default();
        let bos = content.metadata.get("tokenizer.ggml.bos_token_id").and_then(|v| v.to_u32().ok());
        let chat = ChatTemplate::from_gguf(&content, bos.map(text).unwrap_or_default(), text(tokenizer.eos()))?;
        Ok(Self { model, tokenizer, chat })
    }

    /// Prompt token ids for a chat, rendered by the model's template.
    pub fn chat_tokens(&self, messages: &[Message]) -> Result<Vec<u32>, RuntimeError> {
        let text = self.chat.render(messages)?;
        Ok(self.tokenizer.encode(&text, true))
    }
}

/// SHA-256 of a file, streamed.
pub fn file_sha256(path: &Path) -> Result<Hash32, ModelError> {
    let io = |source| ModelError::Io { path: path.display().to_string(), source };
    let mut file = File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(Hash32(hasher.finalize().into()))
}

/// poi's cache folder, `~/.cache/poi` (`./.cache/poi` without a `$HOME`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".cache/poi")
}

/// Where `scripts/fetch-model.sh` puts the pinned file: `$POI_MODEL_DIR`, else
/// `~/.cache/poi/models`.
pub fn default_model_path(spec: &ChainSpec) -> PathBuf {
    let dir = std::env::var_os("POI_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| cache_dir().join("models"));
    dir.join(&spec.model.file_name)
}
