//! What worst-case evaluation costs with robustd, measured side by side in one run and printed as
//! ratios: on a shared machine absolute times drift from run to run, ratios of runs interleaved
//! in one process hold.
//!
//!     cargo bench --bench attack_cost                               # CPU
//!     ROBUSTD_BENCH_DEVICE=cuda cargo bench --bench attack_cost     # GPU; skips without CUDA
//!
//! PGD-K (Linf, random start, every point every step) on digits_cnn and cifar_resnet at batch
//! sizes 1, 32 and 256; each repetition runs these contenders in turn, the order rotating:
//! - floor: a bare libtorch loop of K x (forward, loss, input gradient, sign step, projection,
//!   clip) on the same TorchScript model, what PGD-K cannot go below;
//! - module: robustd's attack module (`attack::evaluate`), clean pass and report rows included;
//! - server: one HTTP request through the batcher to a worker process, the answer read whole;
//! - torchattacks: its PGD on the same file and inputs (`benches/torchattacks_pgd.py`).
//!
//! Then the `accuracy` objective against attacking every point every step, with the survival
//! curve; 64 concurrent single-sample requests with batching on and off; and the memory of the
//! server and its worker. Every contender runs with the same libtorch thread count, the model in
//! eval mode with frozen parameters, and the graph executor set as robustd's workers set it.
//!
//! Environment: ROBUSTD_BENCH_DEVICE (`cpu` or `cuda`, also `--device cuda` after `--`),
//! ROBUSTD_BENCH_THREADS (default: the machine's cores), ROBUSTD_BENCH_REPS (default 5),
//! ROBUSTD_PYTHON (the Python with torchattacks; default `.venv/bin/python`).

#[path = "../../tests/common/mod.rs"]
mod common;
mod floor;
mod peer;
mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use robustd::attack::{
    evaluate, AttackPlan, AttackSettings, AttackedModel, Batch, Labels, Method, Norm, Objective,
    SampleResult,
};
use robustd::model::ModelCard;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

use common::TestServer;
use floor::Floor;
use peer::Peer;
use server::{AttackRequest, Http};

/// PGD steps of every timed attack (fewer for the largest case, see `cases`).
const STEPS: u32 = 20;
/// Steps of the warm-up runs, which let libtorch settle on each shape before timing.
const WARM_UP_STEPS: u32 = 2;
const BATCHES: [usize; 3] = [1, 32, 256];

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("attack_cost: run with `cargo bench --bench attack_cost`");
        return;
    }
    let Some(options) = Options::from_env() else {
        println!("attack_cost: CUDA was asked for but libtorch sees no CUDA device; skipping");
        return;
    };
    tch::set_num_threads(options.threads);
    tch::manual_seed(0);
    // Keep the server's start line, not a line per request.
    std::env::set_var("ROBUSTD_TEST_SERVER_LOG", "warn,robustd=info");
    let bench = Bench::set_up(options);
    bench.print_header();

    let mut bench = bench;
    let timings = bench.time_cases();
    let accuracy = bench.accuracy_objective();
    let batching = bench.batching();
    let memory = bench.memory();

    print_cases(&bench.cases, &timings);
    accuracy.print();
    batching.print();
    memory.print();
    print_targets(&bench.cases, &timings, &accuracy, &batching, &memory);
}

/// What the environment asks for.
struct Options {
    device: Device,
    /// The device as robustd's flags spell it: `cpu`, `cuda:0`.
    device_name: String,
    threads: i32,
    reps: usize,
}

impl Options {
    /// None when CUDA is asked for and absent.
    fn from_env() -> Option<Self> {
        let args: Vec<String> = std::env::args().collect();
        let from_args = args
            .iter()
            .position(|a| a == "--device")
            .and_then(|i| args.get(i + 1).cloned());
        let wanted = from_args
            .or_else(|| std::env::var("ROBUSTD_BENCH_DEVICE").ok())
            .unwrap_or_else(|| "cpu".to_owned());
        let device_name = match wanted.as_str() {
            "cuda" => "cuda:0".to_owned(),
            other => other.to_owned(),
        };
        let device = robustd::worker::parse_device(&device_name).expect("a device: cpu or cuda");
        if device != Device::Cpu && !tch::Cuda::is_available() {
            return None;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let number = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: a number")))
                .unwrap_or(default)
        };
        Some(Self {
            device,
            device_name,
            threads: number("ROBUSTD_BENCH_THREADS", cores) as i32,
            reps: number("ROBUSTD_BENCH_REPS", 5).max(1),
        })
    }
}

