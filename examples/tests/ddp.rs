//! MoQ trained by 2 and 4 processes with burn-collective on loopback (the `ddp` example,
//! docs/distributed.md): every rank holds bit-identical masters, quantized weights, bits and
//! schedule; the run agrees with one process over the same global batches; a checkpoint saved
//! by rank 0 resumes every rank bit for bit. Each process this starts is killed when its test
//! ends, pass or fail, and every wait has a deadline.
//!
//! `cargo test -p moq-examples --features ddp --test ddp`

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use burn::module::Param;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use moq_burn::moq_hessian::path::{NamedVisitor, visit_named};
use moq_examples::digits::Mlp;
use serde_json::Value;

mod common;

/// How long one run (all its processes) may take; a run here takes seconds.
const DEADLINE: Duration = Duration::from_secs(300);

const DDP: &str = env!("CARGO_BIN_EXE_ddp");

/// Processes started by a test: killed and reaped on drop, whatever happened.
struct Processes(Vec<(String, Child, PathBuf)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Processes {
    fn start(&mut self, name: &str, args: &[String], log: PathBuf) {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(DDP)
            .args(args)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.0.push((name.to_string(), child, log));
    }

    /// Waits for every process but the first `skip` (the orchestrator) to exit successfully.
    fn wait(&mut self, skip: usize) {
        let start = Instant::now();
        for (name, child, log) in self.0.iter_mut().skip(skip) {
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if start.elapsed() > DEADLINE {
                    panic!("{name} did not finish within {DEADLINE:?}:\n{}", tail(log));
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            assert!(status.success(), "{name} failed ({status}):\n{}", tail(log));
        }
    }
}

impl Processes {
    /// Kills process `index` (0 is the orchestrator, then the ranks) at once (SIGKILL).
    fn kill(&mut self, index: usize) {
        let (_, child, _) = &mut self.0[index];
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Waits at most `within` for process `index` to exit, and returns whether it succeeded
    /// and its log.
    fn exit_of(&mut self, index: usize, within: Duration) -> (bool, String) {
        let start = Instant::now();
        let (name, child, log) = &mut self.0[index];
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.success(), std::fs::read_to_string(log).unwrap());
            }
            if start.elapsed() > within {
                panic!("{name} did not exit within {within:?}:\n{}", tail(log));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits until `log` has a line containing `text` (at most [`DEADLINE`]).
fn wait_for_line(log: &Path, text: &str) {
    let start = Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(text)
    {
        assert!(
            start.elapsed() < DEADLINE,
            "`{text}` not in {} within {DEADLINE:?}:\n{}",
            log.display(),
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `n` distinct free loopback ports (all held until every one is chosen).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Runs the `ddp` example on `nodes` processes (one, without burn-collective, when `nodes` is
/// 1) and returns each rank's dump.
fn run(nodes: u32, out: &Path, extra: &[&str]) -> Vec<Value> {
    let (mut processes, _) = start(nodes, out, extra);
    processes.wait(usize::from(nodes > 1));
    (0..nodes)
        .map(|rank| {
            let path = out.join(format!("rank{rank}.json"));
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
        })
        .collect()
}

/// Starts the `ddp` example on `nodes` processes (the orchestrator first when `nodes` > 1,
/// then the ranks in order) and returns them with their ports (the orchestrator's first).
fn start(nodes: u32, out: &Path, extra: &[&str]) -> (Processes, Vec<u16>) {
    std::fs::create_dir_all(out).unwrap();
    let ports = free_ports(nodes as usize + 1);
    let mut processes = Processes(Vec::new());
    if nodes > 1 {
        processes.start(
            "the orchestrator",
            &["orchestrator".into(), "--port".into(), ports[0].to_string()],
            out.join("orchestrator.log"),
        );
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", ports[0])).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the orchestrator did not listen within 30 s:\n{}",
                tail(&out.join("orchestrator.log"))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for rank in 0..nodes {
        let mut args: Vec<String> = [
            "node",
            "--nodes",
            &nodes.to_string(),
            "--rank",
            &rank.to_string(),
            "--orchestrator",
            &format!("ws://localhost:{}", ports[0]),
            "--port",
            &ports[rank as usize + 1].to_string(),
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        processes.start(
            &format!("rank {rank} of {nodes}"),
            &args,
            out.join(format!("rank{rank}.log")),
        );
    }
    (processes, ports)
}

/// What "the same replica" compares: bits, schedule state, masters and quantized weights, as
/// f32 bit patterns.
const REPLICA: [&str; 4] = ["bits", "schedule", "masters", "weights"];

fn assert_replicas(dumps: &[Value]) {
    for dump in &dumps[1..] {
        for key in REPLICA {
            assert!(
                dump[key] == dumps[0][key],
                "rank {} holds other {key} than rank 0",
                dump["rank"]
            );
        }
    }
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| f32::from_bits(v.as_u64().unwrap() as u32))
        .collect()
}

/// A distributed run against one process over the same global batches. They differ only by
/// summation order: a process sums 32 rows' gradients at once; the ranks sum their shares and
/// burn-collective's ring all-reduce sums the ranks'. That moves a gradient by a few ulps, and
/// Adam passes it on, so the masters may differ by a few ulps of their magnitude (measured:
/// 2e-7 relative after 40 steps). A quantized weight follows its group's scale (one ulp apart)
/// or, for a master within those ulps of a rounding boundary, moves one grid step: allowed,
/// for one weight in a thousand. The schedule decisions (bits, periods) must be equal; the
/// eigenvalues behind them are taken of those slightly different models.
fn assert_agree(single: &Value, distributed: &Value) {
    assert_eq!(single["bits"], distributed["bits"]);
    assert_eq!(
        single["schedule"]["layers"],
        distributed["schedule"]["layers"]
    );
    assert_eq!(single["schedule"]["step"], distributed["schedule"]["step"]);
    if let (Some(a), Some(b)) = (
        single["schedule"]["eigenvalues"].as_array(),
        distributed["schedule"]["eigenvalues"].as_array(),
    ) {
        for (a, b) in a.iter().zip(b) {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-4 * a.abs().max(1e-3),
                "eigenvalue {a} vs {b}"
            );
        }
    }
    for (path, master) in single["masters"].as_object().unwrap() {
        let (a, b) = (floats(master), floats(&distributed["masters"][path]));
        common::assert_close(&format!("master {path}"), &a, &b, 1e-5);
    }
    let bits = single["bits"][0].as_u64().unwrap() as u32;
    for (path, weight) in single["weights"].as_object().unwrap() {
        let (a, b) = (floats(weight), floats(&distributed["weights"][path]));
        common::assert_quantized_close(path, &a, &b, bits);
    }
}

#[test]
fn two_and_four_processes_hold_the_same_weights_and_agree_with_one() {
    let dir = tempfile::tempdir().unwrap();
    for (nodes, extra) in [(2, &["--eigen"][..]), (4, &["--eigen", "--stochastic"][..])] {
        let name = format!("{nodes}-{}", extra.join(""));
        let single = run(1, &dir.path().join(format!("single{name}")), extra);
        let ranks = run(nodes, &dir.path().join(format!("ddp{name}")), extra);
        assert_eq!(ranks.len(), nodes as usize);
        assert_replicas(&ranks);
        // The target was reached, and the schedule was stretched by eigenvalues.
        assert_eq!(ranks[0]["bits"], serde_json::json!([4, 4, 4]));
        assert!(ranks[0]["schedule"]["eigenvalues"].is_array());
        // Rank 0 computed them; the others received them.
        assert!(ranks[0]["eigen_computations"].as_u64().unwrap() > 0);
        for rank in &ranks[1..] {
            assert_eq!(rank["eigen_computations"], 0, "rank {}", rank["rank"]);
        }
        assert_agree(&single[0], &ranks[0]);
    }
}

#[test]
fn a_checkpoint_saved_by_rank_0_resumes_every_rank_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let uninterrupted = run(2, &whole, &["--eigen", "--save-at", "15"]);
    let checkpoint = whole.join("checkpoint");
    assert!(checkpoint.join("step.json").exists());
    let resumed = run(
        2,
        &dir.path().join("resumed"),
        &["--eigen", "--resume", checkpoint.to_str().unwrap()],
    );
    for (a, b) in uninterrupted.iter().zip(&resumed) {
        for key in REPLICA {
            assert!(a[key] == b[key], "rank {}: resumed {key} differ", a["rank"]);
        }
    }
    // The resumed run asked for eigenvalues again after step 15, on rank 0 only: the schedule
    // after it depends on the provider state restored from the checkpoint.
    assert!(resumed[0]["eigen_computations"].as_u64().unwrap() > 0);
    assert_eq!(resumed[1]["eigen_computations"], 0);
}

#[test]
fn a_rank_outside_the_run_is_refused_with_its_numbers() {
    let output = Command::new(DDP)
        .args(["node", "--nodes", "2", "--rank", "2"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--rank 2 outside 0..2"), "{stderr}");
}

/// `replicate` and `RootEigenvalues` between two peers of one process (burn-collective's local
/// level, a thread a peer): every peer gets rank 0's parameters under path-derived ids, and
/// rank 0's answer (values, "keep the previous ones", its failure), without calling its own
/// provider.
#[test]
fn peers_take_rank_0s_parameters_and_eigenvalue_answers() {
    use burn::backend::{Autodiff, NdArray};
    use burn::collective::{CollectiveConfig, PeerId, finish_collective, register};
    use burn::optim::AdamConfig;
    use moq_burn::collective::{RootEigenvalues, replicate};
    use moq_burn::moq_core::QuantizeConfig;
    use moq_burn::moq_hessian::path::float_params;
    use moq_burn::{EigenvalueProvider, Moq, MoqBurnError, MoqLayer};

    type B = Autodiff<NdArray>;

    /// Answers in turn: values, keep, fail. Only the root may be asked.
    struct Scripted {
        root: bool,
        asked: usize,
    }
    impl<M> EigenvalueProvider<M> for Scripted {
        fn eigenvalues(
            &mut self,
            _: &M,
            layers: &[MoqLayer],
        ) -> moq_burn::Result<Option<Vec<f32>>> {
            assert!(self.root, "a peer other than the root computed eigenvalues");
            self.asked += 1;
            match self.asked {
                1 => Ok(Some(
                    (0..layers.len()).map(|i| 0.25 * i as f32 + 0.5).collect(),
                )),
                2 => Ok(None),
                _ => Err(MoqBurnError::Export {
                    reason: "scripted failure".into(),
                }),
            }
        }
    }

    let peer = |id: u32| {
        std::thread::spawn(move || {
            let device = Default::default();
            let config = CollectiveConfig::default().with_num_devices(2);
            register::<NdArray>(PeerId::from(id), device, config).unwrap();
            // Each peer draws its own parameters.
            <B as Backend>::seed(&device, 100 + u64::from(id));
            let model = Mlp::<B>::new(&device);
            let own = values_of(&model);
            let model = replicate(model, PeerId::from(id), id == 0).unwrap();
            let ids: Vec<_> = float_params(&model).into_iter().map(|p| p.id).collect();
            let optim = Moq::new(
                QuantizeConfig::builder()
                    .bits(8, 4)
                    .period(2)
                    .schedule_offset(0)
                    .build()
                    .unwrap(),
            )
            .init(AdamConfig::new().init(), &model)
            .unwrap();
            let layers = optim.layers().to_vec();
            let mut shared = RootEigenvalues::<NdArray, _>::new(
                Scripted {
                    root: id == 0,
                    asked: 0,
                },
                PeerId::from(id),
                id == 0,
                device,
            );
            let answers: Vec<_> = (0..3)
                .map(|_| shared.eigenvalues(&model, &layers))
                .collect();
            finish_collective::<NdArray>(PeerId::from(id)).unwrap();
            (own, values_of(&model), ids, layers.len(), answers)
        })
    };
    let (a, b) = (peer(0), peer(1));
    let (root_own, root_now, root_ids, layers, root_answers) = a.join().unwrap();
    let (other_own, other_now, other_ids, _, other_answers) = b.join().unwrap();
    assert_ne!(root_own, other_own, "the peers drew the same parameters");
    assert_eq!(root_now, root_own, "the root's parameters changed");
    assert_eq!(
        other_now, root_own,
        "the other peer did not take the root's parameters"
    );
    assert_eq!(root_ids, other_ids);
    let expected: Vec<f32> = (0..layers).map(|i| 0.25 * i as f32 + 0.5).collect();
    for answers in [&root_answers, &other_answers] {
        assert_eq!(answers[0].as_ref().unwrap().as_deref(), Some(&expected[..]));
        assert!(answers[1].as_ref().unwrap().is_none());
    }
    let root_error = root_answers[2].as_ref().unwrap_err().to_string();
    assert!(root_error.contains("scripted failure"), "{root_error}");
    let other_error = other_answers[2].as_ref().unwrap_err().to_string();
    assert!(
        other_error.contains("the root peer failed"),
        "{other_error}"
    );
}

/// Every float parameter's f32 bit patterns, in module order.
fn values_of<B: Backend>(model: &Mlp<B>) -> Vec<Vec<u32>> {
    struct Collect(Vec<Vec<u32>>);
    impl<B: Backend> NamedVisitor<B> for Collect {
        fn visit_named<const D: usize>(&mut self, _: &str, param: &Param<Tensor<B, D>>) {
            let data = param.val().into_data().convert::<f32>();
            self.0.push(data.iter::<f32>().map(f32::to_bits).collect());
        }
    }
    let mut collect = Collect(Vec::new());
    visit_named(model, &mut collect);
    collect.0
}

/// The fault tests' network timeout (`--timeout`), and how long past it a survivor may take to
/// exit (loaded CI machines are slow to start and stop processes).
const FAULT_TIMEOUT: u64 = 5;
const FAULT_SLACK: Duration = Duration::from_secs(30);

/// A run long enough to be killed in: rank 0 saves a checkpoint after step 20 of 3,000.
const LONG_RUN: [&str; 6] = ["--steps", "3000", "--save-at", "20", "--timeout", "5"];

/// A survivor's log: an error that names the node, what failed and where, and no panic.
fn assert_clean_error(log: &str, names: &[&str]) {
    for name in names {
        assert!(log.contains(name), "`{name}` not in the log:\n{log}");
    }
    assert!(!log.contains("panicked"), "a thread panicked:\n{log}");
}

/// A peer killed mid-run: the survivor fails its next all-reduce with an error that names its
/// rank, the step and the dead peer's address, within the timeout, without a panic; rank 0's
/// checkpoint resumes both ranks.
#[test]
fn a_killed_rank_fails_the_other_with_its_address_and_the_checkpoint_resumes() {
    assert_eq!(LONG_RUN[5], FAULT_TIMEOUT.to_string());
    let dir = tempfile::tempdir().unwrap();
    for killed in [1usize, 0] {
        let out = dir.path().join(format!("kill-rank{killed}"));
        let (mut processes, ports) = start(2, &out, &LONG_RUN);
        wait_for_line(&out.join("rank0.log"), "saved a checkpoint after step 20");
        processes.kill(1 + killed);
        let survivor = 1 - killed;
        let (ok, log) = processes.exit_of(
            1 + survivor,
            Duration::from_secs(FAULT_TIMEOUT) + FAULT_SLACK,
        );
        assert!(!ok, "rank {survivor} succeeded:\n{log}");
        let dead = format!("localhost:{}", ports[1 + killed]);
        let who = format!("rank {survivor}/2: gradient all-reduce at step");
        assert_clean_error(&log, &[&who, &dead]);

        let checkpoint = out.join("checkpoint");
        let resumed = run(
            2,
            &out.join("resumed"),
            &[
                "--steps",
                "3000",
                "--stop-after",
                "40",
                "--resume",
                checkpoint.to_str().unwrap(),
            ],
        );
        assert_replicas(&resumed);
    }
}

/// The orchestrator killed after registration: the nodes train on (tensors go between them),
/// write their results, and then fail to leave the collective with an error, not a hang.
#[test]
fn a_killed_orchestrator_ends_both_ranks_with_an_error_after_their_results() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kill-orchestrator");
    let (mut processes, _) = start(2, &out, &["--steps", "100", "--timeout", "5"]);
    for rank in 0..2 {
        wait_for_line(&out.join(format!("rank{rank}.log")), "registered with");
    }
    processes.kill(0);
    for rank in 0..2 {
        let (ok, log) = processes.exit_of(1 + rank, DEADLINE);
        assert!(!ok, "rank {rank} succeeded:\n{log}");
        assert_clean_error(&log, &[&format!("rank {rank}/2: leaving the collective")]);
        assert!(log.contains("orchestrator"), "{log}");
        assert!(out.join(format!("rank{rank}.json")).exists());
    }
}

/// No orchestrator at all: registering fails within the timeout, naming the address.
#[test]
fn an_absent_orchestrator_is_an_error_within_the_timeout() {
    let ports = free_ports(2);
    let orchestrator = format!("ws://localhost:{}", ports[0]);
    let start = Instant::now();
    let output = Command::new(DDP)
        .args(["node", "--nodes", "2", "--rank", "0", "--timeout", "2"])
        .args([
            "--orchestrator",
            &orchestrator,
            "--port",
            &ports[1].to_string(),
        ])
        .output()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(2) + FAULT_SLACK);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_clean_error(
        &stderr,
        &["registering with the orchestrator", &orchestrator],
    );
}
