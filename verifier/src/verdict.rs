//! Who checks what, and the verdict (DESIGN §6). Everything here is a pure
//! function of the chain spec and signed data, so any node or client
//! recomputes the same answer from what RPC returns.
//!
//! - **Selection**: validator `v` fully checks artifact `a` iff its VRF
//!   output over `"poi/select/v1" || a` (`poi_artifact::vrf`), read as a
//!   fraction of 2^256, is below the artifact's rate (the chain's
//!   `full_check_rate`; 1 for artifacts the miner seeded). One output per
//!   key and artifact: nobody can grind it, and nobody without `v`'s key can
//!   predict it. Every vote carries the proof.
//! - **Disputes are decided by the whole validator set.** A reject from a
//!   selected validator disputes the artifact, and every validator then
//!   re-checks it. No committee is drawn, so there is nothing to bias: a
//!   miner grinding its artifact id, or a colluding minority, always faces
//!   the whole weight.
//! - **Votes**: one per validator counts, from any validator of the spec,
//!   under the chain's numerics profile, with a valid signature and VRF
//!   proof. A validator with two different votes on an artifact is
//!   equivocating; its votes drive nothing (no dispute, no provisional
//!   accept), but each side it signed keeps its weight in that side's
//!   quorum: a signature is a commitment, and signing the opposite later
//!   withdraws nothing.
//! - **Status**, with `W` the total weight and `A`/`R` the weight of
//!   validators that signed accept/reject: `2R > W` → `rejected`, `2A > W` →
//!   `accepted`, both final (if both hold, which takes equivocators and
//!   honest validators that disagree with each other, `disputed`, not
//!   final); otherwise a non-equivocating selected reject → `disputed`; a
//!   non-equivocating selected accept → `accepted` (provisional); otherwise
//!   `accepted-replay-only`. Inconclusive votes are on neither side.
//! - **Finality**: a final verdict never changes. Votes only add weight to
//!   the sides they sign (equivocation included), so a quorum once reached
//!   stays, and the other side cannot reach one without honest validators
//!   signing against what the model gives: with less than a third of the
//!   weight Byzantine and every honest validator computing the same
//!   bit-exact result, only the honest side's quorum can ever exist.

use std::collections::BTreeMap;

use poi_artifact::{
    ArtifactId, PublicKey, SelectionOutput, SelectionProof, SignatureError, Verdict, Vote, VrfKeypair, VrfPublicKey,
};
use poi_chain_spec::ChainSpec;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::seeding::SeedingClass;

/// Why a vote cannot count on this chain, whatever the artifact.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum VoteError {
    #[error("chain {0} is not this chain")]
    OtherChain(String),
    #[error("{0} is not a validator of this chain")]
    NotAValidator(String),
    #[error("cast under profile {found:?}; this chain's votes are under {expected:?}")]
    OtherProfile { found: String, expected: String },
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// A vote whose chain, validator, profile, signature and selection proof
/// were checked, with its VRF output: the only votes the verdict counts.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedVote {
    vote: Vote,
    output: SelectionOutput,
}

impl CheckedVote {
    /// Every check a vote from the wire needs (two signature verifications;
    /// a node does this once, at ingest).
    pub fn check(spec: &ChainSpec, vote: Vote) -> Result<Self, VoteError> {
        let vrf_key = Self::check_fields(spec, &vote)?;
        vote.verify_signature()?;
        let output = vrf_key.verify(&vote.body.artifact_id, &vote.body.selection_proof)?;
        Ok(Self { vote, output })
    }

    /// A vote this node checked before and read back from its own store: the
    /// cheap field checks again, no signature work. Votes from anywhere else
    /// go through [`CheckedVote::check`].
    pub fn checked_before(spec: &ChainSpec, vote: Vote) -> Result<Self, VoteError> {
        let vrf_key = Self::check_fields(spec, &vote)?;
        let output = vote.body.selection_proof.output_unverified(&vrf_key, &vote.body.artifact_id);
        Ok(Self { vote, output })
    }

    fn check_fields(spec: &ChainSpec, vote: &Vote) -> Result<VrfPublicKey, VoteError> {
        let body = &vote.body;
        if body.chain_id != spec.chain_id() {
            return Err(VoteError::OtherChain(body.chain_id.to_hex()));
        }
        let validator =
            spec.validator(&body.validator).ok_or_else(|| VoteError::NotAValidator(body.validator.to_hex()))?;
        let expected = spec.numerics.label();
        if body.figures.profile_id != expected {
            return Err(VoteError::OtherProfile { found: body.figures.profile_id.clone(), expected });
        }
        Ok(validator.vrf_key)
    }

    pub fn vote(&self) -> &Vote {
        &self.vote
    }

