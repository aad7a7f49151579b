//! The inference artifact (DESIGN §3).

use bincode::{Decode, Encode};
use half::f16;
use sha2::{Digest, Sha256};

use crate::codec;
use crate::crypto::{sha256, ArtifactId, ChainId, Hash32, Keypair, PreparedKey, PublicKey, Signature};
use crate::crypto::{ARTIFACT_DOMAIN, REQUEST_DOMAIN};
use crate::error::{DecodeError, SignatureError};
use crate::packing::PackedTokens;
use crate::sampling::SamplingParams;

/// 2: the request carries `max_tokens` and stop tokens, and the binding covers
/// them; half `-0`, NaN and infinities are refused at decode.
pub const ARTIFACT_VERSION: u8 = 2;
/// Stop tokens a request may name: a handful is all a chat template needs,
/// and the bound keeps the replay check's per-position test O(1).
pub const MAX_STOP_TOKENS: usize = 16;
/// `k` is bounded so a chosen index fits one byte.
pub const MAX_K: u16 = 255;
const SIGNATURE_LEN: usize = 64;
const NEGATIVE_ZERO_BITS: u16 = 0x8000;
const EXPONENT_BITS: u16 = 0x7C00;

/// What the requester asked for. The run seed derives from `user_seed` and
/// `request_uuid`; an artifact without a user seed is unseeded (e.g. imported
/// from an OpenAI-compatible server) and gets only the surprisal test.
/// `max_tokens` and `stop_token_ids` are the stop rules: a generation ends at
/// the eos token, at a stop token, or after exactly `max_tokens` tokens, so a
/// miner cannot cut an output short where it likes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub request_uuid: [u8; 16],
    pub user_seed: Option<u64>,
    pub prompt_tokens: Vec<u32>,
    pub max_tokens: u32,
    pub stop_token_ids: Vec<u32>,
    pub binding: Option<RequestBinding>,
}

/// The requester's signature over uuid, seed, prompt and stop rules. It
/// counts only if the chain knows the requester's key (DESIGN §3): otherwise
/// the miner could have picked the uuid after seeing outputs, so nodes record
/// the artifact as miner-seeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RequestBinding {
    pub requester: PublicKey,
    pub signature: Signature,
}

impl Request {
    /// A request with no stop tokens and no binding.
    pub fn new(request_uuid: [u8; 16], user_seed: Option<u64>, prompt_tokens: Vec<u32>, max_tokens: u32) -> Self {
        Self { request_uuid, user_seed, prompt_tokens, max_tokens, stop_token_ids: Vec::new(), binding: None }
    }

    /// `SHA256(u64_le(user_seed) || uuid_bytes[16])`, DESIGN §3.
    pub fn run_seed(&self) -> Option<[u8; 32]> {
        self.user_seed.map(|seed| run_seed(seed, &self.request_uuid))
    }

    /// What a requester signs: the chain, the uuid, the seed, the prompt and
    /// the stop rules.
    pub fn binding_digest(&self, chain_id: &ChainId) -> Hash32 {
        sha256(&codec::encode(&BindingMessage {
            chain_id,
            request_uuid: &self.request_uuid,
            user_seed: self.user_seed,
            prompt_tokens: &self.prompt_tokens,
            max_tokens: self.max_tokens,
            stop_token_ids: &self.stop_token_ids,
        }))
    }

    pub fn bind(&mut self, chain_id: &ChainId, requester: &Keypair) {
        let digest = self.binding_digest(chain_id);
        self.binding =
            Some(RequestBinding { requester: requester.public(), signature: requester.sign(REQUEST_DOMAIN, &digest) });
    }

    /// The requester whose valid signature binds this request, `None` when
    /// there is no binding, an error when a binding is present but does not
    /// verify. Whether the key counts is the chain's business.
    pub fn verify_binding(&self, chain_id: &ChainId) -> Result<Option<PublicKey>, SignatureError> {
        let Some(binding) = &self.binding else { return Ok(None) };
        let digest = self.binding_digest(chain_id);
        binding.requester.verify(REQUEST_DOMAIN, &digest, &binding.signature, "request binding")?;
        Ok(Some(binding.requester))
    }
}

