//! The q8_0 × q8_0 dot product of the tied output head, defined bit for bit
//! so that every target computes the same logits (candle's `vec_dot` is
//! 8-lane FMA code on x86-64 with AVX2 and other code elsewhere).
//!
//! The definition, for blocks `b` of 32 weights `w` and activations `x`: lane
//! `l` (0..8) holds the exact integer sum `s_bl` of bytes `4l..4l+3`, and
//! accumulates `acc_l = fma(f32(w_b.d) * f32(x_b.d), f32(s_bl), acc_l)` block
//! after block; the result is `((acc_0 + acc_4) + (acc_2 + acc_6)) +
//! ((acc_1 + acc_5) + (acc_3 + acc_7))`. That is exactly what candle 0.9.2
//! computes on x86-64 with AVX2 and FMA, so the numbers of the profile did not
//! move there. The portable version is the definition itself; the AVX2 one
//! must agree with it on every input (tested).

use half::f16;

pub const BLOCK: usize = 32;
const LANES: usize = 8;

/// Field-for-field mirror of candle's `#[repr(C)]` q8_0 block, whose fields
/// are private to candle. The size assert in `qmatmul` guards the layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Q8_0 {
    pub d: f16,
    pub qs: [i8; BLOCK],
}

/// Whether the vector kernel computes the definition for activation row
/// `x`: the q8_0 quantizer's values lie in -127..=127, which it needs
/// (weights may be any i8).
pub fn vector_kernel_fits(x: &[Q8_0]) -> bool {
    x.iter().all(|b| b.qs.iter().all(|&q| q != i8::MIN))
}

/// Weight row `w` against each activation row of `xs` (at most 4), row
/// `i`'s result at `out[i * stride]`; `vector` says every row fits the
/// vector kernel. Each weight block is loaded once for all rows.
pub fn dot_rows(w: &[Q8_0], xs: &[&[Q8_0]], vector: bool, out: &mut [f32], stride: usize) {
    assert!(!xs.is_empty() && xs.len() <= 4 && out.len() > (xs.len() - 1) * stride, "output too small");
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    if vector {
        match xs {
            [a] => store(dot_avx2(w, [a]), out, stride),
            [a, b] => store(dot_avx2(w, [a, b]), out, stride),
            [a, b, c] => store(dot_avx2(w, [a, b, c]), out, stride),
            [a, b, c, d, ..] => store(dot_avx2(w, [a, b, c, d]), out, stride),
            [] => {}
        }
        return;
    }
    let _ = vector;
    for (i, x) in xs.iter().enumerate() {
        out[i * stride] = dot_portable(w, x);
    }
}

#[cfg_attr(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")), allow(dead_code))]
fn store<const R: usize>(values: [f32; R], out: &mut [f32], stride: usize) {
    for (i, v) in values.into_iter().enumerate() {
        out[i * stride] = v;
    }
}

/// The definition, in plain Rust: `f32::mul_add` is one correctly rounded
/// fused operation on every target (in software where there is no FMA unit).
pub fn dot_portable(w: &[Q8_0], x: &[Q8_0]) -> f32 {
    let mut acc = [0f32; LANES];
    for (a, b) in w.iter().zip(x) {
        let d = a.d.to_f32() * b.d.to_f32();
        for (lane, acc) in acc.iter_mut().enumerate() {
            let sum: i32 = (4 * lane..4 * lane + 4).map(|j| i32::from(a.qs[j]) * i32::from(b.qs[j])).sum();
            // |sum| <= 4 * 128 * 128: exact in f32.
            *acc = d.mul_add(sum as f32, *acc);
        }
    }
    let half: [f32; 4] = std::array::from_fn(|i| acc[i + 4] + acc[i]);
    (half[0] + half[2]) + (half[1] + half[3])
}

/// The same operations on 8 lanes at once, for `R` activation rows per
/// weight block. `_mm256_maddubs_epi16` multiplies unsigned by signed bytes,
/// so the sign moves onto the activation (candle's trick); that is exact
/// unless an activation is -128, which `vector_kernel_fits` rules out.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
fn dot_avx2<const R: usize>(w: &[Q8_0], xs: [&&[Q8_0]; R]) -> [f32; R] {
    use std::arch::x86_64::*;
    assert!(xs.iter().all(|x| x.len() >= w.len()), "activation row too short");
    // SAFETY: loads are unaligned and within each block's 32 quant bytes;
    // AVX2 and FMA are enabled for the whole build.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        for (at, a) in w.iter().enumerate() {
            let wa = _mm256_loadu_si256(a.qs.as_ptr().cast());
            let magnitude = _mm256_sign_epi8(wa, wa);
            let wd = a.d.to_f32();
            for (acc, x) in acc.iter_mut().zip(xs) {
                let b = x.get_unchecked(at);
                let d = _mm256_set1_ps(wd * b.d.to_f32());
                let signed = _mm256_sign_epi8(_mm256_loadu_si256(b.qs.as_ptr().cast()), wa);
                // Pairs of u8 (<= 128) × i8 (|x| <= 127) fit i16 without saturation.
                let pairs = _mm256_maddubs_epi16(magnitude, signed);
                let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(ones, pairs));
                *acc = _mm256_fmadd_ps(d, sums, *acc);
            }
        }
        acc.map(|acc| {
            let half = _mm_add_ps(_mm256_extractf128_ps::<1>(acc), _mm256_castps256_ps128(acc));
            let quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
            _mm_cvtss_f32(_mm_add_ss(quarter, _mm_movehdup_ps(quarter)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(seed: u64, n: usize, full_range: bool) -> Vec<Q8_0> {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        (0..n)
            .map(|_| Q8_0 {
                d: f16::from_f32((next() % 1000) as f32 / 7919.0 + 1e-4),
                qs: std::array::from_fn(|_| {
                    let q = (next() % 256) as i32 - 128;
                    if full_range {
                        q as i8
                    } else {
                        q.max(-127) as i8
                    }
                }),
            })
            .collect()
    }

    #[test]
    fn the_vector_kernel_is_the_definition() {
        for seed in 0..300 {
            let n = 1 + (seed as usize % 40);
            let w = blocks(seed, n, true);
            // An activation of -128 (never produced by the quantizer) still
            // gets the definition's answer.
            let xs: Vec<Vec<Q8_0>> = (0..4).map(|r| blocks(seed + 1000 * (r + 1), n, r == 3)).collect();
            for rows in 1..=4 {
                let xs: Vec<&[Q8_0]> = xs[..rows].iter().map(Vec::as_slice).collect();
                let vector = xs.iter().all(|x| vector_kernel_fits(x));
                let mut out = vec![0f32; 2 * rows];
                dot_rows(&w, &xs, vector, &mut out, 2);
                for (i, x) in xs.iter().enumerate() {
                    assert_eq!(out[2 * i].to_bits(), dot_portable(&w, x).to_bits(), "seed {seed}, row {i} of {rows}");
                }
            }
        }
    }
}
