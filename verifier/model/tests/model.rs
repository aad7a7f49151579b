//! The model runtime on a tiny synthetic GGUF: loading, tokenizer, profiles,
//! prefill against KV-cache decode, and generate → replay → full check.

mod tiny;

use std::path::PathBuf;
use std::sync::OnceLock;

use poi_artifact::{Keypair, Request};
use poi_chain_spec::{ChainSpec, DeviceClass, MatmulKernel, NumericsProfile};
use poi_model::chat::Message;
use poi_model::full_check::full_check;
use poi_model::generate::{generate, teacher_forced, Draws, StopRules, PREFILL_CHUNK};
use poi_model::runtime::{file_sha256, Runtime, RuntimeError};
use poi_model::{builtin_profile, Llama, ModelError};
use poi_verifier::{distance2, ReplayChecker, SeedingClass, TopLogprobs};

fn tiny_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| tiny::write_tiny_gguf("model"))
}

fn profile(id: &str) -> NumericsProfile {
    builtin_profile(id).unwrap()
}

fn load(id: &str) -> Runtime {
    Runtime::load(tiny_path(), &profile(id)).unwrap()
}

/// The devnet spec restated for the tiny model.
fn tiny_spec() -> ChainSpec {
    let mut spec = ChainSpec::devnet();
    let m = &mut spec.model;
    (m.n_layers, m.hidden_size, m.n_heads, m.n_kv_heads) = (tiny::LAYERS as u32, tiny::HIDDEN as u32, 4, 2);
    (m.vocab_size, m.context_length, m.eos_token_id) = (tiny::VOCAB as u32, tiny::CONTEXT as u32, tiny::EOS);
    m.file_sha256 = file_sha256(tiny_path()).unwrap();
    spec
}

/// All rows of a teacher-forced pass, flattened.
fn prefill_rows(model: &Llama, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut rows = Vec::new();
    teacher_forced(model, &tokens[..1], &tokens[1..], |_, row| rows.push(row.to_vec())).unwrap();
    rows
}

fn decode_rows(model: &Llama, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache();
    tokens[..tokens.len() - 1].iter().map(|&t| model.forward(&[t], &mut cache, 0).unwrap()).collect()
}

fn pseudo_tokens(n: usize) -> Vec<u32> {
    (0..n).map(|i| (3 + (i * 37 + i * i) % 256) as u32).collect()
}

#[test]
fn loads_config_and_refuses_a_spec_it_does_not_match() {
    let rt = load("gguf-native-cpu");
    assert_eq!(rt.model.config().vocab_size, tiny::VOCAB);
    assert_eq!(rt.model.config().head_dim(), 16);

    let spec = tiny_spec();
    Runtime::load_pinned(&spec, tiny_path(), None).expect("matching spec loads");
    let mut wrong_shape = spec.clone();
    wrong_shape.model.n_layers = 3;
    match Runtime::load_pinned(&wrong_shape, tiny_path(), None) {
        Err(RuntimeError::Model(ModelError::SpecMismatch { field: "n_layers", .. })) => {}
        other => panic!("expected a spec mismatch, got {:?}", other.err()),
    }
    match Runtime::load_pinned(&ChainSpec::devnet(), tiny_path(), None) {
        Err(RuntimeError::Model(ModelError::WrongFile { .. })) => {}
        other => panic!("expected a wrong-file error, got {:?}", other.err()),
    }
}

#[test]
fn truncated_file_is_a_typed_error() {
    let bytes = std::fs::read(tiny_path()).unwrap();
    let path = std::env::temp_dir().join(format!("poi-tiny-{}-truncated.gguf", std::process::id()));
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = Runtime::load(&path, &profile("gguf-native-cpu")).err().expect("truncated file must fail");
    assert!(matches!(err, RuntimeError::Model(_)), "{err}");
    std::fs::write(&path, b"not a gguf").unwrap();
    assert!(Runtime::load(&path, &profile("gguf-native-cpu")).is_err());
}

#[test]
fn profiles_that_cannot_be_honoured_are_refused() {
    let mut contradictory = profile("gguf-native-cpu");
    contradictory.matmul = MatmulKernel::CandleDense;
    let mut cuda = profile("gguf-native-cpu");
    cuda.device = DeviceClass::Cuda;
    let mut f16_quantized = profile("gguf-native-cpu");
    f16_quantized.activations = poi_chain_spec::ActivationDtype::F16;
    let mut old_numbers = profile("gguf-native-cpu");
    old_numbers.version = 1;
    let mut exact_claim = profile("dequant-f32-cpu");
    exact_claim.bit_exact = true;
    for (bad, why) in [
        (contradictory, "need the candle-quantized matmul"),
        (f16_quantized, "f16 activations"),
        (old_numbers, "pins version 1"),
        (exact_claim, "declared bit-exact"),
        // Refused in every build, with or without the `cuda` feature.
        (cuda, "no numerics profile runs on CUDA"),
    ] {
        let err = Runtime::load(tiny_path(), &bad).err().expect("must refuse");
        assert!(err.to_string().contains("cannot be honoured") && err.to_string().contains(why), "{err}");
    }
}

