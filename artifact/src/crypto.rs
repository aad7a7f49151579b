//! Ids, keys and domain-separated ed25519 signatures.
//!
//! Every signature covers `domain || id`, where the domain names the object
//! kind and version, so a signature over one kind can never be replayed as
//! another. Verification is strict (no malleable or small-order encodings).

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::SignatureError;

pub const ARTIFACT_DOMAIN: &[u8] = b"poi/artifact/v1";
pub const VOTE_DOMAIN: &[u8] = b"poi/vote/v1";
pub const REQUEST_DOMAIN: &[u8] = b"poi/request/v1";

macro_rules! byte_newtype {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, bincode::Encode, bincode::Decode)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            pub fn from_hex(text: &str) -> Result<Self, String> {
                let bytes = hex::decode(text).map_err(|e| format!("not hex: {e}"))?;
                let array: [u8; $len] = bytes.try_into().map_err(|b: Vec<u8>| {
                    format!("expected {} bytes, got {}", $len, b.len())
                })?;
                Ok(Self(array))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

byte_newtype!(
    /// SHA-256 of a canonical encoding: artifact ids, vote ids, chain ids.
    Hash32, 32
);
byte_newtype!(
    /// An ed25519 public key as it travels (validated when used).
    PublicKey, 32
);
byte_newtype!(
    /// An ed25519 signature.
    Signature, 64
);

pub type ArtifactId = Hash32;
pub type VoteId = Hash32;
pub type ChainId = Hash32;

pub fn sha256(bytes: &[u8]) -> Hash32 {
    Hash32(Sha256::digest(bytes).into())
}

fn signed_message(domain: &[u8], id: &Hash32) -> Vec<u8> {
    let mut message = Vec::with_capacity(domain.len() + 32);
    message.extend_from_slice(domain);
    message.extend_from_slice(&id.0);
    message
}

/// A private signing key. Kept out of `Debug` output on purpose.
#[derive(Clone)]
pub struct Keypair(SigningKey);

impl Keypair {
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&secret))
    }

    pub fn secret(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// The VRF key of this node key (`poi keys show` prints its public half
    /// for the chain spec).
    pub fn vrf(&self) -> crate::vrf::VrfKeypair {
        crate::vrf::VrfKeypair::from_node_secret(&self.secret())
    }

    pub fn sign(&self, domain: &[u8], id: &Hash32) -> Signature {
        Signature(self.0.sign(&signed_message(domain, id)).to_bytes())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair(public {})", self.public())
    }
}

impl PublicKey {
    /// Checks that the key is a usable ed25519 point (canonical, not small order).
    pub fn verify_point(&self) -> Result<(), SignatureError> {
        self.prepare().map(|_| ())
    }

    /// The key decompressed and checked once, for a key that verifies many
    /// signatures (the chain's requesters, a miner that publishes often).
    pub fn prepare(&self) -> Result<PreparedKey, SignatureError> {
        match VerifyingKey::from_bytes(&self.0) {
            Ok(key) if !key.is_weak() => Ok(PreparedKey { public: *self, key }),
            _ => Err(SignatureError::InvalidPublicKey),
        }
    }

    /// Strict verification: rejects non-canonical points, small-order keys and
    /// malleable signatures.
    pub fn verify(
        &self,
        domain: &[u8],
        id: &Hash32,
        signature: &Signature,
        what: &'static str,
    ) -> Result<(), SignatureError> {
        self.prepare()?.verify(domain, id, signature, what)
    }
}

/// A public key that is a usable ed25519 point, decompressed: verifying with
/// it skips the decompression `PublicKey::verify` does every time.
#[derive(Clone, Copy, Debug)]
pub struct PreparedKey {
    public: PublicKey,
    key: VerifyingKey,
}

impl PreparedKey {
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// As `PublicKey::verify`: strict.
    pub fn verify(
        &self,
        domain: &[u8],
        id: &Hash32,
        signature: &Signature,
        what: &'static str,
    ) -> Result<(), SignatureError> {
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.key
            .verify_strict(&signed_message(domain, id), &signature)
            .map_err(|_| SignatureError::BadSignature { what })
    }
}
