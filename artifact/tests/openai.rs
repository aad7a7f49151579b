//! Import of OpenAI-compatible (vLLM) chat completions with top_logprobs.

mod common;

use poi_artifact::openai::{import_chat_completion, ImportContext, ImportError, TokenIdStrings};
use poi_artifact::{FinishReason, SamplingParams};
use serde_json::json;

fn response(positions: &[(u32, &[(u32, f64)])]) -> String {
    let content: Vec<_> = positions
        .iter()
        .map(|(chosen, tops)| {
            json!({
                "token": format!("token_id:{chosen}"),
                "logprob": tops.iter().find(|(t, _)| t == chosen).map(|(_, l)| *l).unwrap_or(-9.0),
                "bytes": [],
                "top_logprobs": tops.iter().map(|(t, l)| json!({"token": format!("token_id:{t}"), "logprob": l, "bytes": []})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "smollm2",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "logprobs": {"content": content}, "finish_reason": "length"}],
        "prompt_token_ids": [1, 2, 3],
    })
    .to_string()
}

fn ctx(k: u16) -> ImportContext<'static> {
    ImportContext {
        chain_id: common::chain_id(),
        sampling: SamplingParams::SEED_DEFAULTS,
        k,
        prompt_tokens: None,
        request_uuid: [1; 16],
        submitter: common::miner().public(),
        created_at_ms: 5,
        resolver: &TokenIdStrings,
    }
}

#[test]
fn imports_in_penalised_order_as_an_unseeded_artifact() {
    // Token 3 is in the prompt, so its -0.5 becomes -0.6 and falls behind token 7's -0.55.
    let text = response(&[(7, &[(3, -0.5), (7, -0.55), (9, -2.0)]), (9, &[(9, -0.1), (7, -0.2), (4, -3.0)])]);
    let body = import_chat_completion(&text, &ctx(3)).unwrap();
    assert_eq!(body.request.user_seed, None);
    assert_eq!(body.request.prompt_tokens, vec![1, 2, 3]);
    assert_eq!(body.finish_reason, FinishReason::MaxTokens);
    let first = body.generation.position(0);
    assert_eq!(first.tokens, &[7, 3, 9]);
    assert_eq!(first.chosen_token(), 7);
    // Position 1: 7 was generated, so -0.2 * 1.2 = -0.24 < -0.1 still; order 9, 7, 4.
    assert_eq!(body.generation.position(1).tokens, &[9, 7, 4]);
    assert_eq!(body.generation.chosen_tokens(), vec![7, 9]);
    let artifact = body.sign(&common::miner());
    artifact.verify_signature().unwrap();
}

#[test]
fn keeps_only_the_top_k_after_ordering() {
    let text = response(&[(9, &[(3, -0.5), (7, -0.55), (9, -0.1)])]);
    let body = import_chat_completion(&text, &ctx(2)).unwrap();
    assert_eq!(body.generation.position(0).tokens, &[9, 7]);
}

#[test]
fn refuses_what_it_cannot_represent() {
    let chosen_outside = response(&[(5, &[(3, -0.5), (7, -0.55)])]);
    assert!(matches!(
        import_chat_completion(&chosen_outside, &ctx(2)),
        Err(ImportError::ChosenNotInCandidates { position: 0, token: 5 })
    ));
    let too_few = response(&[(3, &[(3, -0.5)])]);
    assert!(matches!(
        import_chat_completion(&too_few, &ctx(2)),
        Err(ImportError::TooFewCandidates { position: 0, found: 1, k: 2 })
    ));
    let positive = response(&[(3, &[(3, 0.5), (4, -1.0)])]);
    assert!(matches!(import_chat_completion(&positive, &ctx(2)), Err(ImportError::BadLogprob { position: 0, .. })));
    let duplicate = response(&[(3, &[(3, -0.5), (3, -1.0)])]);
    assert!(matches!(import_chat_completion(&duplicate, &ctx(2)), Err(ImportError::DuplicateCandidate { .. })));
    let text_tokens = response(&[(3, &[(3, -0.5), (4, -1.0)])]).replace("token_id:4", "Hello");
    assert!(
        matches!(import_chat_completion(&text_tokens, &ctx(2)), Err(ImportError::UnknownToken { token, .. }) if token == "Hello")
    );
    assert!(matches!(import_chat_completion("{\"choices\": []}", &ctx(2)), Err(ImportError::NoChoices)));
    assert!(matches!(import_chat_completion("[1,2]", &ctx(2)), Err(ImportError::Json(_))));
}

/// A `stop` finish becomes a stop on the last token, unless that token
/// occurs earlier: a stop token mid-output would end the generation there,
/// so the import then claims only the budget it used.
#[test]
fn a_stop_finish_names_the_last_token_only_where_it_ends_the_output() {
    let stopped = |positions: &[(u32, &[(u32, f64)])]| {
        let text = response(positions).replace("\"length\"", "\"stop\"");
        import_chat_completion(&text, &ctx(2)).unwrap()
    };
    let body = stopped(&[(7, &[(7, -0.1), (9, -2.0)]), (9, &[(9, -0.1), (7, -0.2)])]);
    assert_eq!((body.finish_reason, body.request.stop_token_ids.clone()), (FinishReason::Stop, vec![9]));
    assert_eq!(body.request.max_tokens, 2);
    let body = stopped(&[(9, &[(9, -0.1), (7, -2.0)]), (9, &[(9, -0.1), (7, -0.2)])]);
    assert_eq!((body.finish_reason, body.request.stop_token_ids), (FinishReason::MaxTokens, vec![]));
    assert_eq!(body.request.max_tokens, 2);
}
