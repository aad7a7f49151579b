//! Human JSON views of the wire objects, and the conversion back.
//!
//! Hashes, keys and signatures are hex; the uuid is hyphenated; u64 seeds are
//! decimal strings (JSON numbers lose precision past 2^53 in most clients);
//! log-probs are the exact IEEE half values, written as the shortest decimal
//! that reads back to the same half.

use half::f16;
use serde::{Deserialize, Serialize};

use crate::artifact::{Artifact, ArtifactBody, Candidate, FinishReason, Generation, Request, RequestBinding};
use crate::crypto::{Hash32, PublicKey, Signature};
use crate::error::JsonError;
use crate::sampling::SamplingParams;
use crate::vote::{Verdict, Vote, VoteBody, VoteFigures};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactJson {
    /// Informational on output; when present on input it must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub chain_id: String,
    pub miner: String,
    pub request: RequestJson,
    pub sampling: SamplingParams,
    pub k: u16,
    pub positions: Vec<PositionJson>,
    pub finish_reason: String,
    pub created_at_ms: u64,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestJson {
    pub request_uuid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_seed: Option<String>,
    pub prompt_tokens: Vec<u32>,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_token_ids: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<BindingJson>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingJson {
    pub requester: String,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionJson {
    pub chosen: u8,
    pub candidates: Vec<CandidateJson>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateJson {
    pub token: u32,
    pub logprob: f32,
}

fn field_err(field: impl Into<String>, problem: impl Into<String>) -> JsonError {
    JsonError::Field { field: field.into(), problem: problem.into() }
}

fn parse_hex<T>(field: &str, text: &str, parse: fn(&str) -> Result<T, String>) -> Result<T, JsonError> {
    parse(text).map_err(|problem| field_err(field, problem))
}

/// An f32 is accepted only if it is exactly an IEEE half value.
pub fn exact_half(value: f32) -> Option<f16> {
    let half = f16::from_f32(value);
    (half.to_f32().to_bits() == value.to_bits()).then_some(half)
}

impl From<&Artifact> for ArtifactJson {
    fn from(artifact: &Artifact) -> Self {
        let body = &artifact.body;
        let request = &body.request;
        Self {
            id: Some(artifact.id().to_hex()),
            chain_id: body.chain_id.to_hex(),
            miner: body.miner.to_hex(),
            request: RequestJson {
                request_uuid: uuid::Uuid::from_bytes(request.request_uuid).hyphenated().to_string(),
                user_seed: request.user_seed.map(|s| s.to_string()),
                prompt_tokens: request.prompt_tokens.clone(),
                max_tokens: request.max_tokens,
                stop_token_ids: request.stop_token_ids.clone(),
                binding: request
                    .binding
                    .map(|b| BindingJson { requester: b.requester.to_hex(), signature: b.signature.to_hex() }),
            },
            sampling: body.sampling,
            k: body.generation.k(),
            positions: body
                .generation
                .positions()
                .map(|p| PositionJson {
                    chosen: p.chosen,
                    candidates: p
                        .candidates()
                        .map(|c| CandidateJson { token: c.token, logprob: c.logprob.to_f32() })
                        .collect(),
                })
                .collect(),
            finish_reason: body.finish_reason.as_str().to_string(),
            created_at_ms: body.created_at_ms,
            signature: artifact.signature.to_hex(),
        }
    }
}

impl TryFrom<&ArtifactJson> for Artifact {
    type Error = JsonError;

    fn try_from(json: &ArtifactJson) -> Result<Self, JsonError> {
        let request_uuid = uuid::Uuid::parse_str(&json.request.request_uuid)
            .map_err(|e| field_err("request.request_uuid", e.to_string()))?
            .into_bytes();
        let user_seed = json
            .request
            .user_seed
            .as_deref()
            .map(|s| s.parse::<u64>().map_err(|e| field_err("request.user_seed", e.to_string())))
            .transpose()?;
        let binding = json
            .request
            .binding
            .as_ref()
            .map(|b| -> Result<_, JsonError> {
                Ok(RequestBinding {
                    requester: parse_hex("request.binding.requester", &b.requester, PublicKey::from_hex)?,
                    signature: parse_hex("request.binding.signature", &b.signature, Signature::from_hex)?,
                })
            })
            .transpose()?;
        if json.request.stop_token_ids.len() > crate::artifact::MAX_STOP_TOKENS {
            return Err(field_err(
                "request.stop_token_ids",
                format!(
                    "{} stop tokens, the limit is {}",
                    json.request.stop_token_ids.len(),
                    crate::artifact::MAX_STOP_TOKENS
                ),
            ));
        }
        let mut positions = Vec::with_capacity(json.positions.len());
        for (index, position) in json.positions.iter().enumerate() {
            let candidates = position
                .candidates
                .iter()
                .enumerate()
                .map(|(slot, c)| {
                    let logprob = exact_half(c.logprob).ok_or_else(|| {
                        field_err(
                            format!("positions[{index}].candidates[{slot}].logprob"),
                            format!("{} is not an IEEE half value", c.logprob),
                        )
                    })?;
                    Ok(Candidate { token: c.token, logprob })
                })
                .collect::<Result<Vec<_>, JsonError>>()?;
            positions.push((candidates, position.chosen));
        }
        let body = ArtifactBody {
            chain_id: parse_hex("chain_id", &json.chain_id, Hash32::from_hex)?,
            miner: parse_hex("miner", &json.miner, PublicKey::from_hex)?,
            request: Request {
                request_uuid,
                user_seed,
                prompt_tokens: json.request.prompt_tokens.clone(),
                max_tokens: json.request.max_tokens,
                stop_token_ids: json.request.stop_token_ids.clone(),
                binding,
            },
            sampling: json.sampling,
            generation: Generation::new(json.k, &positions)?,
            finish_reason: FinishReason::parse(&json.finish_reason)
                .ok_or_else(|| field_err("finish_reason", "expected eos, max_tokens or stop"))?,
            created_at_ms: json.created_at_ms,
        };
        let signature = parse_hex("signature", &json.signature, Signature::from_hex)?;
        let artifact = Artifact::from_parts(body, signature);
        if let Some(id) = &json.id {
            if *id != artifact.id().to_hex() {
                return Err(field_err("id", format!("does not match the content, whose id is {}", artifact.id())));
            }
        }
        Ok(artifact)
    }
}

impl Artifact {
    pub fn to_json(&self) -> ArtifactJson {
        ArtifactJson::from(self)
    }

    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(&self.to_json()).expect("artifact JSON view serialises")
    }

    pub fn from_json_str(text: &str) -> Result<Self, JsonError> {
        let json: ArtifactJson = serde_json::from_str(text)?;
        Artifact::try_from(&json)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub chain_id: String,
    pub artifact_id: String,
    pub validator: String,
    pub selection_proof: String,
    pub verdict: String,
    pub distance: f64,
    pub match_ratio: f64,
    pub surprisal_z: f64,
    pub profile_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub created_at_ms: u64,
    pub signature: String,
}

impl From<&Vote> for VoteJson {
    fn from(vote: &Vote) -> Self {
        let body = &vote.body;
        Self {
            id: Some(vote.id().to_hex()),
            chain_id: body.chain_id.to_hex(),
            artifact_id: body.artifact_id.to_hex(),
            validator: body.validator.to_hex(),
            selection_proof: body.selection_proof.to_hex(),
            verdict: body.verdict.as_str().to_string(),
            distance: body.figures.distance,
            match_ratio: body.figures.match_ratio,
            surprisal_z: body.figures.surprisal_z,
            profile_id: body.figures.profile_id.clone(),
            reason: body.figures.reason.clone(),
            created_at_ms: body.created_at_ms,
            signature: vote.signature.to_hex(),
        }
    }
}

impl TryFrom<&VoteJson> for Vote {
    type Error = JsonError;

    fn try_from(json: &VoteJson) -> Result<Self, JsonError> {
        let body = VoteBody {
            chain_id: parse_hex("chain_id", &json.chain_id, Hash32::from_hex)?,
            artifact_id: parse_hex("artifact_id", &json.artifact_id, Hash32::from_hex)?,
            validator: parse_hex("validator", &json.validator, PublicKey::from_hex)?,
            selection_proof: parse_hex("selection_proof", &json.selection_proof, crate::vrf::SelectionProof::from_hex)?,
            verdict: Verdict::parse(&json.verdict)
                .ok_or_else(|| field_err("verdict", "expected accept, reject or inconclusive"))?,
            figures: VoteFigures {
                distance: json.distance,
                match_ratio: json.match_ratio,
                surprisal_z: json.surprisal_z,
                profile_id: json.profile_id.clone(),
                reason: json.reason.clone(),
            },
            created_at_ms: json.created_at_ms,
        };
        let vote = Vote::from_parts(body, parse_hex("signature", &json.signature, Signature::from_hex)?);
        if let Some(id) = &json.id {
            if *id != vote.id().to_hex() {
                return Err(field_err("id", format!("does not match the content, whose id is {}", vote.id())));
            }
        }
        Ok(vote)
    }
}
