//! Quantized matmul for the file's own formats, bit-identical to candle's
//! `QMatMul` (so the `candle-quantized` profile means the same numbers) but
//! tiled: a small group of weight rows stays in cache while every activation
//! row passes over it, which is what makes teacher-forced prefill fast.
//!
//! Activations are quantized by candle's own `from_float` (scalar code, the
//! same on every target; candle is pinned to one exact version). Both dot
//! products are ours and bit-defined on every target: q8_0 in `q8_0`, and
//! q4_1 here, as candle's scalar `vec_dot_unopt` defines it: the block's
//! integer sum (exact, in any order) with AVX2, then the same f32 operations
//! in the same order, with no FMA.

use candle_core::quantized::k_quants::{BlockQ4_1, BlockQ8_0, BlockQ8_1, GgmlType};

use crate::q8_0::{self, Q8_0};
use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;
use rayon::prelude::*;

/// Output columns per parallel task.
const TILE: usize = 32;
const BLOCK: usize = 32;

/// Field-for-field mirror of candle's `#[repr(C)]` q8_1 block, whose fields
/// are private to candle. The size assert guards the layout.
#[repr(C)]
#[derive(Clone, Copy)]
struct Q8_1 {
    d: f16,
    s: f16,
    qs: [i8; BLOCK],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Q4_1 {
    d: f16,
    m: f16,
    qs: [u8; BLOCK / 2],
}

const _: () = assert!(std::mem::size_of::<Q4_1>() == std::mem::size_of::<BlockQ4_1>());
const _: () = assert!(std::mem::size_of::<Q8_1>() == std::mem::size_of::<BlockQ8_1>());
const _: () = assert!(std::mem::size_of::<Q8_0>() == std::mem::size_of::<BlockQ8_0>());
const _: () = assert!(std::mem::align_of::<Q8_0>() == std::mem::align_of::<BlockQ8_0>());

/// Weight rows handled together: one activation block is loaded once for
/// all of them, and their f32 epilogues run as one 8-lane vector.
const GROUP: usize = 8;
/// Activation rows handled together: each weight block is loaded (and
/// unpacked) once for all of them.
const ROWS: usize = 4;

/// q4_1 weights regrouped: for group g, block b, row r the index is
/// `(g * blocks + b) * GROUP + r`; scales pre-converted to f32 (exact).
struct Q4_1Groups {
    qs: Vec<[u8; BLOCK / 2]>,
    d: Vec<f32>,
    m: Vec<f32>,
    blocks: usize,
}

enum Weights {
    Q4_1(Q4_1Groups),
    Q8_0(Vec<Q8_0>),
}

/// Weights of shape (out, in) for `x · Wᵀ`.
pub struct TiledQMatMul {
    weights: Weights,
    out_features: usize,
    in_features: usize,
}

impl TiledQMatMul {
    /// `None` for formats this kernel does not cover (candle's `QMatMul`
    /// serves those).
    pub fn new(tensor: &QTensor) -> candle_core::Result<Option<Self>> {
        Self::stacked(std::slice::from_ref(tensor))
    }

    /// The weights of `tensors` (same format, same input width) stacked
    /// into one matrix, their output columns side by side in order: the
    /// input is quantized once and one parallel pass computes them all.
    /// Every column is computed as it would be alone.
    pub fn stacked(tensors: &[QTensor]) -> candle_core::Result<Option<Self>> {
        let Some(first) = tensors.first() else { return Ok(None) };
        let (dtype, (_, in_features)) = (first.dtype(), first.shape().dims2()?);
        let mut out_features = 0;
        let mut bytes = Vec::new();
        for tensor in tensors {
            let (out, inp) = tensor.shape().dims2()?;
            if tensor.dtype() != dtype || inp != in_features {
                return Ok(None);
            }
            out_features += out;
            bytes.extend_from_slice(&tensor.data()?);
        }
        if in_features % BLOCK != 0 {
            return Ok(None);
        }
        let weights = match dtype {
            GgmlDType::Q4_1 => Weights::Q4_1(group_q4_1(&bytes, out_features, in_features / BLOCK)),
            GgmlDType::Q8_0 => Weights::Q8_0(as_q8_0(blocks_from_bytes::<BlockQ8_0>(&bytes))),
            _ => return Ok(None),
        };
        Ok(Some(Self { weights, out_features, in_features }))
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// `rows` (m × in, row-major) times the weights: m × out, row-major.
    pub fn forward(&self, rows: &[f32]) -> Vec<f32> {
        let blocks = self.in_features / BLOCK;
        let m = rows.len() / self.in_features;
        match &self.weights {
            Weights::Q4_1(w) => {
                let x: Vec<BlockQ8_1> = quantize_rows(rows, self.in_features);
                // SAFETY: same size and `repr(C)` field order as candle's block.
                let x: &[Q8_1] = unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len()) };
                let activations = Activations::new(x);
                let groups = self.out_features.div_ceil(GROUP);
                self.tiled(m, groups, GROUP, |group, first, rows, out, stride| {
                    dot_q4_1_group(w, group, &activations, first, rows, out, stride)
                })
            }
            Weights::Q8_0(w) => {
                let x = as_q8_0(quantize_rows::<BlockQ8_0>(rows, self.in_features));
                let x_rows: Vec<&[Q8_0]> = x.chunks_exact(blocks).collect();
                let vector: Vec<bool> = x_rows.iter().map(|row| q8_0::vector_kernel_fits(row)).collect();
                self.tiled(m, self.out_features, 1, |col, first, rows, out, stride| {
                    let weights = &w[col * blocks..(col + 1) * blocks];
                    let x = &x_rows[first..first + rows];
                    q8_0::dot_rows(weights, x, vector[first..first + rows].iter().all(|&v| v), out, stride);
                })
            }
        }
    }

