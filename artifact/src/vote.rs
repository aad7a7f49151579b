//! Validator votes (DESIGN §3, §6).

use bincode::{Decode, Encode};

use crate::codec;
use crate::crypto::{sha256, ArtifactId, ChainId, Keypair, PublicKey, Signature, VoteId, VOTE_DOMAIN};
use crate::error::{DecodeError, SignatureError};
use crate::vrf::SelectionProof;

/// 2: figures carry the reason for the verdict. 3: the selection proof is a
/// VRF proof.
pub const VOTE_VERSION: u8 = 3;
pub const MAX_PROFILE_ID_LEN: usize = 64;
/// Enough for "position 117: …" with both values; longer reasons are cut.
pub const MAX_REASON_LEN: usize = 240;
/// A vote is small and fixed in shape; anything larger is not a vote.
pub const MAX_VOTE_BYTES: usize = 768;
const SIGNATURE_LEN: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Verdict {
    Accept,
    Reject,
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Inconclusive => "inconclusive",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "accept" => Some(Self::Accept),
            "reject" => Some(Self::Reject),
            "inconclusive" => Some(Self::Inconclusive),
            _ => None,
        }
    }
}

/// The figures behind a verdict, so anyone can see why a validator voted so.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct VoteFigures {
    pub distance: f64,
    pub match_ratio: f64,
    pub surprisal_z: f64,
    /// The numerics profile the validator ran the model under, with its
    /// version (`NumericsProfile::label`): only votes under the chain's own
    /// profile count.
    pub profile_id: String,
    /// Why the validator voted so: empty for accept, the first difference
    /// for reject, the error for inconclusive. At most `MAX_REASON_LEN` bytes.
    pub reason: String,
}

impl VoteFigures {
    /// `reason` cut to `MAX_REASON_LEN` bytes on a character boundary, so a
    /// long error message cannot make the vote undecodable.
    pub fn bounded_reason(reason: &str) -> String {
        let mut end = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason[..end].to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct VoteBody {
    pub chain_id: ChainId,
    pub artifact_id: ArtifactId,
    pub validator: PublicKey,
    /// The validator's VRF proof over `"poi/select/v1" || artifact_id`: its
    /// output says whether the validator was selected for the full check
    /// (DESIGN §6). Every vote carries one, selected or not.
    pub selection_proof: SelectionProof,
    pub verdict: Verdict,
    pub figures: VoteFigures,
    pub created_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Vote {
    pub body: VoteBody,
    pub signature: Signature,
    id: VoteId,
}

#[derive(Encode)]
struct VoteBodyRef<'a> {
    version: u8,
    body: &'a VoteBody,
}

#[derive(Encode)]
struct VoteRef<'a> {
    body: VoteBodyRef<'a>,
    signature: Signature,
}

#[derive(Decode)]
struct VoteWire {
    version: u8,
    body: VoteBody,
    signature: Signature,
}

impl VoteBody {
    pub fn canonical_bytes(&self) -> Vec<u8> {
        codec::encode(&VoteBodyRef { version: VOTE_VERSION, body: self })
    }

    pub fn id(&self) -> VoteId {
        sha256(&self.canonical_bytes())
    }

    pub fn sign(self, validator: &Keypair) -> Vote {
        debug_assert_eq!(self.validator, validator.public(), "signing with a key other than the vote's");
        let id = self.id();
        let signature = validator.sign(VOTE_DOMAIN, &id);
        Vote { body: self, signature, id }
    }
}

impl Vote {
    pub fn id(&self) -> VoteId {
        self.id
    }

    pub fn from_parts(body: VoteBody, signature: Signature) -> Self {
        let id = body.id();
        Self { body, signature, id }
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(&VoteRef {
            body: VoteBodyRef { version: VOTE_VERSION, body: &self.body },
            signature: self.signature,
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let wire: VoteWire = codec::decode_versioned(bytes, MAX_VOTE_BYTES, "vote", VOTE_VERSION)?;
        debug_assert_eq!(wire.version, VOTE_VERSION);
        if wire.body.figures.profile_id.len() > MAX_PROFILE_ID_LEN {
            return Err(DecodeError::Structure(format!(
                "profile id of {} bytes, the limit is {MAX_PROFILE_ID_LEN}",
                wire.body.figures.profile_id.len()
            )));
        }
        if wire.body.figures.reason.len() > MAX_REASON_LEN {
            return Err(DecodeError::Structure(format!(
                "reason of {} bytes, the limit is {MAX_REASON_LEN}",
                wire.body.figures.reason.len()
            )));
        }
        let id = sha256(&bytes[..bytes.len() - SIGNATURE_LEN]);
        Ok(Self { body: wire.body, signature: wire.signature, id })
    }

    pub fn verify_signature(&self) -> Result<(), SignatureError> {
        self.body.validator.verify(VOTE_DOMAIN, &self.id, &self.signature, "vote")
    }
}