/// A model under attack with the inputs the benchmark gives it, kept on the host.
struct Subject {
    name: &'static str,
    card: ModelCard,
    eps: f64,
    /// Inputs [n, ...] in [0, 1] and labels [n].
    x: Tensor,
    y: Tensor,
    model: AttackedModel,
    floor: Floor,
}

impl Subject {
    fn load(name: &'static str, eps: f64, x: Tensor, y: Tensor, device: Device) -> Self {
        let models = common::repo_root().join("models");
        let card: ModelCard = serde_json::from_str(
            &std::fs::read_to_string(models.join(format!("{name}.json"))).expect("card"),
        )
        .expect("a valid card");
        let path = models.join(format!("{name}.pt"));
        let model = AttackedModel::load(&path, card.clone(), device).expect("load the model");
        let floor = Floor::load(&path, &card, device);
        Self {
            name,
            card,
            eps,
            x,
            y,
            model,
            floor,
        }
    }

    fn model_path(&self) -> PathBuf {
        common::repo_root().join(format!("models/{}.pt", self.name))
    }

    fn card_path(&self) -> PathBuf {
        common::repo_root().join(format!("models/{}.json", self.name))
    }

    /// The inputs as a safetensors file, for the Python peer.
    fn write_data(&self, folder: &Path) -> PathBuf {
        use safetensors::tensor::TensorView;
        let x = tensor_bytes(&self.x);
        let y: Vec<u8> = Vec::<i64>::try_from(&self.y)
            .expect("labels")
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let shape = |t: &Tensor| t.size().iter().map(|&d| d as usize).collect::<Vec<_>>();
        let views = [
            (
                "x",
                TensorView::new(safetensors::Dtype::F32, shape(&self.x), &x).expect("x"),
            ),
            (
                "y",
                TensorView::new(safetensors::Dtype::I64, shape(&self.y), &y).expect("y"),
            ),
        ];
        let path = folder.join(format!("{}.safetensors", self.name));
        std::fs::write(
            &path,
            safetensors::serialize(views, None).expect("serialise"),
        )
        .expect("write the inputs");
        path
    }
}

fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    let values = Vec::<f32>::try_from(&t.to_kind(Kind::Float).contiguous().view(-1)).expect("f32");
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// One timed configuration: a subject, a batch size, a step count, how many repetitions.
struct Case {
    subject: usize,
    batch: usize,
    steps: u32,
    reps: usize,
    /// The first `batch` inputs and labels, on the device.
    x: Tensor,
    y: Tensor,
    /// The server's requests: the timed one and the warm-up.
    request: AttackRequest,
    warm_up_request: AttackRequest,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    Floor,
    Module,
    Server,
    Torchattacks,
}

const CONTENDERS: [Contender; 4] = [
    Contender::Floor,
    Contender::Module,
    Contender::Server,
    Contender::Torchattacks,
];

/// Per case, per contender (in `CONTENDERS` order), the time of each repetition.
type Timings = Vec<[Vec<Duration>; 4]>;

struct Bench {
    options: Options,
    subjects: Vec<Subject>,
    cases: Vec<Case>,
    http: Http,
    /// The server with its default batching settings.
    server: TestServer,
    peer: Result<Peer, String>,
    _data: TempFolder,
}

