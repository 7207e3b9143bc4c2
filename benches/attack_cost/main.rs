//! What worst-case evaluation costs with robustd, measured side by side in one run and printed as
//! ratios: on a shared machine absolute times drift from run to run, ratios of runs interleaved
//! in one process hold.
//!
//!     cargo bench --bench attack_cost                               # CPU
//!     ROBUSTD_BENCH_DEVICE=cuda cargo bench --bench attack_cost     # GPU; skips without CUDA
//!
//! PGD-K (Linf, random start, every point every step) on digits_cnn and cifar_resnet at batch
//! sizes 1, 32 and 256. Each repetition runs these contenders in turn, in an order that rotates:
//! - floor: a bare libtorch loop of K x (forward, loss, input gradient, sign step, projection,
//!   clip) on the same TorchScript model, what PGD-K cannot go below;
//! - module: robustd's attack module (`attack::evaluate`), its clean pass, final pass and
//!   per-sample rows included;
//! - server: one HTTP request (binary tensors) through the batcher to a worker process, the
//!   answer read whole; for single samples also a server without the batcher's queue delay;
//! - torchattacks: its PGD on the same file and inputs (`benches/torchattacks_pgd.py`).
//!
//! Then: the `accuracy` objective against attacking every point every step, with the survival
//! curve; concurrent single-sample requests with batching on and off; the memory of the server
//! and its worker. Every contender runs with the same libtorch thread count, the model in eval
//! mode with frozen parameters, and the graph executor set as robustd sets it.
//!
//! Environment: ROBUSTD_BENCH_DEVICE (`cpu` or `cuda`; also `-- --device cuda`),
//! ROBUSTD_BENCH_THREADS (default: the machine's cores), ROBUSTD_BENCH_REPS (default 5: single
//! samples and the digits at 32 run six times as many, the objectives and the batching rounds
//! three times, the ResNet at 256 half), ROBUSTD_PYTHON (the Python with torchattacks; default
//! `.venv/bin/python`).

#[path = "../../tests/common/mod.rs"]
mod common;
mod floor;
mod peer;
mod report;
mod server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use robustd::attack::{
    evaluate, AttackPlan, AttackSettings, AttackedModel, Batch, Labels, Method, Norm, Objective,
    SampleResult, GRAPH_EXECUTOR_OPTIMIZE,
};
use robustd::model::ModelCard;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

use common::TestServer;
use floor::Floor;
use peer::Peer;
use report::{print_table, print_target, ratio_text, AccuracyObjective, Batching, Memory, Spread};
use server::{AttackRequest, Http};

/// PGD steps of every timed attack.
const STEPS: u32 = 20;
/// Steps of the warm-up runs, which let libtorch settle on each shape before any timing.
const WARM_UP_STEPS: u32 = 2;
const BATCHES: [usize; 3] = [1, 32, 256];
const BATCHING_REQUESTS: usize = 64;
const GROWTH_REQUESTS: usize = 1000;
const GROWTH_IN_FLIGHT: usize = 10;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("attack_cost: run with `cargo bench --bench attack_cost`");
        return;
    }
    let Some(options) = Options::from_env() else {
        println!("attack_cost: CUDA was asked for but libtorch sees no CUDA device; skipping");
        return;
    };
    // The floor and the module run in this process: with the worker's malloc settings, so
    // that the server is not flattered by them.
    robustd::worker::tune_malloc();
    tch::set_num_threads(options.threads);
    // As robustd sets it when a model loads; the floor's runs are on this thread too.
    tch::jit::set_graph_executor_optimize(GRAPH_EXECUTOR_OPTIMIZE);
    tch::manual_seed(0);
    // Keep the servers' start lines, not a line per request.
    std::env::set_var("ROBUSTD_TEST_SERVER_LOG", "warn,robustd=info");

    let mut bench = Bench::set_up(options);
    let timings = bench.time_cases();
    let accuracy = bench.accuracy_objective();
    let batching = bench.batching();
    let memory = bench.memory();

    bench.print_header();
    bench.print_cases(&timings);
    accuracy.print(STEPS);
    batching.print(STEPS);
    memory.print(STEPS);
    bench.print_targets(&timings, &accuracy, &batching, &memory);
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
            "cuda" | "gpu" => "cuda:0".to_owned(),
            other => other.to_owned(),
        };
        let device = robustd::worker::parse_device(&device_name).expect("a device: cpu or cuda");
        if device != Device::Cpu && !tch::Cuda::is_available() {
            return None;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let number = |name: &str, default: usize| {
            std::env::var(name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}: a number, got {v:?}"))
            })
        };
        Some(Self {
            device,
            device_name,
            threads: number("ROBUSTD_BENCH_THREADS", cores).max(1) as i32,
            reps: number("ROBUSTD_BENCH_REPS", 5).max(1),
        })
    }
}