pub fn run_seed(user_seed: u64, request_uuid: &[u8; 16]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(user_seed.to_le_bytes());
    hasher.update(request_uuid);
    hasher.finalize().into()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum FinishReason {
    /// The model produced its end-of-sequence token.
    Eos,
    /// The token budget ran out.
    MaxTokens,
    /// A stop string was reached.
    Stop,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eos => "eos",
            Self::MaxTokens => "max_tokens",
            Self::Stop => "stop",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "eos" => Some(Self::Eos),
            "max_tokens" => Some(Self::MaxTokens),
            "stop" => Some(Self::Stop),
            _ => None,
        }
    }
}

/// A log-probability rounded to nearest IEEE half, the way it is logged; a
/// value that rounds to zero is +0, the one canonical zero (half -0 is
/// refused at decode), so tiny negative log-probs of near-certain tokens log
/// as +0.
pub fn logged_half(logprob: f64) -> f16 {
    let half = f16::from_f64(logprob);
    if half == f16::ZERO {
        f16::ZERO
    } else {
        half
    }
}

/// One logged candidate: a token and its raw log-probability as IEEE half.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub token: u32,
    pub logprob: f16,
}

/// The generated positions, stored flat (`n * k` candidates) so that the replay
/// check walks contiguous memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    k: u16,
    tokens: Vec<u32>,
    logprobs: Vec<f16>,
    chosen: Vec<u8>,
}

/// A borrowed view of one generated position.
#[derive(Clone, Copy, Debug)]
pub struct Position<'a> {
    pub tokens: &'a [u32],
    pub logprobs: &'a [f16],
    pub chosen: u8,
}

impl Position<'_> {
    pub fn chosen_token(&self) -> u32 {
        self.tokens[usize::from(self.chosen)]
    }

    pub fn candidates(&self) -> impl Iterator<Item = Candidate> + Clone + '_ {
        self.tokens.iter().zip(self.logprobs).map(|(&token, &logprob)| Candidate { token, logprob })
    }
}

impl Generation {
    /// Builds from per-position candidate lists and chosen indices; every
    /// position must list exactly `k` candidates.
    pub fn new(k: u16, positions: &[(Vec<Candidate>, u8)]) -> Result<Self, DecodeError> {
        let mut generation = Self { k, tokens: Vec::new(), logprobs: Vec::new(), chosen: Vec::new() };
        for (index, (candidates, chosen)) in positions.iter().enumerate() {
            if candidates.len() != usize::from(k) {
                return Err(DecodeError::Structure(format!(
                    "position {index} lists {} candidates, k is {k}",
                    candidates.len()
                )));
            }
            generation.tokens.extend(candidates.iter().map(|c| c.token));
            generation.logprobs.extend(candidates.iter().map(|c| c.logprob));
            generation.chosen.push(*chosen);
        }
        generation.validate()?;
        Ok(generation)
    }

    fn validate(&self) -> Result<(), DecodeError> {
        if self.k == 0 || self.k > MAX_K {
            return Err(DecodeError::Structure(format!("k = {} outside 1..={MAX_K}", self.k)));
        }
        if self.chosen.is_empty() {
            return Err(DecodeError::Structure("no generated positions".into()));
        }
        let expected = self.chosen.len() * usize::from(self.k);
        if self.tokens.len() != expected || self.logprobs.len() != expected {
            return Err(DecodeError::Structure(format!(
                "{} positions of k = {} need {expected} candidates, found {} ids and {} log-probs",
                self.chosen.len(),
                self.k,
                self.tokens.len(),
                self.logprobs.len()
            )));
        }
        if let Some(position) = self.chosen.iter().position(|&c| u16::from(c) >= self.k) {
            return Err(DecodeError::Structure(format!(
                "position {position}: chosen index {} is not below k = {}",
                self.chosen[position], self.k
            )));
        }
        // One encoding per value (DESIGN §4): half -0 would sort apart from
        // +0 although the sampler ties them, and no NaN or infinity is a
        // log-probability.
        let k = usize::from(self.k);
        // One pass over the bits: -0, or an all-ones exponent (NaN, ±inf).
        let bad = |l: &f16| l.to_bits() == NEGATIVE_ZERO_BITS || l.to_bits() & EXPONENT_BITS == EXPONENT_BITS;
        if let Some(index) = self.logprobs.iter().position(bad) {
            let logprob = self.logprobs[index];
            let problem = if logprob.is_finite() { "half -0 is not canonical (log it as +0)" } else { "not finite" };
            return Err(DecodeError::Structure(format!(
                "position {}, candidate {}: log-prob {logprob}: {problem}",
                index / k,
                index % k
            )));
        }
        Ok(())
    }

