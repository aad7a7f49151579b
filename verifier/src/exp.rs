//! `libm::exp`, four lanes at a time, bit for bit. Sampler v1 (DESIGN §4)
//! takes one `exp` per candidate at every position (in the replay check
//! those calls were a quarter of the time spent outside signatures), and the
//! model's SwiGLU one per hidden unit; the scalar function has branches no
//! compiler vectorises.
//!
//! Each lane runs exactly libm 0.2's operations (FreeBSD's `e_exp.c`) in the
//! same order, its branches turned into selects. A chunk with a lane at
//! `|x| >= 708.39` (NaN, infinities, overflow, underflow: where libm takes
//! its special paths and `scalbn` more than one multiply) goes to the scalar
//! function instead. Tested against `libm::exp` on every class of input.

/// `x = libm::exp(x)` for every element.
pub fn exp_in_place(xs: &mut [f64]) {
    let mut chunks = xs.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let lanes: &mut [f64; 4] = chunk.try_into().expect("chunks of 4");
        *lanes = exp4(*lanes);
    }
    chunks.into_remainder().iter_mut().for_each(|x| *x = libm::exp(*x));
}

/// `libm::exp` of each of the four values.
fn exp4(x: [f64; 4]) -> [f64; 4] {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if let Some(y) = exp4_avx2(x) {
        return y;
    }
    x.map(libm::exp)
}

