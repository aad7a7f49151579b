//! A tiny llama GGUF with random weights, written by the tests themselves: the
//! real loader, tokenizer and forward pass run in milliseconds on it.

use std::path::PathBuf;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const VOCAB: usize = 3 + 256 + 3;
pub const HIDDEN: usize = 64;
pub const LAYERS: usize = 2;
pub const CONTEXT: usize = 1024;
pub const EOS: u32 = 2;

fn byte_chars() -> Vec<String> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256;
    (0..256u32)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            char::from_u32(c).unwrap().to_string()
        })
        .collect()
}

fn random(rng: &mut StdRng, shape: (usize, usize), scale: f32, dtype: GgmlDType) -> QTensor {
    let values: Vec<f32> = (0..shape.0 * shape.1).map(|_| rng.gen_range(-scale..scale)).collect();
    QTensor::quantize(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap(), dtype).unwrap()
}

fn ones(n: usize) -> QTensor {
    QTensor::quantize(&Tensor::ones(n, candle_core::DType::F32, &Device::Cpu).unwrap(), GgmlDType::F32).unwrap()
}

/// Writes the model (seeded, so every call gives the same file) and returns its path.
pub fn write_tiny_gguf(name: &str) -> PathBuf {
    let mut rng = StdRng::seed_from_u64(7);
    let (heads, kv_heads, ff) = (4usize, 2usize, 128usize);
    let head_dim = HIDDEN / heads;
    let mut tokens = vec!["<|endoftext|>".to_string(), "<|im_start|>".into(), "<|im_end|>".into()];
    tokens.extend(byte_chars());
    tokens.extend(["Ġt".to_string(), "he".into(), "Ġthe".into()]);
    let mut types = vec![3i32; 3];
    types.extend(std::iter::repeat_n(1, VOCAB - 3));
    let merges = ["Ġ t", "h e", "Ġt he"];
    let template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
                    {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", Value::U32(LAYERS as u32)),
        ("llama.embedding_length", Value::U32(HIDDEN as u32)),
        ("llama.feed_forward_length", Value::U32(ff as u32)),
        ("llama.attention.head_count", Value::U32(heads as u32)),
        ("llama.attention.head_count_kv", Value::U32(kv_heads as u32)),
        ("llama.context_length", Value::U32(CONTEXT as u32)),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", strings(tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types.into_iter().map(Value::I32).collect())),
        ("tokenizer.ggml.merges", strings(merges.iter().map(|m| m.to_string()).collect())),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(EOS)),
        ("tokenizer.chat_template", Value::String(template.into())),
    ];
    let mut tensors: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), random(&mut rng, (VOCAB, HIDDEN), 1.0, GgmlDType::Q8_0)),
        ("output_norm.weight".into(), ones(HIDDEN)),
    ];
    for i in 0..LAYERS {
        let q4 = GgmlDType::Q4_1;
        tensors.push((format!("blk.{i}.attn_norm.weight"), ones(HIDDEN)));
        tensors.push((format!("blk.{i}.ffn_norm.weight"), ones(HIDDEN)));
        tensors.push((format!("blk.{i}.attn_q.weight"), random(&mut rng, (HIDDEN, HIDDEN), 0.3, q4)));
        tensors.push((format!("blk.{i}.attn_k.weight"), random(&mut rng, (kv_heads * head_dim, HIDDEN), 0.3, q4)));
        tensors.push((format!("blk.{i}.attn_v.weight"), random(&mut rng, (kv_heads * head_dim, HIDDEN), 0.3, q4)));
        tensors.push((format!("blk.{i}.attn_output.weight"), random(&mut rng, (HIDDEN, HIDDEN), 0.3, q4)));
        tensors.push((format!("blk.{i}.ffn_gate.weight"), random(&mut rng, (ff, HIDDEN), 0.3, q4)));
        tensors.push((format!("blk.{i}.ffn_up.weight"), random(&mut rng, (ff, HIDDEN), 0.3, q4)));
        tensors.push((format!("blk.{i}.ffn_down.weight"), random(&mut rng, (HIDDEN, ff), 0.3, q4)));
    }
    let path = std::env::temp_dir().join(format!("poi-tiny-{}-{name}.gguf", std::process::id()));
    let mut file = std::fs::File::create(&path).unwrap();
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &metadata, &tensors).unwrap();
    path
}
