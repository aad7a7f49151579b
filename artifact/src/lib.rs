//! Wire types of poi (DESIGN §3): inference artifacts, votes and requests; their
//! one canonical binary encoding; ids, domain-separated ed25519 signatures, the selection VRF; JSON
//! views; and the import of OpenAI-compatible logprob responses.
//!
//! No networking, storage or model code belongs here.

mod artifact;
mod codec;
mod crypto;
mod error;
pub mod json;
pub mod openai;
mod packing;
mod sampling;
pub mod sync;
mod vote;
mod vrf;

pub use artifact::{
    logged_half, run_seed, Artifact, ArtifactBody, Candidate, FinishReason, Generation, Position, Request,
    RequestBinding, ARTIFACT_VERSION, MAX_K, MAX_STOP_TOKENS,
};
pub use codec::MAX_WIRE_BYTES;
pub use crypto::{
    sha256, ArtifactId, ChainId, Hash32, Keypair, PreparedKey, PublicKey, Signature, VoteId, ARTIFACT_DOMAIN,
    REQUEST_DOMAIN, VOTE_DOMAIN,
};
pub use error::{DecodeError, JsonError, SignatureError};
pub use half::f16;
pub use sampling::{candidate_order, penalise, History, SamplingParams};
pub use vote::{
    Verdict, Vote, VoteBody, VoteFigures, MAX_PROFILE_ID_LEN, MAX_REASON_LEN, MAX_VOTE_BYTES, VOTE_VERSION,
};

pub use vrf::{SelectionOutput, SelectionProof, VrfKeypair, VrfPublicKey, SELECTION_PROOF_LEN, SELECT_DOMAIN};

/// Canonical encoding for other crates' consensus objects (e.g. the chain spec),
/// so that every hashed byte string comes from the one codec.
pub fn canonical_encode<T: bincode::Encode>(value: &T) -> Vec<u8> {
    codec::encode(value)
}