#[test]
fn tokenizer_round_trips_and_uses_merges_and_specials() {
    let rt = load("gguf-native-cpu");
    let tok = &rt.tokenizer;
    let the = tok.token_id("Ġthe").unwrap();
    assert_eq!(tok.encode(" the the", false), vec![the, the]);
    for text in ["", "hello world", "  spaces\n\ttabs", "ünïcödé 日本 🎉", "digits 12345", "<|im_end|> literal"]
    {
        assert_eq!(tok.decode(&tok.encode(text, false)).unwrap(), text);
    }
    assert_eq!(tok.encode("<|im_start|>x<|im_end|>", true), vec![1, tok.token_id("x").unwrap(), 2]);
    assert_ne!(tok.encode("<|im_end|>", false), vec![2], "specials are text unless asked for");
    let prompt = rt.chat.render(&[Message { role: "user".into(), content: "hi".into() }]).unwrap();
    assert_eq!(prompt, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

#[test]
fn kv_cache_decode_equals_prefill_across_chunks() {
    let tokens = pseudo_tokens(PREFILL_CHUNK + 90);
    // Quantized matmul works row by row, so it is bit-exact; dense gemm blocks
    // differently by shape, and with f16 activations that rounding shows.
    for (id, tolerance) in [("gguf-native-cpu", 0.0), ("dequant-f32-cpu", 1e-3), ("dequant-f16-cpu", 0.1)] {
        let rt = load(id);
        let prefill = prefill_rows(&rt.model, &tokens);
        let decode = decode_rows(&rt.model, &tokens);
        assert_eq!(prefill.len(), tokens.len() - 1);
        let worst = prefill
            .iter()
            .zip(&decode)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0.0f32, f32::max);
        assert!(worst <= tolerance, "{id}: prefill and decode differ by {worst}");
        println!("{id}: max |prefill - decode| = {worst:e}");
    }
}

/// The pinned profile's rows do not depend on how many threads compute them:
/// every kernel splits work by output, never a sum.
#[test]
fn prefill_is_bit_identical_across_thread_counts() {
    let rt = load("gguf-native-cpu");
    let tokens = pseudo_tokens(70);
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| prefill_rows(&rt.model, &tokens))
    };
    let one = on(1);
    for threads in [2, 3, 8] {
        let many = on(threads);
        let same = one.iter().flatten().zip(many.iter().flatten()).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{threads} threads give other bits than 1");
    }
}

#[test]
fn profiles_agree_closely_but_not_exactly() {
    let tokens = pseudo_tokens(64);
    let native = prefill_rows(&load("gguf-native-cpu").model, &tokens);
    let top = |rows: &[Vec<f32>]| -> Vec<TopLogprobs<u32>> {
        rows.iter()
            .zip(&tokens[1..])
            .map(|(row, &chosen)| {
                let mut entries: Vec<(u32, f64)> = row.iter().enumerate().map(|(t, &l)| (t as u32, l as f64)).collect();
                entries.sort_by(|a, b| b.1.total_cmp(&a.1));
                entries.truncate(20);
                TopLogprobs { chosen, entries }
            })
            .collect()
    };
    for (id, at_most) in [("dequant-f32-cpu", 0.05), ("dequant-f16-cpu", 0.05), ("requant-q4_0-cpu", 0.2)] {
        let other = prefill_rows(&load(id).model, &tokens);
        let (distance, ratio) = distance2(&top(&native), &top(&other));
        println!("gguf-native vs {id}: distance2 {distance:.5}, match {ratio:.3}");
        assert!(distance > 0.0 && distance < at_most, "{id}: distance2 {distance}");
    }
}

fn mine(rt: &Runtime, spec: &ChainSpec, seed: u64, max_tokens: usize) -> poi_artifact::Artifact {
    let prompt = rt.chat_tokens(&[Message { role: "user".into(), content: "the weather".into() }]).unwrap();
    let request = Request::new([9; 16], Some(seed), prompt, max_tokens as u32);
    let seed = request.run_seed().unwrap();
    let stop = StopRules::of(&request);
    let out =
        generate(&rt.model, &request.prompt_tokens, &spec.sampling, spec.logged_k, &stop, Draws::Seeded(seed), |_| {})
            .unwrap();
    let miner = Keypair::from_secret([5; 32]);
    out.body(spec, miner.public(), request, 1).unwrap().sign(&miner)
}