    pub fn k(&self) -> u16 {
        self.k
    }

    pub fn len(&self) -> usize {
        self.chosen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chosen.is_empty()
    }

    pub fn position(&self, index: usize) -> Position<'_> {
        let k = usize::from(self.k);
        let range = index * k..(index + 1) * k;
        Position { tokens: &self.tokens[range.clone()], logprobs: &self.logprobs[range], chosen: self.chosen[index] }
    }

    pub fn positions(&self) -> impl ExactSizeIterator<Item = Position<'_>> + '_ {
        (0..self.len()).map(|i| self.position(i))
    }

    /// Per position the candidates and the chosen index: what
    /// [`Generation::new`] takes, for rebuilding an edited or shortened
    /// generation.
    pub fn to_positions(&self) -> Vec<(Vec<Candidate>, u8)> {
        self.positions().map(|p| (p.candidates().collect(), p.chosen)).collect()
    }

    /// The generated token sequence `t_0 .. t_{n-1}`.
    pub fn chosen_tokens(&self) -> Vec<u32> {
        self.positions().map(|p| p.chosen_token()).collect()
    }
}

/// Everything an artifact's id and signature cover.
#[derive(Clone, Debug, PartialEq)]
pub struct ArtifactBody {
    pub chain_id: ChainId,
    pub miner: PublicKey,
    pub request: Request,
    pub sampling: SamplingParams,
    pub generation: Generation,
    pub finish_reason: FinishReason,
    pub created_at_ms: u64,
}

/// A signed artifact. Its id is computed once, from the canonical body bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Artifact {
    pub body: ArtifactBody,
    pub signature: Signature,
    id: ArtifactId,
}

#[derive(Encode)]
struct BindingMessage<'a> {
    chain_id: &'a ChainId,
    request_uuid: &'a [u8; 16],
    user_seed: Option<u64>,
    prompt_tokens: &'a [u32],
    max_tokens: u32,
    stop_token_ids: &'a [u32],
}

#[derive(Encode, Decode)]
struct RequestWire {
    request_uuid: [u8; 16],
    user_seed: Option<u64>,
    prompt: PackedTokens,
    max_tokens: u32,
    stop_token_ids: Vec<u32>,
    binding: Option<RequestBinding>,
}

#[derive(Encode, Decode)]
struct BodyWire {
    version: u8,
    chain_id: ChainId,
    miner: PublicKey,
    request: RequestWire,
    sampling: SamplingParams,
    k: u16,
    candidates: PackedTokens,
    /// IEEE half bits, little-endian pairs: one byte blob decodes far faster
    /// than thousands of separately decoded u16s.
    logprobs: Vec<u8>,
    chosen: Vec<u8>,
    finish_reason: FinishReason,
    created_at_ms: u64,
}

#[derive(Encode, Decode)]
struct ArtifactWire {
    body: BodyWire,
    signature: Signature,
}

impl ArtifactBody {
    fn to_wire(&self) -> BodyWire {
        let request = &self.request;
        BodyWire {
            version: ARTIFACT_VERSION,
            chain_id: self.chain_id,
            miner: self.miner,
            request: RequestWire {
                request_uuid: request.request_uuid,
                user_seed: request.user_seed,
                prompt: PackedTokens::pack(&request.prompt_tokens),
                max_tokens: request.max_tokens,
                stop_token_ids: request.stop_token_ids.clone(),
                binding: request.binding,
            },
            sampling: self.sampling,
            k: self.generation.k,
            candidates: PackedTokens::pack(&self.generation.tokens),
            logprobs: self.generation.logprobs.iter().flat_map(|l| l.to_bits().to_le_bytes()).collect(),
            chosen: self.generation.chosen.clone(),
            finish_reason: self.finish_reason,
            created_at_ms: self.created_at_ms,
        }
    }

