//! The llama forward pass. One code path serves teacher-forced prefill (many
//! tokens, logits at every position) and incremental decoding (one token at a
//! time against the KV cache); only the shapes differ, and every kernel on the
//! path computes a row the same way whatever the shape (candle's quantized
//! matmul works row by row; attention is ours, see `attention`), so decode and
//! prefill agree bit for bit under the quantized profiles.

use std::io::{Read, Seek};

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use poi_chain_spec::NumericsProfile;
use rayon::prelude::*;

use crate::attention::{LayerCache, Rotary, Shape};
use crate::numerics::{Fused, Linear};
use crate::{LlamaConfig, ModelError, Numerics};

struct Layer {
    attn_norm: Tensor,
    /// [Wq; Wk; Wv]
    qkv: Fused,
    wo: Linear,
    ffn_norm: Tensor,
    /// [Wgate; Wup]
    gate_up: Fused,
    down: Linear,
}

/// Keys and values of every layer for the tokens seen so far.
pub struct KvCache {
    layers: Vec<LayerCache>,
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
    output: Linear,
    rotary: Rotary,
}

impl Llama {
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
        let token_embd = numerics.convert(tensor("token_embd.weight")?)?;
        let embeddings = numerics.dense(&token_embd)?;
        check_shape(&embeddings, &[config.vocab_size, config.hidden_size], "token_embd.weight")?;
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let mut weights = |part: &str| numerics.convert(tensor(&format!("blk.{i}.{part}.weight"))?);
            layers.push(Layer {
                qkv: numerics.fused(vec![weights("attn_q")?, weights("attn_k")?, weights("attn_v")?])?,
                wo: numerics.linear(weights("attn_output")?)?,
                gate_up: numerics.fused(vec![weights("ffn_gate")?, weights("ffn_up")?])?,
                down: numerics.linear(weights("ffn_down")?)?,
                attn_norm: norm(tensor(&format!("blk.{i}.attn_norm.weight"))?)?,
                ffn_norm: norm(tensor(&format!("blk.{i}.ffn_norm.weight"))?)?,
            });
        }
        let output_norm = norm(tensor("output_norm.weight")?)?;
        // SmolLM2 ties the output projection to the embeddings.
        let output = if content.tensor_infos.contains_key("output.weight") {
            numerics.linear(numerics.convert(tensor("output.weight")?)?)?
        } else {
            numerics.linear(token_embd)?
        };
        let rotary = Rotary::new(config.head_dim(), config.rope_base, config.context_length);
        Ok(Self { config, numerics, embeddings, layers, output_norm, output, rotary })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn profile(&self) -> &NumericsProfile {
        self.numerics.profile()
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache { layers: vec![LayerCache::default(); self.config.n_layers], len: 0 }
    }

    /// Runs `tokens` after what `cache` holds and returns the log-softmax over
    /// the vocabulary, row-major (rows × vocab), for the positions from
    /// `first_output` on (relative to `tokens`): the prompt's positions before
    /// the first prediction need no output projection.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, first_output: usize) -> Result<Vec<f32>, ModelError> {
        let n = tokens.len();
        let offset = cache.len;
        if offset + n > self.config.context_length {
            return Err(ModelError::TooLong { what: "input", found: offset + n, limit: self.config.context_length });
        }
        let mut x = self.embed(tokens)?;
        let (c, shape) = (&self.config, self.shape());
        for (layer, layer_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = self.block(layer, &x, |q, k, v| {
                self.rotary.apply(q, c.hidden_size, offset);
                self.rotary.apply(k, c.n_kv_heads * c.head_dim(), offset);
                layer_cache.attend(&shape, q, k, v)
            })?;
        }
        cache.len += n;
        if first_output >= n {
            return Ok(Vec::new());
        }
        self.head(&x.narrow(0, first_output, n - first_output)?)
    }

    /// One decoding step of several sequences together: `tokens[i]` follows
    /// what `caches[i]` holds. Returns one log-softmax row per sequence, in
    /// order. Each row goes through exactly the operations of
    /// `forward(&[tokens[i]], caches[i], 0)`: under the bit-exact profile
    /// every kernel computes a row the same way whatever the other rows are
    /// (tested: batched generation equals generating alone), so a sequence's
    /// numbers do not depend on what it is batched with; what batching saves
    /// is reading every weight once per step for all of them. (Candle's own
    /// matmuls in the other profiles make no such promise.)
    pub fn decode_batch(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Vec<f32>, ModelError> {
        if tokens.len() != caches.len() {
            return Err(ModelError::Metadata(format!("{} tokens for {} caches", tokens.len(), caches.len())));
        }
        if let Some(full) = caches.iter().find(|cache| cache.len >= self.config.context_length) {
            return Err(ModelError::TooLong { what: "input", found: full.len + 1, limit: self.config.context_length });
        }
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let mut x = self.embed(tokens)?;
        let (c, shape) = (&self.config, self.shape());
        let (q_row, kv_row) = (c.hidden_size, c.n_kv_heads * c.head_dim());
        for (l, layer) in self.layers.iter().enumerate() {
            x = self.block(layer, &x, |q, k, v| {
                let mut out = Vec::with_capacity(q.len());
                for (i, cache) in caches.iter_mut().enumerate() {
                    let (q, k) = (&mut q[i * q_row..(i + 1) * q_row], &mut k[i * kv_row..(i + 1) * kv_row]);
                    self.rotary.apply(q, q_row, cache.len);
                    self.rotary.apply(k, kv_row, cache.len);
                    out.extend(cache.layers[l].attend(&shape, q, k, &v[i * kv_row..(i + 1) * kv_row]));
                }
                out
            })?;
        }
        caches.iter_mut().for_each(|cache| cache.len += 1);
        self.head(&x)
    }

    fn shape(&self) -> Shape {
        let c = &self.config;
        Shape { heads: c.n_heads, kv_heads: c.n_kv_heads, head_dim: c.head_dim() }
    }

    fn embed(&self, tokens: &[u32]) -> Result<Tensor, ModelError> {
        let vocab = self.config.vocab_size as u32;
        if let Some(&token) = tokens.iter().find(|&&t| t >= vocab) {
            return Err(ModelError::TokenOutOfVocabulary { token, vocab });
        }
        let ids = Tensor::new(tokens, self.numerics.device())?;
        Ok(self.embeddings.index_select(&ids, 0)?)
    }

    /// Log-softmax rows of the hidden states `x`.
    fn head(&self, x: &Tensor) -> Result<Vec<f32>, ModelError> {
        let x = candle_nn::ops::rms_norm(x, &self.output_norm, self.config.rms_eps)?;
        let mut rows = self.output.forward_rows(&x)?;
        rows.par_chunks_mut(self.config.vocab_size).for_each(log_softmax_in_place);
        Ok(rows)
    }

    /// One transformer block; `attend(q, k, v)` rotates this step's queries
    /// and keys, caches keys and values, and returns the attention output rows.
    fn block(
        &self,
        layer: &Layer,
        x: &Tensor,
        attend: impl FnOnce(&mut [f32], &mut [f32], &[f32]) -> Vec<f32>,
    ) -> Result<Tensor, ModelError> {
        let (eps, rows) = (self.config.rms_eps, x.dim(0)?);
        let h = candle_nn::ops::rms_norm(x, &layer.attn_norm, eps)?;
        let [mut q, mut k, v]: [Vec<f32>; 3] = parts(layer.qkv.forward(&h)?)?;
        let attended = attend(&mut q, &mut k, &v);
        let attended = Tensor::from_vec(attended, (rows, self.config.hidden_size), x.device())?;
        let x = (x + layer.wo.forward(&attended)?)?;
        let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
        let [gate, up]: [Vec<f32>; 2] = parts(layer.gate_up.forward(&h)?)?;
        let gated = swiglu(&gate, &up);
        let gated = Tensor::from_vec(gated, (rows, self.config.feed_forward), h.device())?;
        Ok((x + layer.down.forward(&gated)?)?)
    }
}