impl Bench {
    fn set_up(options: Options) -> Self {
        let device = options.device;
        let digits = common::Digits::load();
        let n = digits.len() as i64;
        let digits_x = Tensor::from_slice(&digits.x).view([n, 1, 8, 8]);
        let digits_y = Tensor::from_slice(&digits.y);
        // The ResNet is untrained: random images and labels serve as well as any.
        let resnet_x = Tensor::rand([256, 3, 32, 32], (Kind::Float, Device::Cpu));
        let resnet_y = Tensor::randint(10, [256], (Kind::Int64, Device::Cpu));
        let subjects = vec![
            Subject::load("digits_cnn", 0.1, digits_x, digits_y, device),
            Subject::load("cifar_resnet", 8.0 / 255.0, resnet_x, resnet_y, device),
        ];
        let cases = cases(&subjects, &options);

        let threads = options.threads.to_string();
        let server = TestServer::spawn(&[
            "--devices",
            &options.device_name,
            "--worker-threads",
            &threads,
        ]);
        let http = Http::new();
        http.block_on(server.wait_ready("cifar_resnet"));

        let data = TempFolder::new();
        let mut peer = Peer::start(
            &common::repo_root(),
            options.threads,
            &options.device_name,
            graph_optimize(),
        );
        if let Ok(peer) = &mut peer {
            for subject in &subjects {
                let file = subject.write_data(&data.0);
                peer.load(
                    subject.name,
                    &subject.model_path(),
                    &subject.card_path(),
                    &file,
                );
            }
        }
        Self {
            options,
            subjects,
            cases,
            http,
            server,
            peer,
            _data: data,
        }
    }

    fn print_header(&self) {
        let o = &self.options;
        println!("robustd attack cost, {}", machine());
        println!(
            "device {}, {} libtorch threads per contender, graph executor optimisation {}",
            o.device_name,
            o.threads,
            on_off(graph_optimize())
        );
        match &self.peer {
            Ok(peer) => println!(
                "torch {}, torchattacks {}",
                peer.versions["torch"].as_str().unwrap_or("?"),
                peer.versions["torchattacks"].as_str().unwrap_or("?")
            ),
            Err(why) => println!("torchattacks: not measured, {why}"),
        }
        println!();
    }

    /// Every case, every contender, interleaved: repetition by repetition, case by case, the
    /// contenders in an order that rotates with the repetition.
    fn time_cases(&mut self) -> Timings {
        for i in 0..self.cases.len() {
            for contender in CONTENDERS {
                self.run(contender, i, true);
            }
        }
        let mut timings: Timings = self.cases.iter().map(|_| Default::default()).collect();
        let reps = self.cases.iter().map(|c| c.reps).max().unwrap_or(0);
        for rep in 0..reps {
            for i in 0..self.cases.len() {
                if rep >= self.cases[i].reps {
                    continue;
                }
                for k in 0..CONTENDERS.len() {
                    let slot = (k + rep) % CONTENDERS.len();
                    if let Some(time) = self.run(CONTENDERS[slot], i, false) {
                        timings[i][slot].push(time);
                    }
                }
            }
            eprintln!("attack_cost: repetition {} of {reps} done", rep + 1);
        }
        timings
    }

    /// One run of a contender on a case; None when the contender is not available.
    fn run(&mut self, contender: Contender, case: usize, warm_up: bool) -> Option<Duration> {
        let case = &self.cases[case];
        let subject = &self.subjects[case.subject];
        let steps = if warm_up { WARM_UP_STEPS } else { case.steps };
        let alpha = step_size(subject.eps, steps);
        let device = self.options.device;
        let started = std::time::Instant::now();
        match contender {
            Contender::Floor => {
                tch::jit::set_graph_executor_optimize(graph_optimize());
                let adv = subject
                    .floor
                    .pgd(&case.x, &case.y, subject.eps, alpha, steps);
                synchronize(&adv, device);
            }
            Contender::Module => {
                let batch = batch(&case.x, &case.y);
                let plan = pgd_plan(subject.eps, steps, Objective::Loss);
                evaluate(&subject.model, &batch, &plan, None).expect("the attack runs");
            }
            Contender::Server => {
                let url = self
                    .server
                    .url(&format!("/v2/models/{}/attack", subject.name));
                let request = if warm_up {
                    &case.warm_up_request
                } else {
                    &case.request
                };
                return Some(self.http.attack(&url, request));
            }
            Contender::Torchattacks => {
                let peer = self.peer.as_mut().ok()?;
                return Some(peer.pgd(subject.name, case.batch, subject.eps, alpha, steps));
            }
        }
        Some(started.elapsed())
    }

