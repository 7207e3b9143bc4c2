//! `robustd worker`: the child process that links libtorch, loads models and runs them.
//!
//! It reads request frames on stdin and writes reply frames on stdout (see [`protocol`]); stdout
//! carries nothing else. Logs go to stderr. The worker exits when stdin closes or, should its
//! server be killed in the middle of a batch, when its parent changes, so it never outlives the
//! server that started it.

mod cache;
pub mod protocol;

use std::io::{self, BufReader, BufWriter};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use crate::attack::{self, AttackError, AttackPlan, Batch, Labels};
use crate::tensor::HostTensor;
use cache::ModelCache;
use protocol::{FailureKind, ModelRef, Reply, Request};

/// How a worker process is set up.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads.
    pub threads: i32,
    /// Models kept loaded, least recently used dropped first.
    pub model_cache: usize,
}

/// Parses `cpu` or `cuda:N` (also `cuda`, meaning `cuda:0`).
pub fn parse_device(name: &str) -> Result<Device, String> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        _ => name
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| format!("device must be cpu or cuda:N, got {name:?}")),
    }
}

/// The worker's main loop.
pub fn run(settings: WorkerSettings) -> anyhow::Result<()> {
    let device = parse_device(&settings.device).map_err(anyhow::Error::msg)?;
    if let Device::Cuda(i) = device {
        let count = tch::Cuda::device_count();
        anyhow::ensure!(
            (i as i64) < count,
            "device {} is not available: this machine has {count} CUDA devices",
            settings.device
        );
    }
    tune_malloc();
    tch::set_num_threads(settings.threads);
    exit_when_orphaned();
    // The server sends SIGUSR1 when no one waits for the running batch any more; attacks look at
    // the flag between steps.
    let cancel = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, cancel.clone())?;

    let mut input = BufReader::new(io::stdin().lock());
    let mut output = BufWriter::new(io::stdout().lock());
    let hello = Reply::Hello {
        pid: std::process::id(),
        device: settings.device,
        threads: settings.threads,
    };
    protocol::write_frame(&mut output, &hello, &[])?;

    let mut cache = ModelCache::new(settings.model_cache.max(1));
    loop {
        let (request, tensors): (Request, Vec<HostTensor>) = match protocol::read_frame(&mut input)
        {
            Ok(frame) => frame,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // A signal for an earlier batch must not cancel this one.
        cancel.store(false, Ordering::SeqCst);
        let (reply, outputs) = match request {
            Request::Shutdown => return Ok(()),
            Request::Load { model } => match cache.get_or_load(&model, device) {
                Ok(_) => (Reply::Loaded, vec![]),
                Err(reply) => (reply, vec![]),
            },
            Request::Infer { model } => infer(&mut cache, &model, device, &tensors),
            Request::Attack {
                model,
                plan,
                sample_ids,
            } => match cache.get_or_load(&model, device) {
                Ok(loaded) => run_attack(loaded, &plan, sample_ids, &tensors, device, &cancel)
                    .unwrap_or_else(|e| (failure(&e), vec![])),
                Err(reply) => (reply, vec![]),
            },
        };
        protocol::write_frame(&mut output, &reply, &outputs)?;
    }
}

/// glibc's malloc serves blocks over 128 KiB with mmap and hands them back on free, and trims
/// the heap past 128 KiB of free space: an attack step that frees and reallocates the same
/// activations then pays for page faults each time. Blocks up to [`MALLOC_MMAP_THRESHOLD`] from
/// the heap and a trim only past [`MALLOC_TRIM_THRESHOLD`] free keep them mapped; measured here,
/// whole-server PGD-20 ran 0.74-0.76 of the time on the digits model at batch 256 and 0.81-0.92
/// on the ResNet at 32. A process started with `GLIBC_TUNABLES` keeps what that says instead.
/// The worker calls this first; the benchmark does too, so that its contenders compare alike.
pub fn tune_malloc() {
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes no pointers; it sets allocator parameters under the
        // allocator's own lock.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD) == 1
        };
        if !ok {
            tracing::warn!("glibc refused the malloc settings; running with its defaults");
        }
    }
}

/// Largest block glibc's malloc takes from the heap rather than from mmap (glibc's maximum).
pub const MALLOC_MMAP_THRESHOLD: i32 = 32 << 20;
/// Free space at the top of the heap that glibc's malloc keeps before handing it back.
pub const MALLOC_TRIM_THRESHOLD: i32 = 64 << 20;

