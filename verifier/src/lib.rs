//! poi's pure checks (DESIGN §4, §5, §6): sampler v1, the replay check every
//! peer runs, the full check's comparison of logged and validator lists with
//! `distance2` and the match ratio, the surprisal test, the per-miner
//! sequential test, and the verdict rule.
//! No networking, storage or model runtime here: the fuzz targets and the
//! replay benchmark link only this.

pub mod attacks;
pub mod bounds;
mod dense_history;
pub mod distance;
pub mod exp;
pub mod full_check;
pub mod miner_test;
pub mod replay;
pub mod sampler;
pub mod seeding;
pub mod simulate;
pub mod surprisal;
pub mod topk;
pub mod verdict;

pub use distance::{distance2, TopLogprobs};
pub use replay::{ReplayChecker, ReplayError, ReplayReport, StructureRule};
pub use sampler::{choose_from, draw, pick, Kept, Sampler};
pub use seeding::SeedingClass;
pub use surprisal::Surprisal;