/// `silu(gate) * up`, elementwise, with `silu(g) = g / (1 + e^-g)` and
/// `e^-g` as `libm::exp` in f64 (four lanes at a time by
/// `poi_verifier::exp`, same bits) rounded to f32: candle's silu calls the
/// platform's `expf`, whose last bit differs between glibc, musl and macOS.
/// The f64 route is correctly rounded for nearly every f32 input: over all
/// f32 in [-100, 100] its result differs from glibc's `expf` for 7.6e-5 of
/// them, `libm::expf`'s for 0.86 % (enough to flip a near-tie in the greedy
/// reference answer).
#[inline(never)] // its own symbol in profiles
fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    const CHUNK: usize = 4096;
    let mut out = vec![0f32; gate.len()];
    let chunks = out.par_chunks_mut(CHUNK).zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)));
    chunks.for_each_init(Vec::new, |exps, (out, (gate, up))| {
        exps.clear();
        exps.extend(gate.iter().map(|&g| -f64::from(g)));
        poi_verifier::exp::exp_in_place(exps);
        for (((o, &g), &u), &e) in out.iter_mut().zip(gate).zip(up).zip(exps.iter()) {
            *o = g / (1.0 + e as f32) * u;
        }
    });
    out
}

/// Fixed summation order and `libm`'s `expf` (eight lanes at a time, bit for
/// bit) and `logf`, so every platform and batch shape gives the same
/// log-probs from the same logits.
#[inline(never)] // its own symbol in profiles
fn log_softmax_in_place(row: &mut [f32]) {
    const LANES: usize = 8;
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut lanes = [0f32; LANES];
    for chunk in row.chunks(LANES) {
        let mut shifted = [0f32; LANES];
        shifted.iter_mut().zip(chunk).for_each(|(s, &x)| *s = x - max);
        let e = crate::expf::expf8(shifted);
        lanes.iter_mut().zip(&e[..chunk.len()]).for_each(|(lane, &e)| *lane += e);
    }
    let total = lanes.iter().sum::<f32>();
    let log_total = max + libm::logf(total);
    row.iter_mut().for_each(|x| *x -= log_total);
}

fn parts<const N: usize>(parts: Vec<Vec<f32>>) -> Result<[Vec<f32>; N], ModelError> {
    parts.try_into().map_err(|_| ModelError::Metadata(format!("a fused projection without {N} parts")))
}

fn check_shape(t: &Tensor, expected: &[usize], name: &str) -> Result<(), ModelError> {
    if t.dims() != expected {
        return Err(ModelError::Metadata(format!("{name} has shape {:?}, expected {expected:?}", t.dims())));
    }
    Ok(())
}