/// A model under attack and the inputs the benchmark gives it, kept on the host.
struct Subject {
    name: &'static str,
    eps: f64,
    /// Inputs [n, ...] in [0, 1] and labels [n].
    x: Tensor,
    y: Tensor,
    model: AttackedModel,
    floor: Floor,
}

impl Subject {
    fn load(name: &'static str, eps: f64, x: Tensor, y: Tensor, device: Device) -> Self {
        let card: ModelCard = serde_json::from_str(
            &std::fs::read_to_string(Self::path(name, "json")).expect("the model card"),
        )
        .expect("a valid card");
        let path = Self::path(name, "pt");
        let model = AttackedModel::load(&path, card.clone(), device).expect("load the model");
        let floor = Floor::load(&path, &card, device);
        Self {
            name,
            eps,
            x,
            y,
            model,
            floor,
        }
    }

    fn path(name: &str, extension: &str) -> PathBuf {
        common::repo_root().join(format!("models/{name}.{extension}"))
    }

    /// The inputs as a safetensors file, for the Python peer.
    fn write_data(&self, folder: &Path) -> PathBuf {
        use robustd::dataset::Dataset;
        use robustd::tensor::HostTensor;
        let x = HostTensor::f32(self.x.size(), host_f32(&self.x));
        let y = HostTensor::i64(self.y.size(), host_i64(&self.y));
        let path = folder.join(format!("{}.safetensors", self.name));
        std::fs::write(&path, Dataset::to_safetensors(&[("x", &x), ("y", &y)]))
            .expect("write the inputs");
        path
    }

    /// A request for sample `i` alone.
    fn single_request(&self, i: usize, steps: u32) -> AttackRequest {
        let x = self.x.narrow(0, i as i64, 1);
        let mut parameters = pgd_parameters(self.eps, steps);
        parameters["sample_offset"] = json!(i);
        AttackRequest::new(
            &host_f32(&x),
            &x.size(),
            &host_i64(&self.y.narrow(0, i as i64, 1)),
            parameters,
        )
    }
}

/// One timed configuration (of `STEPS` steps): a subject, a batch size, how many repetitions.
struct Case {
    subject: usize,
    batch: usize,
    reps: usize,
    /// Short enough that each timed run follows an untimed one.
    cheap: bool,
    /// The first `batch` inputs and labels, on the device.
    x: Tensor,
    y: Tensor,
    /// The server's requests: the timed one and the warm-up.
    request: AttackRequest,
    warm_up_request: AttackRequest,
}

