use candle_core::quantized::gguf_file::{Content, Value};
use poi_chain_spec::ModelSpec;

use crate::ModelError;

/// The llama hyper-parameters, read from the GGUF metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub n_layers: usize,
    pub hidden_size: usize,
    pub feed_forward: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    pub eos_token_id: u32,
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.n_heads
    }

    pub fn from_gguf(content: &Content) -> Result<Self, ModelError> {
        let arch = string(content, "general.architecture")?;
        if arch != "llama" {
            return Err(ModelError::Metadata(format!("architecture is {arch:?}, only llama is supported")));
        }
        let vocab_size = match content.metadata.get("llama.vocab_size") {
            Some(value) => as_usize(value, "llama.vocab_size")?,
            None => array_len(content, "tokenizer.ggml.tokens")?,
        };
        let config = Self {
            n_layers: number(content, "llama.block_count")?,
            hidden_size: number(content, "llama.embedding_length")?,
            feed_forward: number(content, "llama.feed_forward_length")?,
            n_heads: number(content, "llama.attention.head_count")?,
            n_kv_heads: number(content, "llama.attention.head_count_kv")?,
            vocab_size,
            context_length: number(content, "llama.context_length")?,
            rope_base: float(content, "llama.rope.freq_base").unwrap_or(10_000.0),
            rms_eps: float(content, "llama.attention.layer_norm_rms_epsilon")?,
            eos_token_id: number(content, "tokenizer.ggml.eos_token_id")? as u32,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ModelError> {
        let bad = |what: &str| Err(ModelError::Metadata(what.to_string()));
        if self.n_layers == 0 || self.hidden_size == 0 || self.n_heads == 0 || self.n_kv_heads == 0 {
            return bad("zero layers, width or heads");
        }
        if !self.hidden_size.is_multiple_of(self.n_heads) || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad("hidden size not divisible by heads, or heads not divisible by kv heads");
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad("odd head dimension cannot take rotary embeddings");
        }
        if self.eos_token_id as usize >= self.vocab_size {
            return bad("eos token outside the vocabulary");
        }
        Ok(())
    }

    /// The chain spec restates the model's shape so that a wrong file fails
    /// loudly even when its hash was not checked (tests, experiments).
    pub fn check_against(&self, spec: &ModelSpec) -> Result<(), ModelError> {
        let pairs: [(&'static str, usize, usize); 7] = [
            ("n_layers", self.n_layers, spec.n_layers as usize),
            ("hidden_size", self.hidden_size, spec.hidden_size as usize),
            ("n_heads", self.n_heads, spec.n_heads as usize),
            ("n_kv_heads", self.n_kv_heads, spec.n_kv_heads as usize),
            ("vocab_size", self.vocab_size, spec.vocab_size as usize),
            ("context_length", self.context_length, spec.context_length as usize),
            ("eos_token_id", self.eos_token_id as usize, spec.eos_token_id as usize),
        ];
        for (field, file, spec) in pairs {
            if file != spec {
                return Err(ModelError::SpecMismatch { field, file: file.to_string(), spec: spec.to_string() });
            }
        }
        Ok(())
    }
}

fn get<'a>(content: &'a Content, key: &str) -> Result<&'a Value, ModelError> {
    content.metadata.get(key).ok_or_else(|| ModelError::Metadata(format!("missing key {key}")))
}

fn as_usize(value: &Value, key: &str) -> Result<usize, ModelError> {
    let wrong = || ModelError::Metadata(format!("{key} is not a non-negative integer"));
    let n = match value {
        Value::U8(v) => *v as u64,
        Value::U16(v) => *v as u64,
        Value::U32(v) => *v as u64,
        Value::U64(v) => *v,
        Value::I32(v) => u64::try_from(*v).map_err(|_| wrong())?,
        Value::I64(v) => u64::try_from(*v).map_err(|_| wrong())?,
        _ => return Err(wrong()),
    };
    usize::try_from(n).map_err(|_| wrong())
}

fn number(content: &Content, key: &str) -> Result<usize, ModelError> {
    as_usize(get(content, key)?, key)
}

fn float(content: &Content, key: &str) -> Result<f32, ModelError> {
    match get(content, key)? {
        Value::F32(v) => Ok(*v),
        Value::F64(v) => Ok(*v as f32),
        _ => Err(ModelError::Metadata(format!("{key} is not a float"))),
    }
}

fn string<'a>(content: &'a Content, key: &str) -> Result<&'a str, ModelError> {
    match get(content, key)? {
        Value::String(s) => Ok(s),
        _ => Err(ModelError::Metadata(format!("{key} is not a string"))),
    }
}

fn array_len(content: &Content, key: &str) -> Result<usize, ModelError> {
    match get(content, key)? {
        Value::Array(values) => Ok(values.len()),
        _ => Err(ModelError::Metadata(format!("{key} is not an array"))),
    }
}
