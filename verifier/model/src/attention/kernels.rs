//! The attention kernels: fixed-order dot products of queries with keys and
//! weighted sums of values, over the f16 cache or a task's f32 copy of it.
//! Each has a portable definition and an AVX2 version that performs the same
//! operations in the same order, tested against it bit for bit.

use half::f16;

/// Lanes of the fixed-order dot product: wide enough for AVX, fixed so the
/// result does not depend on what the compiler vectorises.
const LANES: usize = 8;

/// What the kernels read keys and values as: the cache's halves, or f32
/// widened from them. Widening is exact, so both give the same bits.
pub(super) trait Element: Copy + Sync {
    fn widen(self) -> f32;

    /// Eight elements from `at`, widened.
    ///
    /// # Safety
    /// `at..at + 8` must be readable.
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "f16c"))]
    unsafe fn load8(at: *const Self) -> std::arch::x86_64::__m256;
}

impl Element for f32 {
    fn widen(self) -> f32 {
        self
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "f16c"))]
    #[inline(always)]
    unsafe fn load8(at: *const Self) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller's contract; AVX is enabled for the whole build.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(at) }
    }
}

impl Element for f16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "f16c"))]
    #[inline(always)]
    unsafe fn load8(at: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller's contract; F16C is enabled for the whole build.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(at.cast())) }
    }
}

/// One key head's columns of the cache (or of a task's staged copy).
pub(super) struct Cached<'a, T> {
    pub keys: &'a [T],
    pub values: &'a [T],
    pub row_len: usize,
    pub at: usize,
    pub len: usize,
}

impl<T> Cached<'_, T> {
    pub fn key(&self, j: usize) -> &[T] {
        &self.keys[j * self.row_len + self.at..j * self.row_len + self.at + self.len]
    }

    pub fn value(&self, j: usize) -> &[T] {
        &self.values[j * self.row_len + self.at..j * self.row_len + self.at + self.len]
    }
}

