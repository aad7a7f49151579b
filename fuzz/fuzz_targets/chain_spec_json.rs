//! A chain spec file: loading never panics; what loads has a stable id.
#![no_main]
use libfuzzer_sys::fuzz_target;
use poi_chain_spec::ChainSpec;

fuzz_target!(|text: &str| {
    if let Ok(spec) = ChainSpec::from_json_str(text) {
        let again = ChainSpec::from_json_str(&serde_json::to_string(&spec).expect("serialisable")).expect("reloads");
        assert_eq!(again.chain_id(), spec.chain_id());
    }
});
