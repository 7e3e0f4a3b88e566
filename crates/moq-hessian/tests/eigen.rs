//! Eigenvalues against known answers: quadratics with a chosen spectrum per block, and a small
//! MLP whose block Hessian the test assembles column by column.

use burn::backend::NdArray;
use burn::module::{Module, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::tanh;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use moq_hessian::moq_core::EigenvalueConfig;
use moq_hessian::{
    Block, HessianEigenvalues, HessianError, HessianLoss, HvpMethod, Weights,
    hessian_vector_product,
};

type B = NdArray;

use moq_hessian::moq_core::Rng;

fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

fn host(t: &Tensor<B, 1>) -> Vec<f32> {
    t.to_data().to_vec().unwrap()
}

/// `Q diag(λ) Qᵀ` with `Q` a random orthogonal matrix (Gram–Schmidt on Gaussian columns).
fn with_spectrum(eigenvalues: &[f64], rng: &mut Rng) -> Vec<f64> {
    let n = eigenvalues.len();
    let mut q: Vec<Vec<f64>> = Vec::new();
    while q.len() < n {
        let mut c: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        for prev in &q {
            let d: f64 = c.iter().zip(prev).map(|(a, b)| a * b).sum();
            c.iter_mut().zip(prev).for_each(|(a, b)| *a -= d * b);
        }
        let norm = c.iter().map(|a| a * a).sum::<f64>().sqrt();
        q.push(c.into_iter().map(|a| a / norm).collect());
    }
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = (0..n).map(|k| q[k][i] * eigenvalues[k] * q[k][j]).sum();
        }
    }
    a
}

/// All eigenvalues of a symmetric matrix by cyclic Jacobi rotations (f64).
fn jacobi_eigenvalues(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[i * n + i]).collect()
}

fn top_by_magnitude(values: &[f64]) -> f64 {
    *values
        .iter()
        .max_by(|a, b| a.abs().total_cmp(&b.abs()))
        .unwrap()
}

