//! The chain spec (DESIGN §2, §5, §8): the model file's hash and architecture,
//! the numerics profile, sampling parameters, k, thresholds, the full-check
//! sample rate, limits and the validator set (with each validator's VRF key).
//!
//! Loading is strict: unknown fields are refused and every value is range
//! checked with an error naming the field. `chain_id` is the SHA-256 of the
//! spec's canonical binary encoding, so two nodes agree on it only if they agree
//! on every value.

mod hex_serde;
mod validate;

use bincode::Encode;
use poi_artifact::{canonical_encode, sha256, ChainId, Hash32, PublicKey, SamplingParams, VrfPublicKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use validate::{SpecError, MAX_MINER_TEST_WINDOW};

/// The devnet spec shipped with poi and embedded in the binary.
pub const DEVNET_SPEC_JSON: &str = include_str!("../specs/devnet.json");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode)]
#[serde(deny_unknown_fields)]
pub struct ChainSpec {
    /// A human name; part of the chain id.
    pub name: String,
    pub model: ModelSpec,
    pub numerics: NumericsProfile,
    pub sampling: SamplingParams,
    /// How many candidates every generated position logs (`k`). The sampler's
    /// `top_k` may not exceed it.
    pub logged_k: u16,
    pub thresholds: Thresholds,
    /// The per-miner sequential test over unseeded and miner-seeded
    /// artifacts (`poi_verifier::miner_test`).
    pub miner_test: MinerTestParams,
    /// The fraction of artifacts each validator fully re-checks (DESIGN §6).
    pub full_check_rate: f64,
    pub seeding: Seeding,
    pub limits: Limits,
    pub validators: Vec<Validator>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    /// Where operators obtain the file (never fetched at run time).
    pub source: String,
    pub file_name: String,
    #[serde(with = "hex_serde")]
    pub file_sha256: Hash32,
    pub architecture: String,
    pub n_layers: u32,
    pub hidden_size: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub vocab_size: u32,
    pub context_length: u32,
    pub eos_token_id: u32,
}

/// How the model's numbers are computed. A node that cannot honour the profile
/// on its device refuses to start; it never falls back silently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode)]
#[serde(deny_unknown_fields)]
pub struct NumericsProfile {
    pub id: String,
    /// Bumped whenever the code computes the profile's numbers differently
    /// (a kernel, a transcendental function): a node refuses a version it does
    /// not implement, and the chain id changes with it.
    pub version: u32,
    /// Decode and prefill agree bit for bit on every machine the build runs
    /// on: the full check then requires the logged lists exactly (DESIGN §5).
    /// A profile that is not bit-exact is compared within the chain's
    /// `distance2` and match-ratio tolerance, and the seeded pick from the
    /// validator's own list must still be the logged token.
    pub bit_exact: bool,
    pub weights: WeightFormat,
    pub activations: ActivationDtype,
    pub matmul: MatmulKernel,
    pub device: DeviceClass,
}

impl NumericsProfile {
    /// Id and version, as votes carry it: `gguf-native-cpu/v3`.
    pub fn label(&self) -> String {
        format!("{}/v{}", self.id, self.version)
    }
}

/// Who may fix an artifact's run seed (DESIGN §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode)]
#[serde(deny_unknown_fields)]
pub struct Seeding {
    pub policy: SeedingPolicy,
    /// Requesters whose signed binding makes an artifact requester-bound. A
    /// binding by any other key is no better than none.
    #[serde(with = "hex_serde::keys")]
    pub requesters: Vec<PublicKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode)]
#[serde(rename_all = "kebab-case")]
pub enum SeedingPolicy {
    /// Only requester-bound artifacts are admitted.
    Required,
    /// Miner-seeded and unseeded artifacts are admitted too, each fully
    /// checked by every validator (rate 1) and recorded with its class.
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode)]
#[serde(rename_all = "kebab-case")]
pub enum WeightFormat {
    /// The file's quantized tensors as they are.
    GgufNative,
    DequantF32,
    DequantF16,
    #[serde(rename = "requant-q4_0")]
    RequantQ4_0,
    RequantQ2k,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationDtype {
    F32,
    F16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode)]