/// The timed cases: both models at every batch size, PGD-20. The cheap ones (single samples,
/// digits at 32) repeat six times as often, their spread being the widest; the ResNet at batch
/// 256 on a CPU repeats half as often (at least 3 times), so that a run stays within minutes on
/// two cores.
fn cases(subjects: &[Subject], options: &Options) -> Vec<Case> {
    let mut cases = Vec::new();
    for (s, subject) in subjects.iter().enumerate() {
        for batch in BATCHES {
            let resnet = subject.name == "cifar_resnet";
            let large = resnet && batch == 256 && options.device == Device::Cpu;
            let cheap = batch == 1 || (!resnet && batch == 32);
            let reps = match (cheap, large) {
                (true, _) => 6 * options.reps,
                (_, true) => options.reps.div_ceil(2).max(options.reps.min(3)),
                _ => options.reps,
            };
            let x = subject.x.narrow(0, 0, batch as i64);
            let y = subject.y.narrow(0, 0, batch as i64);
            let (host_x, host_y) = (host_f32(&x), host_i64(&y));
            let request = |steps| {
                let parameters = pgd_parameters(subject.eps, steps);
                AttackRequest::new(&host_x, &x.size(), &host_y, parameters)
            };
            cases.push(Case {
                subject: s,
                batch,
                reps,
                cheap,
                request: request(STEPS),
                warm_up_request: request(WARM_UP_STEPS),
                x: x.to_device(options.device),
                y: y.to_device(options.device),
            });
        }
    }
    cases
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    Floor,
    Module,
    Server,
    /// The server with `--max-queue-delay-microseconds 0`, single samples only.
    ServerNoDelay,
    Torchattacks,
}

const CONTENDERS: [Contender; 5] = [
    Contender::Floor,
    Contender::Module,
    Contender::Server,
    Contender::ServerNoDelay,
    Contender::Torchattacks,
];

/// Per case, per contender (in `CONTENDERS` order), the time of each repetition.
type Timings = Vec<[Vec<Duration>; 5]>;

struct Bench {
    options: Options,
    subjects: Vec<Subject>,
    cases: Vec<Case>,
    http: Http,
    /// A server with the default settings.
    server: TestServer,
    /// A server that does not wait for a batch to fill.
    server_no_delay: TestServer,
    peer: Result<Peer, String>,
    _inputs: TempFolder,
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

        let http = Http::new();
        let server = start_server(&http, &options, &[]);
        let server_no_delay =
            start_server(&http, &options, &["--max-queue-delay-microseconds", "0"]);

