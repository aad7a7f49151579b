//! Canonical artifact bytes from a peer: decoding never panics, and whatever
//! decodes is canonical (re-encodes to the same bytes) and can be replay-checked.
#![no_main]
use libfuzzer_sys::fuzz_target;
use poi_artifact::{Artifact, MAX_WIRE_BYTES};
use poi_chain_spec::ChainSpec;
use poi_verifier::replay::ReplayChecker;

fuzz_target!(|data: &[u8]| {
    if let Ok(artifact) = Artifact::decode(data, MAX_WIRE_BYTES) {
        assert_eq!(artifact.encode(), data, "decoded bytes are not canonical");
        let _ = ReplayChecker::new(ChainSpec::devnet()).check(&artifact);
    }
});