    /// Robust accuracy of the natural digits model (PGD-20, eps 0.1, all 360 test digits, in
    /// batches of at most 256 as an evaluation job cuts them) with the `accuracy` objective,
    /// against the `loss` objective, which attacks every point every step.
    fn accuracy_objective(&self) -> AccuracyObjective {
        let subject = &self.subjects[0];
        let device = self.options.device;
        let n = subject.x.size()[0];
        let chunks: Vec<Batch> = (0..n)
            .step_by(256)
            .map(|start| {
                let len = (n - start).min(256);
                let mut b = batch(
                    &subject.x.narrow(0, start, len).to_device(device),
                    &subject.y.narrow(0, start, len).to_device(device),
                );
                b.sample_ids = (start as u64..(start + len) as u64).collect();
                b
            })
            .collect();
        let run = |objective: Objective| {
            let plan = pgd_plan(subject.eps, STEPS, objective);
            let started = std::time::Instant::now();
            let samples: Vec<SampleResult> = chunks
                .iter()
                .flat_map(|b| {
                    evaluate(&subject.model, b, &plan, None)
                        .expect("the attack runs")
                        .samples
                })
                .collect();
            (started.elapsed(), samples)
        };
        run(Objective::Accuracy);
        run(Objective::Loss);
        let reps = self.options.reps;
        let (mut accuracy, mut loss, mut samples) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..reps {
            let order = if rep % 2 == 0 {
                [Objective::Accuracy, Objective::Loss]
            } else {
                [Objective::Loss, Objective::Accuracy]
            };
            for objective in order {
                let (time, rows) = run(objective);
                match objective {
                    Objective::Accuracy => {
                        accuracy.push(time);
                        samples = rows;
                    }
                    Objective::Loss => loss.push(time),
                }
            }
        }
        AccuracyObjective {
            ratio: Spread::ratios(&accuracy, &loss),
            survival: survival(&samples, STEPS),
            n: samples.len(),
            robust: samples.iter().filter(|s| s.robust == Some(true)).count(),
        }
    }

    /// 64 concurrent single-sample PGD-20 requests on digits_cnn: the default server against one
    /// with batching off (`--max-batch-size 1`), round by round.
    fn batching(&self) -> Batching {
        let threads = self.options.threads.to_string();
        let off = TestServer::spawn(&[
            "--devices",
            &self.options.device_name,
            "--worker-threads",
            &threads,
            "--max-batch-size",
            "1",
        ]);
        self.http.block_on(off.wait_ready("digits_cnn"));
        let subject = &self.subjects[0];
        let requests: Vec<AttackRequest> = (0..BATCHING_REQUESTS)
            .map(|i| single_request(subject, i, STEPS))
            .collect();
        let url = |s: &TestServer| s.url("/v2/models/digits_cnn/attack");
        self.http.concurrent(&url(&self.server), &requests);
        self.http.concurrent(&url(&off), &requests);
        let (mut on_times, mut off_times) = (Vec::new(), Vec::new());
        for _ in 0..self.options.reps {
            on_times.push(self.http.concurrent(&url(&self.server), &requests));
            off_times.push(self.http.concurrent(&url(&off), &requests));
        }
        Batching {
            on: Spread::of(&on_times),
            off: Spread::of(&off_times),
            speedup: Spread::ratios(&off_times, &on_times),
        }
    }

    /// Peak resident memory of the server and its worker during one 256-sample PGD-20 on the
    /// ResNet, then resident memory over 1,000 small requests.
    fn memory(&self) -> Memory {
        let server = self.server.pid();
        let worker = *common::children_of(server)
            .first()
            .expect("the server's worker process");
        let resident = |pid| server::memory(pid, "VmRSS:").unwrap_or(0);
        let peaks_reset = server::reset_peak(server) && server::reset_peak(worker);
        let before = [resident(server), resident(worker)];
        let case = self
            .cases
            .iter()
            .find(|c| c.subject == 1 && c.batch == 256)
            .expect("the ResNet batch-256 case");
        let resnet_pgd20 = AttackRequest::new(
            &Vec::<f32>::try_from(&case.x.to_device(Device::Cpu).view(-1)).expect("inputs"),
            &case.x.size(),
            &Vec::<i64>::try_from(&case.y.to_device(Device::Cpu)).expect("labels"),
            pgd_parameters(self.subjects[1].eps, STEPS),
        );
        let url = self.server.url("/v2/models/cifar_resnet/attack");
        self.http.attack(&url, &resnet_pgd20);
        let peak = |pid| server::memory(pid, "VmHWM:").unwrap_or(0);
        let peaks = [peak(server), peak(worker)];

        let subject = &self.subjects[0];
        let requests: Vec<AttackRequest> = (0..GROWTH_REQUESTS)
            .map(|i| single_request(subject, i % subject.x.size()[0] as usize, 5))
            .collect();
        let mut series = Vec::new();
        let url = self.server.url("/v2/models/digits_cnn/attack");
        self.http.stream(&url, &requests, 8, 100, |done| {
            series.push((done, resident(server), resident(worker)));
        });
        Memory {
            peaks_reset,
            before,
            peaks,
            series,
        }
    }
}

