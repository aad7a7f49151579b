//! Who checks what, and the verdict (DESIGN §6). Everything here is a pure
//! function of the chain spec and signed data, so any node or client
//! recomputes the same answer from what RPC returns.
//!
//! - **Selection**: validator `v` fully checks artifact `a` iff
//!   `SHA256(sig_v("poi/select/v1" || a)) / 2^256 < full_check_rate`. ed25519
//!   signatures are deterministic, so `v` cannot grind, and nobody else can
//!   predict the outcome without `v`'s key. The comparison uses the top 128
//!   bits, exact for every rate that is a multiple of 2^-128.
//! - **Committee**: the `dispute_committee_size` validators with the lowest
//!   `SHA256("poi/committee/v1" || a || key)`.
//! - **Verdict**: votes count if signed by a validator of the spec for this
//!   chain and artifact, cast under the chain's own numerics profile and
//!   version, and either carry a valid selection proof (at the artifact's
//!   rate: every validator is selected for miner-seeded and unseeded
//!   artifacts) or come from a committee member. A validator with two different votes for one
//!   artifact is equivocating: none of its votes count. Then:
//!   no counted vote → `accepted-replay-only`; a committee weighted majority
//!   (more than half the committee's weight) of accept or reject →
//!   `accepted` / `rejected`; otherwise any counted reject → `disputed`;
//!   otherwise at least one accept → `accepted`; only inconclusive votes →
//!   `accepted-replay-only`.

use std::collections::BTreeMap;

use poi_artifact::{sha256, ArtifactId, PublicKey, Verdict, Vote, SELECT_DOMAIN};
use poi_chain_spec::ChainSpec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::seeding::SeedingClass;

const COMMITTEE_DOMAIN: &[u8] = b"poi/committee/v1";

/// Whether a selection proof selects its signer for the full check.
pub fn is_selected(
    validator: &PublicKey,
    artifact_id: &ArtifactId,
    proof: &poi_artifact::Signature,
    rate: f64,
) -> bool {
    if validator.verify(SELECT_DOMAIN, artifact_id, proof, "selection proof").is_err() {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    let digest = sha256(&proof.0);
    let top = u128::from_be_bytes(digest.0[..16].try_into().expect("16 bytes"));
    // Below 2^128 and integral for the rates the spec allows: exact.
    top < (rate.max(0.0) * 2f64.powi(128)) as u128
}

/// The dispute committee of an artifact, best first.
pub fn committee(spec: &ChainSpec, artifact_id: &ArtifactId) -> Vec<PublicKey> {
    let mut ranked: Vec<([u8; 32], PublicKey)> = spec
        .validators
        .iter()
        .map(|v| {
            let mut hasher = Sha256::new();
            hasher.update(COMMITTEE_DOMAIN);
            hasher.update(artifact_id.0);
            hasher.update(v.public_key.0);
            (hasher.finalize().into(), v.public_key)
        })
        .collect();
    ranked.sort();
    ranked.into_iter().take(spec.dispute_committee_size as usize).map(|(_, key)| key).collect()
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
    /// Votes that counted, by vote id (hex).
    pub counted: Vec<String>,
    /// Validators that signed two different votes for the artifact.
    pub equivocators: Vec<String>,
}

/// The verdict of `artifact_id`, of seeding class `seeding`, from every
/// stored vote about it (any order; invalid, foreign or duplicate votes are
/// ignored, never an error).
pub fn verdict(spec: &ChainSpec, artifact_id: &ArtifactId, seeding: SeedingClass, votes: &[Vote]) -> VerdictOutcome {
    let chain_id = spec.chain_id();
    let profile = spec.numerics.label();
    let rate = seeding.full_check_rate(spec);
    let members = committee(spec, artifact_id);
    let mut by_validator: BTreeMap<[u8; 32], Vec<&Vote>> = BTreeMap::new();
    for vote in votes {
        let body = &vote.body;
        if body.chain_id != chain_id || body.artifact_id != *artifact_id || spec.validator(&body.validator).is_none() {
            continue;
        }
        if vote.verify_signature().is_err() {
            continue;
        }
        let entry = by_validator.entry(body.validator.0).or_default();
        if !entry.iter().any(|v| v.id() == vote.id()) {
            entry.push(vote);
        }
    }
    let mut counted = Vec::new();
    let mut equivocators = Vec::new();
    for (key, votes) in &by_validator {
        if votes.len() > 1 {
            equivocators.push(PublicKey(*key).to_hex());
            continue;
        }
        let vote = votes[0];
        let body = &vote.body;
        // A vote under another profile judged other numbers than the chain's
        // (it still counts as one of two for equivocation, above).
        if body.figures.profile_id != profile {
            continue;
        }
        let eligible =
            members.contains(&body.validator) || is_selected(&body.validator, artifact_id, &body.selection_proof, rate);
        if eligible {
            counted.push(vote);
        }
    }
    let weight = |key: &PublicKey| spec.validator(key).map_or(0, |v| v.weight);
    let committee_weight: u64 = members.iter().map(weight).sum();
    let committee_for = |verdict: Verdict| -> u64 {
        counted
            .iter()
            .filter(|v| v.body.verdict == verdict && members.contains(&v.body.validator))
            .map(|v| weight(&v.body.validator))
            .sum()
    };
    let any = |verdict: Verdict| counted.iter().any(|v| v.body.verdict == verdict);
    let status = if committee_weight > 0 && 2 * committee_for(Verdict::Reject) > committee_weight {
        Status::Rejected
    } else if any(Verdict::Reject) && 2 * committee_for(Verdict::Accept) > committee_weight {
        Status::Accepted
    } else if any(Verdict::Reject) {
        Status::Disputed
    } else if any(Verdict::Accept) {
        Status::Accepted
    } else {
        Status::AcceptedReplayOnly
    };
    VerdictOutcome { status, counted: counted.iter().map(|v| v.id().to_hex()).collect(), equivocators }
}