    /// Runs `unit(u, first, rows, out, stride)` for every unit of `width`
    /// output columns and every run of up to `ROWS` activation rows from
    /// `first`; the unit writes row `first + i`'s columns at `out[i * stride..]`.
    /// Units are spread over threads a tile at a time, each tile writing its
    /// own columns of the result. Each output value is computed by the same
    /// operations whatever the split, so neither the thread count nor the
    /// number of rows changes a bit.
    fn tiled(
        &self,
        m: usize,
        units: usize,
        width: usize,
        unit: impl Fn(usize, usize, usize, &mut [f32], usize) + Sync,
    ) -> Vec<f32> {
        let n = self.out_features;
        let per_tile = (TILE / width).max(1);
        let mut dst = vec![0f32; m * n];
        let shared = SharedRows { ptr: dst.as_mut_ptr(), len: dst.len() };
        (0..units.div_ceil(per_tile)).into_par_iter().for_each_init(Vec::new, |scratch, tile| {
            let units_here = tile * per_tile..((tile + 1) * per_tile).min(units);
            let cols = units_here.len() * width;
            let start = units_here.start * width;
            let keep = cols.min(n - start);
            scratch.clear();
            scratch.resize(ROWS * cols, 0.0);
            for first in (0..m).step_by(ROWS) {
                let rows = ROWS.min(m - first);
                for (i, u) in units_here.clone().enumerate() {
                    unit(u, first, rows, &mut scratch[i * width..], cols);
                }
                for (r, values) in scratch.chunks_exact(cols).take(rows).enumerate() {
                    // SAFETY: tiles cover disjoint column ranges, so no two
                    // tasks write the same element, and `dst` outlives them.
                    unsafe { shared.write((first + r) * n + start, &values[..keep]) };
                }
            }
        });
        dst
    }
}

/// The result matrix, written by many tiles at once at disjoint places.
struct SharedRows {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: only `write` touches the memory, and its callers write disjoint
// ranges (see `tiled`).
unsafe impl Sync for SharedRows {}

impl SharedRows {
    /// # Safety
    /// No other thread may access `at..at + values.len()` meanwhile.
    unsafe fn write(&self, at: usize, values: &[f32]) {
        assert!(at + values.len() <= self.len, "write past the result");
        // SAFETY: in bounds (checked), exclusive by the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.add(at), values.len()) };
    }
}

/// Quantized activation blocks with their scales as f32 (exact conversions).
struct Activations<'a> {
    blocks: &'a [Q8_1],
    d: Vec<f32>,
    s: Vec<f32>,
}

impl<'a> Activations<'a> {
    fn new(blocks: &'a [Q8_1]) -> Self {
        Self {
            blocks,
            d: blocks.iter().map(|b| b.d.to_f32()).collect(),
            s: blocks.iter().map(|b| b.s.to_f32()).collect(),
        }
    }
}

fn group_q4_1(bytes: &[u8], rows: usize, blocks: usize) -> Q4_1Groups {
    let raw: Vec<BlockQ4_1> = blocks_from_bytes(bytes);
    // SAFETY: same size and `repr(C)` field order as candle's block.
    let raw: &[Q4_1] = unsafe { std::slice::from_raw_parts(raw.as_ptr().cast(), raw.len()) };
    let groups = rows.div_ceil(GROUP);
    let len = groups * blocks * GROUP;
    // Padding rows are zero and their outputs are dropped.
    let (mut qs, mut d, mut m) = (vec![[0u8; BLOCK / 2]; len], vec![0f32; len], vec![0f32; len]);
    for row in 0..rows {
        for b in 0..blocks {
            let block = &raw[row * blocks + b];
            let at = ((row / GROUP) * blocks + b) * GROUP + row % GROUP;
            (qs[at], d[at], m[at]) = (block.qs, block.d.to_f32(), block.m.to_f32());
        }
    }
    Q4_1Groups { qs, d, m, blocks }
}