    /// Whether the vote's VRF output selects its validator at `rate`.
    pub fn selected_at(&self, rate: f64) -> bool {
        self.output.selects(rate)
    }
}

/// Whether the holder of `vrf` is selected to check `artifact_id` at
/// `rate`; with the proof to put in its vote.
pub fn selection(vrf: &VrfKeypair, artifact_id: &ArtifactId, rate: f64) -> (bool, SelectionProof) {
    let proof = vrf.prove(artifact_id);
    let output = proof.output_unverified(&vrf.public(), artifact_id);
    (output.selects(rate), proof)
}

/// Who re-checks a disputed artifact and decides it: every validator of the
/// chain. It depends on nothing the miner or a minority controls.
pub fn dispute_deciders(spec: &ChainSpec) -> Vec<PublicKey> {
    spec.validators.iter().map(|v| v.public_key).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    AcceptedReplayOnly,
    Accepted,
    Disputed,
    Rejected,
}

impl Status {
    pub const ALL: [Status; 4] = [Self::AcceptedReplayOnly, Self::Accepted, Self::Disputed, Self::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AcceptedReplayOnly => "accepted-replay-only",
            Self::Accepted => "accepted",
            Self::Disputed => "disputed",
            Self::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Status {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|known| known.as_str() == text).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown status {text:?}; one of {}", known.join(", "))
        })
    }
}

/// By name, with an error that lists the known names (RPC filters, stored
/// verdicts).
impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerdictOutcome {
    pub status: Status,
    /// A side holds more than half the chain's weight: no later vote, and
    /// no equivocation, changes the status.
    pub is_final: bool,
    /// Votes that counted (one per non-equivocating validator), by vote id (hex).
    pub counted: Vec<String>,
    /// Validators that signed two different votes for the artifact.
    pub equivocators: Vec<String>,
}

/// The verdict of `artifact_id`, of seeding class `seeding`, from votes as
/// RPC returns them: each is checked, and invalid, foreign or duplicate ones
/// are ignored, never an error.
pub fn verdict(spec: &ChainSpec, artifact_id: &ArtifactId, seeding: SeedingClass, votes: &[Vote]) -> VerdictOutcome {
    let checked: Vec<CheckedVote> =
        votes.iter().filter_map(|vote| CheckedVote::check(spec, vote.clone()).ok()).collect();
    tally(spec, artifact_id, seeding, &checked)
}

/// [`verdict`] over votes checked already (a node's own store).
pub fn tally(
    spec: &ChainSpec,
    artifact_id: &ArtifactId,
    seeding: SeedingClass,
    votes: &[CheckedVote],
) -> VerdictOutcome {
    let rate = seeding.full_check_rate(spec);
    let mut by_validator: BTreeMap<[u8; 32], Vec<&CheckedVote>> = BTreeMap::new();
    for checked in votes.iter().filter(|c| c.vote.body.artifact_id == *artifact_id) {
        let entry = by_validator.entry(checked.vote.body.validator.0).or_default();
        if !entry.iter().any(|v| v.vote.id() == checked.vote.id()) {
            entry.push(checked);
        }
    }
    let weight = |key: &[u8; 32]| spec.validator(&PublicKey(*key)).map_or(0, |v| v.weight);
    let (mut accept_weight, mut reject_weight) = (0u64, 0u64);
    let (mut selected_accept, mut selected_reject) = (false, false);
    let mut counted = Vec::new();
    let mut equivocators = Vec::new();
    for (key, votes) in &by_validator {
        let signed = |verdict: Verdict| votes.iter().any(|v| v.vote.body.verdict == verdict);
        if signed(Verdict::Accept) {
            accept_weight += weight(key);
        }
        if signed(Verdict::Reject) {
            reject_weight += weight(key);
        }
        if votes.len() > 1 {
            equivocators.push(PublicKey(*key).to_hex());
            continue;
        }
        let vote = votes[0];
        counted.push(vote.vote.id().to_hex());
        if vote.selected_at(rate) {
            selected_accept |= vote.vote.body.verdict == Verdict::Accept;
            selected_reject |= vote.vote.body.verdict == Verdict::Reject;
        }
    }
    let total = u128::from(spec.total_weight());
    let majority = |side: u64| 2 * u128::from(side) > total;
    let (status, is_final) = match (majority(accept_weight), majority(reject_weight)) {
        (true, true) => (Status::Disputed, false),
        (false, true) => (Status::Rejected, true),
        (true, false) => (Status::Accepted, true),
        (false, false) if selected_reject => (Status::Disputed, false),
        (false, false) if selected_accept => (Status::Accepted, false),
        (false, false) => (Status::AcceptedReplayOnly, false),
    };
    VerdictOutcome { status, is_final, counted, equivocators }
}
