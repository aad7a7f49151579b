use poi_chain_spec::{devnet_keypair, devnet_requester, ChainSpec, LoadError, SeedingPolicy, DEVNET_SPEC_JSON};
use serde_json::{json, Value};

fn devnet_value() -> Value {
    serde_json::from_str(DEVNET_SPEC_JSON).unwrap()
}

fn load(value: &Value) -> Result<ChainSpec, LoadError> {
    ChainSpec::from_json_str(&value.to_string())
}

fn field_of(err: LoadError) -> String {
    match err {
        LoadError::Invalid(e) => e.field,
        other => panic!("expected a range error, got {other}"),
    }
}

#[test]
fn devnet_spec_pins_the_model_and_the_seed_defaults() {
    let spec = ChainSpec::devnet();
    assert_eq!(spec.model.file_sha256.to_hex(), "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
    assert_eq!(spec.model.vocab_size, 49152);
    assert_eq!(spec.model.n_layers, 30);
    assert!(spec.sampling.bit_identical(&poi_artifact::SamplingParams::SEED_DEFAULTS));
    assert_eq!(spec.logged_k, 20);
}

#[test]
fn devnet_validators_are_the_well_known_devnet_keys() {
    let spec = ChainSpec::devnet();
    for (index, validator) in spec.validators.iter().enumerate() {
        assert_eq!(validator.public_key, devnet_keypair(index as u32).public());
        assert_eq!(validator.vrf_key, devnet_keypair(index as u32).vrf().public(), "derived from the same key");
    }
}

#[test]
fn chain_id_is_stable_and_changes_with_any_value() {
    let spec = ChainSpec::devnet();
    // Golden: any change of the devnet spec or of the canonical encoding shows here.
    assert_eq!(spec.chain_id().to_hex(), include_str!("golden/devnet-chain-id.txt").trim());
    let round_trip = ChainSpec::from_json_str(&spec.to_json_string()).unwrap();
    assert_eq!(round_trip.chain_id(), spec.chain_id());

    let mut changed = spec.clone();
    changed.sampling.temperature = 0.7;
    assert_ne!(changed.chain_id(), spec.chain_id());
    let mut changed = spec.clone();
    changed.numerics.weights = poi_chain_spec::WeightFormat::DequantF32;
    assert_ne!(changed.chain_id(), spec.chain_id());
    let mut changed = spec.clone();
    changed.numerics.version += 1;
    assert_ne!(changed.chain_id(), spec.chain_id());
    let mut changed = spec.clone();
    changed.seeding.requesters.clear();
    assert_ne!(changed.chain_id(), spec.chain_id());
    let mut changed = spec.clone();
    changed.validators[0].vrf_key = changed.validators[1].vrf_key;
    assert_ne!(changed.chain_id(), spec.chain_id());
    let mut changed = spec;
    changed.validators[0].weight = 2;
    assert_ne!(changed.chain_id(), round_trip.chain_id());
}

#[test]
fn unknown_fields_are_refused_at_every_level() {
    for pointer in
        ["", "/model", "/numerics", "/sampling", "/thresholds", "/miner_test", "/limits", "/seeding", "/validators/0"]
    {
        let mut value = devnet_value();
        value.pointer_mut(pointer).unwrap().as_object_mut().unwrap().insert("surprise".into(), json!(1));
        let err = load(&value).unwrap_err();
        assert!(err.to_string().contains("unknown field `surprise`"), "{pointer}: {err}");
    }
}

#[test]
fn out_of_range_values_name_their_field() {
    let cases: &[(&str, Value, &str)] = &[
        ("/name", json!(""), "name"),
        ("/model/architecture", json!("mamba"), "model.architecture"),
        ("/model/n_kv_heads", json!(4), "model.n_kv_heads"),
        ("/model/eos_token_id", json!(49152), "model.eos_token_id"),
        ("/sampling/temperature", json!(-0.1), "sampling.temperature"),
        ("/sampling/top_k", json!(21), "sampling.top_k"),
        ("/sampling/top_p", json!(0.0), "sampling.top_p"),
        ("/sampling/min_p", json!(1.0), "sampling.min_p"),
        ("/sampling/repetition_penalty", json!(0.0), "sampling.repetition_penalty"),
        ("/sampling/presence_penalty", json!(3.0), "sampling.presence_penalty"),
        ("/sampling/frequency_penalty", json!(-3.0), "sampling.frequency_penalty"),
        ("/logged_k", json!(0), "logged_k"),
        ("/thresholds/max_distance2", json!(0.0), "thresholds.max_distance2"),
        ("/thresholds/min_match_ratio", json!(1.5), "thresholds.min_match_ratio"),
        ("/thresholds/max_surprisal_z", json!(-1.0), "thresholds.max_surprisal_z"),
        ("/miner_test/tilt", json!(0.0), "miner_test.tilt"),
        ("/miner_test/tilt", json!(1.0), "miner_test.tilt"),
        ("/miner_test/false_alarm_rate", json!(0.0), "miner_test.false_alarm_rate"),
        ("/miner_test/window", json!(0), "miner_test.window"),
        ("/miner_test/window", json!(100_001), "miner_test.window"),
        ("/full_check_rate", json!(1.01), "full_check_rate"),
        ("/validators/2/vrf_key", json!("ff".repeat(32)), "validators[2].vrf_key"),
        ("/limits/max_artifact_bytes", json!(100), "limits.max_artifact_bytes"),
        ("/limits/max_generated_tokens", json!(0), "limits.max_generated_tokens"),
        ("/validators/1/weight", json!(0), "validators[1].weight"),
        ("/validators", json!([]), "validators"),
        ("/numerics/version", json!(0), "numerics.version"),
        ("/seeding/requesters/0", json!(format!("01{}", "00".repeat(31))), "seeding.requesters[0]"),
    ];
    for (pointer, bad, field) in cases {
        let mut value = devnet_value();
        *value.pointer_mut(pointer).unwrap() = bad.clone();
        assert_eq!(field_of(load(&value).unwrap_err()), *field, "{pointer} = {bad}");
    }
}

#[test]
fn bad_keys_and_duplicates_are_refused() {
    let mut value = devnet_value();
    value["validators"][1]["public_key"] = value["validators"][0]["public_key"].clone();
    assert_eq!(field_of(load(&value).unwrap_err()), "validators[1].public_key");
    let mut value = devnet_value();
    value["validators"][3]["vrf_key"] = value["validators"][0]["vrf_key"].clone();
    assert_eq!(field_of(load(&value).unwrap_err()), "validators[3].vrf_key");

    // The identity point: a small-order key that would accept forged signatures.
    let mut value = devnet_value();
    value["validators"][2]["public_key"] = json!(format!("01{}", "00".repeat(31)));
    assert_eq!(field_of(load(&value).unwrap_err()), "validators[2].public_key");

    let mut value = devnet_value();
    value["model"]["file_sha256"] = json!("abc");
    assert!(matches!(load(&value), Err(LoadError::Json(_))));
}

#[test]
fn nan_and_wrong_types_never_load() {
    let text = DEVNET_SPEC_JSON.replace("\"temperature\": 0.6", "\"temperature\": NaN");
    assert!(ChainSpec::from_json_str(&text).is_err());
    let text = DEVNET_SPEC_JSON.replace("\"logged_k\": 20", "\"logged_k\": \"20\"");
    assert!(matches!(ChainSpec::from_json_str(&text), Err(LoadError::Json(_))));
}

#[test]
fn devnet_admits_miner_seeded_artifacts_and_knows_the_devnet_requester() {
    let spec = ChainSpec::devnet();
    assert_eq!(spec.seeding.policy, SeedingPolicy::Optional);
    assert!(spec.is_requester(&devnet_requester().public()));
    assert!(!spec.is_requester(&devnet_keypair(0).public()), "a validator key is not a requester");
    assert!(spec.numerics.bit_exact);
    assert_eq!(spec.numerics.label(), "gguf-native-cpu/v3");
}

#[test]
fn required_seeding_needs_a_requester_and_requesters_are_distinct() {
    let mut value = devnet_value();
    value["seeding"] = json!({ "policy": "required", "requesters": [] });
    assert_eq!(field_of(load(&value).unwrap_err()), "seeding.requesters");

    let mut value = devnet_value();
    let key = value["seeding"]["requesters"][0].clone();
    value["seeding"]["requesters"] = json!([key.clone(), key]);
    assert_eq!(field_of(load(&value).unwrap_err()), "seeding.requesters[1]");

    let mut value = devnet_value();
    value["seeding"]["policy"] = json!("sometimes");
    assert!(matches!(load(&value), Err(LoadError::Json(_))));
}

#[test]
fn devnet_keys_are_recognised_and_other_keys_are_not() {
    assert!(ChainSpec::devnet().lists_devnet_keys());
    assert!(ChainSpec::local_devnet(5, 1.0).unwrap().lists_devnet_keys());
    let mut spec = ChainSpec::devnet();
    spec.validators = (0..4).map(|_| poi_chain_spec::Validator::of(&poi_artifact::Keypair::generate(), 1)).collect();
    assert!(!spec.lists_devnet_keys());
    spec.validators.push(poi_chain_spec::Validator::of(&devnet_keypair(200), 1));
    assert!(spec.lists_devnet_keys(), "one public key among private ones is enough to refuse");
}
