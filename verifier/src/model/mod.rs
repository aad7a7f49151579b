//! The model runtime (DESIGN §8): our own llama forward on candle over the
//! pinned GGUF, returning log-probs at every position. candle-transformers'
//! quantized llama keeps only the last position, which cannot serve the full
//! check.

mod attention;
mod config;
mod error;
mod llama;
mod numerics;
mod qmatmul;
mod topk;

pub use config::LlamaConfig;
pub use error::ModelError;
pub use llama::{KvCache, Llama};
pub use numerics::{builtin_profile, builtin_profiles, Numerics};
pub use topk::{PenalisedTopK, TopCandidate};
