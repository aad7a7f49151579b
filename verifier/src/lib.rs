//! poi's checks (DESIGN §4, §5): sampler v1, the replay check every peer runs,
//! `distance2` and the match ratio, and the surprisal test. No networking or
//! storage here.

pub mod chat;
pub mod distance;
pub mod full_check;
pub mod generate;
pub mod model;
pub mod replay;
pub mod runtime;
pub mod sampler;
pub mod simulate;
pub mod surprisal;
pub mod tokenizer;
pub mod verdict;

pub use distance::{distance2, TopLogprobs};
pub use replay::{ReplayChecker, ReplayError, ReplayReport, StructureRule};
pub use sampler::{choose_from, draw, pick, Kept, Sampler};
pub use surprisal::Surprisal;
