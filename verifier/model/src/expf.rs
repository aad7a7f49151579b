//! `libm::expf`, eight lanes at a time, bit for bit: the softmaxes of
//! attention and of the output head call it tens of millions of times per
//! full check, and the scalar function has branches no compiler vectorises.
//!
//! Each lane runs exactly libm 0.2's operations (FreeBSD's `e_expf.c`) in
//! the same order, its branches turned into selects; a chunk with a lane
//! outside `2^-14 < |x| < 87.34` (NaN, overflow, underflow, or a scale
//! beyond the normal range, where `scalbnf` takes other paths) goes to the
//! scalar function instead. The vector path must agree with `libm::expf`
//! on every input (tested over a stride of all f32 bit patterns).

/// `libm::expf` of each of the eight values.
pub fn expf8(x: [f32; 8]) -> [f32; 8] {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if let Some(y) = expf8_avx2(x) {
        return y;
    }
    x.map(libm::expf)
}

/// `None` when a lane is outside the range the vector path covers.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
fn expf8_avx2(x: [f32; 8]) -> Option<[f32; 8]> {
    use std::arch::x86_64::*;
    // libm's constants, by their bits.
    let ln2_hi = f32::from_bits(0x3f31_7200);
    let ln2_lo = f32::from_bits(0x35bf_be8e);
    let inv_ln2 = f32::from_bits(0x3fb8_aa3b);
    let p1 = f32::from_bits(0x3e2a_aa8f);
    let p2 = f32::from_bits(0xbb35_5215);
    // SAFETY: AVX2 is enabled for the whole build; loads and stores are
    // unaligned on 8-float arrays.
    unsafe {
        let x = _mm256_loadu_ps(x.as_ptr());
        let bits = _mm256_castps_si256(x);
        let hx = _mm256_and_si256(bits, _mm256_set1_epi32(0x7fff_ffff));
        let above = |limit: i32| _mm256_cmpgt_epi32(hx, _mm256_set1_epi32(limit));
        // |x| >= 87.34: NaN, overflow, underflow, or 2^k below the normal range.
        if _mm256_movemask_epi8(above(0x42ae_ac4f)) != 0 {
            return None;
        }
        let negative = _mm256_srai_epi32::<31>(bits);
        // k = (INV_LN2 * x + ±0.5) as i32 above 1.5 ln2, ±1 above 0.5 ln2, else 0.
        let half = _mm256_blendv_ps(_mm256_set1_ps(0.5), _mm256_set1_ps(-0.5), _mm256_castsi256_ps(negative));
        let k_far = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(inv_ln2), x), half));
        let k_near = _mm256_or_si256(negative, _mm256_set1_epi32(1));
        let k = _mm256_blendv_epi8(_mm256_and_si256(above(0x3eb1_7218), k_near), k_far, above(0x3f85_1592));
        let kf = _mm256_cvtepi32_ps(k);
        let hi = _mm256_sub_ps(x, _mm256_mul_ps(kf, _mm256_set1_ps(ln2_hi)));
        let lo = _mm256_mul_ps(kf, _mm256_set1_ps(ln2_lo));
        let r = _mm256_sub_ps(hi, lo);
        let rr = _mm256_mul_ps(r, r);
        let poly = _mm256_add_ps(_mm256_set1_ps(p1), _mm256_mul_ps(rr, _mm256_set1_ps(p2)));
        let c = _mm256_sub_ps(r, _mm256_mul_ps(rr, poly));
        let ratio = _mm256_div_ps(_mm256_mul_ps(r, c), _mm256_sub_ps(_mm256_set1_ps(2.0), c));
        let y = _mm256_add_ps(_mm256_set1_ps(1.0), _mm256_add_ps(_mm256_sub_ps(ratio, lo), hi));
        // scalbnf(y, k) for -126 <= k <= 127 is one multiply by 2^k.
        let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(k, _mm256_set1_epi32(127))));
        let scaled = _mm256_mul_ps(y, scale);
        // |x| <= 2^-14: 1 + x.
        let tiny = _mm256_castsi256_ps(above(0x3900_0000));
        let result = _mm256_blendv_ps(_mm256_add_ps(_mm256_set1_ps(1.0), x), scaled, tiny);
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), result);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lane_is_libm_expf() {
        let mut checked = 0u64;
        let mut lanes = [0f32; 8];
        // A stride coprime to 8 puts every pattern class in every lane.
        for (i, bits) in (0..=u32::MAX).step_by(97).enumerate() {
            lanes[i % 8] = f32::from_bits(bits);
            if i % 8 == 7 {
                let got = expf8(lanes);
                for (x, y) in lanes.iter().zip(got) {
                    assert_eq!(y.to_bits(), libm::expf(*x).to_bits(), "expf({x:e})");
                }
                checked += 8;
            }
        }
        // The softmax range, densely.
        for bits in (0..(1u32 << 26)).step_by(5) {
            let x = -f32::from_bits(0x3000_0000 + bits * 3);
            let got = expf8([x, x / 2.0, x / 3.0, x * 0.7, -x / 5.0, x / 64.0, x - 1.0, x * 1.5]);
            for (x, y) in [x, x / 2.0, x / 3.0, x * 0.7, -x / 5.0, x / 64.0, x - 1.0, x * 1.5].iter().zip(got) {
                assert_eq!(y.to_bits(), libm::expf(*x).to_bits(), "expf({x:e})");
            }
            checked += 8;
        }
        assert!(checked > 100_000_000);
    }
}
