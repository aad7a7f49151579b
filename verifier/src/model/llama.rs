//! The llama forward pass. One code path serves teacher-forced prefill (many
//! tokens, logits at every position) and incremental decoding (one token at a
//! time against the KV cache); only the shapes differ.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};
use poi_chain_spec::NumericsProfile;

use super::{LlamaConfig, ModelError, Numerics};

struct Layer {
    attn_norm: Tensor,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    ffn_norm: Tensor,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

/// Keys and values of every layer for the tokens seen so far.
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// Tokens already in the cache: the position of the next one.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

pub struct Llama {
    config: LlamaConfig,
    numerics: Numerics,
    embeddings: Tensor,
    layers: Vec<Layer>,
    output_norm: Tensor,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
}

impl Llama {
    pub fn load(path: &Path, profile: &NumericsProfile) -> Result<Self, ModelError> {
        let io = |source| ModelError::Io { path: path.display().to_string(), source };
        let mut reader = BufReader::new(File::open(path).map_err(io)?);
        let content = Content::read(&mut reader).map_err(|e| ModelError::Metadata(e.to_string()))?;
        Self::from_gguf(&content, &mut reader, profile)
    }

    pub fn from_gguf<R: Read + Seek>(
        content: &Content,
        reader: &mut R,
        profile: &NumericsProfile,
    ) -> Result<Self, ModelError> {
        let numerics = Numerics::resolve(profile)?;
        let config = LlamaConfig::from_gguf(content)?;
        let device = numerics.device().clone();
        let mut tensor = |name: &str| -> Result<QTensor, ModelError> {
            if !content.tensor_infos.contains_key(name) {
                return Err(ModelError::Metadata(format!("missing tensor {name}")));
            }
            Ok(content.tensor(reader, name, &Device::Cpu)?)
        };
        let norm = |q: QTensor| -> Result<Tensor, ModelError> { Ok(q.dequantize(&device)?) };
        let embeddings = numerics.dense(tensor("token_embd.weight")?)?;
        check_shape(&embeddings, &[config.vocab_size, config.hidden_size], "token_embd.weight")?;
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let mut linear = |part: &str| numerics.linear(tensor(&format!("blk.{i}.{part}.weight"))?);
            layers.push(Layer {
                wq: linear("attn_q")?,
                wk: linear("attn_k")?,
                wv: linear("attn_v")?,
                wo: linear("attn_output")?,
                gate: linear("ffn_gate")?,
                up: linear("ffn_up")?,
                down: linear("ffn_down")?,
                attn_norm: norm(tensor(&format!("blk.{i}.attn_norm.weight"))?)?,
                ffn_norm: norm(tensor(&format!("blk.{i}.ffn_norm.weight"))?)?,
            });
        }
        let output_norm = norm(tensor("output_norm.weight")?)?;
        // SmolLM2 ties the output projection to the embeddings.
        let output_name =
            if content.tensor_infos.contains_key("output.weight") { "output.weight" } else { "token_embd.weight" };
        let output = numerics.linear(tensor(output_name)?)?;
        let (cos, sin) = rotary_tables(&config, &device)?;
        Ok(Self { config, numerics, embeddings, layers, output_norm, output, cos, sin })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn profile(&self) -> &NumericsProfile {
        self.numerics.profile()
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache { layers: vec![None; self.config.n_layers], len: 0 }
    }