/// Most queries whose weighted values share one pass over the values: two
/// accumulators each plus the two value vectors fit AVX2's 16 registers.
pub(super) const MAX_SHARED: usize = 4;

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
pub(super) fn weighted_values<T: Element>(weights: &[&[f32]], kv: &Cached<'_, T>, out: &mut [f32]) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "f16c"))]
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
            out.iter_mut().zip(kv.value(j)).for_each(|(o, &v)| *o += w * v.widen());
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "f16c"))]
fn weighted_values_avx2<T: Element>(weights: &[f32], kv: &Cached<'_, T>, out: &mut [f32]) {
    use std::arch::x86_64::*;
    // SAFETY: AVX2 and F16C are enabled for the whole build; every value row is
    // `out.len()` long (checked by the caller), a multiple of `VALUE_CHUNK`, and all
    // loads and stores are unaligned and within those rows.
    unsafe {
        for at in (0..out.len()).step_by(VALUE_CHUNK) {
            let mut acc = [0usize; VALUE_CHUNK / 8].map(|i| _mm256_loadu_ps(out.as_ptr().add(at + 8 * i)));
            for (j, &w) in weights.iter().enumerate() {
                let (w, value) = (_mm256_set1_ps(w), kv.value(j).as_ptr().add(at));
                for (i, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_add_ps(*acc, _mm256_mul_ps(w, T::load8(value.add(8 * i))));
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(at + 8 * i), *acc);
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "f16c"))]
#[inline(never)] // its own symbol in profiles
fn weighted_values_shared_avx2<const QUERIES: usize, T: Element>(
    weights: [&[f32]; QUERIES],
    kv: &Cached<'_, T>,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (d, visible) = (kv.len, weights[0].len());
    assert!(weights.iter().all(|w| w.len() == visible) && out.len() == QUERIES * d);
    // SAFETY: AVX2 and F16C are enabled for the whole build; every value row is `d`
    // long, a multiple of `SHARED_VALUE_CHUNK` (checked by the caller), `out`
    // holds `QUERIES` rows of `d` and every weight slice `visible` values
    // (asserted); all loads and stores are unaligned and within those rows.
    unsafe {
        for at in (0..d).step_by(SHARED_VALUE_CHUNK) {
            let mut acc: [[__m256; 2]; QUERIES] =
                std::array::from_fn(|q| [0, 8].map(|i| _mm256_loadu_ps(out.as_ptr().add(q * d + at + i))));
            for j in 0..visible {
                let value = kv.value(j).as_ptr().add(at);
                let (low, high) = (T::load8(value), T::load8(value.add(8)));
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
pub(super) fn exp_shifted_in_place(xs: &mut [f32], shift: f32) {
    for chunk in xs.chunks_mut(8) {
        let mut lanes = [0f32; 8];
        lanes.iter_mut().zip(chunk.iter()).for_each(|(lane, &x)| *lane = x - shift);
        let e = crate::expf::expf8(lanes);
        chunk.copy_from_slice(&e[..chunk.len()]);
    }
}

/// `dot` of each of `a` with four rows at once, bit for bit.
pub(super) fn dot4<const Q: usize, T: Element>(a: [&[f32]; Q], b: [&[T]; 4]) -> [[f32; 4]; Q] {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "f16c"))]
    if a[0].len().is_multiple_of(LANES)
        && a.iter().all(|row| row.len() == a[0].len())
        && b.iter().all(|row| row.len() == a[0].len())
    {
        return dot4_avx2(a, b);
    }
    a.map(|a| b.map(|b| dot(a, b)))
}

/// The lanes of `dot` as one vector per pair of rows (multiply, then add:
/// no FMA), and its pairwise sum ((0+1)+(2+3))+((4+5)+(6+7)) by horizontal
/// adds, which add exactly those pairs. Each row of `b` loaded serves every
/// row of `a`.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "f16c"))]
fn dot4_avx2<const Q: usize, T: Element>(a: [&[f32]; Q], b: [&[T]; 4]) -> [[f32; 4]; Q] {
    use std::arch::x86_64::*;
    // SAFETY: AVX2 and F16C are enabled for the whole build; every row is as long as
    // `a[0]`, a whole number of 8-float chunks (checked by `dot4`), and loads
    // are unaligned.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 4]; Q];
        for at in (0..a[0].len()).step_by(LANES) {
            let keys = b.map(|b| T::load8(b.as_ptr().add(at)));
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

pub(super) fn dot<T: Element>(a: &[f32], b: &[T]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (a_blocks, b_blocks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a_blocks.remainder(), b_blocks.remainder());
    for (x, y) in a_blocks.zip(b_blocks) {
        for l in 0..LANES {
            lanes[l] += x[l] * y[l].widen();
        }
    }
    let mut sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for (x, y) in a_rest.iter().zip(b_rest) {
        sum += x * y.widen();
    }
    sum
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn halves(xs: &[f32]) -> Vec<f16> {
        xs.iter().map(|&x| f16::from_f32(x)).collect()
    }

    pub(crate) fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 2000) as f32 / 500.0 - 2.0)
            .collect()
    }

    #[test]
    fn four_at_once_is_one_at_a_time() {
        for (len, seed) in [(64, 1), (8, 2), (16, 3), (12, 4), (3, 5)] {
            let a = pseudo(len, seed);
            let rows: Vec<Vec<f16>> = (0..4).map(|i| halves(&pseudo(len, seed * 10 + i))).collect();
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
            let values = halves(&pseudo(visible * kv_heads * d, 9));
            let kv = Cached { keys: &[], values: &values, row_len: kv_heads * d, at: d, len: d };
            let weights: Vec<Vec<f32>> = (0..MAX_SHARED as u32).map(|q| pseudo(visible, 20 + q)).collect();
            for queries in 1..=MAX_SHARED {
                let slices: Vec<&[f32]> = weights[..queries].iter().map(Vec::as_slice).collect();
                let mut shared = vec![0f32; queries * d];
                weighted_values(&slices, &kv, &mut shared);
                for (weights, got) in slices.iter().zip(shared.chunks_exact(d)) {
                    let mut alone = vec![0f32; d];
                    for (j, &w) in weights.iter().enumerate() {
                        alone.iter_mut().zip(kv.value(j)).for_each(|(o, &v)| *o += w * v.widen());
                    }
                    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(got), bits(&alone), "head_dim {d}, {queries} queries");
                }
            }
        }
    }
}
