//! The model runtime (DESIGN §8): our own llama forward on candle over the
//! pinned GGUF, returning log-probs at every position (candle-transformers'
//! quantized llama keeps only the last position, which cannot serve the full
//! check), with the GGUF's own tokenizer and chat template, seeded generation
//! and the model half of the full check. The comparisons the full check makes
//! are pure and live in `poi-verifier`.

// The kernels read GGUF blocks in place, as their little-endian bytes; on a
// big-endian target every scale would be wrong, so such a build is refused.
#[cfg(target_endian = "big")]
compile_error!("poi-model reads GGUF's little-endian blocks in place: big-endian targets are not supported");

mod attention;
pub mod batch;
pub mod chat;
mod config;
mod error;
mod expf;
pub mod full_check;
pub mod generate;
mod llama;
mod numerics;
mod q8_0;
mod qmatmul;
pub mod runtime;
pub mod tokenizer;

pub use config::LlamaConfig;
pub use error::ModelError;
pub use llama::{KvCache, Llama};
pub use numerics::{builtin_profile, builtin_profiles, is_bit_exact, Numerics, NUMERICS_VERSION};
pub use poi_verifier::topk::{PenalisedTopK, TopCandidate};
