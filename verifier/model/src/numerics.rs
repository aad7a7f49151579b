//! Numerics profiles (DESIGN §5): each one is honoured exactly or refused with
//! the reason. Nothing here reads candle's `CANDLE_DEQUANTIZE_ALL*` variables:
//! `QMatMul::from_arc` does, which would let the environment change the
//! numbers behind the chain spec's back, so layers are built variant by variant.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};
use poi_chain_spec::{ActivationDtype, DeviceClass, MatmulKernel, NumericsProfile, WeightFormat};

use crate::qmatmul::TiledQMatMul;
use crate::ModelError;

/// One matmul layer as the profile computes it.
pub enum Linear {
    /// q4_1 / q8_0 weights on the CPU: our tiled kernel, same numbers as candle's.
    Tiled(TiledQMatMul),
    Candle(QMatMul),
}

impl Linear {
    /// `x` is (rows, in); the result is (rows, out), row-major, without a
    /// tensor in between for the tiled kernel.
    pub fn forward_rows(&self, x: &Tensor) -> candle_core::Result<Vec<f32>> {
        match self {
            Self::Tiled(tiled) => Ok(tiled.forward(&x.flatten_all()?.to_vec1::<f32>()?)),
            Self::Candle(matmul) => candle_core::Module::forward(matmul, x)?.flatten_all()?.to_vec1::<f32>(),
        }
    }

    /// `x` is (rows, in); the result is (rows, out).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Tiled(tiled) => {
                Tensor::from_vec(self.forward_rows(x)?, (x.dim(0)?, tiled.out_features()), x.device())
            }
            Self::Candle(matmul) => candle_core::Module::forward(matmul, x),
        }
    }
}

/// Matmuls of one input, computed together where the kernel allows.
pub enum Fused {
    /// One stacked matrix; the output widths of its parts, in order.
    Stacked {
        matmul: TiledQMatMul,
        widths: Vec<usize>,
    },
    Separate(Vec<Linear>),
}

impl Fused {
    /// Each part's (rows, out) result, row-major, in order.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
        match self {
            Self::Stacked { matmul, widths } => {
                let all = matmul.forward(&x.flatten_all()?.to_vec1::<f32>()?);
                let total = matmul.out_features();
                let mut parts: Vec<Vec<f32>> =
                    widths.iter().map(|w| Vec::with_capacity(all.len() / total * w)).collect();
                for row in all.chunks_exact(total) {
                    let mut at = 0;
                    for (part, &width) in parts.iter_mut().zip(widths) {
                        part.extend_from_slice(&row[at..at + width]);
                        at += width;
                    }
                }
                Ok(parts)
            }
            Self::Separate(linears) => linears.iter().map(|linear| linear.forward_rows(x)).collect(),
        }
    }
}

/// The version of the numbers this build computes (`NumericsProfile::version`).
/// 3: the KV cache holds half floats (rounded to nearest-even when cached),
/// as llama.cpp's does. 2: f32 cache; our own q8_0 kernel for the tied output
/// head and SwiGLU with `libm`'s `expf`. 1: candle's q8_0 `vec_dot` and
/// candle's silu with std `expf`.
pub const NUMERICS_VERSION: u32 = 3;

/// A profile checked against this build and machine.
#[derive(Clone, Debug)]
pub struct Numerics {
    profile: NumericsProfile,
    device: Device,
}

impl Numerics {
    pub fn resolve(profile: &NumericsProfile) -> Result<Self, ModelError> {
        let refuse =
            |reason: &str| Err(ModelError::Unsupported { profile: profile.id.clone(), reason: reason.to_string() });
        if profile.version != NUMERICS_VERSION {
            return refuse(&format!(
                "the chain pins version {} of the profile's numbers; this build computes version {NUMERICS_VERSION}",
                profile.version
            ));
        }
        let quantized_weights =
            matches!(profile.weights, WeightFormat::GgufNative | WeightFormat::RequantQ4_0 | WeightFormat::RequantQ2k);
        match (quantized_weights, profile.matmul) {
            (true, MatmulKernel::CandleDense) => return refuse("quantized weights need the candle-quantized matmul"),
            (false, MatmulKernel::CandleQuantized) => {
                return refuse("dequantized weights need the candle-dense matmul")
            }
            _ => {}
        }
        match (profile.weights, profile.activations) {
            (WeightFormat::DequantF16, _) | (_, ActivationDtype::F32) => {}
            _ => return refuse("f16 activations are only defined with dequant-f16 weights"),
        }
        let device = match profile.device {
            DeviceClass::Cpu => Device::Cpu,
            DeviceClass::Cuda => {
                return refuse(
                    "no numerics profile runs on CUDA yet: the pinned kernels are CPU code, and a GPU profile \
                     needs its own kernels and calibration",
                )
            }
        };
        if profile.bit_exact && !is_bit_exact(profile) {
            return refuse(
                "declared bit-exact, but only gguf-native weights with the candle-quantized matmul on the CPU \
                 (our pinned kernels) give decode and prefill the same bits on every machine",
            );
        }
        Ok(Self { profile: profile.clone(), device })
    }

