//! The small model, batches and helpers every test of this binary uses.

pub(crate) use burn::backend::{Autodiff, NdArray};
pub(crate) use burn::module::{AutodiffModule, Module};
pub(crate) use burn::nn::{Linear, LinearConfig};
pub(crate) use burn::optim::{AdamConfig, GradientsParams, Optimizer, SgdConfig};
pub(crate) use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
pub(crate) use burn::tensor::backend::Backend;
pub(crate) use burn::tensor::{Tensor, TensorData};
pub(crate) use moq_burn::moq_hessian::{HessianEigenvalues, HessianLoss};
pub(crate) use moq_burn::{
    EigenvalueProvider, FixedEigenvalues, HessianProvider, Moq, MoqBurnError, MoqLayer,
    fake_quantize,
};
pub(crate) use moq_core::{QuantSpec, QuantType, QuantizeConfig, Schedule, plan};

pub(crate) type B = Autodiff<NdArray>;
pub(crate) type Inner = NdArray;

#[derive(Module, Debug)]
pub(crate) struct Net<B: Backend> {
    pub(crate) layers: Vec<Linear<B>>,
    pub(crate) head: Linear<B>,
}

impl<B: Backend> Net<B> {
    pub(crate) fn new(device: &B::Device) -> Self {
        // Deterministic weights without the backend's RNG (burn initializes parameters lazily,
        // so clones of a freshly built model would otherwise draw different ones).
        let linear = |d_in, d_out, salt| crate::serve::cases::linear(d_in, d_out, salt, device);
        Self {
            layers: vec![linear(8, 16, 1), linear(16, 16, 2)],
            head: linear(16, 4, 3),
        }
    }

    pub(crate) fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = self
            .layers
            .iter()
            .fold(x, |x, l| burn::tensor::activation::tanh(l.forward(x)));
        self.head.forward(x)
    }
}

pub(crate) fn batch(step: usize) -> Tensor<B, 2> {
    let values: Vec<f32> = (0..32)
        .map(|i| (((i * 31 + step * 17) % 13) as f32 - 6.0) / 6.0)
        .collect();
    Tensor::from_data(TensorData::new(values, [4, 8]), &Default::default())
}

pub(crate) fn grads(model: &Net<B>, step: usize) -> GradientsParams {
    let loss = model.forward(batch(step)).powi_scalar(2).mean();
    GradientsParams::from_grads(loss.backward(), model)
}

pub(crate) fn config(start: u32, target: u32, period: u64, offset: u64) -> QuantizeConfig {
    QuantizeConfig::builder()
        .bits(start, target)
        .period(period)
        .schedule_offset(offset)
        .groups(4)
        .build()
        .unwrap()
}

pub(crate) fn values<BB: Backend, const D: usize>(t: Tensor<BB, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// A checkpoint as a user saves one: the model's and the optimizer's records, full precision,
/// as bytes (the optimizer is dropped, as at the end of a process).
pub(crate) struct Checkpoint {
    model: Vec<u8>,
    optim: Vec<u8>,
}

impl Checkpoint {
    pub(crate) fn save<O: Optimizer<Net<B>, B>>(model: Net<B>, optim: O) -> Self {
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        Self {
            optim: recorder.record(optim.to_record(), ()).unwrap(),
            model: recorder.record(model.into_record(), ()).unwrap(),
        }
    }

    /// A fresh model with the saved weights.
    pub(crate) fn model(&self) -> Net<B> {
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let device = Default::default();
        Net::<B>::new(&device).load_record(recorder.load(self.model.clone(), &device).unwrap())
    }

    /// `optim` with the saved optimizer state loaded.
    pub(crate) fn resume<O: Optimizer<Net<B>, B>>(&self, optim: O) -> O {
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        optim.load_record(
            recorder
                .load(self.optim.clone(), &Default::default())
                .unwrap(),
        )
    }
}
