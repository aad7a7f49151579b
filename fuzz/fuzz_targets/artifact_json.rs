//! The JSON view submitted by clients: parsing never panics; what parses
//! round-trips through its canonical bytes and back to the same JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use poi_artifact::{Artifact, MAX_WIRE_BYTES};

fuzz_target!(|text: &str| {
    if let Ok(artifact) = Artifact::from_json_str(text) {
        let bytes = artifact.encode();
        let decoded = Artifact::decode(&bytes, MAX_WIRE_BYTES.max(bytes.len())).expect("its own encoding decodes");
        assert_eq!(decoded, artifact);
        assert_eq!(Artifact::from_json_str(&artifact.to_json_string()).expect("its own JSON parses"), artifact);
    }
});
