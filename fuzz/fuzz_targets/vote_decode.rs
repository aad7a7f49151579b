//! Vote bytes from a peer: decoding never panics; what decodes is canonical.
#![no_main]
use libfuzzer_sys::fuzz_target;
use poi_artifact::Vote;

fuzz_target!(|data: &[u8]| {
    if let Ok(vote) = Vote::decode(data) {
        assert_eq!(vote.encode(), data, "decoded bytes are not canonical");
        let _ = vote.verify_signature();
    }
});
