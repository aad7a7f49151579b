//! OpenAI / vLLM responses: the importer never panics, and what it imports
//! is a body that encodes and decodes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use poi_artifact::openai::{import_chat_completion, ImportContext, TokenIdStrings};
use poi_artifact::{Artifact, Keypair, MAX_WIRE_BYTES};
use poi_chain_spec::ChainSpec;

fuzz_target!(|text: &str| {
    let spec = ChainSpec::devnet();
    let key = Keypair::from_secret([5; 32]);
    let ctx = ImportContext {
        chain_id: spec.chain_id(),
        sampling: spec.sampling,
        k: 4,
        prompt_tokens: Some(vec![1, 2, 3]),
        request_uuid: [0; 16],
        submitter: key.public(),
        created_at_ms: 0,
        resolver: &TokenIdStrings,
    };
    if let Ok(body) = import_chat_completion(text, &ctx) {
        let artifact = body.sign(&key);
        let bytes = artifact.encode();
        assert_eq!(Artifact::decode(&bytes, MAX_WIRE_BYTES.max(bytes.len())).expect("decodes"), artifact);
    }
});