const BATCHING_REQUESTS: usize = 64;
const GROWTH_REQUESTS: usize = 1000;

/// The timed cases: both models at every batch size, PGD-20; the ResNet at batch 256 with fewer
/// repetitions and steps, so that the run stays within minutes on two cores.
fn cases(subjects: &[Subject], options: &Options) -> Vec<Case> {
    let mut cases = Vec::new();
    for (s, subject) in subjects.iter().enumerate() {
        for batch in BATCHES {
            let large =
                subject.name == "cifar_resnet" && batch == 256 && options.device == Device::Cpu;
            let steps = if large { 10 } else { STEPS };
            let reps = if large {
                options.reps.div_ceil(2).max(3).min(options.reps)
            } else {
                options.reps
            };
            let x = subject.x.narrow(0, 0, batch as i64);
            let y = subject.y.narrow(0, 0, batch as i64);
            let host_x = Vec::<f32>::try_from(&x.contiguous().view(-1)).expect("inputs");
            let host_y = Vec::<i64>::try_from(&y).expect("labels");
            let request = |steps| {
                AttackRequest::new(
                    &host_x,
                    &x.size(),
                    &host_y,
                    pgd_parameters(subject.eps, steps),
                )
            };
            cases.push(Case {
                subject: s,
                batch,
                steps,
                reps,
                request: request(steps),
                warm_up_request: request(WARM_UP_STEPS),
                x: x.to_device(options.device),
                y: y.to_device(options.device),
            });
        }
    }
    cases
}

/// robustd's default PGD step size.
fn step_size(eps: f64, steps: u32) -> f64 {
    2.5 * eps / f64::from(steps)
}

fn pgd_settings(eps: f64, steps: u32) -> AttackSettings {
    AttackSettings {
        step_size: Some(step_size(eps, steps)),
        random_start: true,
        ..AttackSettings::new(Method::Pgd, Norm::Linf, eps, steps)
    }
}

fn pgd_plan(eps: f64, steps: u32, objective: Objective) -> AttackPlan {
    AttackPlan::single(pgd_settings(eps, steps), objective, 0)
}

/// The same attack as the request's parameters, every point every step.
fn pgd_parameters(eps: f64, steps: u32) -> Value {
    json!({
        "attack": "pgd", "norm": "linf", "eps": eps, "steps": steps,
        "step_size": step_size(eps, steps), "random_start": true, "objective": "loss", "seed": 0,
    })
}

/// A request for digits sample `i` alone.
fn single_request(subject: &Subject, i: usize, steps: u32) -> AttackRequest {
    let x = subject.x.narrow(0, i as i64, 1);
    let host_x = Vec::<f32>::try_from(&x.contiguous().view(-1)).expect("inputs");
    let y = Vec::<i64>::try_from(&subject.y.narrow(0, i as i64, 1)).expect("labels");
    let mut parameters = pgd_parameters(subject.eps, steps);
    parameters["sample_offset"] = json!(i);
    AttackRequest::new(&host_x, &x.size(), &y, parameters)
}

fn batch(x: &Tensor, y: &Tensor) -> Batch {
    Batch {
        x: x.shallow_clone(),
        labels: Labels::Classes(y.shallow_clone()),
        sample_ids: (0..x.size()[0] as u64).collect(),
        targets: None,
    }
}

/// Waits for the device to finish `t`.
fn synchronize(t: &Tensor, device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
    let _ = t.size();
}

