//! Rotary embeddings and causal attention, written so that every output value
//! is computed by the same operations in the same order whatever the batch
//! shape: a query row sees exactly the keys before it (no mask, no padding) and
//! every sum has a fixed order. A miner decoding one token at a time and a
//! validator prefilling the whole sequence then get bit-identical attention.
//! (A gemm over the masked score matrix is not shape-invariant: its blocking
//! changes the rounding, and the q8 quantization of the next layer's input
//! turns that rounding into whole quantization steps; measured at distance2
//! 0.005 between decode and prefill on the real model.)
//!
//! `libm`'s `expf`/`sinf`/`cosf` make the numbers independent of the platform's
//! C library.
//!
//! The cache holds keys and values as IEEE half floats (numerics version 3),
//! as llama.cpp does: decoding a long sequence reads the whole cache for
//! every token, so its width is memory bandwidth. Each value is rounded to
//! nearest-even once, when it is cached, and widened exactly when read; every
//! sum stays f32. Decode and prefill read the same cache, so they still agree
//! bit for bit.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use kernels::{dot, dot4, exp_shifted_in_place, weighted_values, Cached, Element, MAX_SHARED};

mod kernels;

/// Keys and values of one layer, rows of `(kv_heads, head_dim)` in position order.
#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    keys: Vec<f16>,
    values: Vec<f16>,
}

pub struct Rotary {
    /// (position, head_dim / 2) tables.
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl Rotary {
    pub fn new(head_dim: usize, base: f32, context_length: usize) -> Self {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / libm::powf(base, 2.0 * i as f32 / head_dim as f32)).collect();
        let mut cos = Vec::with_capacity(context_length * half);
        let mut sin = Vec::with_capacity(context_length * half);
        for position in 0..context_length {
            for &f in &inv_freq {
                let angle = position as f32 * f;
                cos.push(libm::cosf(angle));
                sin.push(libm::sinf(angle));
            }
        }
        Self { cos, sin, half }
    }

    /// Rotates interleaved pairs `(x[2i], x[2i+1])` of every head of `rows`
    /// (each `heads * head_dim` long) starting at position `offset`: GGUF
    /// stores q and k permuted for this form.
    pub fn apply(&self, rows: &mut [f32], row_len: usize, offset: usize) {
        for (r, row) in rows.chunks_exact_mut(row_len).enumerate() {
            let table = (offset + r) * self.half;
            let (cos, sin) = (&self.cos[table..table + self.half], &self.sin[table..table + self.half]);
            for head in row.chunks_exact_mut(2 * self.half) {
                for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                    let (a, b) = (pair[0], pair[1]);
                    pair[0] = a * cos[i] - b * sin[i];
                    pair[1] = a * sin[i] + b * cos[i];
                }
            }
        }
    }
}

pub struct Shape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl LayerCache {
    pub fn len(&self, shape: &Shape) -> usize {
        self.keys.len() / (shape.kv_heads * shape.head_dim)
    }

    /// Appends this step's keys and values, then attends `queries` (rows of
    /// `heads * head_dim`, the last `n` positions) over everything cached.
    pub fn attend(&mut self, shape: &Shape, queries: &[f32], keys: &[f32], values: &[f32]) -> Vec<f32> {
        let (d, q_row) = (shape.head_dim, shape.heads * shape.head_dim);
        let kv_row = shape.kv_heads * d;
        let n = queries.len() / q_row;
        if n == 0 {
            return Vec::new();
        }
        let offset = self.len(shape);
        append_rounded(&mut self.keys, keys);
        append_rounded(&mut self.values, values);
        let group = shape.heads / shape.kv_heads;
        let scale = 1.0 / (d as f32).sqrt();
        let (all_keys, all_values) = (&self.keys, &self.values);
        let gd = group * d;
        // Computed key head by key head ([kv head][row][its query heads]):
        // one task takes a block of rows for one key head, so each key and
        // value it loads serves all of the block's query heads. A step of a
        // few rows (decoding) has too few such tasks to keep every thread
        // busy, so there each query head is a task of its own.
        let threads = rayon::current_num_threads();
        let per_task = if threads > 1 && n * shape.kv_heads < 4 * threads { 1 } else { BLOCK_ROWS * group };
        let mut by_kv = vec![0f32; n * q_row];
        by_kv.par_chunks_mut(n * gd).enumerate().for_each(|(kv_head, section)| {
            let kv = Cached { keys: all_keys, values: all_values, row_len: kv_row, at: kv_head * d, len: d };
            section.par_chunks_mut(per_task * d).enumerate().for_each_init(
                <(Vec<f32>, Staged)>::default,
                |(scores, staged), (task, out)| {
                    // Query index q = row * group + head within this key head.
                    let first = task * per_task;
                    let queries: Vec<(&[f32], usize)> = (first..first + out.len() / d)
                        .map(|q| {
                            let (row, head) = (q / group, q % group);
                            let at = row * q_row + kv_head * gd + head * d;
                            (&queries[at..at + d], offset + row + 1)
                        })
                        .collect();
                    if queries.len() < STAGE_FROM_QUERIES {
                        attend_block(&queries, &kv, scale, scores, out);
                    } else {
                        let visible = queries.iter().map(|&(_, visible)| visible).max().unwrap_or(0);
                        attend_block(&queries, &staged.widen(&kv, visible), scale, scores, out);
                    }
                },
            );
        });
        let mut out = vec![0f32; n * q_row];
        for (kv_head, section) in by_kv.chunks_exact(n * gd).enumerate() {
            for (row, values) in section.chunks_exact(gd).enumerate() {
                out[row * q_row + kv_head * gd..row * q_row + (kv_head + 1) * gd].copy_from_slice(values);
            }
        }
        out
    }
}