#[test]
fn generated_artifact_passes_replay_and_full_check() {
    let spec = tiny_spec();
    let rt = Runtime::load_pinned(&spec, tiny_path(), None).unwrap();
    let mut checker = ReplayChecker::new(spec.clone());
    for seed in 0..4 {
        let artifact = mine(&rt, &spec, seed, 40);
        let bytes = artifact.encode();
        let (decoded, report) = checker.check_bytes(&bytes).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(report.seeding, SeedingClass::MinerSeeded);
        let full = full_check(&rt.model, &decoded, &spec.thresholds).unwrap();
        assert!(full.accepted, "seed {seed}: {:?}", full.reason);
        assert!(full.positions.iter().all(|p| p.exact), "seed {seed}: lists are exactly the model's");
        assert_eq!(full.match_ratio, 1.0);
        // Only the half rounding of the logged values separates the two.
        assert!(full.distance2 < 1e-3, "seed {seed}: distance2 {}", full.distance2);
    }
}

#[test]
fn same_seed_same_artifact() {
    let spec = tiny_spec();
    let rt = Runtime::load_pinned(&spec, tiny_path(), None).unwrap();
    assert_eq!(mine(&rt, &spec, 3, 24).encode(), mine(&rt, &spec, 3, 24).encode());
    assert_ne!(mine(&rt, &spec, 3, 24).body.generation, mine(&rt, &spec, 4, 24).body.generation);
}

/// Requests of different prompts, seeds and lengths, joining a batch at
/// different steps and leaving it as they end, get exactly the positions
/// they get when generated alone.
#[test]
fn batched_generation_is_bit_identical_to_generating_alone() {
    use poi_model::batch::{Batch, Event};
    use poi_model::generate::Sequence;
    let spec = tiny_spec();
    let rt = Runtime::load_pinned(&spec, tiny_path(), None).unwrap();
    let requests: Vec<Request> = (0..6u8)
        .map(|i| {
            let prompt = rt.chat_tokens(&[Message { role: "user".into(), content: "x ".repeat(1 + i as usize) }]);
            Request::new([i; 16], Some(u64::from(i) * 11), prompt.unwrap(), 8 + 7 * u32::from(i))
        })
        .collect();
    let sequence = |request: &Request| {
        let draws = Draws::Seeded(request.run_seed().unwrap());
        Sequence::new(
            rt.model.config(),
            &request.prompt_tokens,
            spec.sampling,
            spec.logged_k,
            &StopRules::of(request),
            draws,
        )
        .unwrap()
    };
    let alone: Vec<_> = requests
        .iter()
        .map(|r| {
            let draws = Draws::Seeded(r.run_seed().unwrap());
            generate(&rt.model, &r.prompt_tokens, &spec.sampling, spec.logged_k, &StopRules::of(r), draws, |_| {})
                .unwrap()
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    let mut done = vec![None; requests.len()];
    let mut streamed = vec![0usize; requests.len()];
    pool.install(|| {
        let mut batch = Batch::new(&rt.model);
        let mut on_event = |index: &mut usize, event: Event<'_>| match event {
            Event::Token { .. } => streamed[*index] += 1,
            Event::Done(generated) => done[*index] = Some(generated),
        };
        let mut waiting = 0..requests.len();
        for step in 0.. {
            // One joins every second step, so members sit at different positions.
            if step % 2 == 0 {
                if let Some(i) = waiting.next() {
                    batch.join(&requests[i].prompt_tokens, sequence(&requests[i]), i, &mut on_event).unwrap();
                }
            }
            if batch.is_empty() && waiting.is_empty() {
                break;
            }
            batch.step(&mut on_event).unwrap();
        }
    });
    for (i, (alone, batched)) in alone.iter().zip(&done).enumerate() {
        let batched = batched.as_ref().unwrap_or_else(|| panic!("request {i} never finished"));
        assert!(alone.tokens.len() > 1, "request {i} generated {} tokens", alone.tokens.len());
        assert_eq!(batched.positions, alone.positions, "request {i}");
        assert_eq!(batched.finish_reason, alone.finish_reason, "request {i}");
        assert_eq!(streamed[i], alone.tokens.len(), "request {i}: one event per token");
    }
}
