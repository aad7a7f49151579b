//! The one place that knows the canonical binary encoding (bincode `=2.0.1`).
//!
//! Fixed-width little-endian integers make the encoding injective: every value
//! has exactly one byte string, so "canonical" reduces to the semantic rules the
//! callers check (minimal token width, zero padding). Swapping the encoding means
//! changing this module and the golden vectors, nothing else.

use bincode::config::{self, Configuration, Fixint, Limit, LittleEndian};
use bincode::error::DecodeError as BincodeDecodeError;
use bincode::{Decode, Encode};

use crate::error::DecodeError;

/// Hard ceiling on what one decode may claim for its containers. A hostile length
/// prefix can make the decoder reserve at most this much, whatever the input.
pub const MAX_WIRE_BYTES: usize = 8 * 1024 * 1024;

type WireConfig = Configuration<LittleEndian, Fixint, Limit<MAX_WIRE_BYTES>>;

const fn wire_config() -> WireConfig {
    config::standard().with_little_endian().with_fixed_int_encoding().with_limit::<MAX_WIRE_BYTES>()
}

pub(crate) fn encode<T: Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, wire_config()).expect("encoding into a Vec cannot fail for poi wire types")
}

/// Decodes one value that must span `bytes` exactly and whose first byte is its
/// format version. `limit` is checked before anything else so oversized input
/// never reaches the allocator; an unknown version is refused before decoding
/// so a future format can change everything after that byte.
pub(crate) fn decode_versioned<T: Decode<()>>(
    bytes: &[u8],
    limit: usize,
    what: &'static str,
    supported: u8,
) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge { len: bytes.len(), limit });
    }
    match bytes.first() {
        None => return Err(DecodeError::Empty),
        Some(&found) if found != supported => return Err(DecodeError::UnknownVersion { what, found, supported }),
        Some(_) => {}
    }
    let (value, read) = bincode::decode_from_slice(bytes, wire_config()).map_err(map_error)?;
    if read != bytes.len() {
        return Err(DecodeError::TrailingBytes { extra: bytes.len() - read });
    }
    Ok(value)
}

fn map_error(err: BincodeDecodeError) -> DecodeError {
    match err {
        BincodeDecodeError::UnexpectedEnd { .. } => DecodeError::Truncated,
        BincodeDecodeError::LimitExceeded => DecodeError::ClaimTooLarge,
        BincodeDecodeError::UnexpectedVariant { found, type_name, .. } => {
            DecodeError::InvalidTag { what: type_name, found }
        }
        BincodeDecodeError::InvalidBooleanValue(found) => {
            DecodeError::InvalidTag { what: "bool", found: u32::from(found) }
        }
        BincodeDecodeError::Utf8 { .. } => DecodeError::InvalidUtf8,
        other => DecodeError::Malformed(other.to_string()),
    }
}