    /// Runs `tokens` after what `cache` holds and returns the log-softmax over
    /// the vocabulary, shape (rows, vocab) in f32, for the positions from
    /// `first_output` on (relative to `tokens`): the prompt's positions before
    /// the first prediction need no output projection.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, first_output: usize) -> Result<Tensor, ModelError> {
        let n = tokens.len();
        let offset = cache.len;
        if offset + n > self.config.context_length {
            return Err(ModelError::TooLong { what: "input", found: offset + n, limit: self.config.context_length });
        }
        let vocab = self.config.vocab_size as u32;
        if let Some(&token) = tokens.iter().find(|&&t| t >= vocab) {
            return Err(ModelError::TokenOutOfVocabulary { token, vocab });
        }
        let device = self.numerics.device();
        let ids = Tensor::new(tokens, device)?;
        let mut x = self.embeddings.index_select(&ids, 0)?;
        let mask = causal_mask(n, offset, device)?;
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = self.block(layer, &x, offset, mask.as_ref(), slot)?;
        }
        cache.len += n;
        if first_output >= n {
            return Ok(Tensor::zeros((0, self.config.vocab_size), DType::F32, device)?);
        }
        let x = x.narrow(0, first_output, n - first_output)?;
        let x = candle_nn::ops::rms_norm(&x, &self.output_norm, self.config.rms_eps)?;
        let logits = self.output.forward(&x)?;
        Ok(candle_nn::ops::log_softmax(&logits, D::Minus1)?)
    }

    fn block(
        &self,
        layer: &Layer,
        x: &Tensor,
        offset: usize,
        mask: Option<&Tensor>,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor, ModelError> {
        let eps = self.config.rms_eps;
        let h = candle_nn::ops::rms_norm(x, &layer.attn_norm, eps)?;
        let attended = self.attention(layer, &h, offset, mask, cache)?;
        let x = (x + attended)?;
        let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
        let gated = (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
        Ok((x + layer.down.forward(&gated)?)?)
    }

    fn attention(
        &self,
        layer: &Layer,
        h: &Tensor,
        offset: usize,
        mask: Option<&Tensor>,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor, ModelError> {
        let c = &self.config;
        let (n, head_dim) = (h.dim(0)?, c.head_dim());
        let heads = |t: Tensor, count: usize| t.reshape((1, n, count, head_dim))?.transpose(1, 2)?.contiguous();
        let cos = self.cos.narrow(0, offset, n)?;
        let sin = self.sin.narrow(0, offset, n)?;
        // GGUF stores q and k permuted for interleaved rotary pairs.
        let q = rope_fn(&heads(layer.wq.forward(h)?, c.n_heads)?, &cos, &sin)?;
        let k = rope_fn(&heads(layer.wk.forward(h)?, c.n_kv_heads)?, &cos, &sin)?;
        let v = heads(layer.wv.forward(h)?, c.n_kv_heads)?;
        let (k, v) = match cache.take() {
            Some((past_k, past_v)) => (Tensor::cat(&[&past_k, &k], 2)?, Tensor::cat(&[&past_v, &v], 2)?),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        let group = c.n_heads / c.n_kv_heads;
        let k = repeat_kv(&k, group)?;
        let v = repeat_kv(&v, group)?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((n, c.hidden_size))?;
        Ok(layer.wo.forward(&out)?)
    }
}

fn repeat_kv(x: &Tensor, group: usize) -> candle_core::Result<Tensor> {
    if group == 1 {
        return Ok(x.clone());
    }
    let (b, heads, len, dim) = x.dims4()?;
    x.unsqueeze(2)?.expand((b, heads, group, len, dim))?.reshape((b, heads * group, len, dim))
}

/// (n, offset + n) additive mask: query i sees keys up to offset + i.
fn causal_mask(n: usize, offset: usize, device: &Device) -> candle_core::Result<Option<Tensor>> {
    if n == 1 {
        return Ok(None);
    }
    let total = offset + n;
    let values: Vec<f32> =
        (0..n).flat_map(|i| (0..total).map(move |j| if j > offset + i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(values, (n, total), device).map(Some)
}

fn rotary_tables(c: &LlamaConfig, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let half = c.head_dim() / 2;
    let inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / c.rope_base.powf(2.0 * i as f32 / c.head_dim() as f32)).collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
    let positions =
        Tensor::arange(0u32, c.context_length as u32, device)?.to_dtype(DType::F32)?.reshape((c.context_length, 1))?;
    let angles = positions.matmul(&inv_freq)?;
    Ok((angles.cos()?, angles.sin()?))
}

fn check_shape(t: &Tensor, expected: &[usize], name: &str) -> Result<(), ModelError> {
    if t.dims() != expected {
        return Err(ModelError::Metadata(format!("{name} has shape {:?}, expected {expected:?}", t.dims())));
    }
    Ok(())
}
fn rope_fn(x: &Tensor, c: &Tensor, s: &Tensor) -> candle_core::Result<Tensor> {
    if std::env::var("ROPE_NORMAL").is_ok() {
        candle_nn::rotary_emb::rope(x, c, s)
    } else {
        candle_nn::rotary_emb::rope_i(x, c, s)
    }
}
