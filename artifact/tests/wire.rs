//! Round trips, golden byte vectors, tampering and every decode error path.

mod common;

use common::*;
use poi_artifact::{
    Artifact, DecodeError, Keypair, SignatureError, Vote, ARTIFACT_DOMAIN, MAX_WIRE_BYTES, VOTE_DOMAIN,
};

const LIMIT: usize = 1 << 20;

/// Golden files are written only on purpose (`POI_BLESS=1`), never by a normal run.
fn golden(name: &str, actual: &str) -> String {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("POI_BLESS").is_some() {
        std::fs::write(&path, format!("{actual}\n")).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e} (POI_BLESS=1 writes it)"));
    text.trim().to_string()
}

#[test]
fn artifact_encoding_matches_golden_bytes() {
    let artifact = sample_artifact();
    let bytes = artifact.encode();
    assert_eq!(
        hex::encode(&bytes),
        golden("artifact-v2.hex", &hex::encode(&bytes)),
        "canonical artifact encoding changed"
    );
    assert_eq!(artifact.id().to_hex(), golden("artifact-v2.id", &artifact.id().to_hex()));
    let decoded = Artifact::decode(&bytes, LIMIT).unwrap();
    assert_eq!(decoded, artifact);
    assert_eq!(decoded.id(), artifact.id());
    decoded.verify_signature().unwrap();
}

#[test]
fn vote_encoding_matches_golden_bytes() {
    let vote = sample_vote();
    let bytes = vote.encode();
    assert_eq!(hex::encode(&bytes), golden("vote-v3.hex", &hex::encode(&bytes)), "canonical vote encoding changed");
    assert_eq!(vote.id().to_hex(), golden("vote-v3.id", &vote.id().to_hex()));
    let decoded = Vote::decode(&bytes).unwrap();
    assert_eq!(decoded, vote);
    decoded.verify_signature().unwrap();
}