fn precise(max_iter: u32, tol: f64) -> EigenvalueConfig {
    EigenvalueConfig {
        max_iter,
        tol,
        stability: 0.0,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Quadratics.

#[derive(Module, Debug)]
struct Pair<B: Backend> {
    first: Param<Tensor<B, 1>>,
    second: Param<Tensor<B, 2>>,
}

/// `½ w₁ᵀA₁w₁ + ½ w₂ᵀA₂w₂ + w₁ᵀCw₂`: the cross term couples the blocks, and must not leak into
/// the block Hessians `A₁` and `A₂`.
struct Quadratic {
    a1: (Vec<f32>, usize),
    a2: (Vec<f32>, usize),
    c: Vec<f32>,
}

impl HessianLoss for Quadratic {
    type Model<X: Backend> = Pair<X>;

    fn model<X: Backend>(&self, device: &X::Device) -> Pair<X> {
        Pair {
            first: Param::from_tensor(Tensor::zeros([self.a1.1], device)),
            second: Param::from_tensor(Tensor::zeros([2, self.a2.1 / 2], device)),
        }
    }

    fn loss<X: Backend>(&self, model: &Pair<X>) -> Tensor<X, 1> {
        let device = model.first.device();
        let (n1, n2) = (self.a1.1, self.a2.1);
        let matrix = |v: &Vec<f32>, rows, cols| {
            Tensor::<X, 2>::from_data(TensorData::new(v.clone(), [rows, cols]), &device)
        };
        let w1 = model.first.val().reshape([n1, 1]);
        let w2 = model.second.val().reshape([n2, 1]);
        let quad = |a: Tensor<X, 2>, w: Tensor<X, 2>| w.clone().transpose().matmul(a.matmul(w));
        let total = quad(matrix(&self.a1.0, n1, n1), w1.clone()).mul_scalar(0.5)
            + quad(matrix(&self.a2.0, n2, n2), w2.clone()).mul_scalar(0.5)
            + w1.transpose().matmul(matrix(&self.c, n1, n2).matmul(w2));
        total.reshape([1])
    }
}

#[test]
fn quadratic_blocks_give_their_top_eigenvalue_by_magnitude() {
    let mut rng = Rng::new(0x5eed);
    // Block 1: the top eigenvalue by magnitude is negative. Block 2: a near-tie at the top.
    let spectrum1 = [-6.0, 4.0, 2.5, 1.0, 0.5, -0.3, 0.1, 0.05, 0.0, -1.2];
    let spectrum2 = [3.0, 2.97, -1.5, 1.0, 0.7, 0.2, -0.1, 0.4];
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<_>>();
    let loss = Quadratic {
        a1: (to_f32(with_spectrum(&spectrum1, &mut rng)), 10),
        a2: (to_f32(with_spectrum(&spectrum2, &mut rng)), 8),
        c: rng.normal_vec(80, 1.0),
    };
    let model = Pair::<B> {
        first: Param::from_tensor(tensor(rng.normal_vec(10, 1.0), [10])),
        second: Param::from_tensor(tensor(rng.normal_vec(8, 1.0), [2, 4])),
    };
    let weights = Weights::from_module(&model);
    let blocks = [
        Block::new("first", ["first"]),
        Block::new("second", ["second"]),
    ];
    let mut eigen = HessianEigenvalues::new(loss, &precise(2000, 1e-7)).seed(3);
    let report = eigen.compute(&weights, &blocks).unwrap();
    for (block, truth) in report.blocks.iter().zip([-6.0, 3.0]) {
        let rel = ((block.eigenvalue as f64 - truth) / truth).abs();
        assert!(
            rel < 1e-3,
            "{}: λ = {} vs {truth} ({} iterations)",
            block.block,
            block.eigenvalue,
            block.iterations
        );
        assert!(block.converged && !block.warm);
    }
    // Normalised by the largest magnitude: 6/6 and 3/6.
    assert!((report.normalized[0] - 1.0).abs() < 1e-6);
    assert!((report.normalized[1] - 0.5).abs() < 1e-3);
}

// ---------------------------------------------------------------------------------------------
// A small MLP with cross-entropy.

/// A dense layer from tensor ops. burn 0.21 cannot differentiate the backward of `nn::Linear`
/// (see `linear_layers_fall_back_to_finite_differences`), so exact products need this.
#[derive(Module, Debug)]
struct Dense<B: Backend> {
    weight: Param<Tensor<B, 2>>,
    bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> Dense<B> {
    fn new(inputs: usize, outputs: usize, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::zeros([inputs, outputs], device)),
            bias: Param::from_tensor(Tensor::zeros([outputs], device)),
        }
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(self.weight.val()) + self.bias.val().unsqueeze()
    }
}

#[derive(Module, Debug)]
struct Mlp<B: Backend> {
    fc1: Dense<B>,
    fc2: Dense<B>,
}

impl<B: Backend> Mlp<B> {
    fn new(device: &B::Device) -> Self {
        Self {
            fc1: Dense::new(6, 8, device),
            fc2: Dense::new(8, 3, device),
        }
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.fc2.forward(tanh(self.fc1.forward(x)))
    }
}

/// The same network with burn's `nn::Linear`.
#[derive(Module, Debug)]
struct LinearMlp<B: Backend> {
    fc1: Linear<B>,
    fc2: Linear<B>,
}

impl<B: Backend> LinearMlp<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.fc2.forward(tanh(self.fc1.forward(x)))
    }
}

struct Classification {
    x: TensorData,
    y: TensorData,
}

impl Classification {
    fn new(rng: &mut Rng) -> Self {
        let n = 12;
        Self {
            x: TensorData::new(rng.normal_vec(n * 6, 1.0), [n, 6]),
            y: TensorData::new((0..n as i64).map(|i| i % 3).collect::<Vec<_>>(), [n]),
        }
    }
}

impl HessianLoss for Classification {
    type Model<X: Backend> = Mlp<X>;

    fn model<X: Backend>(&self, device: &X::Device) -> Mlp<X> {
        Mlp::new(device)
    }

    fn loss<X: Backend>(&self, model: &Mlp<X>) -> Tensor<X, 1> {
        self.of(|x| model.forward(x), &model.fc1.weight.device())
    }
}