/// Rows of one attention task (all query heads of one key head).
const BLOCK_ROWS: usize = 8;

/// Queries in one task from which it widens its keys and values to f32 once
/// for all of them, instead of in every kernel that reads them. Decoding
/// (one query a task) reads the halves directly: its cost is the bytes.
const STAGE_FROM_QUERIES: usize = 4;

/// A task's f32 copy of the keys and values its queries see.
#[derive(Default)]
struct Staged {
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl Staged {
    /// The first `visible` positions of `kv`, widened, as rows of `head_dim`.
    fn widen(&mut self, kv: &Cached<'_, f16>, visible: usize) -> Cached<'_, f32> {
        let d = kv.len;
        self.keys.resize(visible * d, 0.0);
        self.values.resize(visible * d, 0.0);
        for j in 0..visible {
            kv.key(j).convert_to_f32_slice(&mut self.keys[j * d..(j + 1) * d]);
            kv.value(j).convert_to_f32_slice(&mut self.values[j * d..(j + 1) * d]);
        }
        Cached { keys: &self.keys, values: &self.values, row_len: d, at: 0, len: d }
    }
}

/// `to` gains `from`, each value rounded to the nearest half float.
fn append_rounded(to: &mut Vec<f16>, from: &[f32]) {
    let start = to.len();
    to.resize(start + from.len(), f16::ZERO);
    to[start..].convert_from_f32_slice(from);
}

/// Each query of `queries` (a head_dim row and how many positions it sees)
/// over `kv`, into its `head_dim` slice of `out`, in order. Per query, every
/// value is the same sequence of operations as for one query alone: scores
/// in position order, `expf(s - max)` (eight at a time, bit for bit), their
/// sum in position order, then `out += (e / total) * value` position by
/// position.
#[inline(never)] // its own symbol in profiles
fn attend_block<T: Element>(
    queries: &[(&[f32], usize)],
    kv: &Cached<'_, T>,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let d = kv.len;
    let starts: Vec<usize> =
        queries.iter().scan(0, |at, &(_, visible)| Some(std::mem::replace(at, *at + visible))).collect();
    scores.clear();
    scores.resize(queries.iter().map(|&(_, visible)| visible).sum(), 0.0);
    // Positions every query sees, four keys at a time for all of them.
    let common = queries.iter().map(|&(_, visible)| visible).min().unwrap_or(0);
    let whole = common - common % 4;
    for j in (0..whole).step_by(4) {
        let keys = [kv.key(j), kv.key(j + 1), kv.key(j + 2), kv.key(j + 3)];
        let mut store = |start: usize, sums: [f32; 4]| {
            for (i, s) in sums.into_iter().enumerate() {
                scores[start + j + i] = s * scale;
            }
        };
        // Two queries at a time share each key load.
        for (pair, starts) in queries.chunks(2).zip(starts.chunks(2)) {
            match (pair, starts) {
                (&[(a, _), (b, _)], &[at_a, at_b]) => {
                    let [sums_a, sums_b] = dot4([a, b], keys);
                    store(at_a, sums_a);
                    store(at_b, sums_b);
                }
                (&[(a, _)], &[at]) => store(at, dot4([a], keys)[0]),
                _ => unreachable!("chunks of at most two queries and their starts"),
            }
        }
    }
    for (&(query, visible), &start) in queries.iter().zip(&starts) {
        for j in whole..visible {
            scores[start + j] = dot(query, kv.key(j)) * scale;
        }
    }
    for (&(_, visible), &start) in queries.iter().zip(&starts) {
        let weights = &mut scores[start..start + visible];
        let max = weights.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        exp_shifted_in_place(weights, max);
        let total = weights.iter().fold(0f32, |total, &e| total + e);
        weights.iter_mut().for_each(|e| *e /= total);
    }
    // The query heads of one row see the same positions, so they take each
    // value row from memory once between them.
    let mut first = 0;
    while first < queries.len() {
        let visible = queries[first].1;
        let shared = queries[first..].iter().take(MAX_SHARED).take_while(|&&(_, v)| v == visible).count();
        let weights: Vec<&[f32]> = starts[first..first + shared].iter().map(|&at| &scores[at..at + visible]).collect();
        weighted_values(&weights, kv, &mut out[first * d..(first + shared) * d]);
        first += shared;
    }
}

#[cfg(test)]
mod tests {
    use super::kernels::tests::{halves, pseudo};
    use super::*;

    #[test]
    fn one_at_a_time_equals_all_at_once() {
        let shape = Shape { heads: 4, kv_heads: 2, head_dim: 16 };
        let n = 37;
        let (q, k, v) = (pseudo(n * 64, 1), pseudo(n * 32, 2), pseudo(n * 32, 3));
        let batch = LayerCache::default().attend(&shape, &q, &k, &v);
        let mut cache = LayerCache::default();
        let mut stepwise = Vec::new();
        for i in 0..n {
            stepwise.extend(cache.attend(
                &shape,
                &q[i * 64..(i + 1) * 64],
                &k[i * 32..(i + 1) * 32],
                &v[i * 32..(i + 1) * 32],
            ));
        }
        assert_eq!(batch, stepwise);
        assert_eq!(cache.len(&shape), n);
    }

    #[test]
    fn no_queries_attend_to_nothing() {
        let shape = Shape { heads: 2, kv_heads: 1, head_dim: 8 };
        let mut cache = LayerCache::default();
        assert!(cache.attend(&shape, &[], &[], &[]).is_empty());
        assert_eq!(cache.len(&shape), 0);
    }

    #[test]
    fn first_position_attends_only_to_itself() {
        let shape = Shape { heads: 2, kv_heads: 1, head_dim: 8 };
        let (q, k, v) = (pseudo(16, 4), pseudo(8, 5), pseudo(8, 6));
        let out = LayerCache::default().attend(&shape, &q, &k, &v);
        let cached: Vec<f32> = halves(&v).iter().map(|v| v.to_f32()).collect();
        assert_eq!(&out[..8], &cached[..]);
        assert_eq!(&out[8..], &cached[..]);
    }

    #[test]
    fn the_cache_holds_each_value_rounded_to_the_nearest_half() {
        let shape = Shape { heads: 1, kv_heads: 1, head_dim: 8 };
        // Exactly halfway between two halves: ties go to the even one.
        let tie = f32::from_bits(0x3f80_1000);
        let keys = [1.0, tie, 65504.0, 1e6, 1e-8, -0.0, f32::NAN, 0.1];
        let mut cache = LayerCache::default();
        cache.attend(&shape, &[0.0; 8], &keys, &keys);
        let stored: Vec<u16> = cache.keys.iter().map(|h| h.to_bits()).collect();
        assert_eq!(&stored[..6], &[0x3c00, 0x3c00, 0x7bff, 0x7c00, 0x0000, 0x8000]);
        assert!(cache.keys[6].is_nan());
        assert_eq!(stored[7], 0x2e66);
        assert!(cache.keys.iter().zip(&cache.values).all(|(k, v)| k.to_bits() == v.to_bits()));
    }

    #[test]
    fn rotary_position_zero_is_identity_and_preserves_norm() {
        let rotary = Rotary::new(8, 10_000.0, 16);
        let original = pseudo(16, 7);
        let mut rows = original.clone();
        rotary.apply(&mut rows[..8], 8, 0);
        assert_eq!(&rows[..8], &original[..8]);
        rotary.apply(&mut rows[8..], 8, 5);
        let norm = |x: &[f32]| x.iter().map(|v| v * v).sum::<f32>();
        assert!((norm(&rows[8..]) - norm(&original[8..])).abs() < 1e-4);
        assert_ne!(&rows[8..], &original[8..]);
    }
}
