use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("model file {path} has SHA-256 {found}, the chain spec pins {expected}")]
    WrongFile { path: String, expected: String, found: String },
    #[error("GGUF metadata: {0}")]
    Metadata(String),
    #[error("model file disagrees with the chain spec on {field}: file has {file}, spec has {spec}")]
    SpecMismatch { field: &'static str, file: String, spec: String },
    #[error("numerics profile {profile:?} cannot be honoured: {reason}")]
    Unsupported { profile: String, reason: String },
    #[error("{what} of {found} tokens exceeds the model's context of {limit}")]
    TooLong { what: &'static str, found: usize, limit: usize },
    #[error("token id {token} is outside the vocabulary of {vocab}")]
    TokenOutOfVocabulary { token: u32, vocab: u32 },
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}