impl Classification {
    fn of<X: Backend>(
        &self,
        net: impl Fn(Tensor<X, 2>) -> Tensor<X, 2>,
        device: &X::Device,
    ) -> Tensor<X, 1> {
        let x = Tensor::<X, 2>::from_data(self.x.clone(), device);
        let y = Tensor::<X, 1, Int>::from_data(self.y.clone(), device);
        CrossEntropyLossConfig::new()
            .init(device)
            .forward(net(x), y)
    }
}

/// The classification loss through `nn::Linear` layers.
struct LinearClassification(Classification);

impl HessianLoss for LinearClassification {
    type Model<X: Backend> = LinearMlp<X>;

    fn model<X: Backend>(&self, device: &X::Device) -> LinearMlp<X> {
        LinearMlp {
            fc1: LinearConfig::new(6, 8).init(device),
            fc2: LinearConfig::new(8, 3).init(device),
        }
    }

    fn loss<X: Backend>(&self, model: &LinearMlp<X>) -> Tensor<X, 1> {
        self.0.of(|x| model.forward(x), &model.fc1.weight.device())
    }
}

/// An MLP with set weights (burn initialises lazily, so the test sets every value itself).
fn mlp(rng: &mut Rng) -> Mlp<B> {
    let device = Default::default();
    let mut m = Mlp::<B>::new(&device);
    m.fc1.weight = Param::from_tensor(tensor(rng.normal_vec(48, 0.8), [6, 8]));
    m.fc1.bias = Param::from_tensor(tensor(rng.normal_vec(8, 0.3), [8]));
    m.fc2.weight = Param::from_tensor(tensor(rng.normal_vec(24, 0.8), [8, 3]));
    m.fc2.bias = Param::from_tensor(tensor(rng.normal_vec(3, 0.3), [3]));
    m
}

/// The same weights in `nn::Linear` layers (both store `[inputs, outputs]`).
fn linear_mlp(m: &Mlp<B>) -> LinearMlp<B> {
    let device = Default::default();
    let mut l = LinearMlp::<B> {
        fc1: LinearConfig::new(6, 8).init(&device),
        fc2: LinearConfig::new(8, 3).init(&device),
    };
    l.fc1.weight = Param::from_tensor(m.fc1.weight.val());
    l.fc1.bias = Some(Param::from_tensor(m.fc1.bias.val()));
    l.fc2.weight = Param::from_tensor(m.fc2.weight.val());
    l.fc2.bias = Some(Param::from_tensor(m.fc2.bias.val()));
    l
}

fn mlp_blocks() -> Vec<Block> {
    vec![
        Block::new("fc1", ["fc1.weight", "fc1.bias"]),
        Block::new("fc2", ["fc2.weight"]),
    ]
}

fn flat(parts: &[Tensor<B, 1>]) -> Vec<f64> {
    parts.iter().flat_map(host).map(|x| x as f64).collect()
}

fn split(values: &[f32], sizes: &[usize]) -> Vec<Tensor<B, 1>> {
    let mut at = 0;
    sizes
        .iter()
        .map(|&n| {
            at += n;
            tensor(values[at - n..at].to_vec(), [n])
        })
        .collect()
}

#[test]
fn exact_and_finite_difference_products_agree() {
    let mut rng = Rng::new(11);
    let loss = Classification::new(&mut rng);
    let weights = Weights::from_module(&mlp(&mut rng));
    for (block, sizes) in mlp_blocks().iter().zip([vec![48, 8], vec![24]]) {
        let v = split(&rng.normal_vec(sizes.iter().sum(), 1.0), &sizes);
        let exact =
            flat(&hessian_vector_product(&loss, &weights, block, &v, HvpMethod::Exact).unwrap());
        let fd = flat(
            &hessian_vector_product(
                &loss,
                &weights,
                block,
                &v,
                HvpMethod::FiniteDifference {
                    relative_step: 1e-3,
                },
            )
            .unwrap(),
        );
        let norm = exact.iter().map(|x| x * x).sum::<f64>().sqrt();
        let diff = exact
            .iter()
            .zip(&fd)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(norm > 1e-3, "{}: Hv should not vanish", block.name);
        assert!(
            diff / norm < 1e-2,
            "{}: |exact − fd| / |exact| = {}",
            block.name,
            diff / norm
        );
    }
}