        let inputs = TempFolder::new();
        let root = common::repo_root();
        let mut peer = Peer::start(
            &root,
            options.threads,
            &options.device_name,
            GRAPH_EXECUTOR_OPTIMIZE,
        );
        if let Ok(peer) = &mut peer {
            for subject in &subjects {
                let data = subject.write_data(&inputs.0);
                let model = Subject::path(subject.name, "pt");
                let card = Subject::path(subject.name, "json");
                peer.load(subject.name, &model, &card, &data);
            }
        }
        Self {
            options,
            subjects,
            cases,
            http,
            server,
            server_no_delay,
            peer,
            _inputs: inputs,
        }
    }

    /// Every case, every contender, interleaved: repetition by repetition, case by case, the
    /// contenders in an order that rotates with the repetition. Warm-up runs first.
    fn time_cases(&mut self) -> Timings {
        for i in 0..self.cases.len() {
            for contender in CONTENDERS {
                self.run(contender, i, true);
            }
        }
        let mut timings: Timings = self.cases.iter().map(|_| Default::default()).collect();
        let reps = self.cases.iter().map(|c| c.reps).max().unwrap_or(0);
        for rep in 0..reps {
            for (i, times) in timings.iter_mut().enumerate() {
                if rep >= self.cases[i].reps {
                    continue;
                }
                for k in 0..CONTENDERS.len() {
                    let slot = (k + rep) % CONTENDERS.len();
                    // A short run is timed warm: right after an untimed one, as a busy server
                    // runs. A process that has idled (and the threads of the one that ran last,
                    // which spin a while) would cost it milliseconds that a long run absorbs.
                    if self.cases[i].cheap {
                        self.run(CONTENDERS[slot], i, false);
                    }
                    if let Some(time) = self.run(CONTENDERS[slot], i, false) {
                        times[slot].push(time);
                    }
                }
            }
            eprintln!("attack_cost: repetition {} of {reps} done", rep + 1);
        }
        timings
    }

    /// One run of a contender on a case; None when the contender does not run it.
    fn run(&mut self, contender: Contender, case: usize, warm_up: bool) -> Option<Duration> {
        let case = &self.cases[case];
        let subject = &self.subjects[case.subject];
        let steps = if warm_up { WARM_UP_STEPS } else { STEPS };
        let alpha = step_size(subject.eps, steps);
        let request = if warm_up {
            &case.warm_up_request
        } else {
            &case.request
        };
        let path = format!("/v2/models/{}/attack", subject.name);
        match contender {
            Contender::Floor => {
                let started = Instant::now();
                let adv = subject
                    .floor
                    .pgd(&case.x, &case.y, subject.eps, alpha, steps);
                synchronize(&adv, self.options.device);
                Some(started.elapsed())
            }
            Contender::Module => {
                let batch = batch(&case.x, &case.y);
                let plan = pgd_plan(subject.eps, steps, Objective::Loss);
                let started = Instant::now();
                evaluate(&subject.model, &batch, &plan, None).expect("the attack runs");
                Some(started.elapsed())
            }
            Contender::Server => Some(self.http.attack(&self.server.url(&path), request)),
            Contender::ServerNoDelay => (case.batch == 1)
                .then(|| self.http.attack(&self.server_no_delay.url(&path), request)),
            Contender::Torchattacks => {
                let peer = self.peer.as_mut().ok()?;
                Some(peer.pgd(subject.name, case.batch, subject.eps, alpha, steps))
            }
        }
    }

    /// Robust accuracy of the natural digits model (PGD-20, eps 0.1, all 360 test digits in
    /// batches of at most 256, as an evaluation job cuts them) with the `accuracy` objective,
    /// against the `loss` objective, which attacks every point every step. Beside them, the floor
    /// run the same two ways: its batch cut to the points still unbroken before each step, and
    /// whole. Each timed run follows an untimed one.
    fn accuracy_objective(&self) -> AccuracyObjective {
        let subject = &self.subjects[0];
        let device = self.options.device;
        let n = subject.x.size()[0];
        let chunks: Vec<Batch> = (0..n)
            .step_by(256)
            .map(|start| {
                let len = (n - start).min(256);
                let x = subject.x.narrow(0, start, len).to_device(device);
                let y = subject.y.narrow(0, start, len).to_device(device);
                Batch {
                    sample_ids: (start as u64..(start + len) as u64).collect(),
                    ..batch(&x, &y)
                }
            })
            .collect();
        let evaluate_all = |objective: Objective| -> Vec<Vec<SampleResult>> {
            let plan = pgd_plan(subject.eps, STEPS, objective);
            let run = |b: &Batch| evaluate(&subject.model, b, &plan, None).expect("the attack");
            chunks.iter().map(|b| run(b).samples).collect()
        };
        let samples = evaluate_all(Objective::Accuracy);
        // Per chunk, the points each step attacks under the `accuracy` objective.
        let attacked: Vec<Vec<usize>> = samples
            .iter()
            .map(|rows| survival(rows, STEPS)[..STEPS as usize].to_vec())
            .collect();
        let whole: Vec<Vec<usize>> = chunks
            .iter()
            .map(|b| vec![b.sample_ids.len(); STEPS as usize])
            .collect();
        let floor = |sizes: &[Vec<usize>]| {
            for (b, sizes) in chunks.iter().zip(sizes) {
                let Labels::Classes(y) = &b.labels else {
                    unreachable!("class labels")
                };
                let adv = subject.floor.pgd_shrinking(
                    &b.x,
                    y,
                    subject.eps,
                    step_size(subject.eps, STEPS),
                    sizes,
                );
                synchronize(&adv, device);
            }
        };
        let ways: [&dyn Fn(); 4] = [
            &|| drop(evaluate_all(Objective::Accuracy)),
            &|| drop(evaluate_all(Objective::Loss)),
            &|| floor(&attacked),
            &|| floor(&whole),
        ];
        let mut times: [Vec<Duration>; 4] = Default::default();
        for rep in 0..3 * self.options.reps {
            for k in 0..ways.len() {
                let way = (k + rep) % ways.len();
                ways[way]();
                let started = Instant::now();
                ways[way]();
                times[way].push(started.elapsed());
            }
        }
        let samples: Vec<SampleResult> = samples.into_iter().flatten().collect();
        AccuracyObjective {
            ratio: Spread::ratios(&times[0], &times[1]).expect("timed runs"),
            floor_ratio: Spread::ratios(&times[2], &times[3]).expect("timed runs"),
            survival: survival(&samples, STEPS),
            n: samples.len(),
            robust: samples.iter().filter(|s| s.robust == Some(true)).count(),
        }
    }

    /// Concurrent single-sample PGD-20 requests on digits_cnn, round by round: the default
    /// server, one whose batches wait for 64 requests or 2 ms (`--max-batch-size 64
    /// --max-queue-delay-microseconds 2000`), and one with batching off (`--max-batch-size 1`).
    fn batching(&self) -> Batching {
        let sized = start_server(
            &self.http,
            &self.options,
            &[
                "--max-batch-size",
                "64",
                "--max-queue-delay-microseconds",
                "2000",
            ],
        );
        let off = start_server(&self.http, &self.options, &["--max-batch-size", "1"]);
        let subject = &self.subjects[0];
        let requests: Vec<AttackRequest> = (0..BATCHING_REQUESTS)
            .map(|i| subject.single_request(i, STEPS))
            .collect();
        let path = "/v2/models/digits_cnn/attack";
        let urls = [self.server.url(path), sized.url(path), off.url(path)];
        let mut times: [Vec<Duration>; 3] = Default::default();
        for round in 0..=3 * self.options.reps {
            for (url, times) in urls.iter().zip(&mut times) {
                let time = self.http.concurrent(url, &requests);
                // The first round warms the servers up.
                if round > 0 {
                    times.push(time);
                }
            }
        }
        let [on, sized, off] = &times;
        Batching {
            requests: BATCHING_REQUESTS,
            on: Spread::of(on),
            sized: Spread::of(sized),
            off: Spread::of(off),
            speedup: Spread::ratios(off, on).expect("timed rounds"),
            sized_speedup: Spread::ratios(off, sized).expect("timed rounds"),
        }
    }

    /// Peak resident memory of the server and its worker during one 256-sample PGD-20 on the
    /// ResNet, then resident memory over many small requests.
    fn memory(&self) -> Memory {
        let server = self.server.pid();
        let worker = *common::children_of(server)
            .first()
            .expect("the server's worker process");
        let resident = |pid| robustd::engine::proc_status_bytes(pid, "VmRSS:").unwrap_or(0);
        let peak = |pid| robustd::engine::proc_status_bytes(pid, "VmHWM:").unwrap_or(0);

        let resnet = &self.subjects[1];
        let large = AttackRequest::new(
            &host_f32(&resnet.x),
            &resnet.x.size(),
            &host_i64(&resnet.y),
            pgd_parameters(resnet.eps, STEPS),
        );
        let peaks_reset = server::reset_peak(server) && server::reset_peak(worker);
        let before = [resident(server), resident(worker)];
        self.http
            .attack(&self.server.url("/v2/models/cifar_resnet/attack"), &large);
        let peaks = [peak(server), peak(worker)];

        let digits = &self.subjects[0];
        let samples = digits.x.size()[0] as usize;
        let requests: Vec<AttackRequest> = (0..GROWTH_REQUESTS)
            .map(|i| digits.single_request(i % samples, 5))
            .collect();
        let mut series = Vec::new();
        let url = self.server.url("/v2/models/digits_cnn/attack");
        self.http
            .stream(&url, &requests, GROWTH_IN_FLIGHT, 100, |done| {
                series.push((done, resident(server), resident(worker)));
            });
        Memory {
            peaks_reset,
            before,
            peaks,
            series,
            requests: GROWTH_REQUESTS,
        }
    }

    fn print_header(&self) {
        let o = &self.options;
        println!();
        println!("robustd attack cost: {}", report::machine());
        let peer = match &self.peer {
            Ok(peer) => format!(
                "torch {}, torchattacks {}",
                peer.versions["torch"].as_str().unwrap_or("?"),
                peer.versions["torchattacks"].as_str().unwrap_or("?")
            ),
            Err(why) => format!("torchattacks not measured: {why}"),
        };
        println!(
            "device {}, {} libtorch threads for every contender, graph executor optimisation {}; {peer}",
            o.device_name,
            o.threads,
            if GRAPH_EXECUTOR_OPTIMIZE { "on" } else { "off" },
        );
        println!();
    }

    fn print_cases(&self, timings: &Timings) {
        println!(
            "PGD-K Linf, random start, every point every step (eps 0.1 digits, 8/255 ResNet)."
        );
        println!(
            "The floor's time in ms, then ratios of paired runs (the same repetition): median and"
        );
        println!("interquartile range over the repetitions (min-max below 5 repetitions).");
        println!();
        let name = |c: &Case| self.subjects[c.subject].name.to_owned();
        let rows: Vec<Vec<String>> = self
            .cases
            .iter()
            .zip(timings)
            .map(|(c, [floor, module, server, no_delay, peer])| {
                vec![
                    name(c),
                    c.batch.to_string(),
                    STEPS.to_string(),
                    c.reps.to_string(),
                    Spread::of(floor).ms_text(),
                    ratio_text(Spread::ratios(module, floor)),
                    ratio_text(Spread::ratios(server, floor)),
                    ratio_text(Spread::ratios(no_delay, floor)),
                    ratio_text(Spread::ratios(peer, floor)),
                ]
            })
            .collect();
        println!("ratio to the floor");
        print_table(
            &[
                "model",
                "batch",
                "steps",
                "reps",
                "floor ms",
                "module",
                "server",
                "server, no queue delay",
                "torchattacks",
            ],
            &rows,
        );
        let rows: Vec<Vec<String>> = self
            .cases
            .iter()
            .zip(timings)
            .map(|(c, [_, module, server, no_delay, peer])| {
                vec![
                    name(c),
                    c.batch.to_string(),
                    ratio_text(Spread::ratios(module, peer)),
                    ratio_text(Spread::ratios(server, peer)),
                    ratio_text(Spread::ratios(no_delay, peer)),
                ]
            })
            .collect();
        println!("ratio to torchattacks");
        print_table(
            &[
                "model",
                "batch",
                "module",
                "server",
                "server, no queue delay",
            ],
            &rows,
        );
    }

    fn print_targets(
        &self,
        timings: &Timings,
        accuracy: &AccuracyObjective,
        batching: &Batching,
        memory: &Memory,
    ) {
        println!("targets:");
        let median = |i: usize, a: usize, b: usize| {
            Spread::ratios(&timings[i][a], &timings[i][b]).map(|r| r.median)
        };
        let label = |i: usize| {
            let c = &self.cases[i];
            format!("{} batch {}", self.subjects[c.subject].name, c.batch)
        };
        let module: Vec<String> = (0..self.cases.len())
            .filter_map(|i| median(i, 1, 0).map(|r| format!("{r:.3}")))
            .collect();
        let worst = (0..self.cases.len())
            .filter_map(|i| median(i, 1, 0))
            .fold(0.0, f64::max);
        print_target(
            worst <= 1.05,
            "attack module <= 1.05x the floor at every batch size",
            &module.join(", "),
        );
        for (batch, limit) in [(256, 1.15), (1, 1.5)] {
            for i in (0..self.cases.len()).filter(|&i| self.cases[i].batch == batch) {
                let Some(r) = median(i, 2, 0) else { continue };
                let without_delay = median(i, 3, 0)
                    .map(|r| format!(" (without the queue delay: {r:.3})"))
                    .unwrap_or_default();
                print_target(
                    r <= limit,
                    &format!(
                        "whole server <= {limit}x the floor, one request, {}",
                        label(i)
                    ),
                    &format!("{r:.3}{without_delay}"),
                );
            }
        }
        let ideal = accuracy.ideal();
        print_target(
            accuracy.ratio.median <= ideal + 0.05,
            &format!("accuracy objective <= ideal + 0.05 = {:.3}", ideal + 0.05),
            &format!("{:.3}", accuracy.ratio.median),
        );
        print_target(
            batching.speedup.median >= 5.0,
            &format!(
                "{} concurrent single-sample requests, batching >= 5x the throughput without",
                batching.requests
            ),
            &format!(
                "{:.2}x (batches of up to 64 waiting up to 2 ms: {:.2}x)",
                batching.speedup.median, batching.sized_speedup.median
            ),
        );
        let [server, worker] = memory.growth();
        let limit = 4 << 20;
        print_target(
            server <= limit && worker <= limit,
            &format!(
                "no memory growth over {} requests (at most 4 MiB from request 200 on)",
                memory.requests
            ),
            &format!(
                "server {:+.1} MiB, worker {:+.1} MiB",
                report::mib(server),
                report::mib(worker)
            ),
        );
    }
}