    fn from_wire(wire: BodyWire) -> Result<Self, DecodeError> {
        let prompt_tokens = wire.request.prompt.unpack("prompt")?;
        if wire.request.stop_token_ids.len() > MAX_STOP_TOKENS {
            return Err(DecodeError::Structure(format!(
                "{} stop tokens, the limit is {MAX_STOP_TOKENS}",
                wire.request.stop_token_ids.len()
            )));
        }
        if wire.candidates.count() * 2 != wire.logprobs.len() {
            return Err(DecodeError::Structure(format!(
                "{} candidate ids but {} bytes of log-probs",
                wire.candidates.count(),
                wire.logprobs.len()
            )));
        }
        let generation = Generation {
            k: wire.k,
            tokens: wire.candidates.unpack("candidates")?,
            logprobs: wire.logprobs.chunks_exact(2).map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]]))).collect(),
            chosen: wire.chosen,
        };
        generation.validate()?;
        Ok(Self {
            chain_id: wire.chain_id,
            miner: wire.miner,
            request: Request {
                request_uuid: wire.request.request_uuid,
                user_seed: wire.request.user_seed,
                prompt_tokens,
                max_tokens: wire.request.max_tokens,
                stop_token_ids: wire.request.stop_token_ids,
                binding: wire.request.binding,
            },
            sampling: wire.sampling,
            generation,
            finish_reason: wire.finish_reason,
            created_at_ms: wire.created_at_ms,
        })
    }

    pub fn canonical_bytes(&self) -> Vec<u8> {
        codec::encode(&self.to_wire())
    }

    pub fn id(&self) -> ArtifactId {
        sha256(&self.canonical_bytes())
    }

    pub fn sign(self, miner: &Keypair) -> Artifact {
        debug_assert_eq!(self.miner, miner.public(), "signing with a key other than the body's miner");
        let id = self.id();
        let signature = miner.sign(ARTIFACT_DOMAIN, &id);
        Artifact { body: self, signature, id }
    }
}

impl Artifact {
    pub fn id(&self) -> ArtifactId {
        self.id
    }

    /// Assembles an artifact from parts (e.g. a JSON view); the signature is
    /// not checked here, `verify_signature` does that.
    pub fn from_parts(body: ArtifactBody, signature: Signature) -> Self {
        let id = body.id();
        Self { body, signature, id }
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(&ArtifactWire { body: self.body.to_wire(), signature: self.signature })
    }

    /// Decodes canonical bytes of at most `max_len` bytes.
    pub fn decode(bytes: &[u8], max_len: usize) -> Result<Self, DecodeError> {
        let wire: ArtifactWire = codec::decode_versioned(bytes, max_len, "artifact", ARTIFACT_VERSION)?;
        let body = ArtifactBody::from_wire(wire.body)?;
        // The body is everything before the fixed-size signature, so the id
        // needs no re-encoding.
        let id = sha256(&bytes[..bytes.len() - SIGNATURE_LEN]);
        Ok(Self { body, signature: wire.signature, id })
    }

    pub fn verify_signature(&self) -> Result<(), SignatureError> {
        self.body.miner.verify(ARTIFACT_DOMAIN, &self.id, &self.signature, "artifact")
    }

    /// As `verify_signature`, with the miner's key prepared by the caller;
    /// a key other than the body's miner fails.
    pub fn verify_signature_with(&self, miner: &PreparedKey) -> Result<(), SignatureError> {
        if miner.public() != self.body.miner {
            return Err(SignatureError::BadSignature { what: "artifact" });
        }
        miner.verify(ARTIFACT_DOMAIN, &self.id, &self.signature, "artifact")
    }
}