#[test]
fn power_iteration_matches_the_assembled_block_hessian() {
    let mut rng = Rng::new(12);
    let loss = Classification::new(&mut rng);
    let weights = Weights::from_module(&mlp(&mut rng));
    let blocks = mlp_blocks();
    let mut eigen =
        HessianEigenvalues::new(Classification::new(&mut Rng::new(12)), &precise(1000, 1e-7));
    let report = eigen.compute(&weights, &blocks).unwrap();
    for ((block, sizes), result) in blocks
        .iter()
        .zip([vec![48, 8], vec![24]])
        .zip(&report.blocks)
    {
        let n: usize = sizes.iter().sum();
        // Column j of H_bb is H_bb e_j.
        let mut h = vec![0.0f64; n * n];
        for j in 0..n {
            let mut e = vec![0.0f32; n];
            e[j] = 1.0;
            let column = flat(
                &hessian_vector_product(
                    &loss,
                    &weights,
                    block,
                    &split(&e, &sizes),
                    HvpMethod::Exact,
                )
                .unwrap(),
            );
            for i in 0..n {
                h[i * n + j] = column[i];
            }
        }
        let asymmetry = (0..n)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .map(|(i, j)| (h[i * n + j] - h[j * n + i]).abs())
            .fold(0.0, f64::max);
        assert!(
            asymmetry < 1e-4,
            "{}: assembled Hessian asymmetric by {asymmetry}",
            block.name
        );
        let truth = top_by_magnitude(&jacobi_eigenvalues(h, n));
        let rel = ((result.eigenvalue as f64 - truth) / truth).abs();
        assert!(
            rel < 0.01,
            "{}: power iteration {} vs assembled {truth} ({} iterations)",
            block.name,
            result.eigenvalue,
            result.iterations
        );
    }
}

#[test]
fn warm_start_needs_a_third_of_the_iterations() {
    let mut rng = Rng::new(13);
    let model = mlp(&mut rng);
    let config = precise(500, 1e-5);
    let mut eigen =
        HessianEigenvalues::new(Classification::new(&mut Rng::new(13)), &config).seed(9);
    let cold = eigen
        .compute(&Weights::from_module(&model), &mlp_blocks())
        .unwrap();
    // A small weight change, as between two computations during training.
    let moved = model.map(&mut Nudge(Rng::new(99)));
    let warm = eigen
        .compute(&Weights::from_module(&moved), &mlp_blocks())
        .unwrap();
    for (c, w) in cold.blocks.iter().zip(&warm.blocks) {
        assert!(!c.warm && w.warm);
        assert!(
            c.iterations >= 6,
            "{}: cold start took only {} iterations",
            c.block,
            c.iterations
        );
        assert!(
            3 * w.iterations <= c.iterations,
            "{}: warm {} vs cold {} iterations",
            c.block,
            w.iterations,
            c.iterations
        );
        assert!(((w.eigenvalue - c.eigenvalue) / c.eigenvalue).abs() < 0.05);
    }
    // A cold recomputation at the moved weights agrees with the warm one.
    eigen.reset();
    let again = eigen
        .compute(&Weights::from_module(&moved), &mlp_blocks())
        .unwrap();
    for (a, w) in again.blocks.iter().zip(&warm.blocks) {
        assert!(!a.warm);
        assert!(((a.eigenvalue - w.eigenvalue) / a.eigenvalue).abs() < 1e-3);
    }
}

struct Nudge(Rng);

impl burn::module::ModuleMapper<B> for Nudge {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.map(|t| {
            let shape = t.shape();
            let noise = Tensor::<B, 1>::from_data(
                TensorData::new(
                    self.0.normal_vec(shape.num_elements(), 1e-3),
                    [shape.num_elements()],
                ),
                &t.device(),
            );
            t + noise.reshape(shape)
        })
    }
}

