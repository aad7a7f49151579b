//! The shared reference vectors (`../shared/vectors/`): every case must agree.

use poi_artifact::{run_seed, History, SamplingParams};
use poi_verifier::{distance2, draw, Sampler, TopLogprobs};
use serde::Deserialize;

fn vectors(name: &str) -> String {
    let path = format!("{}/../../shared/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[derive(Deserialize)]
struct SamplerFile {
    cases: Vec<SamplerCase>,
}

#[derive(Deserialize)]
struct SamplerCase {
    user_seed: String,
    request_uuid: String,
    run_seed: String,
    position: u32,
    prompt_tokens: Vec<u32>,
    generated_tokens: Vec<u32>,
    params: SamplingParams,
    candidates: Vec<LoggedCandidate>,
    draw_u64: String,
    expected_chosen_index: usize,
    expected_chosen_token: u32,
}

#[derive(Deserialize)]
struct LoggedCandidate {
    token: u32,
    logprob: f64,
}

#[test]
fn sampler_v1_agrees_on_every_reference_case() {
    let file: SamplerFile = serde_json::from_str(&vectors("sampler-v1.json")).unwrap();
    assert_eq!(file.cases.len(), 400);
    let mut sampler = Sampler::new();
    for (i, case) in file.cases.iter().enumerate() {
        let uuid: [u8; 16] = hex::decode(&case.request_uuid).unwrap().try_into().unwrap();
        let seed = run_seed(case.user_seed.parse().unwrap(), &uuid);
        assert_eq!(hex::encode(seed), case.run_seed, "case {i}: run seed");
        assert_eq!(draw(&seed, case.position).to_string(), case.draw_u64, "case {i}: draw");
        assert_eq!(case.generated_tokens.len(), case.position as usize);
        for c in &case.candidates {
            assert_eq!(poi_artifact::f16::from_f64(c.logprob).to_f64(), c.logprob, "case {i}: not a half value");
        }
        let history = History::with_generated(&case.prompt_tokens, &case.generated_tokens);
        let chosen = sampler
            .choose(case.candidates.iter().map(|c| (c.token, c.logprob)), &history, &case.params, &seed, case.position)
            .unwrap();
        assert_eq!(chosen, case.expected_chosen_index, "case {i}: chosen index");
        assert_eq!(case.candidates[chosen].token, case.expected_chosen_token, "case {i}: chosen token");
    }
}

#[derive(Deserialize)]
struct DistanceFile {
    tolerance: f64,
    cases: Vec<DistanceCase>,
}

#[derive(Deserialize)]
struct DistanceCase {
    name: String,
    inference: Side,
    validation: Side,
    expected_distance: f64,
    expected_match_ratio: f64,
}

/// Token keys are i64 here: a mismatch case uses a negative id.
#[derive(Deserialize)]
struct Side {
    tokens: Vec<i64>,
    positions: Vec<Vec<KeyedLogprob>>,
}

#[derive(Deserialize)]
struct KeyedLogprob {
    token: i64,
    logprob: f64,
}

impl Side {
    fn top_logprobs(&self) -> Vec<TopLogprobs<i64>> {
        self.tokens
            .iter()
            .zip(&self.positions)
            .map(|(&chosen, entries)| TopLogprobs {
                chosen,
                entries: entries.iter().map(|c| (c.token, c.logprob)).collect(),
            })
            .collect()
    }
}

#[test]
fn distance2_agrees_on_every_reference_case() {
    let file: DistanceFile = serde_json::from_str(&vectors("distance2.json")).unwrap();
    assert_eq!(file.cases.len(), 45);
    for case in &file.cases {
        let (distance, ratio) = distance2(&case.inference.top_logprobs(), &case.validation.top_logprobs());
        assert!(
            (distance - case.expected_distance).abs() <= file.tolerance,
            "{}: distance {distance} vs {}",
            case.name,
            case.expected_distance
        );
        assert!(
            (ratio - case.expected_match_ratio).abs() <= file.tolerance,
            "{}: match ratio {ratio} vs {}",
            case.name,
            case.expected_match_ratio
        );
    }
}

#[test]
fn distance2_of_empty_or_mismatched_lengths_is_minus_one() {
    let one = vec![TopLogprobs { chosen: 1u32, entries: vec![(1, -0.5)] }];
    assert_eq!(distance2::<u32>(&[], &[]), (-1.0, -1.0));
    assert_eq!(distance2(&one, &[]), (-1.0, -1.0));
}