/// [`tune_malloc`]'s settings as `GLIBC_TUNABLES` spells them, for a process started from here.
pub fn malloc_tunables() -> String {
    format!(
        "glibc.malloc.mmap_threshold={MALLOC_MMAP_THRESHOLD}:glibc.malloc.trim_threshold={MALLOC_TRIM_THRESHOLD}"
    )
}

/// A server killed outright (SIGKILL, out of memory) closes the worker's stdin, but a worker in
/// the middle of a long batch reads it only when the batch ends, minutes later maybe. A thread
/// watches for the server's end instead: the worker is then handed to another parent.
fn exit_when_orphaned() {
    // SAFETY: getppid has no preconditions and cannot fail.
    let server = unsafe { libc::getppid() };
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        // SAFETY: as above.
        if unsafe { libc::getppid() } != server {
            eprintln!("robustd worker: the server (pid {server}) is gone; exiting");
            // No destructors: libtorch may be running on the other threads.
            // SAFETY: _exit ends the process at once and takes no pointers.
            unsafe { libc::_exit(1) };
        }
    });
}

fn infer(
    cache: &mut ModelCache,
    model_ref: &ModelRef,
    device: Device,
    tensors: &[HostTensor],
) -> (Reply, Vec<HostTensor>) {
    let model = match cache.get_or_load(model_ref, device) {
        Ok(model) => model,
        Err(reply) => return (reply, vec![]),
    };
    let result = tensors
        .first()
        .ok_or_else(|| AttackError::Input("infer needs one input tensor".to_owned()))
        .and_then(|x| {
            let x = to_device_tensor(x, device)?;
            let y = tch::no_grad(|| model.forward(&x))?;
            from_device_tensor(&y)
        });
    match result {
        Ok(output) => (Reply::Output, vec![output]),
        Err(e) => (failure(&e), vec![]),
    }
}

/// Runs an attack plan on a batch: tensors are inputs, labels, then targets if any.
fn run_attack(
    model: &attack::AttackedModel,
    plan: &AttackPlan,
    sample_ids: Vec<u64>,
    tensors: &[HostTensor],
    device: Device,
    cancel: &AtomicBool,
) -> Result<(Reply, Vec<HostTensor>), AttackError> {
    let [x, labels, rest @ ..] = tensors else {
        return Err(AttackError::Input(
            "an attack needs inputs and labels".to_owned(),
        ));
    };
    let labels = match labels.as_i64() {
        Some(_) => Labels::Classes(to_device_tensor(labels, device)?.f_to_kind(Kind::Int64)?),
        None => Labels::Values(to_device_tensor(labels, device)?),
    };
    let targets = match rest.first() {
        Some(t) => Some(to_device_tensor(t, device)?.f_to_kind(Kind::Int64)?),
        None => None,
    };
    let batch = Batch {
        x: to_device_tensor(x, device)?,
        labels,
        sample_ids,
        targets,
    };
    let evaluation = attack::evaluate(model, &batch, plan, Some(cancel))?;
    let adversarial = from_device_tensor(&evaluation.adversarial)?;
    Ok((
        Reply::Attacked {
            samples: evaluation.samples,
        },
        vec![adversarial],
    ))
}

/// Moves a host tensor onto the device, keeping its datatype.
pub fn to_device_tensor(t: &HostTensor, device: Device) -> Result<Tensor, AttackError> {
    let tensor = match (t.as_f32(), t.as_i64()) {
        (Some(v), _) => Tensor::f_from_slice(v)?,
        (_, Some(v)) => Tensor::f_from_slice(v)?,
        _ => unreachable!("a host tensor holds f32 or i64"),
    };
    Ok(tensor.f_reshape(&t.shape)?.f_to_device(device)?)
}

/// Copies a float tensor back to host memory.
pub fn from_device_tensor(t: &Tensor) -> Result<HostTensor, AttackError> {
    let flat = t
        .f_to_kind(Kind::Float)?
        .f_to_device(Device::Cpu)?
        .f_contiguous()?
        .f_view(-1)?;
    let values = Vec::<f32>::try_from(&flat)?;
    Ok(HostTensor::f32(t.size(), values))
}

fn failure(error: &AttackError) -> Reply {
    let kind = match error {
        AttackError::Model(_) => FailureKind::Model,
        AttackError::Input(_) => FailureKind::Input,
        AttackError::Cancelled => FailureKind::Cancelled,
        AttackError::Torch(_) => FailureKind::Internal,
    };
    let message = error
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    Reply::Failed { kind, message }
}
