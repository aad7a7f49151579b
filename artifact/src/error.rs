use thiserror::Error;

/// Why bytes from the wire were refused. Every variant names the problem so a
/// peer that sent it can be told, and penalised.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("input is {len} bytes, over the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("input is empty")]
    Empty,
    #[error("unknown {what} version {found} (this node speaks version {supported})")]
    UnknownVersion { what: &'static str, found: u8, supported: u8 },
    #[error("input ends early")]
    Truncated,
    #[error("{extra} trailing bytes after the encoded value")]
    TrailingBytes { extra: usize },
    #[error("a length prefix claims more memory than any valid input can need")]
    ClaimTooLarge,
    #[error("invalid tag {found} for {what}")]
    InvalidTag { what: &'static str, found: u32 },
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("non-canonical encoding: {0}")]
    NonCanonical(&'static str),
    #[error("inconsistent structure: {0}")]
    Structure(String),
    #[error("malformed input: {0}")]
    Malformed(String),
}

/// A signature or key that does not verify under strict ed25519 rules.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SignatureError {
    #[error("public key is not a valid ed25519 point")]
    InvalidPublicKey,
    #[error("signature does not verify for this {what}")]
    BadSignature { what: &'static str },
}

/// A JSON view that cannot be turned back into a wire object.
#[derive(Debug, Error)]
pub enum JsonError {
    #[error("invalid JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error("field `{field}`: {problem}")]
    Field { field: String, problem: String },
    #[error(transparent)]
    Structure(#[from] DecodeError),
}
