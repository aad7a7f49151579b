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

use rayon::prelude::*;

/// Keys and values of one layer, rows of `(kv_heads, head_dim)` in position order.
#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    keys: Vec<f32>,
    values: Vec<f32>,
}

/// Lanes of the fixed-order dot product: wide enough for AVX, fixed so the
/// result does not depend on what the compiler vectorises.
const LANES: usize = 8;

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
        self.keys.extend_from_slice(keys);
        self.values.extend_from_slice(values);
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
            section.par_chunks_mut(per_task * d).enumerate().for_each_init(Vec::new, |scores, (task, out)| {
                // Query index q = row * group + head within this key head.
                let first = task * per_task;
                let queries: Vec<(&[f32], usize)> = (first..first + out.len() / d)
                    .map(|q| {
                        let (row, head) = (q / group, q % group);
                        let at = row * q_row + kv_head * gd + head * d;
                        (&queries[at..at + d], offset + row + 1)
                    })
                    .collect();
                attend_block(&queries, &kv, scale, scores, out);
            });
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

/// One key head's columns of the cache.
struct Cached<'a> {
    keys: &'a [f32],
    values: &'a [f32],
    row_len: usize,
    at: usize,
    len: usize,
}

impl Cached<'_> {
    fn key(&self, j: usize) -> &[f32] {
        &self.keys[j * self.row_len + self.at..j * self.row_len + self.at + self.len]
    }

    fn value(&self, j: usize) -> &[f32] {
        &self.values[j * self.row_len + self.at..j * self.row_len + self.at + self.len]
    }
}