    pub fn profile(&self) -> &NumericsProfile {
        &self.profile
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The weights as this profile computes with them, still in `QTensor`
    /// form: `linear` and `dense` take the result, so a tied tensor (the
    /// embeddings) is requantized once for both uses.
    pub fn convert(&self, weights: QTensor) -> Result<QTensor, ModelError> {
        let target = match self.profile.weights {
            WeightFormat::RequantQ4_0 => GgmlDType::Q4_0,
            WeightFormat::RequantQ2k => GgmlDType::Q2K,
            _ => return Ok(weights),
        };
        let row_len = *weights.shape().dims().last().unwrap_or(&0);
        // As llama.cpp does for k-quants: rows that are not a whole number of
        // 256-wide super-blocks get q4_0 instead. Stated in the profile's docs.
        let target = if row_len.is_multiple_of(target.block_size()) { target } else { GgmlDType::Q4_0 };
        if weights.dtype() == target {
            return Ok(weights);
        }
        let dense = weights.dequantize(&Device::Cpu)?;
        Ok(QTensor::quantize_onto(&dense, target, &self.device)?)
    }

    /// A matmul layer for converted weights of shape (out, in).
    pub fn linear(&self, weights: QTensor) -> Result<Linear, ModelError> {
        let quantized = self.profile.matmul == MatmulKernel::CandleQuantized;
        if quantized && self.device.is_cpu() {
            if let Some(tiled) = TiledQMatMul::new(&weights)? {
                return Ok(Linear::Tiled(tiled));
            }
        }
        Ok(Linear::Candle(match (self.profile.weights, self.profile.activations) {
            (WeightFormat::DequantF32, _) => QMatMul::Tensor(weights.dequantize(&self.device)?),
            (WeightFormat::DequantF16, ActivationDtype::F32) => {
                QMatMul::Tensor(weights.dequantize_f16(&self.device)?.to_dtype(DType::F32)?)
            }
            (WeightFormat::DequantF16, ActivationDtype::F16) => {
                QMatMul::TensorF16(weights.dequantize_f16(&self.device)?)
            }
            _ => QMatMul::QTensor(Arc::new(weights)),
        }))
    }

    /// Matmuls of one input for converted weights of shapes (out_i, in).
    pub fn fused(&self, parts: Vec<QTensor>) -> Result<Fused, ModelError> {
        if self.profile.matmul == MatmulKernel::CandleQuantized && self.device.is_cpu() {
            if let Some(matmul) = TiledQMatMul::stacked(&parts)? {
                let widths = parts.iter().map(|p| p.shape().dims()[0]).collect();
                return Ok(Fused::Stacked { matmul, widths });
            }
        }
        Ok(Fused::Separate(parts.into_iter().map(|p| self.linear(p)).collect::<Result<_, _>>()?))
    }

    /// Dense f32 values of converted weights (the embedding table).
    pub fn dense(&self, weights: &QTensor) -> Result<Tensor, ModelError> {
        let dense = match self.profile.weights {
            WeightFormat::DequantF16 => weights.dequantize_f16(&self.device)?.to_dtype(DType::F32)?,
            _ => weights.dequantize(&self.device)?,
        };
        Ok(dense)
    }
}

/// Whether this build computes `profile` with the same bits in decode and
/// prefill, at any thread count, on every target it builds for: our own
/// kernels cover every matmul of the file's formats (q4_1, q8_0), attention,
/// SwiGLU and log-softmax; the rest is elementwise IEEE arithmetic.
pub fn is_bit_exact(profile: &NumericsProfile) -> bool {
    profile.weights == WeightFormat::GgufNative
        && profile.matmul == MatmulKernel::CandleQuantized
        && profile.device == DeviceClass::Cpu
}

/// The profiles the experiments compare, by id.
pub fn builtin_profiles() -> Vec<NumericsProfile> {
    let profile = |id: &str, weights, activations, matmul| NumericsProfile {
        id: id.to_string(),
        version: NUMERICS_VERSION,
        bit_exact: weights == WeightFormat::GgufNative,
        weights,
        activations,
        matmul,
        device: DeviceClass::Cpu,
    };
    use ActivationDtype::*;
    use MatmulKernel::*;
    use WeightFormat::*;
    vec![
        profile("gguf-native-cpu", GgufNative, F32, CandleQuantized),
        profile("dequant-f32-cpu", DequantF32, F32, CandleDense),
        profile("dequant-f16-cpu", DequantF16, F16, CandleDense),
        profile("requant-q4_0-cpu", RequantQ4_0, F32, CandleQuantized),
        profile("requant-q2k-cpu", RequantQ2k, F32, CandleQuantized),
    ]
}

pub fn builtin_profile(id: &str) -> Option<NumericsProfile> {
    builtin_profiles().into_iter().find(|p| p.id == id)
}