fn as_q8_0(blocks: Vec<BlockQ8_0>) -> Vec<Q8_0> {
    let mut blocks = std::mem::ManuallyDrop::new(blocks);
    // SAFETY: same size, alignment and `repr(C)` field order as candle's
    // block (asserted above), so the allocation is reused as is.
    unsafe { Vec::from_raw_parts(blocks.as_mut_ptr().cast::<Q8_0>(), blocks.len(), blocks.capacity()) }
}

fn blocks_from_bytes<T: GgmlType>(bytes: &[u8]) -> Vec<T> {
    let mut blocks = vec![T::zeros(); bytes.len() / std::mem::size_of::<T>()];
    // SAFETY: candle's blocks are `repr(C)` plain data; the GGUF bytes are
    // exactly their in-memory form (that is how candle itself loads them).
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), blocks.as_mut_ptr().cast::<u8>(), bytes.len()) };
    blocks
}

#[inline(never)] // its own symbol in profiles
fn quantize_rows<T: GgmlType + Send>(rows: &[f32], in_features: usize) -> Vec<T> {
    let blocks = in_features / BLOCK;
    let mut out = vec![T::zeros(); rows.len() / in_features * blocks];
    rows.par_chunks_exact(in_features).zip(out.par_chunks_exact_mut(blocks)).for_each(|(row, q)| T::from_float(row, q));
    out
}

/// candle's `BlockQ4_1::vec_dot_unopt` for the 8 weight rows of `group`
/// against activation rows `first..first + rows` (at most `ROWS`), row `i`'s
/// 8 results at `out[i * stride..]`: per weight row, exactly
/// `sumf += sumi as f32 * dx * dy + mx * sy`, block after block. The
/// portable version is the definition; the AVX2 one must agree (tested).
fn dot_q4_1_group(
    w: &Q4_1Groups,
    group: usize,
    x: &Activations<'_>,
    first: usize,
    rows: usize,
    out: &mut [f32],
    stride: usize,
) {
    assert!((1..=ROWS).contains(&rows) && out.len() >= (rows - 1) * stride + GROUP, "output too small");
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    match rows {
        1 => dot_q4_1_group_avx2::<1>(w, group, x, first, out, stride),
        2 => dot_q4_1_group_avx2::<2>(w, group, x, first, out, stride),
        3 => dot_q4_1_group_avx2::<3>(w, group, x, first, out, stride),
        _ => dot_q4_1_group_avx2::<4>(w, group, x, first, out, stride),
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    for i in 0..rows {
        dot_q4_1_group_portable(w, group, x, (first + i) * w.blocks, &mut out[i * stride..i * stride + GROUP]);
    }
}

/// `R` activation rows against one group: each weight block's nibbles are
/// unpacked once for all `R` rows, which is most of what a row would cost.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
#[inline(never)] // its own symbol in profiles; a call costs nothing beside it
fn dot_q4_1_group_avx2<const R: usize>(
    w: &Q4_1Groups,
    group: usize,
    x: &Activations<'_>,
    first: usize,
    out: &mut [f32],
    stride: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: AVX2 is enabled for the whole build; all loads are unaligned
    // and within the slices' bounds (`dot_q4_1_group` checked `out`).
    unsafe {
        let low_nibbles = _mm256_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut nibbles = [_mm256_setzero_si256(); GROUP];
        for b in 0..w.blocks {
            let at = (group * w.blocks + b) * GROUP;
            for (r, unpacked) in nibbles.iter_mut().enumerate() {
                let packed = _mm_loadu_si128(w.qs[at + r].as_ptr().cast());
                let both = _mm256_insertf128_si256::<1>(_mm256_castsi128_si256(packed), _mm_srli_epi16(packed, 4));
                *unpacked = _mm256_and_si256(both, low_nibbles);
            }
            let dx = _mm256_loadu_ps(w.d.as_ptr().add(at));
            let mx = _mm256_loadu_ps(w.m.as_ptr().add(at));
            for (i, acc) in acc.iter_mut().enumerate() {
                let xb = (first + i) * w.blocks + b;
                let values = _mm256_loadu_si256(x.blocks[xb].qs.as_ptr().cast());
                let mut pairs = [_mm256_setzero_si256(); GROUP];
                for (pair, &unpacked) in pairs.iter_mut().zip(&nibbles) {
                    // u8 (0..15) × i8 pairs fit i16 without saturation.
                    *pair = _mm256_maddubs_epi16(unpacked, values);
                }
                // Sums of 4, 8, then 16 products stay within i16 (|16 × 15
                // × 128| < 2^15), so three rounds of 16-bit horizontal adds
                // leave, per 128-bit half, rows 0..7 in order: the low half
                // holds elements 0..15, the high half 16..31.
                let p01 = _mm256_hadd_epi16(pairs[0], pairs[1]);
                let p23 = _mm256_hadd_epi16(pairs[2], pairs[3]);
                let p45 = _mm256_hadd_epi16(pairs[4], pairs[5]);
                let p67 = _mm256_hadd_epi16(pairs[6], pairs[7]);
                let halves = _mm256_hadd_epi16(_mm256_hadd_epi16(p01, p23), _mm256_hadd_epi16(p45, p67));
                let lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(halves));
                let hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(halves));
                let sumi = _mm256_cvtepi32_ps(_mm256_add_epi32(lo, hi));
                // Separate multiplies and adds, no FMA: the same roundings as
                // candle's scalar expression.
                let scaled = _mm256_mul_ps(_mm256_mul_ps(sumi, dx), _mm256_set1_ps(x.d[xb]));
                let term = _mm256_add_ps(scaled, _mm256_mul_ps(mx, _mm256_set1_ps(x.s[xb])));
                *acc = _mm256_add_ps(*acc, term);
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(i * stride), *acc);
        }
    }
}