#[test]
fn seeded_runs_are_reproducible() {
    let mut rng = Rng::new(14);
    let weights = Weights::from_module(&mlp(&mut rng));
    let run = |seed| {
        HessianEigenvalues::new(
            Classification::new(&mut Rng::new(14)),
            &EigenvalueConfig::default(),
        )
        .seed(seed)
        .compute(&weights, &mlp_blocks())
        .unwrap()
    };
    assert_eq!(run(5), run(5));
}

#[test]
fn mistakes_are_named() {
    let mut rng = Rng::new(15);
    let weights = Weights::from_module(&mlp(&mut rng));
    let mut eigen =
        HessianEigenvalues::new(Classification::new(&mut rng), &EigenvalueConfig::default());
    assert_eq!(eigen.compute(&weights, &[]), Err(HessianError::NoBlocks));
    let err = eigen
        .compute(&weights, &[Block::new("fc3", ["fc3.weight"])])
        .unwrap_err();
    assert_eq!(
        err,
        HessianError::UnknownParam {
            block: "fc3".into(),
            path: "fc3.weight".into()
        }
    );
    let err = eigen
        .compute(&weights, &[Block::new("empty", Vec::<String>::new())])
        .unwrap_err();
    assert!(
        err.to_string().contains("`empty` has no parameters"),
        "{err}"
    );

    // A model built for the Hessian that differs from the trained one.
    struct Wider(Classification);
    impl HessianLoss for Wider {
        type Model<X: Backend> = Mlp<X>;
        fn model<X: Backend>(&self, device: &X::Device) -> Mlp<X> {
            Mlp {
                fc1: Dense::new(6, 9, device),
                fc2: Dense::new(9, 3, device),
            }
        }
        fn loss<X: Backend>(&self, model: &Mlp<X>) -> Tensor<X, 1> {
            self.0.loss(model)
        }
    }
    let mut wider = HessianEigenvalues::new(
        Wider(Classification::new(&mut rng)),
        &EigenvalueConfig::default(),
    );
    let err = wider.compute(&weights, &mlp_blocks()).unwrap_err();
    assert!(
        matches!(&err, HessianError::ShapeMismatch { path, expected, found }
            if path == "fc1.weight" && expected == &[6, 8] && found == &[6, 9]),
        "{err}"
    );
}

#[test]
fn linear_layers_fall_back_to_finite_differences() {
    let mut rng = Rng::new(16);
    let dense = mlp(&mut rng);
    let linear = linear_mlp(&dense);
    let blocks = mlp_blocks();
    let config = precise(500, 1e-6);
    let exact = HessianEigenvalues::new(Classification::new(&mut Rng::new(16)), &config)
        .compute(&Weights::from_module(&dense), &blocks)
        .unwrap();

    // Forced exact: a clear error, not a panic.
    let mut forced = HessianEigenvalues::new(
        LinearClassification(Classification::new(&mut Rng::new(16))),
        &config,
    )
    .method(HvpMethod::Exact);
    let err = forced
        .compute(&Weights::from_module(&linear), &blocks)
        .unwrap_err();
    assert!(
        matches!(&err, HessianError::NotTwiceDifferentiable { block, reason }
            if block == "fc1" && reason.contains("linear")),
        "{err}"
    );

    // Auto: falls back, remembers it, and agrees with the exact values of the dense twin.
    let mut auto = HessianEigenvalues::new(
        LinearClassification(Classification::new(&mut Rng::new(16))),
        &config,
    );
    let report = auto
        .compute(&Weights::from_module(&linear), &blocks)
        .unwrap();
    assert!(
        auto.exact_unavailable()
            .is_some_and(|r| r.contains("linear"))
    );
    for (a, e) in report.blocks.iter().zip(&exact.blocks) {
        assert!(!a.exact && e.exact);
        let rel = ((a.eigenvalue - e.eigenvalue) / e.eigenvalue).abs();
        assert!(
            rel < 1e-3,
            "{}: fd {} vs exact {}",
            a.block,
            a.eigenvalue,
            e.eigenvalue
        );
    }
}