/// Each query of `queries` (a head_dim row and how many positions it sees)
/// over `kv`, into its `head_dim` slice of `out`, in order. Per query, every
/// value is the same sequence of operations as for one query alone: scores
/// in position order, `expf(s - max)` (eight at a time, bit for bit), their
/// sum in position order, then `out += (e / total) * value` position by
/// position.
#[inline(never)] // its own symbol in profiles
fn attend_block(queries: &[(&[f32], usize)], kv: &Cached<'_>, scale: f32, scores: &mut Vec<f32>, out: &mut [f32]) {
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

/// Most queries whose weighted values share one pass over the values: two
/// accumulators each plus the two value vectors fit AVX2's 16 registers.
const MAX_SHARED: usize = 4;

/// Outputs one AVX2 pass keeps in registers for a single query: eight
/// independent sums, enough that the adds' latency does not bound it.
const VALUE_CHUNK: usize = 64;

/// Outputs per pass when several queries share it: two vectors a query.
const SHARED_VALUE_CHUNK: usize = 16;

/// For each query i, `out_i += w_ij * value_j` for j in order, elementwise
/// (`out` holds the queries' `head_dim` slices one after another; they all
/// see `weights[0].len()` positions). The AVX2 versions keep their outputs in
/// registers over all positions instead of loading and storing them at each
/// one, and several queries use each loaded value vector; the operations per
/// element are the same.
fn weighted_values(weights: &[&[f32]], kv: &Cached<'_>, out: &mut [f32]) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if out.len() == weights.len() * kv.len {
        match *weights {
            [one] if kv.len.is_multiple_of(VALUE_CHUNK) => return weighted_values_avx2(one, kv, out),
            [a, b] if kv.len.is_multiple_of(SHARED_VALUE_CHUNK) => return weighted_values_shared_avx2([a, b], kv, out),
            [a, b, c] if kv.len.is_multiple_of(SHARED_VALUE_CHUNK) => {
                return weighted_values_shared_avx2([a, b, c], kv, out)
            }
            [a, b, c, e] if kv.len.is_multiple_of(SHARED_VALUE_CHUNK) => {
                return weighted_values_shared_avx2([a, b, c, e], kv, out)
            }
            _ => {}
        }
    }
    for (weights, out) in weights.iter().zip(out.chunks_exact_mut(kv.len)) {
        for (j, &w) in weights.iter().enumerate() {
            out.iter_mut().zip(kv.value(j)).for_each(|(o, &v)| *o += w * v);
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
fn weighted_values_avx2(weights: &[f32], kv: &Cached<'_>, out: &mut [f32]) {
    use std::arch::x86_64::*;
    // SAFETY: AVX2 is enabled for the whole build; every value row is
    // `out.len()` long (checked by the caller), a multiple of `VALUE_CHUNK`, and all
    // loads and stores are unaligned and within those rows.
    unsafe {
        for at in (0..out.len()).step_by(VALUE_CHUNK) {
            let mut acc = [0usize; VALUE_CHUNK / 8].map(|i| _mm256_loadu_ps(out.as_ptr().add(at + 8 * i)));
            for (j, &w) in weights.iter().enumerate() {
                let (w, value) = (_mm256_set1_ps(w), kv.value(j).as_ptr().add(at));
                for (i, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_add_ps(*acc, _mm256_mul_ps(w, _mm256_loadu_ps(value.add(8 * i))));
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(at + 8 * i), *acc);
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
#[inline(never)] // its own symbol in profiles
fn weighted_values_shared_avx2<const QUERIES: usize>(weights: [&[f32]; QUERIES], kv: &Cached<'_>, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let (d, visible) = (kv.len, weights[0].len());
    assert!(weights.iter().all(|w| w.len() == visible) && out.len() == QUERIES * d);
    // SAFETY: AVX2 is enabled for the whole build; every value row is `d`
    // long, a multiple of `SHARED_VALUE_CHUNK` (checked by the caller), `out`
    // holds `QUERIES` rows of `d` and every weight slice `visible` values
    // (asserted); all loads and stores are unaligned and within those rows.
    unsafe {
        for at in (0..d).step_by(SHARED_VALUE_CHUNK) {
            let mut acc: [[__m256; 2]; QUERIES] =
                std::array::from_fn(|q| [0, 8].map(|i| _mm256_loadu_ps(out.as_ptr().add(q * d + at + i))));
            for j in 0..visible {
                let value = kv.value(j).as_ptr().add(at);
                let (low, high) = (_mm256_loadu_ps(value), _mm256_loadu_ps(value.add(8)));
                for (acc, weights) in acc.iter_mut().zip(weights) {
                    let w = _mm256_set1_ps(*weights.get_unchecked(j));
                    acc[0] = _mm256_add_ps(acc[0], _mm256_mul_ps(w, low));
                    acc[1] = _mm256_add_ps(acc[1], _mm256_mul_ps(w, high));
                }
            }
            for (q, acc) in acc.iter().enumerate() {
                for (i, acc) in [0, 8].into_iter().zip(acc) {
                    _mm256_storeu_ps(out.as_mut_ptr().add(q * d + at + i), *acc);
                }
            }
        }
    }
}

/// `x = expf(x - shift)` for every element.
fn exp_shifted_in_place(xs: &mut [f32], shift: f32) {
    for chunk in xs.chunks_mut(8) {
        let mut lanes = [0f32; 8];
        lanes.iter_mut().zip(chunk.iter()).for_each(|(lane, &x)| *lane = x - shift);
        let e = crate::expf::expf8(lanes);
        chunk.copy_from_slice(&e[..chunk.len()]);
    }
}

/// `dot` of each of `a` with four rows at once, bit for bit.
fn dot4<const Q: usize>(a: [&[f32]; Q], b: [&[f32]; 4]) -> [[f32; 4]; Q] {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if a[0].len().is_multiple_of(LANES) && a.iter().chain(&b).all(|row| row.len() == a[0].len()) {
        return dot4_avx2(a, b);
    }
    a.map(|a| b.map(|b| dot(a, b)))
}

/// The lanes of `dot` as one vector per pair of rows (multiply, then add:
/// no FMA), and its pairwise sum ((0+1)+(2+3))+((4+5)+(6+7)) by horizontal
/// adds, which add exactly those pairs. Each row of `b` loaded serves every
/// row of `a`.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
fn dot4_avx2<const Q: usize>(a: [&[f32]; Q], b: [&[f32]; 4]) -> [[f32; 4]; Q] {
    use std::arch::x86_64::*;
    // SAFETY: AVX2 is enabled for the whole build; every row is as long as
    // `a[0]`, a whole number of 8-float chunks (checked by `dot4`), and loads
    // are unaligned.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 4]; Q];
        for at in (0..a[0].len()).step_by(LANES) {
            let keys = b.map(|b| _mm256_loadu_ps(b.as_ptr().add(at)));
            for (acc, a) in acc.iter_mut().zip(a) {
                let x = _mm256_loadu_ps(a.as_ptr().add(at));
                for (acc, key) in acc.iter_mut().zip(keys) {
                    *acc = _mm256_add_ps(*acc, _mm256_mul_ps(x, key));
                }
            }
        }
        acc.map(|acc| {
            // Per row r: lanes [r01, r23 | r45, r67] after one round, then
            // [r0123 | r4567] after the second.
            let quads = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
            let sums = _mm_add_ps(_mm256_castps256_ps128(quads), _mm256_extractf128_ps::<1>(quads));
            let mut out = [0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), sums);
            out
        })
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (a_blocks, b_blocks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a_blocks.remainder(), b_blocks.remainder());
    for (x, y) in a_blocks.zip(b_blocks) {
        for l in 0..LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    let mut sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for (x, y) in a_rest.iter().zip(b_rest) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 2000) as f32 / 500.0 - 2.0)
            .collect()
    }

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
    fn four_at_once_is_one_at_a_time() {
        for (len, seed) in [(64, 1), (8, 2), (16, 3), (12, 4), (3, 5)] {
            let a = pseudo(len, seed);
            let rows: Vec<Vec<f32>> = (0..4).map(|i| pseudo(len, seed * 10 + i)).collect();
            let b = pseudo(len, seed + 100);
            let keys = [&rows[0][..], &rows[1], &rows[2], &rows[3]];
            let [alone] = dot4([&a], keys);
            let pair = dot4([&a, &b], keys);
            for (i, row) in rows.iter().enumerate() {
                assert_eq!(alone[i].to_bits(), dot(&a, row).to_bits(), "length {len}");
                assert_eq!(pair[0][i].to_bits(), dot(&a, row).to_bits(), "length {len}, first of two");
                assert_eq!(pair[1][i].to_bits(), dot(&b, row).to_bits(), "length {len}, second of two");
            }
        }
    }

    #[test]
    fn shared_weighted_values_are_each_querys_own() {
        for d in [64, 16, 12] {
            let (visible, kv_heads) = (37, 2);
            let values = pseudo(visible * kv_heads * d, 9);
            let kv = Cached { keys: &[], values: &values, row_len: kv_heads * d, at: d, len: d };
            let weights: Vec<Vec<f32>> = (0..MAX_SHARED as u32).map(|q| pseudo(visible, 20 + q)).collect();
            for queries in 1..=MAX_SHARED {
                let slices: Vec<&[f32]> = weights[..queries].iter().map(Vec::as_slice).collect();
                let mut shared = vec![0f32; queries * d];
                weighted_values(&slices, &kv, &mut shared);
                for (weights, got) in slices.iter().zip(shared.chunks_exact(d)) {
                    let mut alone = vec![0f32; d];
                    for (j, &w) in weights.iter().enumerate() {
                        alone.iter_mut().zip(kv.value(j)).for_each(|(o, &v)| *o += w * v);
                    }
                    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(got), bits(&alone), "head_dim {d}, {queries} queries");
                }
            }
        }
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
        assert_eq!(&out[..8], &v[..]);
        assert_eq!(&out[8..], &v[..]);
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