#[test]
fn json_views_round_trip_exactly() {
    let artifact = sample_artifact();
    let text = artifact.to_json_string();
    let back = Artifact::from_json_str(&text).unwrap();
    assert_eq!(back, artifact);
    assert_eq!(back.encode(), artifact.encode());
    back.verify_signature().unwrap();

    let vote = sample_vote();
    let json = poi_artifact::json::VoteJson::from(&vote);
    let back = Vote::try_from(
        &serde_json::from_str::<poi_artifact::json::VoteJson>(&serde_json::to_string(&json).unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(back, vote);
}

#[test]
fn json_refuses_inexact_halves_wrong_ids_and_unknown_fields() {
    let artifact = sample_artifact();
    let mut json = artifact.to_json();
    json.positions[1].candidates[2].logprob = -0.1; // not representable in half
    let err = Artifact::try_from(&json).unwrap_err().to_string();
    assert!(err.contains("positions[1].candidates[2].logprob"), "{err}");

    let mut json = artifact.to_json();
    json.created_at_ms += 1; // content changed, stated id kept
    assert!(Artifact::try_from(&json).unwrap_err().to_string().contains("field `id`"));

    let mut value: serde_json::Value = serde_json::from_str(&artifact.to_json_string()).unwrap();
    value["request"]["extra"] = 1.into();
    assert!(Artifact::from_json_str(&value.to_string()).unwrap_err().to_string().contains("unknown field"));
}

#[test]
fn tampering_with_any_body_byte_breaks_the_artifact() {
    let bytes = sample_artifact().encode();
    let body_len = bytes.len() - 64;
    for index in 0..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[index] ^= 0x01;
        match Artifact::decode(&tampered, LIMIT) {
            Err(_) => {}
            Ok(artifact) => {
                let err = artifact.verify_signature().unwrap_err();
                let expected = if (32 + 1..32 + 1 + 32).contains(&index) && index < body_len {
                    // The miner key itself changed: either not a point, or the wrong key.
                    matches!(err, SignatureError::InvalidPublicKey | SignatureError::BadSignature { .. })
                } else {
                    matches!(err, SignatureError::BadSignature { what: "artifact" })
                };
                assert!(expected, "byte {index}: {err:?}");
            }
        }
    }
}

#[test]
fn signatures_are_domain_separated_and_key_bound() {
    let artifact = sample_artifact();
    let miner = miner();
    // The same id signed under the vote domain must not pass as an artifact signature.
    let cross = Artifact::from_parts(artifact.body.clone(), miner.sign(VOTE_DOMAIN, &artifact.id()));
    assert!(cross.verify_signature().is_err());
    // Someone else's signature over the right message.
    let other = Keypair::from_secret([3; 32]);
    let forged = Artifact::from_parts(artifact.body.clone(), other.sign(ARTIFACT_DOMAIN, &artifact.id()));
    assert_eq!(forged.verify_signature(), Err(SignatureError::BadSignature { what: "artifact" }));

    let vote = sample_vote();
    let mut bytes = vote.encode();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    assert!(Vote::decode(&bytes).unwrap().verify_signature().is_err());
}

#[test]
fn request_binding_covers_uuid_seed_prompt_stop_rules_and_chain() {
    let requester = Keypair::from_secret([5; 32]);
    let mut request = sample_body().request;
    assert_eq!(request.verify_binding(&chain_id()), Ok(None));
    request.bind(&chain_id(), &requester);
    assert_eq!(request.verify_binding(&chain_id()), Ok(Some(requester.public())));
    assert!(request.verify_binding(&poi_artifact::Hash32([0; 32])).is_err());
    for tamper in [
        |r: &mut poi_artifact::Request| r.user_seed = Some(43),
        |r: &mut poi_artifact::Request| r.request_uuid[0] ^= 1,
        |r: &mut poi_artifact::Request| r.prompt_tokens.push(5),
        |r: &mut poi_artifact::Request| r.user_seed = None,
        |r: &mut poi_artifact::Request| r.max_tokens += 1,
        |r: &mut poi_artifact::Request| r.stop_token_ids.clear(),
    ] {
        let mut changed = request.clone();
        tamper(&mut changed);
        assert!(changed.verify_binding(&chain_id()).is_err());
    }
}

// Offsets into the canonical artifact layout (fixed-width little-endian):
// version 1 | chain_id 32 | miner 32 | uuid 16 | seed tag 1 + u64 8 | prompt count 4 | bits 1 | data len 8 ...
const SEED_TAG: usize = 81;
const PROMPT_DATA_LEN: usize = 95;

#[test]
fn every_decode_error_path_is_typed() {
    let bytes = sample_artifact().encode();
    let decode = |b: &[u8]| Artifact::decode(b, LIMIT).unwrap_err();

    assert_eq!(
        Artifact::decode(&bytes, bytes.len() - 1).unwrap_err(),
        DecodeError::TooLarge { len: bytes.len(), limit: bytes.len() - 1 }
    );
    assert_eq!(decode(&[]), DecodeError::Empty);
    let mut v1 = bytes.clone();
    v1[0] = 1;
    assert_eq!(decode(&v1), DecodeError::UnknownVersion { what: "artifact", found: 1, supported: 2 });
    assert_eq!(decode(&bytes[..bytes.len() - 1]), DecodeError::Truncated);
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(decode(&trailing), DecodeError::TrailingBytes { extra: 1 });

    let mut bad_tag = bytes.clone();
    bad_tag[SEED_TAG] = 2;
    assert!(matches!(decode(&bad_tag), DecodeError::InvalidTag { found: 2, .. }));

    let mut huge_claim = bytes.clone();
    huge_claim[PROMPT_DATA_LEN..PROMPT_DATA_LEN + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert_eq!(decode(&huge_claim), DecodeError::ClaimTooLarge);
    let mut big_claim = bytes.clone();
    big_claim[PROMPT_DATA_LEN..PROMPT_DATA_LEN + 8].copy_from_slice(&((MAX_WIRE_BYTES as u64) / 2).to_le_bytes());
    assert_eq!(decode(&big_claim), DecodeError::Truncated);

    let finish = bytes.len() - 64 - 8 - 4;
    let mut bad_finish = bytes.clone();
    bad_finish[finish] = 9;
    assert!(matches!(decode(&bad_finish), DecodeError::InvalidTag { found: 9, .. }));

    // Chosen index of the last position is the byte just before the finish reason.
    let mut bad_chosen = bytes.clone();
    bad_chosen[finish - 1] = 4;
    assert!(matches!(decode(&bad_chosen), DecodeError::Structure(m) if m.contains("chosen index 4")));

    // Log-probs: 2 bytes each, little-endian, just before the chosen indexes
    // (3 bytes and their length, 8). Half -0 and NaN are refused at decode.
    let last_logprob = finish - 3 - 8 - 2;
    for (bits, what) in [(0x8000u16, "-0"), (0x7E00, "not finite"), (0xFC00, "not finite")] {
        let mut bad = bytes.clone();
        bad[last_logprob..last_logprob + 2].copy_from_slice(&bits.to_le_bytes());
        assert!(matches!(decode(&bad), DecodeError::Structure(m) if m.contains(what)), "{bits:#x}");
    }
    let mut too_many_stops = sample_body();
    too_many_stops.request.stop_token_ids = vec![7; poi_artifact::MAX_STOP_TOKENS + 1];
    let bytes = too_many_stops.sign(&miner()).encode();
    assert!(matches!(decode(&bytes), DecodeError::Structure(m) if m.contains("stop tokens")));
}

#[test]
fn non_canonical_token_packing_is_refused() {
    // The prompt [1, 9690, 198, 2, 5] packs at 14 bits into 9 bytes (2 padding
    // bits); claiming 15 bits with the same data is refused.
    let bytes = sample_artifact().encode();
    let mut wider = bytes.clone();
    assert_eq!(wider[PROMPT_DATA_LEN - 1], 14);
    wider[PROMPT_DATA_LEN - 1] = 15;
    let err = Artifact::decode(&wider, LIMIT).unwrap_err();
    assert!(matches!(err, DecodeError::Structure(_) | DecodeError::NonCanonical(_)), "{err:?}");
    // The top bit of the last prompt byte is padding.
    let mut dirty = bytes;
    let last_prompt_byte = PROMPT_DATA_LEN + 8 + 8;
    dirty[last_prompt_byte] |= 0x80;
    let err = Artifact::decode(&dirty, LIMIT).unwrap_err();
    assert!(matches!(err, DecodeError::NonCanonical(_)), "{err:?}");
}

#[test]
fn vote_decode_errors_are_typed() {
    let bytes = sample_vote().encode();
    assert!(matches!(Vote::decode(&vec![1u8; poi_artifact::MAX_VOTE_BYTES + 1]), Err(DecodeError::TooLarge { .. })));
    assert_eq!(Vote::decode(&bytes[..10]).unwrap_err(), DecodeError::Truncated);
    let mut v0 = bytes.clone();
    v0[0] = 0;
    assert!(matches!(Vote::decode(&v0), Err(DecodeError::UnknownVersion { what: "vote", .. })));
    // profile id bytes sit right before the (empty) reason's length (8),
    // created_at (8) and the signature (64).
    let profile_end = bytes.len() - 64 - 8 - 8;
    let mut bad_utf8 = bytes.clone();
    bad_utf8[profile_end - 1] = 0xff;
    assert_eq!(Vote::decode(&bad_utf8).unwrap_err(), DecodeError::InvalidUtf8);
}