#[serde(rename_all = "kebab-case")]
pub enum MatmulKernel {
    /// candle's quantized (k-quant) matmul: activations quantized to q8 blocks.
    CandleQuantized,
    /// candle's dense matmul over dequantized weights.
    CandleDense,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceClass {
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Reject when `distance2` exceeds this.
    pub max_distance2: f64,
    /// Reject when fewer logged candidates than this fraction appear in the
    /// validator's own top k.
    pub min_match_ratio: f64,
    /// Reject when the surprisal z-score exceeds this.
    pub max_surprisal_z: f64,
}

/// The per-miner sequential test (DESIGN §9): a CUSUM of each artifact's
/// log-likelihood ratio of a flatter (tilted) sampler against the logged one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode)]
#[serde(deny_unknown_fields)]
pub struct MinerTestParams {
    /// λ in (0, 1): the alternative draws each token with probability
    /// proportional to `q^(1 - λ)`, a sampler run hotter than the chain's.
    pub tilt: f64,
    /// α: the flag is raised when the statistic reaches `ln(1 / α)`, which
    /// bounds an honest miner's chance of being flagged at any one time by α.
    pub false_alarm_rate: f64,
    /// The statistic runs over at most this many of the miner's newest
    /// artifacts, so that one query costs a bounded read.
    pub window: u32,
}

impl MinerTestParams {
    /// The alarm threshold `h = ln(1 / α)`.
    pub fn threshold(&self) -> f64 {
        -self.false_alarm_rate.ln()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_artifact_bytes: u32,
    pub max_prompt_tokens: u32,
    pub max_generated_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode)]
#[serde(deny_unknown_fields)]
pub struct Validator {
    /// Signs the validator's votes (ed25519).
    #[serde(with = "hex_serde")]
    pub public_key: PublicKey,
    /// Proves its selections (`poi_artifact::VrfPublicKey`, derived from the
    /// same key file: `poi keys show` prints both).
    #[serde(with = "hex_serde")]
    pub vrf_key: VrfPublicKey,
    pub weight: u64,
}

impl Validator {
    /// The entry for the holder of `key`.
    pub fn of(key: &poi_artifact::Keypair, weight: u64) -> Self {
        Self { public_key: key.public(), vrf_key: key.vrf().public(), weight }
    }
}

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot read chain spec {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("chain spec is not valid JSON for this schema: {0}")]
    Json(#[from] serde_json::Error),
    #[error("chain spec: {0}")]
    Invalid(#[from] SpecError),
}

impl ChainSpec {
    pub fn from_json_str(text: &str) -> Result<Self, LoadError> {
        let spec: ChainSpec = serde_json::from_str(text)?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn load(path: &std::path::Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| LoadError::Io { path: path.display().to_string(), source })?;
        Self::from_json_str(&text)
    }

    /// The embedded devnet spec.
    pub fn devnet() -> Self {
        Self::from_json_str(DEVNET_SPEC_JSON).expect("the shipped devnet spec is valid")
    }

    /// A local devnet of `validators` well-known keys (`devnet_keypair(0..n)`)
    /// with the embedded spec's model, sampling and thresholds.
    pub fn local_devnet(validators: u32, full_check_rate: f64) -> Result<Self, LoadError> {
        let mut spec = Self::devnet();
        spec.name = format!("poi-devnet-{validators}");
        spec.full_check_rate = full_check_rate;
        spec.validators = (0..validators).map(|i| Validator::of(&devnet_keypair(i), 1)).collect();
        // Through the loader, so a generated spec passes the same validation.
        Self::from_json_str(&spec.to_json_string())
    }

    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(self).expect("chain spec serialises")
    }

    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical_encode(self)
    }

    pub fn chain_id(&self) -> ChainId {
        sha256(&self.canonical_bytes())
    }

    pub fn total_weight(&self) -> u64 {
        self.validators.iter().map(|v| v.weight).sum()
    }

    pub fn validator(&self, key: &PublicKey) -> Option<&Validator> {
        self.validators.iter().find(|v| v.public_key == *key)
    }

    pub fn is_requester(&self, key: &PublicKey) -> bool {
        self.seeding.requesters.contains(key)
    }

    /// Whether a validator key of this chain is one of the well-known devnet
    /// keys ([`devnet_keypair`], the first [`DEVNET_KEYS_CHECKED`]), whose
    /// secrets anyone can derive: such a chain is for testing only.
    pub fn lists_devnet_keys(&self) -> bool {
        let devnet: std::collections::HashSet<PublicKey> =
            (0..DEVNET_KEYS_CHECKED).map(|i| devnet_keypair(i).public()).collect();
        self.validators.iter().any(|v| devnet.contains(&v.public_key))
    }
}

/// How many devnet key indexes [`ChainSpec::lists_devnet_keys`] looks for.
pub const DEVNET_KEYS_CHECKED: u32 = 256;

/// The devnet's well-known requester key (in the shipped spec's requester
/// set): `poi mine --bind` signs with it. Insecure by design, like the
/// devnet's validator keys.
pub fn devnet_requester() -> poi_artifact::Keypair {
    poi_artifact::Keypair::from_secret(sha256(b"poi/devnet/requester").0)
}

/// The well-known, insecure keys of the devnet's validators: anyone can derive
/// them, which is what a local test network wants and a real chain must not use.
pub fn devnet_keypair(index: u32) -> poi_artifact::Keypair {
    let mut seed = b"poi/devnet/validator/".to_vec();
    seed.extend_from_slice(&index.to_le_bytes());
    poi_artifact::Keypair::from_secret(sha256(&seed).0)
}