/// Points still unbroken (correct at every iterate so far) after each iterate 0..=steps.
fn survival(samples: &[SampleResult], steps: u32) -> Vec<usize> {
    (0..=steps)
        .map(|s| {
            samples
                .iter()
                .filter(|r| r.clean_correct == Some(true))
                .filter(|r| r.robust == Some(true) || r.broken_at_step.is_some_and(|b| b > s))
                .count()
        })
        .collect()
}

/// Median and range of a set of figures.
#[derive(Clone, Copy, Debug)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn new(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Self {
            median,
            min: values[0],
            max: values[n - 1],
        }
    }

    /// Seconds.
    fn of(times: &[Duration]) -> Self {
        Self::new(times.iter().map(Duration::as_secs_f64).collect())
    }

    /// The ratio of paired runs, repetition by repetition.
    fn ratios(a: &[Duration], b: &[Duration]) -> Self {
        Self::new(
            a.iter()
                .zip(b)
                .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
                .collect(),
        )
    }

    fn ratio_text(&self) -> String {
        format!("{:.2} ({:.2}-{:.2})", self.median, self.min, self.max)
    }

    fn ms_text(&self) -> String {
        format!(
            "{:.1} ({:.1}-{:.1})",
            self.median * 1e3,
            self.min * 1e3,
            self.max * 1e3
        )
    }
}

fn print_cases(cases: &[Case], timings: &Timings) {
    println!(
        "PGD-K Linf, random start, every point every step; time of the floor in ms and ratios"
    );
    println!("of paired runs: median (min-max) over the repetitions");
    println!();
    println!(
        "{:<13} {:>5} {:>5} {:>4}  {:<24} {:<18} {:<18} {:<18} {:<18}",
        "model",
        "batch",
        "steps",
        "reps",
        "floor ms",
        "module / floor",
        "server / floor",
        "torchattacks / floor",
        "module / torchattacks"
    );
    for (case, times) in cases.iter().zip(timings) {
        let [floor, module, server, peer] = times;
        let ratio = |a: &[Duration], b: &[Duration]| {
            if a.is_empty() || b.is_empty() {
                "n/a".to_owned()
            } else {
                Spread::ratios(a, b).ratio_text()
            }
        };
        println!(
            "{:<13} {:>5} {:>5} {:>4}  {:<24} {:<18} {:<18} {:<20} {:<18}",
            SUBJECT_NAMES[case.subject],
            case.batch,
            case.steps,
            case.reps,
            Spread::of(floor).ms_text(),
            ratio(module, floor),
            ratio(server, floor),
            ratio(peer, floor),
            ratio(module, peer),
        );
    }
    println!();
}

const SUBJECT_NAMES: [&str; 2] = ["digits_cnn", "cifar_resnet"];

struct AccuracyObjective {
    ratio: Spread,
    survival: Vec<usize>,
    n: usize,
    robust: usize,
}

impl AccuracyObjective {
    /// The cost of the `accuracy` objective if a step cost exactly its unbroken points: the sum
    /// over the gradient steps of the points still unbroken, over points x steps.
    fn ideal(&self) -> f64 {
        let steps = self.survival.len() - 1;
        let attacked: usize = self.survival[..steps].iter().sum();
        attacked as f64 / (self.n * steps) as f64
    }

    fn print(&self) {
        println!(
            "accuracy objective, digits_cnn, {} test digits, PGD-{STEPS} eps 0.1 (batches of at most 256):",
            self.n
        );
        println!(
            "  cost / every point every step: {}; ideal {:.3}; robust accuracy {:.2}%",
            self.ratio.ratio_text(),
            self.ideal(),
            100.0 * self.robust as f64 / self.n as f64
        );
        let curve: Vec<String> = self.survival.iter().map(usize::to_string).collect();
        println!("  unbroken after iterate 0..={STEPS}: {}", curve.join(" "));
        println!();
    }
}

struct Batching {
    on: Spread,
    off: Spread,
    speedup: Spread,
}

impl Batching {
    fn print(&self) {
        println!(
            "batching, {BATCHING_REQUESTS} concurrent single-sample PGD-{STEPS} requests on digits_cnn:"
        );
        println!(
            "  on (defaults) {} ms, off (--max-batch-size 1) {} ms; throughput on / off: {}",
            self.on.ms_text(),
            self.off.ms_text(),
            self.speedup.ratio_text()
        );
        println!();
    }
}