#[cfg_attr(all(target_arch = "x86_64", target_feature = "avx2"), allow(dead_code))]
fn dot_q4_1_group_portable(w: &Q4_1Groups, group: usize, x: &Activations<'_>, first: usize, out: &mut [f32]) {
    let half = BLOCK / 2;
    for (r, out) in out.iter_mut().enumerate() {
        let mut sumf = 0f32;
        for b in 0..w.blocks {
            let (y, at) = (&x.blocks[first + b], (group * w.blocks + b) * GROUP + r);
            let qs = &w.qs[at];
            let sumi: i32 = (0..half)
                .map(|j| {
                    i32::from(qs[j] & 0x0F) * i32::from(y.qs[j]) + i32::from(qs[j] >> 4) * i32::from(y.qs[j + half])
                })
                .sum();
            sumf += sumi as f32 * w.d[at] * x.d[first + b] + w.m[at] * x.s[first + b];
        }
        *out = sumf;
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::QMatMul;
    use candle_core::{Device, Module, Tensor};

    use super::*;

    /// The vector q4_1 kernel computes the portable definition, bit for bit.
    #[test]
    fn the_q4_1_vector_kernel_is_the_definition() {
        let (rows, inp, m) = (21, 256, 6);
        let w = Tensor::randn(0f32, 1.0, (rows, inp), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let Weights::Q4_1(groups) = TiledQMatMul::new(&q).unwrap().unwrap().weights else { panic!("q4_1") };
        let x = Tensor::randn(0f32, 2.0, (m, inp), &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let blocks: Vec<BlockQ8_1> = quantize_rows(&x, inp);
        // SAFETY: same size and `repr(C)` field order as candle's block.
        let blocks: &[Q8_1] = unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast(), blocks.len()) };
        let activations = Activations::new(blocks);
        for group in 0..rows.div_ceil(GROUP) {
            for first in 0..m {
                for n in 1..=ROWS.min(m - first) {
                    let stride = GROUP + 3;
                    let mut fast = vec![0f32; (n - 1) * stride + GROUP];
                    dot_q4_1_group(&groups, group, &activations, first, n, &mut fast, stride);
                    for i in 0..n {
                        let mut portable = [0f32; GROUP];
                        dot_q4_1_group_portable(
                            &groups,
                            group,
                            &activations,
                            (first + i) * groups.blocks,
                            &mut portable,
                        );
                        let fast = &fast[i * stride..i * stride + GROUP];
                        let same = fast.iter().zip(&portable).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "group {group}, row {} of {n} from {first}", first + i);
                    }
                }
            }
        }
    }

    #[test]
    fn bit_identical_to_candle_qmatmul() {
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            for (out, inp, m) in [(48, 64, 1), (37, 128, 5), (100, 576, 33), (3, 64, 2)] {
                let w = Tensor::randn(0f32, 1.0, (out, inp), &Device::Cpu).unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                let x = Tensor::randn(0f32, 2.0, (m, inp), &Device::Cpu).unwrap();
                let expected = QMatMul::QTensor(std::sync::Arc::new(QTensor::quantize(&w, dtype).unwrap()))
                    .forward(&x)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let tiled = TiledQMatMul::new(&q).unwrap().unwrap();
                let got = tiled.forward(&x.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                assert_eq!(got, expected, "{dtype:?} {out}x{inp}, {m} rows");
            }
        }
    }
}
