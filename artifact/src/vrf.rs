//! The selection VRF (DESIGN §6): whether a validator fully checks an
//! artifact is a verifiable random function of its key and the artifact id.
//!
//! A plain signature will not do: ed25519 verification accepts a signature
//! made with any nonce, so a validator could sign until a hash of its
//! signature selected it. A VRF has one output per key and message, proven
//! by the proof that travels in the vote.
//!
//! We use schnorrkel's VRF (sr25519 on ristretto255): the slot lottery of
//! Polkadot's BABE, which solves the same problem, kept by Web3 Foundation,
//! audited, and pure Rust on the curve25519-dalek our ed25519 already builds.
//! Its pre-output `sk · H(m)` is unique for a key and message, and the
//! DLEQ proof shows it was computed with the key's secret; our output is a
//! hash of that point, as RFC 9381's `proof_to_hash` hashes Gamma. BLS
//! (`blst`) would also give unique signatures and aggregation into one
//! certificate, at about ten times the verification cost and a C build;
//! nothing here needs aggregation yet.
//!
//! Proofs are derandomised (the nonce comes from the secret and the
//! transcript, as in ed25519), so a validator's vote body is the same every
//! time it is made: a restart re-creates the same vote, not a second one.

use rand_chacha::rand_core::SeedableRng;
use schnorrkel::vrf::{VRFPreOut, VRFProof};
use schnorrkel::{signing_context, ExpansionMode, MiniSecretKey};
use sha2::{Digest, Sha256};

use crate::crypto::{sha256, ArtifactId};
use crate::error::SignatureError;

/// Domain of the VRF input: the artifact id follows it.
pub const SELECT_DOMAIN: &[u8] = b"poi/select/v1";
const VRF_KEY_DOMAIN: &[u8] = b"poi/vrf-key/v1";
const OUTPUT_DOMAIN: &[u8] = b"poi/select-output/v1";
/// Pre-output (32) then proof (64).
pub const SELECTION_PROOF_LEN: usize = 96;

/// A validator's VRF public key (sr25519, 32 bytes), as the chain spec lists it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, bincode::Encode, bincode::Decode)]
pub struct VrfPublicKey(pub [u8; 32]);

/// A VRF pre-output and its proof over `SELECT_DOMAIN || artifact id`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, bincode::Encode, bincode::Decode)]
pub struct SelectionProof(pub [u8; SELECTION_PROOF_LEN]);

/// The VRF output: uniformly distributed, unique per key and artifact.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct SelectionOutput(pub [u8; 32]);

/// A validator's VRF secret, derived from its node key (one key file, two
/// schemes, domain-separated so neither key is ever used by the other).
pub struct VrfKeypair(schnorrkel::Keypair);

impl VrfKeypair {
    pub fn from_node_secret(secret: &[u8; 32]) -> Self {
        let seed = sha256(&[VRF_KEY_DOMAIN, secret].concat());
        let mini = MiniSecretKey::from_bytes(&seed.0).expect("a mini secret is any 32 bytes");
        Self(mini.expand_to_keypair(ExpansionMode::Uniform))
    }

    pub fn public(&self) -> VrfPublicKey {
        VrfPublicKey(self.0.public.to_bytes())
    }

    /// The proof for `artifact_id`; the same bytes every time.
    pub fn prove(&self, artifact_id: &ArtifactId) -> SelectionProof {
        // The transcript already binds the secret nonce and the message; a
        // fixed generator makes the proof a function of them alone.
        // The proof's nonce comes from the second ("extra") transcript,
        // which `vrf_verify` also starts as `Transcript::new(b"VRF")`.
        let rng = rand_chacha::ChaCha20Rng::from_seed([0; 32]);
        let extra = schnorrkel::context::attach_rng(merlin::Transcript::new(b"VRF"), rng);
        let (inout, proof, _) = self.0.vrf_sign_extra(signing_context(SELECT_DOMAIN).bytes(&artifact_id.0), extra);
        let mut bytes = [0; SELECTION_PROOF_LEN];
        bytes[..32].copy_from_slice(&inout.to_preout().to_bytes());
        bytes[32..].copy_from_slice(&proof.to_bytes());
        SelectionProof(bytes)
    }
}

impl std::fmt::Debug for VrfKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VrfKeypair(public {})", self.public().to_hex())
    }
}

impl VrfPublicKey {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text).map_err(|e| format!("not hex: {e}"))?;
        Ok(Self(bytes.try_into().map_err(|b: Vec<u8>| format!("expected 32 bytes, got {}", b.len()))?))
    }

    /// Whether the key is a valid ristretto255 point.
    pub fn verify_point(&self) -> Result<(), SignatureError> {
        schnorrkel::PublicKey::from_bytes(&self.0).map(|_| ()).map_err(|_| SignatureError::InvalidPublicKey)
    }

    /// Verifies `proof` for `artifact_id` and returns its output. The output
    /// of an unverified proof means nothing: this is the only way to get one
    /// from bytes off the wire.
    pub fn verify(&self, artifact_id: &ArtifactId, proof: &SelectionProof) -> Result<SelectionOutput, SignatureError> {
        let bad = || SignatureError::BadSignature { what: "selection proof" };
        let key = schnorrkel::PublicKey::from_bytes(&self.0).map_err(|_| SignatureError::InvalidPublicKey)?;
        let preout = VRFPreOut::from_bytes(&proof.0[..32]).map_err(|_| bad())?;
        let dleq = VRFProof::from_bytes(&proof.0[32..]).map_err(|_| bad())?;
        key.vrf_verify(signing_context(SELECT_DOMAIN).bytes(&artifact_id.0), &preout, &dleq).map_err(|_| bad())?;
        Ok(proof.output_unverified(self, artifact_id))
    }
}

impl std::fmt::Debug for VrfPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VrfPublicKey({})", self.to_hex())
    }
}

impl SelectionProof {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text).map_err(|e| format!("not hex: {e}"))?;
        let len = bytes.len();
        Ok(Self(bytes.try_into().map_err(|_| format!("expected {SELECTION_PROOF_LEN} bytes, got {len}"))?))
    }

    /// The output this proof claims, for a proof verified before (a vote
    /// read back from this node's own store): hashing the pre-output costs
    /// nothing, verifying the proof costs a few scalar multiplications.
    pub fn output_unverified(&self, key: &VrfPublicKey, artifact_id: &ArtifactId) -> SelectionOutput {
        let mut hasher = Sha256::new();
        hasher.update(OUTPUT_DOMAIN);
        hasher.update(key.0);
        hasher.update(artifact_id.0);
        hasher.update(&self.0[..32]);
        SelectionOutput(hasher.finalize().into())
    }
}

impl std::fmt::Debug for SelectionProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SelectionProof({})", hex::encode(self.0))
    }
}

impl SelectionOutput {
    /// Whether the output, read as a fraction of 2^256, is below `rate`. The
    /// top 128 bits decide, exact for every rate that is a multiple of
    /// 2^-128; NaN selects nobody, and a rate of 1 everybody.
    pub fn selects(&self, rate: f64) -> bool {
        if rate >= 1.0 {
            return true;
        }
        if rate.is_nan() || rate <= 0.0 {
            return false;
        }
        let top = u128::from_be_bytes(self.0[..16].try_into().expect("16 bytes"));
        top < (rate * 2f64.powi(128)) as u128
    }
}