struct Memory {
    peaks_reset: bool,
    /// Resident bytes of the server and the worker before the large request.
    before: [u64; 2],
    peaks: [u64; 2],
    /// (requests done, server resident bytes, worker resident bytes).
    series: Vec<(usize, u64, u64)>,
}

impl Memory {
    /// Growth of resident memory from the first sample of the series to the last, per process.
    fn growth(&self) -> [i64; 2] {
        match (self.series.first(), self.series.last()) {
            (Some(a), Some(b)) => [b.1 as i64 - a.1 as i64, b.2 as i64 - a.2 as i64],
            _ => [0, 0],
        }
    }

    fn print(&self) {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        println!(
            "memory, one 256-sample PGD-{STEPS} on cifar_resnet: peak resident server {:.0} MiB, worker {:.0} MiB (before: {:.0} and {:.0} MiB){}",
            mib(self.peaks[0]),
            mib(self.peaks[1]),
            mib(self.before[0]),
            mib(self.before[1]),
            if self.peaks_reset {
                ""
            } else {
                "; peaks since start, they could not be reset"
            }
        );
        let points: Vec<String> = self
            .series
            .iter()
            .map(|(n, s, w)| format!("{n}: {:.1}/{:.1}", mib(*s), mib(*w)))
            .collect();
        println!(
            "  resident MiB server/worker over {GROWTH_REQUESTS} single-sample PGD-5 requests on digits_cnn, 8 at a time:"
        );
        println!("  {}", points.join("  "));
        println!();
    }
}

/// The goals, each met or missed, with the figure that decides.
fn print_targets(
    cases: &[Case],
    timings: &Timings,
    accuracy: &AccuracyObjective,
    batching: &Batching,
    memory: &Memory,
) {
    println!("targets:");
    let verdict = |ok: bool| if ok { "met   " } else { "MISSED" };
    let ratio_of = |i: usize, a: usize, b: usize| {
        let times = &timings[i];
        (!times[a].is_empty() && !times[b].is_empty())
            .then(|| Spread::ratios(&times[a], &times[b]).median)
    };
    let worst_module = (0..cases.len())
        .filter_map(|i| ratio_of(i, 1, 0).map(|r| (r, i)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((r, i)) = worst_module {
        println!(
            "  {} attack module <= 1.05x the floor at every batch size (worst: {r:.2}, {} batch {})",
            verdict(r <= 1.05),
            SUBJECT_NAMES[cases[i].subject],
            cases[i].batch
        );
    }
    for (batch, limit) in [(256, 1.15), (1, 1.5)] {
        for (i, case) in cases.iter().enumerate().filter(|(_, c)| c.batch == batch) {
            if let Some(r) = ratio_of(i, 2, 0) {
                println!(
                    "  {} whole server <= {limit}x the floor, one batch-{batch} request, {}: {r:.2}",
                    verdict(r <= limit),
                    SUBJECT_NAMES[case.subject]
                );
            }
        }
    }
    let ideal = accuracy.ideal();
    println!(
        "  {} accuracy objective <= ideal + 0.05 ({:.3}): {:.3}",
        verdict(accuracy.ratio.median <= ideal + 0.05),
        ideal + 0.05,
        accuracy.ratio.median
    );
    println!(
        "  {} batching on >= 5x the throughput of batching off: {:.1}x",
        verdict(batching.speedup.median >= 5.0),
        batching.speedup.median
    );
    let [server, worker] = memory.growth();
    let limit = 4 << 20;
    println!(
        "  {} no memory growth over {GROWTH_REQUESTS} requests (<= 4 MiB each): server {:+.1} MiB, worker {:+.1} MiB",
        verdict(server <= limit && worker <= limit),
        server as f64 / f64::from(1 << 20),
        worker as f64 / f64::from(1 << 20)
    );
}

fn graph_optimize() -> bool {
    std::env::var("ROBUSTD_BENCH_OPTIMIZE").map_or(true, |v| v != "0")
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// The CPU model, the core count and today's date.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let date = std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {date}")
}

/// A folder for the Python peer's inputs, removed at the end.
struct TempFolder(PathBuf);

impl TempFolder {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("robustd-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path).expect("a temporary folder");
        Self(path)
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