/// `None` when a lane is outside the range the vector path covers.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
fn exp4_avx2(x: [f64; 4]) -> Option<[f64; 4]> {
    use std::arch::x86_64::*;
    // libm's constants, by their bits.
    let ln2_hi = f64::from_bits(0x3fe6_2e42_fee0_0000);
    let ln2_lo = f64::from_bits(0x3dea_39ef_3579_3c76);
    let inv_ln2 = f64::from_bits(0x3ff7_1547_652b_82fe);
    let p = [
        f64::from_bits(0x3fc5_5555_5555_553e),
        f64::from_bits(0xbf66_c16c_16be_bd93),
        f64::from_bits(0x3f11_566a_af25_de2c),
        f64::from_bits(0xbebb_bd41_c5d2_6bf1),
        f64::from_bits(0x3e66_3769_72be_a4d0),
    ];
    // SAFETY: AVX2 is enabled for the whole build; loads and stores are
    // unaligned on 4-double arrays.
    unsafe {
        let x = _mm256_loadu_pd(x.as_ptr());
        let magnitude = _mm256_and_si256(_mm256_castpd_si256(x), _mm256_set1_epi64x(i64::MAX));
        // libm compares the high word of |x| (`hx`); `hx > limit` is
        // `|x|'s bits > limit:ffffffff`, and non-negative doubles order as
        // their bits do.
        let above = |high_word: i64| _mm256_cmpgt_epi64(magnitude, _mm256_set1_epi64x((high_word << 32) | 0xffff_ffff));
        // hx >= 0x4086232b: |x| >= 708.39, NaN or infinite.
        if _mm256_movemask_pd(_mm256_castsi256_pd(above(0x4086_232a))) != 0 {
            return None;
        }
        let negative = _mm256_cmp_pd::<_CMP_LT_OQ>(x, _mm256_setzero_pd());
        // k = (INVLN2 * x + ±0.5) as i32 for hx >= 0x3ff0a2b2, 1 - 2 sign
        // for hx > 0x3fd62e42, else 0: an integer-valued double here.
        let half = _mm256_blendv_pd(_mm256_set1_pd(0.5), _mm256_set1_pd(-0.5), negative);
        let k_far = _mm256_round_pd::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(_mm256_add_pd(
            _mm256_mul_pd(_mm256_set1_pd(inv_ln2), x),
            half,
        ));
        let k_near = _mm256_blendv_pd(_mm256_set1_pd(1.0), _mm256_set1_pd(-1.0), negative);
        let near = _mm256_castsi256_pd(above(0x3fd6_2e42));
        let far = _mm256_castsi256_pd(above(0x3ff0_a2b1));
        let k = _mm256_blendv_pd(_mm256_and_pd(near, k_near), k_far, far);
        // With k = 0 these are libm's `hi = x, lo = 0` exactly.
        let hi = _mm256_sub_pd(x, _mm256_mul_pd(k, _mm256_set1_pd(ln2_hi)));
        let lo = _mm256_mul_pd(k, _mm256_set1_pd(ln2_lo));
        let r = _mm256_sub_pd(hi, lo);
        let rr = _mm256_mul_pd(r, r);
        let mut poly = _mm256_set1_pd(p[4]);
        for &coefficient in p[..4].iter().rev() {
            poly = _mm256_add_pd(_mm256_set1_pd(coefficient), _mm256_mul_pd(rr, poly));
        }
        let c = _mm256_sub_pd(r, _mm256_mul_pd(rr, poly));
        let ratio = _mm256_div_pd(_mm256_mul_pd(r, c), _mm256_sub_pd(_mm256_set1_pd(2.0), c));
        let y = _mm256_add_pd(_mm256_set1_pd(1.0), _mm256_add_pd(_mm256_sub_pd(ratio, lo), hi));
        // scalbn(y, k) for -1022 <= k <= 1023 is one multiply by 2^k (and
        // by 1 when k = 0); |x| < 708.39 keeps k there.
        let k_int = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(k));
        let scale = _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_add_epi64(k_int, _mm256_set1_epi64x(1023))));
        let scaled = _mm256_mul_pd(y, scale);
        // hx <= 0x3e300000 (|x| <= 2^-28): 1 + x.
        let not_tiny = _mm256_castsi256_pd(above(0x3e30_0000));
        let result = _mm256_blendv_pd(_mm256_add_pd(_mm256_set1_pd(1.0), x), scaled, not_tiny);
        let mut out = [0f64; 4];
        _mm256_storeu_pd(out.as_mut_ptr(), result);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_lanes_are_libm(lanes: [f64; 4]) {
        for (x, y) in lanes.into_iter().zip(exp4(lanes)) {
            let expected = libm::exp(x);
            assert!(
                y.to_bits() == expected.to_bits() || (y.is_nan() && expected.is_nan()),
                "exp({x:e}) = {y:e}, libm {expected:e}"
            );
        }
    }

    #[test]
    fn every_lane_is_libm_exp() {
        // Every class of double (a multiplicative walk over the bit
        // patterns), then the sampler's range densely, then both sides of
        // each of libm's branch points.
        let mut bits = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..1 << 20 {
            let lanes = [0; 4].map(|_| {
                bits = bits.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                f64::from_bits(bits)
            });
            assert_lanes_are_libm(lanes);
        }
        for i in 0..1u64 << 20 {
            let lanes = [0, 1, 2, 3].map(|lane| -746.0 * ((i * 4 + lane) as f64 / (1u64 << 22) as f64));
            assert_lanes_are_libm(lanes);
            assert_lanes_are_libm(lanes.map(|x| -x / 64.0));
        }
        let limits = [0x4086_232b_u64, 0x3fd6_2e42, 0x3ff0_a2b2, 0x3e30_0000];
        for high_word in limits.into_iter().flat_map(|w| [w - 1, w, w + 1]) {
            for low in [0, 1, 0x8000_0000, 0xffff_ffff] {
                let x = f64::from_bits(high_word << 32 | low);
                assert_lanes_are_libm([x, -x, x, -x]);
            }
        }
        assert_lanes_are_libm([0.0, -0.0, f64::MIN_POSITIVE, -f64::MIN_POSITIVE]);
        assert_lanes_are_libm([f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.0]);
    }

    #[test]
    fn a_slice_of_any_length_is_exp_elementwise() {
        for len in [0, 1, 3, 4, 5, 9] {
            let original: Vec<f64> = (0..len).map(|i| -(i as f64) * 1.37).collect();
            let mut xs = original.clone();
            exp_in_place(&mut xs);
            let expected: Vec<u64> = original.iter().map(|&x| libm::exp(x).to_bits()).collect();
            assert_eq!(xs.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), expected, "length {len}");
        }
    }
}
