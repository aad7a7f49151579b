//! Hex strings in JSON for fixed-size byte values.

use poi_artifact::{Hash32, PublicKey, VrfPublicKey};
use serde::{Deserialize, Deserializer, Serializer};

pub trait HexBytes: Sized {
    fn to_hex_string(&self) -> String;
    fn parse_hex(text: &str) -> Result<Self, String>;
}

impl HexBytes for Hash32 {
    fn to_hex_string(&self) -> String {
        self.to_hex()
    }
    fn parse_hex(text: &str) -> Result<Self, String> {
        Hash32::from_hex(text)
    }
}

impl HexBytes for PublicKey {
    fn to_hex_string(&self) -> String {
        self.to_hex()
    }
    fn parse_hex(text: &str) -> Result<Self, String> {
        PublicKey::from_hex(text)
    }
}

impl HexBytes for VrfPublicKey {
    fn to_hex_string(&self) -> String {
        self.to_hex()
    }
    fn parse_hex(text: &str) -> Result<Self, String> {
        VrfPublicKey::from_hex(text)
    }
}

pub fn serialize<T: HexBytes, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&value.to_hex_string())
}

pub fn deserialize<'de, T: HexBytes, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error> {
    let text = String::deserialize(deserializer)?;
    T::parse_hex(&text).map_err(serde::de::Error::custom)
}

/// A list of keys as a list of hex strings.
pub mod keys {
    use poi_artifact::PublicKey;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::HexBytes;

    pub fn serialize<S: Serializer>(keys: &[PublicKey], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(keys.iter().map(HexBytes::to_hex_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<PublicKey>, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        texts.iter().map(|t| PublicKey::parse_hex(t).map_err(serde::de::Error::custom)).collect()
    }
}