/// Starts a server on the shipped models with the benchmark's device and thread count.
fn start_server(http: &Http, options: &Options, extra: &[&str]) -> TestServer {
    let threads = options.threads.to_string();
    let mut args = vec![
        "--devices",
        &options.device_name,
        "--worker-threads",
        &threads,
    ];
    args.extend_from_slice(extra);
    let server = TestServer::spawn(&args);
    http.block_on(server.wait_ready("cifar_resnet"));
    server
}

/// robustd's default PGD step size.
fn step_size(eps: f64, steps: u32) -> f64 {
    AttackSettings::new(Method::Pgd, Norm::Linf, eps, steps).pgd_step_size()
}

fn pgd_plan(eps: f64, steps: u32, objective: Objective) -> AttackPlan {
    let settings = AttackSettings {
        random_start: true,
        ..AttackSettings::new(Method::Pgd, Norm::Linf, eps, steps)
    };
    AttackPlan::single(settings, objective, 0)
}

/// The same attack as request parameters: every point every step.
fn pgd_parameters(eps: f64, steps: u32) -> Value {
    json!({
        "attack": "pgd", "norm": "linf", "eps": eps, "steps": steps,
        "step_size": step_size(eps, steps), "random_start": true, "objective": "loss", "seed": 0,
    })
}

fn batch(x: &Tensor, y: &Tensor) -> Batch {
    Batch {
        x: x.shallow_clone(),
        labels: Labels::Classes(y.shallow_clone()),
        sample_ids: (0..x.size()[0] as u64).collect(),
        targets: None,
    }
}

fn host_f32(t: &Tensor) -> Vec<f32> {
    let flat = t.to_device(Device::Cpu).contiguous().view(-1);
    Vec::<f32>::try_from(&flat).expect("float values")
}

fn host_i64(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(&t.to_device(Device::Cpu)).expect("integer values")
}

/// Waits for the device to finish the work behind `t`.
fn synchronize(t: &Tensor, device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
    let _ = t.size();
}

/// Points still unbroken (correctly classified at every iterate so far) after each iterate
/// 0..=steps.
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
