//! Who fixed an artifact's run seed (DESIGN §3), and what the chain does with
//! each class: only a requester the chain knows makes the seed one the miner
//! could not choose after seeing outputs.

use poi_artifact::{Artifact, ChainId, PreparedKey, SignatureError, REQUEST_DOMAIN};
use poi_chain_spec::{ChainSpec, SeedingPolicy};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeedingClass {
    /// Seeded, and bound by a requester in the chain's requester set.
    RequesterBound,
    /// Seeded, but bound by no key the chain knows: the miner may have picked
    /// the uuid (best-of-N), so the replay check alone proves little.
    MinerSeeded,
    /// No user seed (an import from an OpenAI-compatible server): only the
    /// surprisal test and the full check's lists apply.
    Unseeded,
}

impl SeedingClass {
    pub const ALL: [SeedingClass; 3] = [Self::RequesterBound, Self::MinerSeeded, Self::Unseeded];

    /// The class of `artifact` on `spec`'s chain; an error when a binding is
    /// present but its signature does not verify.
    pub fn of(artifact: &Artifact, spec: &ChainSpec, chain_id: &ChainId) -> Result<Self, SignatureError> {
        Requesters::new(spec).class_of(artifact, chain_id)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequesterBound => "requester-bound",
            Self::MinerSeeded => "miner-seeded",
            Self::Unseeded => "unseeded",
        }
    }

    /// Replayed against its run seed.
    pub fn is_seeded(self) -> bool {
        self != Self::Unseeded
    }

    /// Whether the chain's policy admits this class at all.
    pub fn admitted(self, policy: SeedingPolicy) -> bool {
        self == Self::RequesterBound || policy == SeedingPolicy::Optional
    }

    /// The fraction of validators that fully check an artifact of this class:
    /// the chain's sample rate for requester-bound ones, every validator for
    /// the rest (DESIGN §3), since nothing else stops a miner who picks its seed.
    pub fn full_check_rate(self, spec: &ChainSpec) -> f64 {
        match self {
            Self::RequesterBound => spec.full_check_rate,
            Self::MinerSeeded | Self::Unseeded => 1.0,
        }
    }
}

impl std::fmt::Display for SeedingClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The chain's requester set with each key decompressed once: the replay
/// check verifies a requester's signature on every bound artifact.
pub struct Requesters {
    keys: Vec<PreparedKey>,
}

impl Requesters {
    pub fn new(spec: &ChainSpec) -> Self {
        // The spec's loader already refused keys that are not usable points.
        Self { keys: spec.seeding.requesters.iter().filter_map(|key| key.prepare().ok()).collect() }
    }

    /// `SeedingClass::of`, with the prepared keys.
    pub fn class_of(&self, artifact: &Artifact, chain_id: &ChainId) -> Result<SeedingClass, SignatureError> {
        let request = &artifact.body.request;
        let Some(binding) = &request.binding else {
            return Ok(if request.user_seed.is_some() { SeedingClass::MinerSeeded } else { SeedingClass::Unseeded });
        };
        let known = self.keys.iter().find(|key| key.public() == binding.requester);
        match known {
            Some(key) => {
                key.verify(REQUEST_DOMAIN, &request.binding_digest(chain_id), &binding.signature, "request binding")?
            }
            None => {
                request.verify_binding(chain_id)?;
            }
        }
        Ok(match (request.user_seed, known) {
            (None, _) => SeedingClass::Unseeded,
            (Some(_), Some(_)) => SeedingClass::RequesterBound,
            (Some(_), None) => SeedingClass::MinerSeeded,
        })
    }
}
